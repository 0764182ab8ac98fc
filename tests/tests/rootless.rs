//! Rootless mode: hearth run by an unprivileged user starts environments in user namespaces.
//! The test (root) drops to uid/gid 65534 to run `hearth-sandbox-helper`, which starts one
//! environment and prints what the sample function's probe sees inside it.
//!
//! This host gives unprivileged users no cgroup subtree, so the probe runs with
//! `CgroupPolicy::BestEffortWhenRootless` and the report says whether cgroups were used.

use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::CommandExt;
use std::process::Command;

use hearth_tests::{require_root, sample_code_dir, workspace_binary};
use serde_json::Value;

use hearth_tests::NOBODY;

#[test]
fn an_unprivileged_hearth_isolates_environments_in_user_namespaces() {
    require_root();
    // Everything the unprivileged user needs: its own state directory and a copy of the probe
    // binary where it may execute it (the build directory may sit under /root).
    let dir = tempfile::tempdir().unwrap();
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let state = dir.path().join("state");
    std::fs::create_dir(&state).unwrap();
    std::os::unix::fs::chown(&state, Some(NOBODY), Some(NOBODY)).unwrap();
    let probe = dir.path().join("hearth-sandbox-helper");
    std::fs::copy(workspace_binary("hearth-sandbox-helper"), &probe).unwrap();
    let code = sample_code_dir();

    let in_chroot = hearth_sandbox::chrooted();
    let out = Command::new(&probe)
        .arg("probe")
        .arg(&state)
        .arg(code)
        .env_clear()
        .env("PATH", "/usr/bin:/bin")
        .uid(NOBODY)
        .gid(NOBODY)
        .output()
        .expect("running the probe as nobody");
    if in_chroot {
        hearth_tests::assert_rootless_refused_in_chroot(&out);
        return;
    }
    assert!(
        out.status.success(),
        "the probe failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let report: Value = serde_json::from_slice(&out.stdout).expect("a JSON report");
    assert_eq!(
        report["rootless"], true,
        "hearth saw it has no CAP_SYS_ADMIN"
    );
    assert_eq!(
        report["uid"], NOBODY,
        "the function's uid, mapped into its user namespace"
    );
    assert_eq!(report["pid"], 1);
    assert_eq!(report["pids"], serde_json::json!(["1"]));
    assert_eq!(report["hostname"], "hearth");
    for caps in ["cap_eff", "cap_prm", "cap_bnd", "cap_amb"] {
        assert_eq!(report[caps], "0000000000000000", "{caps}");
    }
    assert_eq!(report["no_new_privs"], "1");
    assert_eq!(report["seccomp"], "2");
    assert_eq!(
        report["interfaces"],
        serde_json::json!(["lo"]),
        "a network namespace of its own, empty"
    );
    for denied in [
        "mount",
        "unshare",
        "io_uring_setup",
        "setns",
        "ptrace",
        "bpf",
        "clone_newns",
    ] {
        assert_eq!(report["syscalls"][denied], libc::EPERM, "{denied}");
    }
    assert_eq!(report["paths"]["write_root"], libc::EROFS);
    assert_eq!(report["paths"]["write_task"], libc::EROFS);
    assert_eq!(report["paths"]["write_tmp"], "ok");
    assert_eq!(report["paths"]["read_host_os_release"], libc::ENOENT);
    eprintln!(
        "cgroups in rootless mode on this host: {}",
        report["cgroups"]
    );
}
