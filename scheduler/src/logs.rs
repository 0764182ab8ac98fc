//! Function logs: each environment's stdout and stderr captured without a syscall per
//! invocation, framed per invocation with Lambda's `START`/`END`/`REPORT` lines, and stored per
//! function under the data directory with size-based rotation.
//!
//! ```text
//! environment fd 1, 2 ──write(2)──▶ memfd (shared page cache) ◀──scan── shard, at each answer
//!                                                                      │ START … END, REPORT
//!                                            per-function buffers ◀────┘
//!                                                 │ every 100 ms (maintenance)
//!                                                 ▼
//!                              log thread ──▶ DATA/logs/<function>/current.log (+ .1 … .N)
//! ```
//!
//! **Capture.** An environment's stdout and stderr are one memfd (one open file description, so
//! the environment's writes advance a shared offset). Writing to a file never blocks the
//! function. The shard maps the first [`CAPTURE_LEN`] bytes and, when an invocation is
//! answered, reads the new bytes up to the first NUL (unwritten file bytes read as zeros): the
//! environment's `write` finished before it published its answer, so everything printed during
//! the invocation is there, and reading costs no syscall. Once the environment is idle and has
//! written more than [`RESET_AT`], or at maintenance if it wrote past the mapped window, the
//! shard punches the file back to zeros and rewinds the shared offset (three syscalls). Output
//! beyond the window between two resets is dropped and counted (`capped`). Bytes the function
//! writes between its answer and the reset can be lost; a NUL byte written by the function ends
//! what is read until the next reset. Pages the function fills are charged to its own cgroup.
//!
//! **Attribution.** Output read at an answer belongs to that invocation; output an idle
//! environment writes (background threads) shows up in the next invocation's log, as in Lambda.

use std::collections::HashMap;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU8, Ordering};
use std::time::Duration;

use crossbeam_channel::{Receiver, Sender, TrySendError};

use crate::config::LogConfig;

/// Bytes of an environment's output the shard maps and reads.
pub(crate) const CAPTURE_LEN: usize = 1 << 20;
/// Output after which an idle environment's capture is rewound.
pub(crate) const RESET_AT: usize = 256 << 10;
/// Output kept per invocation in its log record; the rest is counted.
pub(crate) const MAX_RECORD_OUTPUT: usize = 256 << 10;
/// `LogType=Tail` returns the last 4 KB of the invocation's log, as Lambda does.
pub const TAIL_BYTES: usize = 4096;
/// A shard hands its buffered records to the log thread at least this often.
pub(crate) const FLUSH_BYTES: usize = 1 << 20;
/// Bytes queued for the log thread at most (all shards together); past it, records are dropped
/// and counted rather than held in the daemon's memory (a stalled disk).
pub(crate) const MAX_QUEUED_BYTES: usize = 64 << 20;

/// One environment's captured stdout and stderr.
#[derive(Debug)]
pub(crate) struct Capture {
    fd: OwnedFd,
    map: *const AtomicU8,
    /// Bytes of the window already read.
    read: usize,
    /// Bytes dropped since the last time they were reported.
    dropped: u64,
}

// SAFETY: the mapping is owned by the capture and only read through atomics.
unsafe impl Send for Capture {}

