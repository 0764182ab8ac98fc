//! The root skeleton every environment pivots into: a directory prepared once per state
//! directory, with empty mount points (`/usr`, `/var/task`, `/tmp`, `/proc`, device nodes) and
//! the host's top-level library symlinks (`/lib -> usr/lib` on merged-/usr systems). Nothing of
//! the host's `/etc` is shown: the skeleton carries a minimal `passwd`, `group` and `hosts`, and a
//! copy of the host's `ld.so.cache` (it describes the host `/usr` that environments see).

use std::fs;
use std::io;
use std::os::unix::fs::{symlink, PermissionsExt};
use std::path::{Path, PathBuf};

/// The prepared skeleton.
#[derive(Debug, Clone)]
pub(crate) struct RootSkeleton {
    pub path: PathBuf,
    /// Host top-level directories that are real directories (not symlinks into /usr) and must
    /// be bind-mounted read-only, e.g. `/lib64` on a system without merged /usr.
    pub host_dirs: Vec<PathBuf>,
}

const TOP_LEVEL_LIBS: [&str; 6] = ["bin", "sbin", "lib", "lib32", "lib64", "libx32"];
const DEVICES: [&str; 4] = ["null", "zero", "random", "urandom"];

impl RootSkeleton {
    /// Creates (or reuses) the skeleton under `state_dir`.
    pub(crate) fn prepare(state_dir: &Path, uid: u32, gid: u32) -> io::Result<Self> {
        // Built under a temporary name and renamed into place, so it exists only when complete.
        // The version in the name changes whenever the layout below does.
        let path = state_dir.join("root-v2");
        let mut host_dirs = Vec::new();
        for name in TOP_LEVEL_LIBS {
            let host = Path::new("/").join(name);
            if let Ok(meta) = fs::symlink_metadata(&host) {
                if meta.is_dir() {
                    host_dirs.push(host);
                }
            }
        }
        if !path.exists() {
            fs::create_dir_all(state_dir)?;
            let tmp = state_dir.join(format!("root.tmp-{}", std::process::id()));
            let _ = fs::remove_dir_all(&tmp);
            build(&tmp, uid, gid)?;
            if let Err(e) = fs::rename(&tmp, &path) {
                let _ = fs::remove_dir_all(&tmp);
                // Another process finished first; theirs is as good as ours.
                if !path.exists() {
                    return Err(e);
                }
            }
        }
        Ok(Self { path, host_dirs })
    }
}

fn build(root: &Path, uid: u32, gid: u32) -> io::Result<()> {
    for dir in [
        "usr",
        "var/task",
        "var/runtime",
        "opt",
        "tmp",
        "proc",
        "dev",
        "etc",
    ] {
        fs::create_dir_all(root.join(dir))?;
    }
    for name in TOP_LEVEL_LIBS {
        let host = Path::new("/").join(name);
        match fs::symlink_metadata(&host) {
            Ok(meta) if meta.file_type().is_symlink() => {
                symlink(fs::read_link(&host)?, root.join(name))?
            }
            Ok(meta) if meta.is_dir() => fs::create_dir(root.join(name))?,
            _ => {}
        }
    }
    for dev in DEVICES {
        let node = root.join("dev").join(dev);
        fs::write(&node, b"")?;
        fs::set_permissions(&node, fs::Permissions::from_mode(0o666))?;
    }
    fs::write(
        root.join("etc/passwd"),
        format!("root:x:0:0:root:/root:/usr/sbin/nologin\nsbx_user:x:{uid}:{gid}:hearth function:/tmp:/usr/sbin/nologin\n"),
    )?;
    fs::write(
        root.join("etc/group"),
        format!("root:x:0:\nsbx_user:x:{gid}:\n"),
    )?;
    fs::write(
        root.join("etc/hosts"),
        "127.0.0.1 localhost\n::1 localhost\n",
    )?;
    // The host's loader cache names the libraries under /usr that environments see, so the
    // dynamic loader finds them without searching every default directory.
    if Path::new("/etc/ld.so.cache").is_file() {
        fs::copy("/etc/ld.so.cache", root.join("etc/ld.so.cache"))?;
    }
    fs::set_permissions(root, fs::Permissions::from_mode(0o755))
}

/// Device nodes bind-mounted into `/dev`.
pub(crate) fn devices() -> impl Iterator<Item = &'static str> {
    DEVICES.into_iter()
}
