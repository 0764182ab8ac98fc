//! hearth's cross-crate suites live in `tests/`; the sample functions they run live in
//! `src/bin/`. This library holds what both share.
#![warn(missing_docs)]

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use hearth_ipc::{HostChannel, RequestMeta, ResponseStatus};
use hearth_sandbox::{Environment, SetupState};

/// Path of a binary built from this workspace (e.g. the sample function), next to the test
/// executable's own directory (`target/<profile>/`).
pub fn workspace_binary(name: &str) -> PathBuf {
    let exe = std::env::current_exe().expect("current_exe");
    let mut dir = exe.parent().expect("exe dir").to_path_buf();
    // Test executables live in target/<profile>/deps; binaries in target/<profile>.
    if dir.ends_with("deps") {
        dir.pop();
    }
    let path = dir.join(name);
    assert!(
        path.exists(),
        "{} is missing: build the workspace first (cargo build --workspace)",
        path.display()
    );
    path
}

/// Fails the test unless it runs as root: the suites that start real environments need it, and
/// must say so rather than pass vacuously.
pub fn require_root() {
    // SAFETY: geteuid cannot fail.
    let euid = unsafe { libc::geteuid() };
    assert_eq!(euid, 0, "this test starts real environments and needs root (CI runs as root); run the suite with sudo");
}

/// A directory holding the sample function as `bootstrap`, as a function's code. It is written
/// once per test process, before any test can start an environment: an environment cloned while
/// another thread still has the file open for writing could not execute it (ETXTBSY).
pub fn sample_code_dir() -> &'static Path {
    static DIR: std::sync::OnceLock<tempfile::TempDir> = std::sync::OnceLock::new();
    DIR.get_or_init(|| {
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::copy(
            workspace_binary("hearth-sample-fn"),
            dir.path().join("bootstrap"),
        )
        .expect("copy the sample function");
        // Readable by the unprivileged user of the rootless test too.
        let open = std::os::unix::fs::PermissionsExt::from_mode(0o755);
        std::fs::set_permissions(dir.path(), open).expect("chmod the code directory");
        dir
    })
    .path()
}

/// Whether process `pid` exists.
pub fn process_exists(pid: i32) -> bool {
    Path::new(&format!("/proc/{pid}")).exists()
}

/// Sends `event` to an environment started directly with `hearth-sandbox` (no scheduler) and
/// waits up to 10 s for its answer. `Err` says why there is none: the failed setup step, or
/// "environment exited: STATUS".
pub fn invoke_environment(
    channel: &mut HostChannel,
    env: &mut Environment,
    event: &[u8],
) -> Result<(ResponseStatus, Vec<u8>), String> {
    channel
        .submit(event, &RequestMeta::default())
        .map_err(|e| e.to_string())?;
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut out = Vec::new();
    loop {
        if let Some(done) = channel.poll(&mut out).map_err(|e| e.to_string())? {
            return Ok((done.status, out));
        }
        if let SetupState::Failed(failure) = env.poll_setup() {
            return Err(failure.to_string());
        }
        if let Some(status) = env.try_wait().map_err(|e| e.to_string())? {
            return Err(format!("environment exited: {status}"));
        }
        if Instant::now() > deadline {
            return Err("no answer within 10 s".into());
        }
        std::thread::sleep(Duration::from_micros(200));
    }
}

/// A directory holding the seccomp sweep function (`hearth-sweep`) as `bootstrap`, written
/// once per test process like [`sample_code_dir`].
pub fn sweep_code_dir() -> &'static Path {
    static DIR: std::sync::OnceLock<tempfile::TempDir> = std::sync::OnceLock::new();
    DIR.get_or_init(|| {
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::copy(
            workspace_binary("hearth-sweep"),
            dir.path().join("bootstrap"),
        )
        .expect("copy the sweep function");
        let open = std::os::unix::fs::PermissionsExt::from_mode(0o755);
        std::fs::set_permissions(dir.path(), open).expect("chmod the code directory");
        dir
    })
    .path()
}

/// A directory holding the escape suite's hostile function (`hearth-attack`) as `bootstrap`,
/// mode 0755, written once per test process before any environment starts (as
/// [`sample_code_dir`] does for the sample function).
pub fn attack_code_dir() -> &'static Path {
    static DIR: std::sync::OnceLock<tempfile::TempDir> = std::sync::OnceLock::new();
    DIR.get_or_init(|| {
        let dir = tempfile::tempdir().expect("tempdir");
        let bootstrap = dir.path().join("bootstrap");
        std::fs::copy(workspace_binary("hearth-attack"), &bootstrap)
            .expect("copy the attack function");
        let open = std::os::unix::fs::PermissionsExt::from_mode(0o755);
        std::fs::set_permissions(&bootstrap, open).expect("chmod the attack function");
        let open = std::os::unix::fs::PermissionsExt::from_mode(0o755);
        std::fs::set_permissions(dir.path(), open).expect("chmod the code directory");
        dir
    })
    .path()
}
