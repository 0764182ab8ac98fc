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
//! (never the stack it runs on), at most [`MAX_PAGES`], moves each into a 4 KiB page of its
//! own (copied out, dropped with `MADV_DONTNEED`, written back, with every signal blocked:
//! pinning one page of a transparent huge page would pin, and so copy at every fork, all 2 MiB
//! of it), and registers them as buffers on the ring hearth left at fd 7, which pins them. That
//! ring can only register and unregister buffers (see `hearth_sandbox::EnvSpec::zygote`), and
//! the zygote's seccomp policy allows no other io_uring call. Function code that runs in the
//! zygote (Init, fork and signal handlers) could register buffers there first: then this
//! registration is refused and nothing is pinned for the children, and what that code pinned is
//! its own memory, counted in its cgroup (see SECURITY.md).
//!
//! The kernel charges the copies a fork makes of pinned pages to the zygote's memory cgroup
//! (the child joins its own after the fork), and they stay there while the child lives. So the
//! zygote keeps its pages pinned only while its live children and the next one would hold at
//! most [`PINNED_COPIES_BUDGET`] of such copies (hearth gives the zygote's cgroup that much more
//! than the function's memory), unpins them above that, and pins them again once its live
//! children would hold at most half of it.
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

use hearth_ipc::zygote::PINNED_COPIES_BUDGET;
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

/// The zygote's side: learning, then keeping the pages pinned while the budget allows.
pub(crate) struct HotPages {
    /// The report area, while one is mapped.
    area: Option<Area>,
    /// The child that is to report, once forked.
    reporter: Option<i32>,
    /// Learned (or given up): nothing more to learn.
    done: bool,
    /// The pages learned, in runs of adjacent pages of one mapping each.
    runs: Vec<libc::iovec>,
    /// Whether they are registered on the ring now.
    pinned: bool,
}

// SAFETY: the iovecs point into the zygote's own memory; only its one thread uses them.
unsafe impl Send for HotPages {}

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
            runs: Vec::new(),
            pinned: false,
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

    /// In the zygote when it wakes, before it forks again: takes in a report once one has
    /// come, and pins or unpins the pages learned as the budget says, `live` being the
    /// children it has not reaped.
    pub(crate) fn poll(&mut self, live: usize) {
        self.learn();
        if self.runs.is_empty() {
            return;
        }
        let bytes: usize = self.runs.iter().map(|r| r.iov_len).sum();
        let held = (live + 1).saturating_mul(bytes) as u64;
        if self.pinned && held > PINNED_COPIES_BUDGET {
            // SAFETY: IORING_UNREGISTER_BUFFERS (1) on fd 7, no argument.
            let r = unsafe {
                libc::syscall(
                    libc::SYS_io_uring_register,
                    RING_FD,
                    1,
                    std::ptr::null::<u8>(),
                    0,
                )
            };
            self.pinned = r != 0;
        } else if !self.pinned && held <= PINNED_COPIES_BUDGET / 2 {
            self.pinned = pin(&self.runs);
        }
    }

    /// Takes in the report, once one has come.
    fn learn(&mut self) {
        let Some(area) = self.area.filter(|_| !self.done) else {
            return;
        };
        // SAFETY: word 0 of the area, which is REPORT_BYTES long.
        let ready = unsafe { &*(area.0 as *const AtomicU64) }.load(Ordering::Acquire);
        if ready == 0 {
            return;
        }
        self.done = true;
        // Never the report area, nor the stack this runs on (a thread's, for a zygote that is
        // not its process's first thread, is not named `[stack]`).
        let here = 0u8;
        let exclude = [area.0 as usize, std::ptr::addr_of!(here) as usize];
        let ranges = private_writable(&crate::maps::read(), &exclude);
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
        self.runs = runs(&pages, &ranges);
    }
}

