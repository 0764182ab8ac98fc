//! The runtime directory: what [`crate::Launch::RuntimeApi`] environments see read-only at
//! `/var/runtime` — `hearth-init` (the environment's first process, serving Lambda's Runtime
//! API) and the managed runtimes' bootstraps (`python/bootstrap.py`, `node/bootstrap.mjs`),
//! which `hearth-init --install` writes.
//!
//! It is prepared once under the sandbox's state directory, named by the SHA-256 of the
//! `hearth-init` binary, so a rebuilt hearth never shows environments a stale copy. An engine
//! holds a shared lock on the directory it uses ([`InUse`]) for as long as it runs, and
//! preparing one removes the others no engine holds (and what a hearth killed while installing
//! one left, which it held an exclusive lock on until then): the state directory is usually on a
//! tmpfs (`/run/hearth`), where every rebuilt or upgraded hearth would otherwise leave about
//! 10 MiB of memory behind until the machine restarts. (A daemon of a hearth from before these
//! locks holds none: its directory can be removed under it.)

use std::fs;
use std::io;
use std::os::fd::AsRawFd;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::Command;

use sha2::{Digest, Sha256};

/// File name of the init binary.
pub const INIT: &str = "hearth-init";
/// Environment variable naming the init binary to use instead of the one next to hearth.
pub const INIT_ENV: &str = "HEARTH_INIT";
/// File name of the runtime library (the C ABI the Python bootstrap loads to be a zygote),
/// looked for next to the init binary. Without it Python functions start from nothing.
pub const LIBRARY: &str = "libhearth_runtime.so";

/// Where `hearth-init` is: `$HEARTH_INIT`, else next to the running executable (or one level
/// up, for test executables in cargo's `deps/`).
pub fn find_init() -> Result<PathBuf, String> {
    if let Some(path) = std::env::var_os(INIT_ENV) {
        let path = PathBuf::from(path);
        return if path.is_file() {
            Ok(path)
        } else {
            Err(format!("{INIT_ENV}={} is not a file", path.display()))
        };
    }
    let exe =
        std::env::current_exe().map_err(|e| format!("locating the hearth executable: {e}"))?;
    let mut dir = exe.parent().map(Path::to_path_buf).unwrap_or_default();
    for _ in 0..2 {
        let candidate = dir.join(INIT);
        if candidate.is_file() {
            return Ok(candidate);
        }
        dir.pop();
    }
    Err(format!(
        "{INIT} was not found next to {} (build it with `cargo build -p hearth-runtime`, or set {INIT_ENV})",
        exe.display()
    ))
}

/// A shared lock on a runtime directory: while it is held, no [`prepare`] removes the
/// directory. Released when dropped (or when the process ends).
#[derive(Debug)]
pub struct InUse {
    /// `None` where the directory could not be locked (a file system without `flock`).
    _lock: Option<fs::File>,
}

/// What a directory removed by a sweep is renamed to first, so that no `runtime-*` name ever
/// leads to a directory half removed (`runtime.gone-<pid>-<n>`).
const GONE: &str = "runtime.gone-";
/// Where a hearth builds a runtime directory before renaming it into place
/// (`runtime.tmp-<pid>-<n>`), holding an exclusive lock on it meanwhile: one nobody holds was
/// left by a hearth killed while installing, and is swept.
const TMP: &str = "runtime.tmp-";

/// Prepares (or reuses) the runtime directory for `init` under `state_dir`, locks it for the
/// caller, removes the other runtime directories there that nobody holds, and returns it.
pub fn prepare(state_dir: &Path, init: &Path) -> io::Result<(PathBuf, InUse)> {
    // A sweep by another hearth may remove the directory between its making and its locking
    // here (when it was there already, unlocked): then it is made again.
    for _ in 0..3 {
        let dir = install(state_dir, init)?;
        match lock_shared(&dir) {
            Ok(Some(in_use)) => {
                sweep(state_dir, &dir);
                return Ok((dir, in_use));
            }
            Ok(None) => {}
            Err(e) => {
                tracing::warn!(dir = %dir.display(), error = %e, "the runtime directory cannot be locked: another hearth may remove it, and unused ones are not removed");
                return Ok((dir, InUse { _lock: None }));
            }
        }
    }
    Err(io::Error::other(format!(
        "the runtime directory under {} kept being removed while it was prepared",
        state_dir.display()
    )))
}

/// Whether `path` (not followed if a link) is the directory open as `file`.
fn is_open_as(path: &Path, file: &fs::File) -> bool {
    match (fs::symlink_metadata(path), file.metadata()) {
        (Ok(at_path), Ok(open)) => (at_path.dev(), at_path.ino()) == (open.dev(), open.ino()),
        _ => false,
    }
}

/// `path` opened and locked (`flock` `operation`), if it is still the directory at `path` once
/// the lock is held: a sweep may have moved it away meanwhile. `None` also when nothing is
/// there.
fn lock_at(path: &Path, operation: libc::c_int) -> io::Result<Option<fs::File>> {
    let file = match fs::File::open(path) {
        Ok(file) => file,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e),
    };
    flock(&file, operation)?;
    Ok(is_open_as(path, &file).then_some(file))
}