impl Capture {
    /// A new capture: a memfd of [`CAPTURE_LEN`] zero bytes, mapped shared and read-only.
    pub(crate) fn new() -> io::Result<Self> {
        // SAFETY: a NUL-terminated name and flags; the kernel returns a new fd or -1.
        let raw = unsafe {
            libc::memfd_create(
                c"hearth-output".as_ptr(),
                libc::MFD_CLOEXEC | libc::MFD_ALLOW_SEALING,
            )
        };
        if raw < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: memfd_create returned a new fd that nothing else owns.
        let fd = unsafe { OwnedFd::from_raw_fd(raw) };
        let len = i64::try_from(CAPTURE_LEN).unwrap_or(i64::MAX);
        // SAFETY: plain syscall on our fd.
        if unsafe { libc::ftruncate(fd.as_raw_fd(), len) } != 0 {
            return Err(io::Error::last_os_error());
        }
        // The environment holds the file read-write: it must never shrink below the mapping,
        // or reading the mapping would fault (SIGBUS) in the daemon. Growing stays allowed
        // (its writes extend it); what lies past the window is punched away, never truncated.
        let seals = libc::F_SEAL_SHRINK | libc::F_SEAL_SEAL;
        // SAFETY: plain fcntl on our fd.
        if unsafe { libc::fcntl(fd.as_raw_fd(), libc::F_ADD_SEALS, seals) } != 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: a shared read-only mapping of CAPTURE_LEN bytes of our memfd.
        let map = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                CAPTURE_LEN,
                libc::PROT_READ,
                libc::MAP_SHARED,
                fd.as_raw_fd(),
                0,
            )
        };
        if map == libc::MAP_FAILED {
            return Err(io::Error::last_os_error());
        }
        Ok(Self {
            fd,
            map: map.cast::<AtomicU8>().cast_const(),
            read: 0,
            dropped: 0,
        })
    }

    /// The fd to give the environment as stdout and stderr.
    pub(crate) fn fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }

    fn byte(&self, at: usize) -> u8 {
        debug_assert!(at < CAPTURE_LEN);
        // SAFETY: `at < CAPTURE_LEN`, inside the mapping, which lives as long as `self`; the
        // environment writes these bytes concurrently, so they are read as atomics.
        let ptr = self.map.wrapping_add(at);
        // SAFETY: as above: `ptr` points into the live mapping.
        let byte = unsafe { &*ptr };
        byte.load(Ordering::Relaxed)
    }

    /// Appends the output written since the last call to `out`, keeping `out` at most `cap`
    /// bytes long (the rest is counted as dropped). Returns how many bytes were new.
    pub(crate) fn drain(&mut self, out: &mut Vec<u8>, cap: usize) -> usize {
        let start = self.read;
        while self.read < CAPTURE_LEN {
            let b = self.byte(self.read);
            if b == 0 {
                break;
            }
            if out.len() < cap {
                out.push(b);
            } else {
                self.dropped += 1;
            }
            self.read += 1;
        }
        self.read - start
    }

    /// Bytes dropped since the last call (and forgets them).
    pub(crate) fn take_dropped(&mut self) -> u64 {
        std::mem::take(&mut self.dropped)
    }

    /// Whether an idle environment's capture should be rewound now.
    pub(crate) fn wants_reset(&self) -> bool {
        self.read >= RESET_AT
    }

    /// Where the environment's next write goes (one `lseek`).
    fn written(&self) -> usize {
        // SAFETY: plain syscall on our own fd.
        let at = unsafe { libc::lseek(self.fd.as_raw_fd(), 0, libc::SEEK_CUR) };
        usize::try_from(at).unwrap_or(0)
    }

    /// Whether the environment wrote past the window (one `lseek`).
    pub(crate) fn overflowed(&self) -> bool {
        self.written() > CAPTURE_LEN
    }

    /// Rewinds the capture: punches the file back to zeros (freeing its pages; the file never
    /// shrinks, see `new`) and moves the shared offset to 0. Output written past what was read
    /// is counted as dropped. With `only_if_full`, does nothing unless the environment wrote
    /// past the window.
    pub(crate) fn reset(&mut self, only_if_full: bool) {
        let written = self.written();
        if only_if_full && written <= CAPTURE_LEN {
            return;
        }
        let fd = self.fd.as_raw_fd();
        let len = i64::try_from(written.max(CAPTURE_LEN)).unwrap_or(i64::MAX);
        let punch = libc::FALLOC_FL_PUNCH_HOLE | libc::FALLOC_FL_KEEP_SIZE;
        // SAFETY: plain syscalls on our own fd (errors leave the capture as it was).
        unsafe { libc::fallocate(fd, punch, 0, len) };
        // SAFETY: as above.
        unsafe { libc::lseek(fd, 0, libc::SEEK_SET) };
        self.dropped += written.saturating_sub(self.read) as u64;
        self.read = 0;
    }
}

impl Drop for Capture {
    fn drop(&mut self) {
        // SAFETY: the mapping was created with this length in `new` and is not used after.
        unsafe { libc::munmap(self.map.cast_mut().cast(), CAPTURE_LEN) };
    }
}

/// What the `REPORT` line says about one invocation.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Report<'a> {
    pub request_id: &'a str,
    pub version: &'a str,
    pub duration: Duration,
    pub init: Option<Duration>,
    pub memory_mb: u32,
    pub max_memory_mb: u64,
    pub start: &'static str,
    pub dropped: u64,
}

