//! The pages a zygote's children write, copied into each child by its fork instead of on the
//! child's first write to each.
//!
//! A forked child shares the zygote's memory until it writes: each first write to a shared page
//! is a copy-on-write fault (≈3.5 µs each on the development machine, of which the copy is a
//! small part). A Python child takes about 425 of them before it has answered its first
//! invocation (CPython writes the reference count of every object it touches, its allocator's
//! pool headers and its caches), on much the same pages every time. The kernel copies a page
//! at fork, instead of sharing it, when the page is pinned (it may be under DMA): so the zygote
//! pins the pages its children write, and each of those costs its child a copy inside `clone`
//! (≈2 µs) instead of a fault.
//!
//! Which pages, the zygote learns from its first child. Before that fork it maps a small shared
//! report area, which only that child inherits (the zygote marks it `MADV_DONTFORK` right
//! after); the child, just before it answers its first invocation, lists the pages of its
//! private writable mappings that are its own by then (present, mapped only by it, anonymous:
//! `/proc/self/pagemap`) and writes them there. When the zygote next wakes and finds the
//! report, it keeps the page-aligned addresses that lie in its own private writable mappings
//! (never its stack), at most [`MAX_PAGES`], moves each into a 4 KiB page of its own (copied
//! out, dropped with `MADV_DONTNEED`, written back: pinning one page of a transparent huge page
//! would pin, and so copy at every fork, all 2 MiB of it), and registers them as buffers on the
//! ring hearth left at fd 7, which pins them. That ring can only register buffers, once (see
//! `hearth_sandbox::EnvSpec::zygote`), and the zygote's seccomp policy allows no other io_uring
//! call. Function code that ran in the zygote before (its Init) could have registered buffers
//! there first: then this registration is refused and nothing is pinned for the children, and
//! what that code pinned is its own memory, counted in its cgroup (see SECURITY.md).
//!
//! The report comes from a process that ran function code, and is checked as such; the worst
//! a false one does is slow the same function's own forks (each pinned page is copied at every
//! fork), within [`MAX_PAGES`]. Where there is no ring (io_uring unavailable) or the child
//! cannot read its page map, nothing is pinned and children copy on write as before. A first
//! child that exits without reporting passes the task to the next child forked.
#![allow(unsafe_code)]
// Sequences of raw syscalls on the process's own memory: each block's SAFETY comment covers
// the calls in it.
#![allow(clippy::multiple_unsafe_ops_per_block)]

use std::collections::HashSet;
use std::os::fd::RawFd;
use std::sync::atomic::{AtomicPtr, AtomicU64, Ordering};

use nix::libc;

/// Where hearth leaves the ring that can register buffers.
const RING_FD: RawFd = 7;
/// Pages pinned at most: 8 MiB copied by each fork, at worst.
pub(crate) const MAX_PAGES: usize = 2048;
const PAGE: usize = 4096;
/// The report area: a ready flag, a count, then up to [`MAX_PAGES`] addresses.
const REPORT_BYTES: usize = (8 * (MAX_PAGES + 2)).next_multiple_of(PAGE);

/// In the child that is to report: its report area (null in every other process, and once it
/// has reported).
static REPORT_TO: AtomicPtr<u64> = AtomicPtr::new(std::ptr::null_mut());

/// The report area's address (kept as a type of its own so that the zygote stays `Send`).
#[derive(Clone, Copy)]
struct Area(*mut u64);
// SAFETY: the zygote uses its report area from its one thread only.
unsafe impl Send for Area {}

/// The zygote's side: learning, then done.
pub(crate) struct HotPages {
    /// The report area, while one is mapped.
    area: Option<Area>,
    /// The child that is to report, once forked.
    reporter: Option<i32>,
    /// Pinned (or given up): nothing more to do.
    done: bool,
}

impl HotPages {
    pub(crate) fn new() -> Self {
        // Without the ring there is nothing to pin with (fd 7 stays open for the zygote's
        // life: closing it would unpin the pages).
        // SAFETY: fcntl on a descriptor number only inspects it.
        let ring = unsafe { libc::fcntl(RING_FD, libc::F_GETFD) } >= 0;
        Self {
            area: None,
            reporter: None,
            done: !ring,
        }
    }

    /// Right before a fork: makes sure the next child reports, unless one that is alive will
    /// (`alive`: the children not yet reaped).
    pub(crate) fn before_fork(&mut self, alive: &HashSet<i32>) {
        if self.done || self.reporter.is_some_and(|pid| alive.contains(&pid)) {
            return;
        }
        let area = match self.area {
            Some(area) => {
                // The last reporter exited without reporting: the next child inherits the area.
                // SAFETY: advice on our own mapping.
                unsafe { libc::madvise(area.0.cast(), REPORT_BYTES, libc::MADV_DOFORK) };
                area
            }
            None => {
                // SAFETY: a new shared anonymous mapping.
                let p = unsafe {
                    libc::mmap(
                        std::ptr::null_mut(),
                        REPORT_BYTES,
                        libc::PROT_READ | libc::PROT_WRITE,
                        libc::MAP_SHARED | libc::MAP_ANONYMOUS,
                        -1,
                        0,
                    )
                };
                if p == libc::MAP_FAILED {
                    self.done = true;
                    return;
                }
                Area(p.cast())
            }
        };
        self.area = Some(area);
        self.reporter = None;
        REPORT_TO.store(area.0, Ordering::Relaxed);
    }