/// A shared lock on `dir`, if `dir` is still there (with its init) once the lock is held:
/// a sweep holds its exclusive lock only while it moves a directory out of the way.
fn lock_shared(dir: &Path) -> io::Result<Option<InUse>> {
    Ok(lock_at(dir, libc::LOCK_SH)?
        .filter(|_| dir.join(INIT).is_file())
        .map(|file| InUse { _lock: Some(file) }))
}

/// A number no other call in this process gets (for names of directories being built or
/// removed).
fn unique() -> usize {
    static NEXT: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
    NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
}

/// Removes the runtime directories under `state_dir` but `keep` that no engine holds (see
/// [`InUse`]), those a killed hearth left half installed, and what earlier sweeps left half
/// removed; what cannot be read or locked is left.
fn sweep(state_dir: &Path, keep: &Path) {
    let Ok(entries) = fs::read_dir(state_dir) else {
        return;
    };
    for entry in entries.flatten() {
        let path = entry.path();
        let Some(name) = entry.file_name().to_str().map(str::to_owned) else {
            continue;
        };
        // Moved aside before removal: a live name never leads to a half-removed directory.
        let runtime = name.starts_with("runtime-") || name.starts_with(TMP);
        if !(runtime || name.starts_with(GONE))
            || path == keep
            || !entry.file_type().is_ok_and(|t| t.is_dir())
        {
            continue;
        }
        // Held by nobody, and still the directory at that name (another sweep may have moved
        // it and a hearth made a new one there since it was opened).
        let Ok(Some(_held)) = lock_at(&path, libc::LOCK_EX | libc::LOCK_NB) else {
            continue;
        };
        let doomed = if runtime {
            let gone = state_dir.join(format!("{GONE}{}-{}", std::process::id(), unique()));
            if fs::rename(&path, &gone).is_err() {
                continue;
            }
            gone
        } else {
            path
        };
        if let Err(e) = fs::remove_dir_all(&doomed) {
            tracing::debug!(dir = %doomed.display(), error = %e, "removing an unused runtime directory");
        }
    }
}

fn flock(file: &fs::File, operation: libc::c_int) -> io::Result<()> {
    loop {
        // SAFETY: flock on a descriptor this function borrows.
        if unsafe { libc::flock(file.as_raw_fd(), operation) } == 0 {
            return Ok(());
        }
        let e = io::Error::last_os_error();
        if e.kind() != io::ErrorKind::Interrupted {
            return Err(e);
        }
    }
}

/// Makes (or finds) the runtime directory for `init` under `state_dir`.
fn install(state_dir: &Path, init: &Path) -> io::Result<PathBuf> {
    let library = init.with_file_name(LIBRARY);
    let library = library.is_file().then_some(library);
    // Hashed as they are read, in small pieces: the files are megabytes, and a daemon that
    // read them whole would keep that much more memory (the allocator rarely gives it back).
    let mut hasher = Sha256::new();
    io::copy(&mut fs::File::open(init)?, &mut hasher)?;
    if let Some(library) = &library {
        io::copy(&mut fs::File::open(library)?, &mut hasher)?;
    }
    let digest = hasher.finalize();
    let name: String = digest.iter().take(8).map(|b| format!("{b:02x}")).collect();
    let dir = state_dir.join(format!("runtime-{name}"));
    if dir.join(INIT).is_file() {
        return Ok(dir);
    }
    fs::create_dir_all(state_dir)?;
    // A name of its own per install (engines of one process may install at once), held while
    // installing so that a sweep leaves it alone (one may move it away between its making and
    // its locking here: then another is made).
    let mut building = None;
    let mut tmp = PathBuf::new();
    for _ in 0..3 {
        tmp = state_dir.join(format!("{TMP}{}-{}", std::process::id(), unique()));
        // Left by an earlier process with this pid, if anything.
        let _ = fs::remove_dir_all(&tmp);
        fs::create_dir(&tmp)?;
        match lock_at(&tmp, libc::LOCK_EX) {
            Ok(Some(file)) => {
                building = Some(file);
                break;
            }
            Ok(None) => {}
            // No flock here: sweeps lock nothing either.
            Err(_) => break,
        }
    }
    if building.is_none() && !tmp.is_dir() {
        return Err(io::Error::other(format!(
            "{} kept being removed while it was made",
            tmp.display()
        )));
    }
    let target = tmp.join(INIT);
    fs::copy(init, &target)?;
    fs::set_permissions(&target, fs::Permissions::from_mode(0o755))?;
    if let Some(library) = &library {
        fs::copy(library, tmp.join(LIBRARY))?;
    }
    // Another thread of this process may fork while the binary is still open for writing here;
    // its child holds that fd until it execs, and executing the file fails with ETXTBSY until
    // then. That lasts microseconds: retry.
    let mut attempts = 0;
    let status = loop {
        match Command::new(&target).arg("--install").arg(&tmp).status() {
            Err(e) if e.raw_os_error() == Some(libc::ETXTBSY) && attempts < 100 => {
                attempts += 1;
                std::thread::sleep(std::time::Duration::from_millis(5));
            }
            other => break other?,
        }
    };
    if !status.success() {
        let _ = fs::remove_dir_all(&tmp);
        return Err(io::Error::other(format!(
            "{} --install failed: {status}",
            target.display()
        )));
    }
    make_readable(&tmp)?;
    match fs::rename(&tmp, &dir) {
        Ok(()) => Ok(dir),
        // Another hearth prepared the same directory first; theirs is identical.
        Err(_) if dir.join(INIT).is_file() => {
            let _ = fs::remove_dir_all(&tmp);
            Ok(dir)
        }
        Err(e) => {
            let _ = fs::remove_dir_all(&tmp);
            Err(e)
        }
    }
}