/// Frames `output` as Lambda does into `record` (cleared first).
pub(crate) fn frame(record: &mut Vec<u8>, output: &[u8], report: &Report<'_>) {
    record.clear();
    let id = report.request_id;
    let _ = writeln!(record, "START RequestId: {id} Version: {}", report.version);
    record.extend_from_slice(output);
    if !output.is_empty() && !output.ends_with(b"\n") {
        record.push(b'\n');
    }
    if report.dropped > 0 {
        let _ = writeln!(
            record,
            "[hearth] {} bytes of output were dropped (over the log capture limit)",
            report.dropped
        );
    }
    let ms = report.duration.as_secs_f64() * 1000.0;
    let billed = report.duration.as_millis().max(1);
    let _ = write!(
        record,
        "END RequestId: {id}\nREPORT RequestId: {id}\tDuration: {ms:.2} ms\tBilled Duration: {billed} ms\tMemory Size: {} MB\tMax Memory Used: {} MB\t",
        report.memory_mb, report.max_memory_mb
    );
    if let Some(init) = report.init {
        let _ = write!(
            record,
            "Init Duration: {:.2} ms\t",
            init.as_secs_f64() * 1000.0
        );
    }
    let _ = writeln!(record, "Start: {}\t", report.start);
}

/// The last [`TAIL_BYTES`] of a record.
pub(crate) fn tail(record: &[u8]) -> Vec<u8> {
    record[record.len().saturating_sub(TAIL_BYTES)..].to_vec()
}

/// Records of one function, handed from a shard to the log thread.
#[derive(Debug)]
pub(crate) struct Batch {
    pub function: String,
    pub bytes: Vec<u8>,
}

/// The log thread's queue: batches and the bytes they hold.
#[derive(Debug, Clone)]
pub(crate) struct LogQueue {
    sender: Sender<Batch>,
    queued: std::sync::Arc<std::sync::atomic::AtomicUsize>,
}

/// A shard's side of the log thread.
#[derive(Debug)]
pub(crate) struct ShardLogs {
    sender: Option<LogQueue>,
    pending: HashMap<String, Vec<u8>>,
    buffered: usize,
    /// Batches dropped because the log thread fell behind.
    pub dropped_batches: u64,
}

impl ShardLogs {
    pub(crate) fn new(sender: Option<LogQueue>) -> Self {
        Self {
            sender,
            pending: HashMap::new(),
            buffered: 0,
            dropped_batches: 0,
        }
    }

    /// Whether records are stored at all.
    pub(crate) fn enabled(&self) -> bool {
        self.sender.is_some()
    }

    /// Buffers a record of `function`.
    pub(crate) fn push(&mut self, function: &str, record: &[u8]) {
        if self.sender.is_none() {
            return;
        }
        match self.pending.get_mut(function) {
            Some(buf) => buf.extend_from_slice(record),
            None => {
                self.pending.insert(function.to_owned(), record.to_vec());
            }
        }
        self.buffered += record.len();
        if self.buffered >= FLUSH_BYTES {
            self.flush();
        }
    }

    /// Hands everything buffered to the log thread (never blocks: a full queue drops).
    pub(crate) fn flush(&mut self) {
        let Self {
            sender,
            pending,
            dropped_batches,
            ..
        } = self;
        let Some(queue) = sender else { return };
        pending.retain(|function, bytes| {
            if bytes.is_empty() {
                // Not heard from since the last flush: forgotten.
                return false;
            }
            let len = bytes.len();
            let batch = Batch {
                function: function.clone(),
                bytes: std::mem::take(bytes),
            };
            let queued = queue.queued.fetch_add(len, Ordering::Relaxed);
            let sent = queued + len <= MAX_QUEUED_BYTES
                && !matches!(
                    queue.sender.try_send(batch),
                    Err(TrySendError::Full(_) | TrySendError::Disconnected(_))
                );
            if !sent {
                queue.queued.fetch_sub(len, Ordering::Relaxed);
                *dropped_batches += 1;
            }
            true
        });
        self.buffered = 0;
    }
}

/// The log thread: appends batches to each function's file and rotates by size.
pub(crate) fn spawn_writer(
    config: LogConfig,
) -> io::Result<(LogQueue, std::thread::JoinHandle<()>)> {
    fs::create_dir_all(&config.dir)?;
    let (sender, receiver) = crossbeam_channel::bounded::<Batch>(4096);
    let queued = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let counter = queued.clone();
    let handle = std::thread::Builder::new()
        .name("hearth-logs".into())
        .spawn(move || write_loop(&config, &receiver, &counter))?;
    Ok((LogQueue { sender, queued }, handle))
}