    /// In the zygote right after the fork that made `pid`: no later child inherits the area.
    pub(crate) fn forked(&mut self, pid: i32) {
        if REPORT_TO
            .swap(std::ptr::null_mut(), Ordering::Relaxed)
            .is_null()
        {
            return;
        }
        self.reporter = Some(pid);
        if let Some(area) = self.area {
            // SAFETY: advice on our own mapping.
            unsafe { libc::madvise(area.0.cast(), REPORT_BYTES, libc::MADV_DONTFORK) };
        }
    }

    /// In the zygote when it wakes: pins what a report lists, once one has come.
    pub(crate) fn poll(&mut self) {
        let Some(area) = self.area.filter(|_| !self.done) else {
            return;
        };
        // SAFETY: word 0 of the area, which is REPORT_BYTES long.
        let ready = unsafe { &*(area.0 as *const AtomicU64) }.load(Ordering::Acquire);
        if ready == 0 {
            return;
        }
        self.done = true;
        let ranges = private_writable(&read_maps(), area.0 as usize);
        // SAFETY: word 1 of the area.
        let count = unsafe { area.0.add(1).read_volatile() };
        let count = usize::try_from(count).unwrap_or(MAX_PAGES).min(MAX_PAGES);
        // Read once each, from the area (the reporter may still be writing to it).
        // SAFETY: words 2.. of the area, count capped to fit.
        let reported = (0..count).map(|i| unsafe { area.0.add(2 + i).read_volatile() });
        let pages = accepted(reported, &ranges);
        // SAFETY: our own mapping; no child holds it any more but the reporter, which only
        // loses its view of the area.
        unsafe { libc::munmap(area.0.cast(), REPORT_BYTES) };
        self.area = None;
        pin(&pages);
    }
}

/// The reported addresses that name a page of one of `ranges`, in order, each once.
fn accepted(reported: impl Iterator<Item = u64>, ranges: &[(usize, usize)]) -> Vec<usize> {
    let mut pages: Vec<usize> = reported
        .filter_map(|a| usize::try_from(a).ok())
        .filter(|&a| a % PAGE == 0)
        .filter(|&a| {
            ranges
                .iter()
                .any(|&(start, end)| start <= a && a.checked_add(PAGE).is_some_and(|e| e <= end))
        })
        .take(MAX_PAGES)
        .collect();
    pages.sort_unstable();
    pages.dedup();
    pages
}

/// Moves each page into a 4 KiB page of its own and pins them all on the ring at fd 7.
fn pin(pages: &[usize]) {
    let mut copy = [0u8; PAGE];
    let mut runs: Vec<libc::iovec> = Vec::new();
    for &page in pages {
        // SAFETY: `page` is a page of one of this process's private writable mappings other
        // than its stack (see `accepted`), and this thread is the only one: nothing reads it
        // between the drop and the write back but these copies (the syscall is raw, so not even
        // errno is written).
        unsafe {
            std::ptr::copy_nonoverlapping(page as *const u8, copy.as_mut_ptr(), PAGE);
            libc::syscall(libc::SYS_madvise, page, PAGE, libc::MADV_DONTNEED);
            std::ptr::copy_nonoverlapping(copy.as_ptr(), page as *mut u8, PAGE);
        }
        match runs.last_mut() {
            Some(run) if run.iov_base as usize + run.iov_len == page => run.iov_len += PAGE,
            _ => runs.push(libc::iovec {
                iov_base: page as *mut libc::c_void,
                iov_len: PAGE,
            }),
        }
    }
    if runs.is_empty() {
        return;
    }
    // SAFETY: IORING_REGISTER_BUFFERS (0) on fd 7 with `runs.len()` iovecs; a failure (not a
    // ring there after all, buffers registered already) leaves the pages as they were.
    unsafe {
        libc::syscall(
            libc::SYS_io_uring_register,
            RING_FD,
            0,
            runs.as_ptr(),
            runs.len(),
        )
    };
}

fn read_maps() -> String {
    std::fs::read_to_string("/proc/self/maps").unwrap_or_default()
}