/// `pages` (sorted, each in one of `ranges`) as runs of adjacent pages, none across two
/// mappings (the kernel refuses a buffer that spans mappings of different files).
fn runs(pages: &[usize], ranges: &[(usize, usize)]) -> Vec<libc::iovec> {
    let mut runs: Vec<libc::iovec> = Vec::new();
    let mapping = |page: usize| ranges.iter().position(|&(s, e)| s <= page && page < e);
    let mut last = None;
    for &page in pages {
        let here = mapping(page);
        match runs.last_mut() {
            Some(run) if here == last && run.iov_base as usize + run.iov_len == page => {
                run.iov_len += PAGE;
            }
            _ => runs.push(libc::iovec {
                iov_base: page as *mut libc::c_void,
                iov_len: PAGE,
            }),
        }
        last = here;
    }
    runs
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

/// Moves each page of `runs` into a 4 KiB page of its own and registers them all on the ring
/// at fd 7; returns whether they are pinned.
fn pin(runs: &[libc::iovec]) -> bool {
    // No handler may look at a page while it is dropped.
    // SAFETY: a zeroed sigset_t is a valid (empty) set.
    let mut old: libc::sigset_t = unsafe { std::mem::zeroed() };
    // SAFETY: a full set is blocked; the previous mask is saved and restored after the loop.
    unsafe {
        let mut all: libc::sigset_t = std::mem::zeroed();
        libc::sigfillset(&mut all);
        libc::pthread_sigmask(libc::SIG_BLOCK, &all, &mut old);
    }
    let mut copy = [0u64; PAGE / 8];
    for run in runs {
        for page in (run.iov_base as usize..run.iov_base as usize + run.iov_len).step_by(PAGE) {
            let words = page as *mut u64;
            // SAFETY: `page` is a page of one of this process's private writable mappings
            // other than the stack this runs on (see `accepted`), and this thread, with every
            // signal blocked, is the only one. Between the drop and the write back nothing
            // reads the page: the copies are word by word here (no call into libc, whose own
            // data may be on it), and the raw syscall touches errno only when it fails, when
            // nothing was dropped.
            unsafe {
                for (i, word) in copy.iter_mut().enumerate() {
                    *word = words.add(i).read_volatile();
                }
                libc::syscall(libc::SYS_madvise, page, PAGE, libc::MADV_DONTNEED);
                for (i, word) in copy.iter().enumerate() {
                    words.add(i).write_volatile(*word);
                }
            }
        }
    }
    // SAFETY: restores the mask saved above.
    unsafe { libc::pthread_sigmask(libc::SIG_SETMASK, &old, std::ptr::null_mut()) };
    let register = |runs: &[libc::iovec]| {
        // SAFETY: IORING_REGISTER_BUFFERS (0) on fd 7 with `runs.len()` iovecs of our memory; a
        // failure (not a ring there, buffers registered by someone else) leaves the pages as
        // they were.
        !runs.is_empty()
            && unsafe {
                libc::syscall(
                    libc::SYS_io_uring_register,
                    RING_FD,
                    0,
                    runs.as_ptr(),
                    runs.len(),
                )
            } == 0
    };
    if register(runs) {
        return true;
    }
    // Kernels before 6.5 refuse buffers in file mappings (a program's written data): the
    // anonymous pages alone, then.
    let maps = crate::maps::read();
    let anonymous = anonymous_ranges(&maps);
    let kept: Vec<libc::iovec> = runs
        .iter()
        .filter(|r| {
            let start = r.iov_base as usize;
            anonymous.iter().any(|&(s, e)| s <= start && start < e)
        })
        .copied()
        .collect();
    kept.len() < runs.len() && register(&kept)
}

/// The anonymous mappings listed in `maps` (no file, or the heap).
fn anonymous_ranges(maps: &str) -> Vec<(usize, usize)> {
    crate::maps::parse(maps)
        .filter(crate::maps::Mapping::anonymous)
        .map(|m| (m.start, m.end))
        .collect()
}

/// The private writable mappings listed in `maps` (`/proc/self/maps`), but the stack and the
/// kernel's own (`[vvar]` and such) and those holding an address in `exclude`.
fn private_writable(maps: &str, exclude: &[usize]) -> Vec<(usize, usize)> {
    crate::maps::parse(maps)
        .filter(|m| m.private_writable())
        .filter(|m| !m.path.starts_with('[') || m.path == "[heap]")
        .filter(|m| !exclude.iter().any(|a| (m.start..m.end).contains(a)))
        .map(|m| (m.start, m.end))
        .collect()
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
    let ranges = private_writable(&crate::maps::read(), &[area as usize]);
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
        let ranges = private_writable(MAPS, &[0x7f00_0020_0000]);
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
        let ranges = private_writable(MAPS, &[0x7f00_0020_0000]);
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
    fn runs_join_adjacent_pages_of_one_mapping_only() {
        // The interpreter's data ends at 0x9b0000 where (here) the heap would begin.
        let ranges = [(0x0094_6000, 0x009b_0000), (0x009b_0000, 0x00a0_0000)];
        let pages = [
            0x0094_6000,
            0x0094_7000,
            0x009a_f000,
            0x009b_0000,
            0x009b_1000,
        ];
        let got: Vec<(usize, usize)> = runs(&pages, &ranges)
            .iter()
            .map(|r| (r.iov_base as usize, r.iov_len))
            .collect();
        assert_eq!(
            got,
            [
                (0x0094_6000, 0x2000),
                (0x009a_f000, 0x1000),
                (0x009b_0000, 0x2000)
            ]
        );
    }

    #[test]
    fn a_report_never_pins_more_than_the_cap() {
        let ranges = [(0, usize::MAX & !0xfff)];
        let reported = (1..=(MAX_PAGES as u64 + 100)).map(|i| i * PAGE as u64);
        assert_eq!(accepted(reported, &ranges).len(), MAX_PAGES);
    }
}