fn write_loop(
    config: &LogConfig,
    batches: &Receiver<Batch>,
    queued: &std::sync::atomic::AtomicUsize,
) {
    let mut files: HashMap<String, (File, u64)> = HashMap::new();
    while let Ok(batch) = batches.recv() {
        if let Err(e) = append(config, &mut files, &batch) {
            tracing::warn!(function = %batch.function, error = %e, "could not write function logs");
            files.remove(&batch.function);
        }
        queued.fetch_sub(batch.bytes.len(), Ordering::Relaxed);
    }
}

/// The directory of `function`'s logs.
pub fn function_dir(dir: &Path, function: &str) -> PathBuf {
    dir.join(function)
}

/// The file being written; rotated files are `current.log.1` (newest) … `.N`.
pub fn current_file(dir: &Path, function: &str) -> PathBuf {
    function_dir(dir, function).join("current.log")
}

fn append(
    config: &LogConfig,
    files: &mut HashMap<String, (File, u64)>,
    batch: &Batch,
) -> io::Result<()> {
    let path = current_file(&config.dir, &batch.function);
    if !files.contains_key(&batch.function) {
        fs::create_dir_all(function_dir(&config.dir, &batch.function))?;
        let file = OpenOptions::new().create(true).append(true).open(&path)?;
        let size = file.metadata()?.len();
        files.insert(batch.function.clone(), (file, size));
    }
    let Some((file, size)) = files.get_mut(&batch.function) else {
        return Ok(());
    };
    if *size > 0 && *size + batch.bytes.len() as u64 > config.max_file_bytes {
        // Rotate: .N-1 → .N, …, current → .1.
        for n in (1..config.files).rev() {
            let from = path.with_extension(format!("log.{n}"));
            if from.exists() {
                fs::rename(&from, path.with_extension(format!("log.{}", n + 1)))?;
            }
        }
        if config.files > 0 {
            fs::rename(&path, path.with_extension("log.1"))?;
        } else {
            fs::remove_file(&path)?;
        }
        *file = OpenOptions::new().create(true).append(true).open(&path)?;
        *size = 0;
    }
    file.write_all(&batch.bytes)?;
    *size += batch.bytes.len() as u64;
    Ok(())
}

/// The files of `function`'s log, oldest first.
pub fn log_files(dir: &Path, function: &str) -> Vec<PathBuf> {
    let current = current_file(dir, function);
    let mut rotated: Vec<(u32, PathBuf)> = fs::read_dir(function_dir(dir, function))
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| {
            let name = e.file_name().into_string().ok()?;
            let n = name.strip_prefix("current.log.")?.parse().ok()?;
            Some((n, e.path()))
        })
        .collect();
    rotated.sort_by_key(|(n, _)| std::cmp::Reverse(*n));
    let mut files: Vec<PathBuf> = rotated.into_iter().map(|(_, p)| p).collect();
    if current.exists() {
        files.push(current);
    }
    files
}

