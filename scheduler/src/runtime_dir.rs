//! The runtime directory: what [`crate::Launch::RuntimeApi`] environments see read-only at
//! `/var/runtime` — `hearth-init` (the environment's first process, serving Lambda's Runtime
//! API) and the managed runtimes' bootstraps (`python/bootstrap.py`, `node/bootstrap.mjs`),
//! which `hearth-init --install` writes.
//!
//! It is prepared once under the sandbox's state directory, named by the SHA-256 of the
//! `hearth-init` binary, so a rebuilt hearth never shows environments a stale copy.

use std::fs;
use std::io;
use std::os::unix::fs::PermissionsExt;
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

/// Prepares (or reuses) the runtime directory for `init` under `state_dir` and returns it.
pub fn prepare(state_dir: &Path, init: &Path) -> io::Result<PathBuf> {
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
    let tmp = state_dir.join(format!("runtime.tmp-{}", std::process::id()));
    let _ = fs::remove_dir_all(&tmp);
    fs::create_dir_all(&tmp)?;
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