/// Directories 0755, files 0644 (the init binary 0755; the library 0644 is mapped, not
/// executed): readable by the function's user.
fn make_readable(dir: &Path) -> io::Result<()> {
    fs::set_permissions(dir, fs::Permissions::from_mode(0o755))?;
    for entry in fs::read_dir(dir)? {
        let entry = entry?;
        let path = entry.path();
        if entry.file_type()?.is_dir() {
            make_readable(&path)?;
        } else if entry.file_name() != INIT {
            fs::set_permissions(&path, fs::Permissions::from_mode(0o644))?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `hearth-init`, copied under `dir` with `extra` bytes appended (a binary with another
    /// hash, as a rebuilt hearth would have; the bytes past its end are never loaded).
    fn init_copy(dir: &Path, extra: &[u8]) -> PathBuf {
        let init = find_init().expect("hearth-init is built (make test builds it)");
        let copy = dir.join(INIT);
        let mut bytes = fs::read(init).unwrap();
        bytes.extend_from_slice(extra);
        fs::write(&copy, bytes).unwrap();
        fs::set_permissions(&copy, fs::Permissions::from_mode(0o755)).unwrap();
        copy
    }

    #[test]
    fn preparing_removes_the_runtime_directories_nobody_holds() {
        let state = tempfile::tempdir().unwrap();
        let bin = tempfile::tempdir().unwrap();
        let (old_bin, new_bin) = (bin.path().join("old"), bin.path().join("new"));
        fs::create_dir(&old_bin).unwrap();
        fs::create_dir(&new_bin).unwrap();
        let (old_init, new_init) = (init_copy(&old_bin, b"old"), init_copy(&new_bin, b"new"));
        // Left by a hearth that has exited; half installed by one that was killed, and by one
        // that is still installing (it holds its lock).
        let stale = state.path().join("runtime-00000000deadbeef");
        fs::create_dir_all(stale.join("python")).unwrap();
        fs::write(stale.join("python/bootstrap.py"), "").unwrap();
        let killed = state.path().join("runtime.tmp-1");
        fs::create_dir_all(killed.join("python")).unwrap();
        let other = state.path().join("runtime.tmp-2");
        fs::create_dir(&other).unwrap();
        let installing = fs::File::open(&other).unwrap();
        flock(&installing, libc::LOCK_EX).unwrap();
        let unrelated = state.path().join("root-v2");
        fs::create_dir(&unrelated).unwrap();
        // Half removed by a sweep that was killed.
        let half = state.path().join("runtime.gone-1-0");
        fs::create_dir_all(half.join("python")).unwrap();

        let (old_dir, old_in_use) = prepare(state.path(), &old_init).unwrap();
        assert!(old_dir.join(INIT).is_file());
        assert!(!stale.exists(), "a directory nobody holds is removed");
        assert!(!killed.exists(), "what a killed install left is removed");
        assert!(other.exists(), "an install in progress is left alone");
        assert!(unrelated.exists(), "only runtime directories are swept");
        assert!(!half.exists(), "what a killed sweep left is removed");

        // Another engine of the same hearth shares the directory.
        let (again, again_in_use) = prepare(state.path(), &old_init).unwrap();
        assert_eq!(again, old_dir);
        // A rebuilt hearth prepares its own, and leaves the one still held alone.
        let (new_dir, _new_in_use) = prepare(state.path(), &new_init).unwrap();
        assert_ne!(new_dir, old_dir);
        assert!(old_dir.join(INIT).is_file(), "held by two engines");
        drop(old_in_use);
        prepare(state.path(), &new_init).unwrap();
        assert!(old_dir.join(INIT).is_file(), "still held by one");
        drop(again_in_use);
        let (dir, _in_use) = prepare(state.path(), &new_init).unwrap();
        assert_eq!(dir, new_dir);
        assert!(!old_dir.exists(), "removed once no engine holds it");
        assert!(new_dir.join("python/bootstrap.py").is_file());
        let left: Vec<_> = fs::read_dir(state.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        assert_eq!(left.len(), 3, "{left:?}");
        assert!(left.contains(&"runtime.tmp-2".to_owned()), "{left:?}");
        assert!(left.contains(&"root-v2".to_owned()), "{left:?}");
        // Once that install is over (its hearth gone), the next preparation removes it.
        drop(installing);
        prepare(state.path(), &new_init).unwrap();
        assert!(!other.exists(), "an abandoned install is removed");
    }
}