/// Writes `function`'s stored log to `out` (`hearth logs`): the rotated files oldest first, then
/// the current one. With `follow`, keeps writing what is appended, across rotations, until
/// writing fails (the reader went away).
pub fn print(dir: &Path, function: &str, follow: bool, out: &mut dyn Write) -> io::Result<()> {
    use std::io::{Read, Seek};
    use std::os::unix::fs::MetadataExt;
    let valid = !function.is_empty()
        && function.len() <= 64
        && function
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
    if !valid {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("'{function}' is not a function name"),
        ));
    }
    let files = log_files(dir, function);
    if files.is_empty() && !follow {
        return Err(io::Error::new(
            io::ErrorKind::NotFound,
            format!(
                "no logs for {function} in {} (it has not been invoked, or logs are kept elsewhere: see --data-dir)",
                dir.display()
            ),
        ));
    }
    let current = current_file(dir, function);
    let mut buf = vec![0u8; 64 << 10];
    for path in files.iter().filter(|p| **p != current) {
        io::copy(&mut File::open(path)?, out)?;
    }
    let mut open: Option<(File, u64)> = None;
    loop {
        if open.is_none() {
            if let Ok(file) = File::open(&current) {
                let inode = file.metadata()?.ino();
                open = Some((file, inode));
            }
        }
        if let Some((file, _)) = open.as_mut() {
            loop {
                let n = file.read(&mut buf)?;
                if n == 0 {
                    break;
                }
                out.write_all(&buf[..n])?;
            }
        }
        out.flush()?;
        if !follow {
            return Ok(());
        }
        std::thread::sleep(Duration::from_millis(200));
        // Rotated: what was written to the old file before the rename has been read above on
        // the next pass; then switch to the new file.
        let rotated = match (&open, fs::metadata(&current)) {
            (Some((_, inode)), Ok(meta)) => meta.ino() != *inode,
            (Some(_), Err(_)) => true,
            (None, _) => false,
        };
        if rotated {
            if let Some((mut file, _)) = open.take() {
                io::copy(&mut file, out)?;
                let _ = file.seek(io::SeekFrom::End(0));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn capture_reads_what_was_written_and_rewinds() {
        let mut capture = Capture::new().unwrap();
        let mut writer = File::from(capture.fd().try_clone_to_owned().unwrap());
        writer.write_all(b"hello\n").unwrap();
        let mut out = Vec::new();
        assert_eq!(capture.drain(&mut out, 1024), 6);
        assert_eq!(out, b"hello\n");
        assert_eq!(capture.drain(&mut out, 1024), 0, "nothing new");
        writer.write_all(b"world").unwrap();
        out.clear();
        capture.drain(&mut out, 3);
        assert_eq!(out, b"wor");
        assert_eq!(capture.take_dropped(), 2, "over the cap: counted");
        // Past the window: the reset counts what could not be read and rewinds the writer.
        writer.write_all(&vec![b'x'; CAPTURE_LEN + 10]).unwrap();
        out.clear();
        capture.drain(&mut out, usize::MAX);
        assert_eq!(out.len(), CAPTURE_LEN - 11);
        capture.reset(true);
        assert_eq!(capture.take_dropped(), 21);
        writer.write_all(b"again").unwrap();
        out.clear();
        capture.drain(&mut out, 1024);
        assert_eq!(
            out, b"again",
            "the shared offset was rewound and the file zeroed"
        );
        // The environment cannot shrink the file under the daemon's mapping (that would be a
        // SIGBUS in the daemon at the next read).
        let err = writer.set_len(0).expect_err("shrinking is sealed");
        assert_eq!(err.raw_os_error(), Some(libc::EPERM));
        out.clear();
        capture.drain(&mut out, 1024);
        assert!(out.is_empty());
    }

    #[test]
    fn records_are_framed_like_lambdas() {
        let mut record = Vec::new();
        let report = Report {
            request_id: "r-1",
            version: "$LATEST",
            duration: Duration::from_micros(12_345),
            init: Some(Duration::from_micros(120_450)),
            memory_mb: 128,
            max_memory_mb: 18,
            start: "cold",
            dropped: 0,
        };
        frame(&mut record, b"hello", &report);
        assert_eq!(
            String::from_utf8(record.clone()).unwrap(),
            "START RequestId: r-1 Version: $LATEST\nhello\nEND RequestId: r-1\nREPORT RequestId: r-1\tDuration: 12.35 ms\tBilled Duration: 12 ms\tMemory Size: 128 MB\tMax Memory Used: 18 MB\tInit Duration: 120.45 ms\tStart: cold\t\n"
        );
        let long = vec![b'a'; 10_000];
        frame(
            &mut record,
            &long,
            &Report {
                init: None,
                ..report
            },
        );
        let t = tail(&record);
        assert_eq!(t.len(), TAIL_BYTES);
        assert!(t.ends_with(b"Start: cold\t\n"));
    }

    #[test]
    fn files_rotate_by_size() {
        let dir = tempfile::tempdir().unwrap();
        let config = LogConfig {
            dir: dir.path().to_path_buf(),
            max_file_bytes: 10,
            files: 2,
        };
        let mut files = HashMap::new();
        for i in 0..4u8 {
            let batch = Batch {
                function: "f".into(),
                bytes: vec![b'0' + i; 8],
            };
            append(&config, &mut files, &batch).unwrap();
        }
        let paths = log_files(dir.path(), "f");
        let contents: Vec<String> = paths
            .iter()
            .map(|p| fs::read_to_string(p).unwrap())
            .collect();
        assert_eq!(
            contents,
            ["11111111", "22222222", "33333333"],
            "oldest dropped"
        );
    }
}