/// The private writable mappings listed in `maps` (`/proc/self/maps`), but the stack and the
/// kernel's own (`[vvar]` and such) and the one holding `exclude`.
fn private_writable(maps: &str, exclude: usize) -> Vec<(usize, usize)> {
    let mut ranges = Vec::new();
    for line in maps.lines() {
        let mut fields = line.split_whitespace();
        let (Some(range), Some(perms)) = (fields.next(), fields.next()) else {
            continue;
        };
        let path = fields.nth(3).unwrap_or("");
        if !perms.starts_with("rw") || !perms.ends_with('p') {
            continue;
        }
        if path.starts_with('[') && path != "[heap]" {
            continue;
        }
        let Some((start, end)) = range.split_once('-') else {
            continue;
        };
        let (Ok(start), Ok(end)) = (
            usize::from_str_radix(start, 16),
            usize::from_str_radix(end, 16),
        ) else {
            continue;
        };
        if !(start..end).contains(&exclude) {
            ranges.push((start, end));
        }
    }
    ranges
}

/// In a child, before it answers its first invocation: if it is the one to report, lists the
/// pages it has of its own in its zygote's report area (see the module docs).
pub(crate) fn report() {
    // (A load first: this is on every invocation's path in the library's C ABI.)
    if REPORT_TO.load(Ordering::Relaxed).is_null() {
        return;
    }
    let area = REPORT_TO.swap(std::ptr::null_mut(), Ordering::Relaxed);
    if area.is_null() {
        return;
    }
    let ranges = private_writable(&read_maps(), area as usize);
    let mut count = 0;
    if let Ok(pagemap) = std::fs::File::open("/proc/self/pagemap") {
        use std::os::unix::fs::FileExt;
        let mut entries = vec![0u8; 8 * 512];
        'ranges: for (start, end) in ranges {
            let mut addr = start;
            while addr < end {
                let n = ((end - addr) / PAGE).min(512);
                let offset = (addr / PAGE * 8) as u64;
                if pagemap
                    .read_exact_at(&mut entries[..n * 8], offset)
                    .is_err()
                {
                    break;
                }
                for (i, entry) in entries[..n * 8].chunks_exact(8).enumerate() {
                    let bits = u64::from_ne_bytes(entry.try_into().unwrap_or([0; 8]));
                    // Present (63), mapped by this process only (56), not a file page (61).
                    if bits >> 63 & 1 == 1 && bits >> 56 & 1 == 1 && bits >> 61 & 1 == 0 {
                        if count == MAX_PAGES {
                            break 'ranges;
                        }
                        // SAFETY: word 2 + count < 2 + MAX_PAGES of the area.
                        unsafe { area.add(2 + count).write_volatile((addr + i * PAGE) as u64) };
                        count += 1;
                    }
                }
                addr += n * PAGE;
            }
        }
    }
    // SAFETY: words 0 and 1 of the area.
    unsafe {
        area.add(1).write_volatile(count as u64);
        (*(area as *const AtomicU64)).store(1, Ordering::Release);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MAPS: &str = "\
00400000-00401000 r--p 00000000 08:01 1 /usr/bin/python3.11
00946000-009b0000 rw-p 00546000 08:01 1 /usr/bin/python3.11
016d8000-01800000 rw-p 00000000 00:00 0 [heap]
7f0000000000-7f0000100000 rw-p 00000000 00:00 0
7f0000100000-7f0000105000 rw-s 00000000 00:01 9 /dev/zero (deleted)
7f0000200000-7f0000201000 rw-p 00000000 00:00 0
7ffe00000000-7ffe00021000 rw-p 00000000 00:00 0 [stack]
7ffe00100000-7ffe00102000 r--p 00000000 00:00 0 [vvar]
";

    #[test]
    fn only_private_writable_mappings_count_and_never_the_stack_or_the_report_area() {
        let ranges = private_writable(MAPS, 0x7f00_0020_0000);
        assert_eq!(
            ranges,
            [
                (0x0094_6000, 0x009b_0000),
                (0x016d_8000, 0x0180_0000),
                (0x7f00_0000_0000, 0x7f00_0010_0000),
            ]
        );
    }

    #[test]
    fn a_report_is_cut_to_pages_of_those_mappings_each_once() {
        let ranges = private_writable(MAPS, 0x7f00_0020_0000);
        let reported = [
            0x0094_6000,      // the interpreter's data: kept
            0x0094_6008,      // not page-aligned
            0x0040_0000,      // read-only
            0x7ffe_0000_0000, // the stack
            0x7f00_0010_0000, // a shared mapping
            0x7f00_0020_0000, // the report area
            0x016d_8000,      // the heap: kept
            0x0094_6000,      // again
            0x01ff_f000,      // unmapped
            0x7f00_000f_f000, // the last page of an anonymous mapping: kept
            !0xfff,           // past the end of everything
        ];
        assert_eq!(
            accepted(reported.into_iter(), &ranges),
            [0x0094_6000, 0x016d_8000, 0x7f00_000f_f000]
        );
    }

    #[test]
    fn a_report_never_pins_more_than_the_cap() {
        let ranges = [(0, usize::MAX & !0xfff)];
        let reported = (1..=(MAX_PAGES as u64 + 100)).map(|i| i * PAGE as u64);
        assert_eq!(accepted(reported, &ranges).len(), MAX_PAGES);
    }
}
