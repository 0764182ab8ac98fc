//! The syscalls this crate makes: memfd, mmap, futex. All `unsafe` in the crate is here.

use std::ffi::CStr;
use std::io;
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};
use std::ptr::NonNull;
use std::time::Duration;

use crate::layout::{Control, TOTAL_LEN};
use crate::sync::AtomicU32;

/// `memfd_create(name, MFD_CLOEXEC | MFD_ALLOW_SEALING)`.
pub(crate) fn memfd_create(name: &CStr) -> io::Result<OwnedFd> {
    // SAFETY: `name` is a valid NUL-terminated string; the flags are constants.
    let fd =
        unsafe { libc::memfd_create(name.as_ptr(), libc::MFD_CLOEXEC | libc::MFD_ALLOW_SEALING) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: `fd` was just returned by memfd_create and is owned by nobody else.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// `ftruncate(fd, len)`.
pub(crate) fn ftruncate(fd: BorrowedFd<'_>, len: usize) -> io::Result<()> {
    let len = libc::off_t::try_from(len).map_err(|_| io::Error::from_raw_os_error(libc::EFBIG))?;
    // SAFETY: plain syscall on a borrowed, open fd.
    if unsafe { libc::ftruncate(fd.as_raw_fd(), len) } < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// Seals the memfd so that its size can never change again: a peer that shrinks it would make
/// the other side's accesses fault with SIGBUS.
pub(crate) fn seal_size(fd: BorrowedFd<'_>) -> io::Result<()> {
    let seals = libc::F_SEAL_SHRINK | libc::F_SEAL_GROW | libc::F_SEAL_SEAL;
    // SAFETY: plain fcntl on a borrowed, open fd.
    if unsafe { libc::fcntl(fd.as_raw_fd(), libc::F_ADD_SEALS, seals) } < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// Size of the file behind `fd`.
pub(crate) fn file_size(fd: BorrowedFd<'_>) -> io::Result<u64> {
    let file = std::fs::File::from(fd.try_clone_to_owned()?);
    Ok(file.metadata()?.len())
}

/// Takes ownership of an inherited fd given by number.
///
/// Returns `None` unless `fd` is open. The caller must be the fd's only owner (it was inherited
/// across exec for this purpose).
pub(crate) fn adopt_fd(fd: RawFd) -> Option<OwnedFd> {
    // SAFETY: F_GETFD only queries the descriptor table.
    if fd < 0 || unsafe { libc::fcntl(fd, libc::F_GETFD) } < 0 {
        return None;
    }
    // SAFETY: the fd is open, and the environment contract says it was passed to this process
    // to be owned by the channel.
    Some(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// A `MAP_SHARED` read-write mapping, unmapped on drop.
#[derive(Debug)]
pub(crate) struct Mapping {
    ptr: NonNull<u8>,
    len: usize,
}

// SAFETY: the mapping is plain memory; all shared access goes through atomics or raw copies.
unsafe impl Send for Mapping {}

impl Mapping {
    /// Maps `len` bytes of `fd` from offset 0. With `dontfork`, the mapping is not inherited by
    /// children forked from this process.
    pub(crate) fn map_shared(fd: BorrowedFd<'_>, len: usize, dontfork: bool) -> io::Result<Self> {
        // SAFETY: a fresh mapping chosen by the kernel; it aliases no Rust object.
        let ptr = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_SHARED,
                fd.as_raw_fd(),
                0,
            )
        };
        if ptr == libc::MAP_FAILED {
            return Err(io::Error::last_os_error());
        }
        let ptr = NonNull::new(ptr.cast::<u8>())
            .ok_or_else(|| io::Error::from_raw_os_error(libc::EINVAL))?;
        let map = Self { ptr, len };
        if dontfork {
            // SAFETY: advice on the range we just mapped.
            if unsafe { libc::madvise(ptr.as_ptr().cast(), len, libc::MADV_DONTFORK) } < 0 {
                return Err(io::Error::last_os_error());
            }
        }
        Ok(map)
    }

    /// The control block at offset 0.
    ///
    /// Callers create mappings of at least [`TOTAL_LEN`] bytes (checked by `debug_assert`).
    pub(crate) fn control(&self) -> &Control {
        debug_assert!(self.len >= TOTAL_LEN);
        // SAFETY: channel mappings are TOTAL_LEN >= size_of::<Control>() bytes, page aligned
        // (so aligned for Control), and live as long as `self`. Control consists only of
        // atomics, for which every bit pattern the peer may write is valid.
        unsafe { &*self.ptr.as_ptr().cast::<Control>() }
    }

    pub(crate) fn as_ptr(&self) -> *mut u8 {
        self.ptr.as_ptr()
    }

    pub(crate) fn len(&self) -> usize {
        self.len
    }
}

impl Drop for Mapping {
    fn drop(&mut self) {
        // SAFETY: unmapping exactly the range mapped in `map_shared`; no references into it
        // outlive `self` (they all borrow from the owning channel).
        unsafe { libc::munmap(self.ptr.as_ptr().cast(), self.len) };
    }
}

/// Copies `len` bytes from shared memory at `src` into `out` (replacing its contents).
///
/// # Safety
///
/// `src..src+len` must lie inside a live mapping. The peer may write those bytes concurrently;
/// that only changes which bytes are copied, because they are reached through a raw pointer and
/// interpreted only after the copy.
pub(crate) unsafe fn copy_from_shared(src: *const u8, len: usize, out: &mut Vec<u8>) {
    out.clear();
    out.reserve(len);
    // SAFETY: the caller guarantees `src..src+len` is mapped; `out` has capacity for `len`
    // bytes and does not overlap the mapping (it is private heap memory).
    unsafe { std::ptr::copy_nonoverlapping(src, out.as_mut_ptr(), len) };
    // SAFETY: the first `len` bytes were initialised by the copy above.
    unsafe { out.set_len(len) };
}

/// Copies `bytes` into shared memory at `dst`.
///
/// # Safety
///
/// `dst..dst+bytes.len()` must lie inside a live mapping and not overlap `bytes`.
pub(crate) unsafe fn copy_to_shared(bytes: &[u8], dst: *mut u8) {
    // SAFETY: guaranteed by the caller.
    unsafe { std::ptr::copy_nonoverlapping(bytes.as_ptr(), dst, bytes.len()) };
}

/// `FUTEX_WAIT` on a word in a shared mapping (not `FUTEX_PRIVATE_FLAG`: the waker is another
/// process). Returns on wake, timeout, signal, or if the word no longer holds `expected`.
pub(crate) fn futex_wait(word: &AtomicU32, expected: u32, timeout: Option<Duration>) {
    let ts = timeout.map(|t| libc::timespec {
        tv_sec: libc::time_t::try_from(t.as_secs()).unwrap_or(libc::time_t::MAX),
        tv_nsec: libc::c_long::from(t.subsec_nanos()),
    });
    let ts_ptr = ts.as_ref().map_or(std::ptr::null(), std::ptr::from_ref);
    // SAFETY: `word` is a live, aligned u32; `ts_ptr` is null or points to a timespec on our
    // stack. The kernel only reads both.
    unsafe {
        libc::syscall(
            libc::SYS_futex,
            word.as_ptr(),
            libc::FUTEX_WAIT,
            expected,
            ts_ptr,
            std::ptr::null::<u32>(),
            0u32,
        )
    };
}

/// `FUTEX_WAKE` one waiter on a word in a shared mapping.
pub(crate) fn futex_wake(word: &AtomicU32) {
    // SAFETY: `word` is a live, aligned u32; FUTEX_WAKE does not access memory.
    unsafe {
        libc::syscall(
            libc::SYS_futex,
            word.as_ptr(),
            libc::FUTEX_WAKE,
            1,
            std::ptr::null::<u32>(),
            std::ptr::null::<u32>(),
            0u32,
        )
    };
}

/// Most fds one zygote message carries.
pub(crate) const MAX_FDS: usize = 8;

/// `socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC)`.
pub(crate) fn seqpacket_pair() -> io::Result<(OwnedFd, OwnedFd)> {
    let mut fds = [0 as RawFd; 2];
    // SAFETY: `fds` has room for the two descriptors the kernel writes.
    let r = unsafe {
        libc::socketpair(
            libc::AF_UNIX,
            libc::SOCK_SEQPACKET | libc::SOCK_CLOEXEC,
            0,
            fds.as_mut_ptr(),
        )
    };
    if r < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: both fds were just created and are owned by nobody else.
    let first = unsafe { OwnedFd::from_raw_fd(fds[0]) };
    // SAFETY: as above.
    let second = unsafe { OwnedFd::from_raw_fd(fds[1]) };
    Ok((first, second))
}

/// Control-message buffer for up to [`MAX_FDS`] descriptors, aligned for `cmsghdr`.
#[repr(C, align(8))]
struct CmsgBuf([u8; 64]);

/// `sendmsg` of one datagram with `fds` attached (`SCM_RIGHTS`).
// One block: building a control message is a chain of pointer steps over one local buffer.
#[allow(clippy::multiple_unsafe_ops_per_block)]
pub(crate) fn send_with_fds(sock: BorrowedFd<'_>, bytes: &[u8], fds: &[RawFd]) -> io::Result<()> {
    if fds.len() > MAX_FDS {
        return Err(io::Error::from_raw_os_error(libc::E2BIG));
    }
    let mut iov = libc::iovec {
        iov_base: bytes.as_ptr().cast_mut().cast(),
        iov_len: bytes.len(),
    };
    let mut cmsg = CmsgBuf([0; 64]);
    // SAFETY: zeroed msghdr is a valid "no name, no control" header; the pointers set below
    // point to live locals that outlive the sendmsg call; CMSG_* compute offsets inside `cmsg`,
    // which has room for MAX_FDS descriptors (checked above).
    unsafe {
        let mut msg: libc::msghdr = std::mem::zeroed();
        msg.msg_iov = &mut iov;
        msg.msg_iovlen = 1;
        if !fds.is_empty() {
            // At most MAX_FDS * 4 bytes (checked above).
            let data_len = u32::try_from(std::mem::size_of_val(fds)).unwrap_or(0);
            msg.msg_control = cmsg.0.as_mut_ptr().cast();
            msg.msg_controllen = libc::CMSG_SPACE(data_len) as usize;
            let header = libc::CMSG_FIRSTHDR(&msg);
            (*header).cmsg_level = libc::SOL_SOCKET;
            (*header).cmsg_type = libc::SCM_RIGHTS;
            (*header).cmsg_len = libc::CMSG_LEN(data_len) as usize;
            std::ptr::copy_nonoverlapping(
                fds.as_ptr().cast::<u8>(),
                libc::CMSG_DATA(header),
                data_len as usize,
            );
        }
        loop {
            let n = libc::sendmsg(sock.as_raw_fd(), &msg, libc::MSG_NOSIGNAL);
            if n >= 0 {
                return Ok(());
            }
            let e = io::Error::last_os_error();
            if e.kind() != io::ErrorKind::Interrupted {
                return Err(e);
            }
        }
    }
}

/// `recvmsg` of one datagram into `bytes`; descriptors that came with it are appended to
/// `fds` (close-on-exec). Returns the datagram's length (0: the peer closed), or `WouldBlock`
/// with `nonblocking` and nothing queued. A datagram longer than `bytes` or with more
/// descriptors than [`MAX_FDS`] is an `InvalidData` error (its descriptors are closed).
// One block: walking control messages is a chain of pointer steps over one local buffer.
#[allow(clippy::multiple_unsafe_ops_per_block, clippy::cast_sign_loss)]
pub(crate) fn recv_with_fds(
    sock: BorrowedFd<'_>,
    bytes: &mut [u8],
    fds: &mut Vec<OwnedFd>,
    nonblocking: bool,
) -> io::Result<usize> {
    let mut iov = libc::iovec {
        iov_base: bytes.as_mut_ptr().cast(),
        iov_len: bytes.len(),
    };
    let mut cmsg = CmsgBuf([0; 64]);
    let flags = libc::MSG_CMSG_CLOEXEC | if nonblocking { libc::MSG_DONTWAIT } else { 0 };
    let start = fds.len();
    // SAFETY: the msghdr points to live locals for the duration of the call; the control
    // messages walked afterwards lie inside `cmsg` (the kernel sets msg_controllen to what it
    // wrote, and CMSG_NXTHDR stops at its end); each SCM_RIGHTS descriptor is new to this
    // process and owned by nobody else.
    unsafe {
        let mut msg: libc::msghdr = std::mem::zeroed();
        msg.msg_iov = &mut iov;
        msg.msg_iovlen = 1;
        msg.msg_control = cmsg.0.as_mut_ptr().cast();
        msg.msg_controllen = cmsg.0.len();
        let n = loop {
            let n = libc::recvmsg(sock.as_raw_fd(), &mut msg, flags);
            if n >= 0 {
                break n as usize;
            }
            let e = io::Error::last_os_error();
            if e.kind() != io::ErrorKind::Interrupted {
                return Err(e);
            }
        };
        let mut header = libc::CMSG_FIRSTHDR(&msg);
        while !header.is_null() {
            if (*header).cmsg_level == libc::SOL_SOCKET && (*header).cmsg_type == libc::SCM_RIGHTS {
                let data = libc::CMSG_DATA(header);
                let len = (*header).cmsg_len - (data as usize - header as usize);
                for i in 0..len / std::mem::size_of::<RawFd>() {
                    let fd = std::ptr::read_unaligned(data.cast::<RawFd>().add(i));
                    fds.push(OwnedFd::from_raw_fd(fd));
                }
            }
            header = libc::CMSG_NXTHDR(&msg, header);
        }
        if msg.msg_flags & (libc::MSG_TRUNC | libc::MSG_CTRUNC) != 0 {
            fds.truncate(start);
            return Err(io::Error::from(io::ErrorKind::InvalidData));
        }
        Ok(n)
    }
}

/// Waits up to `timeout` for `fd` to become readable (or hung up).
pub(crate) fn wait_readable(fd: BorrowedFd<'_>, timeout: Duration) -> io::Result<bool> {
    let mut pfd = libc::pollfd {
        fd: fd.as_raw_fd(),
        events: libc::POLLIN,
        revents: 0,
    };
    let ms = i32::try_from(timeout.as_millis()).unwrap_or(i32::MAX);
    // SAFETY: one valid pollfd.
    let n = unsafe { libc::poll(&mut pfd, 1, ms) };
    if n < 0 {
        let e = io::Error::last_os_error();
        return if e.kind() == io::ErrorKind::Interrupted {
            Ok(false)
        } else {
            Err(e)
        };
    }
    Ok(n > 0)
}

/// Sets `O_NONBLOCK` on `fd`.
pub(crate) fn set_nonblocking(fd: BorrowedFd<'_>) -> io::Result<()> {
    // SAFETY: fcntl on a borrowed, open fd.
    let flags = unsafe { libc::fcntl(fd.as_raw_fd(), libc::F_GETFL) };
    if flags < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: as above.
    let set = unsafe { libc::fcntl(fd.as_raw_fd(), libc::F_SETFL, flags | libc::O_NONBLOCK) };
    if set < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}
