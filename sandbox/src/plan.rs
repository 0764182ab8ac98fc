//! Turns an [`EnvSpec`] into the [`ChildPlan`] the child executes. Pure: it only allocates the
//! strings and tables the child will use, so it is tested without root.

use std::ffi::CString;
use std::os::fd::{AsRawFd, RawFd};
use std::path::Path;

use crate::child::{ChildPlan, ExecPlan, FdPlan, FsOp, ZygoteFds, ZygoteSetup};
use crate::root::{self, RootSkeleton};
use crate::spawn::{EnvSpec, SpawnError};
use crate::step::Step;

const MS_RDONLY: u64 = libc::MS_RDONLY;
const MS_NOSUID: u64 = libc::MS_NOSUID;
const MS_NODEV: u64 = libc::MS_NODEV;
const MS_NOEXEC: u64 = libc::MS_NOEXEC;
const MS_BIND: u64 = libc::MS_BIND;
const MS_REC: u64 = libc::MS_REC;
const MS_PRIVATE: u64 = libc::MS_PRIVATE;
const MS_REMOUNT: u64 = libc::MS_REMOUNT;
/// Flags of every read-only bind: no setuid binaries, no device nodes.
const RO_BIND: u64 = MS_REMOUNT | MS_BIND | MS_RDONLY | MS_NOSUID | MS_NODEV;

fn cstring(what: &'static str, s: &str) -> Result<CString, SpawnError> {
    CString::new(s).map_err(|_| SpawnError::Nul {
        what,
        value: s.to_owned(),
    })
}

fn cpath(what: &'static str, p: &Path) -> Result<CString, SpawnError> {
    cstring(what, &p.to_string_lossy())
}

fn mount(
    source: Option<CString>,
    target: CString,
    fstype: Option<&str>,
    flags: u64,
    data: Option<String>,
    step: Step,
) -> FsOp {
    FsOp::Mount {
        source,
        target,
        fstype: fstype.map(|f| CString::new(f).unwrap_or_default()),
        flags,
        data: data.map(|d| CString::new(d).unwrap_or_default()),
        step,
    }
}

/// How the child switches to its new root.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum RootSwitch {
    /// Make every mount private, `pivot_root`, detach the old root: nothing of the host's mount
    /// tree stays in the environment's namespace.
    Pivot,
    /// The daemon runs in a chroot whose root is not a mount point, where neither works:
    /// `chroot` into the new root instead. With every capability dropped the environment cannot
    /// chroot back out. (The sandbox refuses this mode when it sees shared mount propagation,
    /// since it could not stop its mounts from propagating to the host.)
    Chroot,
}

/// Step 4 of the child: mounts, then switch into the skeleton.
pub(crate) fn filesystem(
    root: &RootSkeleton,
    spec: &EnvSpec<'_>,
    switch: RootSwitch,
) -> Result<Vec<FsOp>, SpawnError> {
    let (code_dir, tmp_bytes) = (spec.code_dir, spec.tmp_bytes);
    let new_root = cpath("root skeleton path", &root.path)?;
    let under = |rel: &str| cpath("root skeleton path", &root.path.join(rel));
    let mut ops = Vec::new();
    if switch == RootSwitch::Pivot {
        ops.push(mount(
            None,
            CString::from(c"/"),
            None,
            MS_REC | MS_PRIVATE,
            None,
            Step::MakeMountsPrivate,
        ));
    }
    ops.extend([
        mount(
            Some(new_root.clone()),
            new_root.clone(),
            None,
            MS_BIND,
            None,
            Step::BindRoot,
        ),
        mount(
            Some(CString::from(c"/usr")),
            under("usr")?,
            None,
            MS_BIND | MS_REC,
            None,
            Step::BindUsr,
        ),
        mount(None, under("usr")?, None, RO_BIND, None, Step::BindUsr),
    ]);
    for dir in &root.host_dirs {
        let rel = dir.strip_prefix("/").unwrap_or(dir);
        let target = cpath("root skeleton path", &root.path.join(rel))?;
        ops.push(mount(
            Some(cpath("host directory", dir)?),
            target.clone(),
            None,
            MS_BIND | MS_REC,
            None,
            Step::BindHostDir,
        ));
        ops.push(mount(None, target, None, RO_BIND, None, Step::BindHostDir));
    }
    ops.extend([
        mount(
            Some(cpath("code directory", code_dir)?),
            under("var/task")?,
            None,
            MS_BIND | MS_REC,
            None,
            Step::BindCode,
        ),
        mount(
            None,
            under("var/task")?,
            None,
            RO_BIND,
            None,
            Step::BindCode,
        ),
    ]);
    let mut read_only = |source: &Path, what: &'static str, rel: &str| -> Result<(), SpawnError> {
        let target = under(rel)?;
        ops.push(mount(
            Some(cpath(what, source)?),
            target.clone(),
            None,
            MS_BIND | MS_REC,
            None,
            Step::BindRuntime,
        ));
        ops.push(mount(None, target, None, RO_BIND, None, Step::BindRuntime));
        Ok(())
    };
    if let Some(dir) = spec.runtime_dir {
        read_only(dir, "runtime directory", "var/runtime")?;
    }
    match spec.layers {
        [] => {}
        [only] => read_only(only, "layer directory", "opt")?,
        layers => {
            // overlayfs lists the uppermost layer first; Lambda applies layers in order, a
            // later one's files replacing an earlier one's.
            let mut lower = String::from("lowerdir=");
            for (i, layer) in layers.iter().rev().enumerate() {
                let path = layer.to_string_lossy();
                if path.contains([':', ',', '\\']) {
                    return Err(SpawnError::Nul {
                        what: "layer directory (':', ',' and '\\' cannot be passed to overlayfs)",
                        value: path.into_owned(),
                    });
                }
                if i > 0 {
                    lower.push(':');
                }
                lower.push_str(&path);
            }
            ops.push(mount(
                Some(CString::from(c"overlay")),
                under("opt")?,
                Some("overlay"),
                MS_RDONLY | MS_NOSUID | MS_NODEV,
                Some(lower),
                Step::BindRuntime,
            ));
        }
    }
    ops.push(tmp_mount(under("tmp")?, tmp_bytes));
    ops.extend([mount(
        Some(CString::from(c"proc")),
        under("proc")?,
        Some("proc"),
        MS_NOSUID | MS_NODEV | MS_NOEXEC,
        None,
        Step::MountProc,
    )]);
    for dev in root::devices() {
        let host = cstring("device", &format!("/dev/{dev}"))?;
        ops.push(mount(
            Some(host),
            under(&format!("dev/{dev}"))?,
            None,
            MS_BIND,
            None,
            Step::BindDevice,
        ));
    }
    ops.push(FsOp::Chdir {
        path: new_root,
        step: Step::EnterNewRoot,
    });
    match switch {
        RootSwitch::Pivot => ops.extend([FsOp::PivotRoot, FsOp::DetachOldRoot]),
        RootSwitch::Chroot => ops.push(FsOp::ChrootDot),
    }
    ops.extend([
        FsOp::Chdir {
            path: CString::from(c"/"),
            step: Step::ChdirRoot,
        },
        mount(
            None,
            CString::from(c"/"),
            None,
            RO_BIND,
            None,
            Step::RemountRootReadOnly,
        ),
    ]);
    Ok(ops)
}

/// The parts of a plan that come from the sandbox rather than the spec.
/// The size-limited tmpfs at `target`.
fn tmp_mount(target: CString, tmp_bytes: u64) -> FsOp {
    mount(
        Some(CString::from(c"tmpfs")),
        target,
        Some("tmpfs"),
        MS_NOSUID | MS_NODEV,
        Some(format!("size={tmp_bytes},mode=1777")),
        Step::MountTmp,
    )
}

pub(crate) struct Fixed<'a> {
    pub root: &'a RootSkeleton,
    pub seccomp: &'a [libc::sock_filter],
    pub landlock_abi: u32,
    pub cap_last_cap: u32,
    pub uid: u32,
    pub gid: u32,
    pub hostname: &'a str,
    pub netns: Option<RawFd>,
    pub devnull: RawFd,
    pub reset_signals: &'a [i32],
    pub switch: RootSwitch,
    /// For a zygote: what it keeps for its children.
    pub zygote: Option<ZygoteFds>,
    /// hearth is root: the process may (and must) drop the supplementary groups it inherited,
    /// also in a user namespace (a rootless one has `setgroups` denied).
    pub as_root: bool,
}

/// Capabilities a zygote keeps in its user namespace: `CAP_SYS_ADMIN` to create each child's
/// namespaces and mounts, `CAP_SYS_CHROOT` with it to enter a mount namespace its helper made
/// ahead (`setns` needs both), `CAP_SETPCAP` for the child to drop its bounding set.
const ZYGOTE_CAPS: u64 = (1 << 21) | (1 << 18) | (1 << 8); // CAP_SYS_ADMIN, CAP_SYS_CHROOT, CAP_SETPCAP

/// The whole plan for one environment.
pub(crate) fn build(
    fixed: &Fixed<'_>,
    spec: &EnvSpec<'_>,
    cgroup_procs: Vec<RawFd>,
    error_fd: RawFd,
    userns_sync: Option<RawFd>,
) -> Result<ChildPlan, SpawnError> {
    if !spec.command.starts_with('/') {
        return Err(SpawnError::Nul {
            what: "command (must be an absolute path inside the environment)",
            value: spec.command.to_owned(),
        });
    }
    let exec_path = cstring("command", spec.command)?;
    let mut args = vec![exec_path.clone()];
    for a in spec.args {
        args.push(cstring("argument", a)?);
    }
    let env = spec
        .env
        .iter()
        .map(|(k, v)| cstring("environment variable", &format!("{k}={v}")))
        .collect::<Result<Vec<_>, _>>()?;
    let fds = FdPlan {
        error: error_fd,
        channel: spec.channel.as_raw_fd(),
        stdin: fixed.devnull,
        stdout: spec.stdout.map_or(fixed.devnull, |fd| fd.as_raw_fd()),
        stderr: spec.stderr.map_or(fixed.devnull, |fd| fd.as_raw_fd()),
        zygote: fixed.zygote,
    };
    let mut keep_fds: Vec<RawFd> = [fds.error, fds.channel, fds.stdin, fds.stdout, fds.stderr]
        .into_iter()
        .chain(fds.zygote.map(|z| z.filter))
        .chain(fds.zygote.and_then(|z| z.rules))
        .chain(fds.zygote.and_then(|z| z.ring))
        .chain(cgroup_procs.iter().copied())
        .chain(fixed.netns)
        .chain(userns_sync)
        .collect();
    keep_fds.sort_unstable();
    keep_fds.dedup();
    Ok(ChildPlan {
        keep_fds,
        reset_signals: fixed.reset_signals.to_vec(),
        userns_sync,
        cgroup_procs,
        unshare_cgroupns: true,
        loopback: spec.loopback,
        // A zygote gets a network namespace of its own (it is not landlocked, so a shared one
        // would let it reach other environments' abstract sockets).
        netns: if spec.loopback || fixed.zygote.is_some() {
            None
        } else {
            fixed.netns
        },
        fs: filesystem(fixed.root, spec, fixed.switch)?,
        hostname: cstring("hostname", fixed.hostname)?,
        rlimits: vec![(libc::RLIMIT_CORE, 0), (libc::RLIMIT_NOFILE, 1024)],
        fds,
        cap_last_cap: fixed.cap_last_cap,
        // In a user namespace setgroups is denied (that is what makes the gid map writable
        // without privilege), and the namespace has no supplementary groups to drop anyway.
        clear_groups: fixed.as_root,
        uid: fixed.uid,
        gid: fixed.gid,
        // A zygote is not landlocked: its children build their rulesets (see ZygoteSetup).
        landlock: if fixed.zygote.is_some() {
            None
        } else {
            crate::landlock::plan(fixed.landlock_abi)
        },
        seccomp: fixed.seccomp.to_vec(),
        zygote: fixed.zygote.map(|_| ZygoteSetup {
            keep_caps: ZYGOTE_CAPS,
        }),
        exec: ExecPlan::new(exec_path, args, env),
    })
}

#[cfg(test)]
mod tests {
    use std::os::fd::AsFd;

    use super::*;
    use crate::cgroup::Limits;
    use crate::child::tests::Recorder;

    fn fixture() -> (RootSkeleton, std::fs::File) {
        let root = RootSkeleton {
            path: "/run/hearth/root".into(),
            host_dirs: vec![],
        };
        (root, std::fs::File::open("/dev/null").unwrap())
    }

    fn recorded(fail: Option<&'static str>) -> (Recorder, (Step, i32)) {
        recorded_with(fail, RootSwitch::Pivot)
    }

    fn recorded_with(fail: Option<&'static str>, switch: RootSwitch) -> (Recorder, (Step, i32)) {
        recorded_full(fail, switch, None)
    }

    fn recorded_full(
        fail: Option<&'static str>,
        switch: RootSwitch,
        zygote: Option<ZygoteFds>,
    ) -> (Recorder, (Step, i32)) {
        let (root, devnull) = fixture();
        let filter = [libc::sock_filter {
            code: 6,
            jt: 0,
            jf: 0,
            k: 0x7fff_0000,
        }];
        let fixed = Fixed {
            root: &root,
            seccomp: &filter,
            landlock_abi: 6,
            cap_last_cap: 40,
            uid: 65534,
            gid: 65534,
            hostname: "hearth",
            netns: Some(7),
            devnull: devnull.as_raw_fd(),
            reset_signals: &[11, 13],
            switch,
            zygote,
            as_root: true,
        };
        let env = vec![("_HANDLER".to_owned(), "echo".to_owned())];
        let spec = EnvSpec {
            code_dir: Path::new("/srv/fn/echo"),
            command: "/var/task/bootstrap",
            args: &[],
            env: &env,
            channel: devnull.as_fd(),
            stdout: None,
            stderr: None,
            limits: Limits {
                memory_bytes: 128 << 20,
                pids: 1024,
                cpu_weight: 100,
                cpu: None,
            },
            tmp_bytes: 512 << 20,
            cpus: Some(&[1]),
            loopback: false,
            runtime_dir: None,
            layers: &[],
            zygote: None,
        };
        let plan = build(&fixed, &spec, vec![20, 21], 30, None).unwrap();
        assert_eq!(plan.exec.argv_len(), 1);
        let mut rec = Recorder {
            fail,
            ..Recorder::default()
        };
        let ((step, errno), _) = crate::child::run(&plan, &mut rec);
        (rec, (step, errno))
    }

    #[test]
    fn setup_runs_in_the_order_isolation_needs() {
        let (rec, (step, errno)) = recorded(None);
        // With the fake, execve "succeeds" by returning errno 0 at the last step.
        assert_eq!((step, errno), (Step::Exec, 0));
        let at = |p| rec.position(p);
        assert!(
            at("write 20 0") < at("unshare 0x2000000"),
            "join the cgroup before creating the cgroup namespace"
        );
        assert!(
            at("setns 7") < at("mount - / - 0x44000"),
            "join the empty netns before anything else can open sockets"
        );
        assert!(at("mount - / - 0x44000") < at("mount /run/hearth/root /run/hearth/root"));
        assert!(at("mount /srv/fn/echo /run/hearth/root/var/task") < at("pivot_root"));
        assert!(at("mount proc /run/hearth/root/proc proc") < at("pivot_root"));
        assert!(at("pivot_root") < at("umount2 . MNT_DETACH"));
        assert!(
            at("umount2 . MNT_DETACH") < at("mount - / - 0x1027"),
            "the root is remounted read-only after pivot"
        );
        let close_rest = rec
            .calls
            .iter()
            .rposition(|c| c == "close_range 5")
            .unwrap();
        assert!(at("dup3") < close_rest);
        assert!(
            at("prctl 24 40") < at("setresuid 65534"),
            "the bounding set is dropped while CAP_SETPCAP is held"
        );
        assert!(at("setgroups") < at("setresgid 65534"));
        assert!(at("setresgid 65534") < at("setresuid 65534"));
        assert!(at("setresuid 65534") < at("capset 0"));
        assert!(
            at("prctl 38 1") < at("landlock_create"),
            "landlock needs no_new_privs"
        );
        assert!(at("landlock_restrict") < at("seccomp"));
        assert!(at("seccomp") < at("execve /var/task/bootstrap"));
        assert_eq!(rec.calls.last().unwrap(), "execve /var/task/bootstrap");
        // The code is bound read-only, nosuid, nodev; /tmp is sized.
        assert!(rec
            .calls
            .iter()
            .any(|c| c == "mount - /run/hearth/root/var/task - 0x1027 -"));
        assert!(rec.calls.iter().any(|c| c
            .starts_with("mount tmpfs /run/hearth/root/tmp tmpfs 0x6 size=536870912,mode=1777")));
    }

    /// Without landlock rules, nothing is left at fd 6 beside the ring at fd 7.
    #[test]
    fn a_zygote_without_rules_has_nothing_at_fd_6() {
        let fds = ZygoteFds {
            filter: 40,
            rules: None,
            ring: Some(42),
        };
        let (rec, (step, errno)) = recorded_full(None, RootSwitch::Pivot, Some(fds));
        assert_eq!((step, errno), (Step::Exec, 0));
        let at = |c: &str| rec.calls.iter().position(|x| x == c).unwrap();
        let ring_high = &rec.calls[rec.position("dup_above 42 -> ")];
        let ring_high = ring_high.rsplit(' ').next().unwrap();
        let ring = at(&format!("dup3 {ring_high} 7 false"));
        assert!(ring < at("close_range 6..=6"), "{:?}", rec.calls);
        assert!(
            at("close_range 6..=6") < at("close_range 8"),
            "{:?}",
            rec.calls
        );
    }

    #[test]
    fn a_zygote_keeps_what_its_children_need_and_restricts_nothing_it_must_undo() {
        let fds = ZygoteFds {
            filter: 40,
            rules: Some(41),
            ring: Some(42),
        };
        let (rec, (step, errno)) = recorded_full(None, RootSwitch::Pivot, Some(fds));
        assert_eq!((step, errno), (Step::Exec, 0));
        let at = |p| rec.position(p);
        // Its own network namespace (not the shared one), bounding set emptied but for
        // CAP_SETPCAP (8), CAP_SYS_CHROOT (18) and CAP_SYS_ADMIN (21), kept across the uid
        // switch and made ambient so they survive execve.
        assert!(
            !rec.calls.iter().any(|c| c.starts_with("setns")),
            "{:?}",
            rec.calls
        );
        assert!(rec.calls.iter().any(|c| c == "prctl 24 7"));
        assert!(!rec
            .calls
            .iter()
            .any(|c| c == "prctl 24 8" || c == "prctl 24 18" || c == "prctl 24 21"));
        assert!(
            at("prctl 8 1") < at("setresuid 65534"),
            "PR_SET_KEEPCAPS first"
        );
        assert!(at("setresuid 65534") < at("capset 0x240100"));
        assert!(at("capset 0x240100") < at("ambient_raise 8"));
        assert!(at("ambient_raise 18") < at("ambient_raise 21"));
        assert!(at("ambient_raise 21") < at("seccomp"));
        // Not landlocked (its children build their own rulesets); the children's seccomp
        // program (fd 40 here) is kept at fd 5, their landlock rules (fd 41) at fd 6 and the
        // page-pinning ring (fd 42) at fd 7, none close-on-exec; the zygote's own filter is
        // loaded.
        assert!(!rec.calls.iter().any(|c| c.starts_with("landlock")));
        // Where `from` ended up: its copy above 9, then that copy moved to `target`.
        let moved = |from: RawFd, target: RawFd| {
            let high = &rec.calls[rec.position(&format!("dup_above {from} -> "))];
            let high = high.rsplit(' ').next().unwrap();
            rec.position(&format!("dup3 {high} {target} false"))
        };
        // (The close from fd 8 up, not an earlier "close_range 8..=N" of unused fds.)
        let close_rest = rec.calls.iter().position(|c| c == "close_range 8").unwrap();
        assert!(moved(40, 5) < close_rest, "{:?}", rec.calls);
        assert!(moved(41, 6) < close_rest, "{:?}", rec.calls);
        assert!(moved(42, 7) < close_rest, "{:?}", rec.calls);
        assert!(close_rest < at("seccomp"));
        assert_eq!(rec.calls.last().unwrap(), "execve /var/task/bootstrap");
    }

    #[test]
    fn in_a_chroot_the_child_chroots_instead_of_pivoting() {
        let (rec, (step, _)) = recorded_with(None, RootSwitch::Chroot);
        assert_eq!(step, Step::Exec);
        assert!(!rec
            .calls
            .iter()
            .any(|c| c.starts_with("pivot_root") || c.starts_with("umount2")));
        assert!(
            !rec.calls.iter().any(|c| c == "mount - / - 0x44000 -"),
            "/ is not a mount point there"
        );
        let at = |p| rec.position(p);
        assert!(at("chdir /run/hearth/root") < at("chroot ."));
        assert!(at("mount proc /run/hearth/root/proc") < at("chroot ."));
        assert!(
            at("chroot .") < at("mount - / - 0x1027"),
            "the new root is remounted read-only"
        );
        assert!(
            at("chroot .") < at("prctl 24 0"),
            "capabilities (CAP_SYS_CHROOT too) are dropped after"
        );
    }

    #[test]
    fn a_failing_step_stops_setup_and_is_named() {
        let (rec, (step, errno)) = recorded(Some("pivot_root"));
        assert_eq!((step, errno), (Step::PivotRoot, libc::EPERM));
        assert!(!rec
            .calls
            .iter()
            .any(|c| c.starts_with("execve") || c.starts_with("seccomp")));
        let (_, (step, _)) = recorded(Some("landlock_restrict"));
        assert_eq!(step, Step::LandlockRestrict);
    }

    #[test]
    fn fds_the_child_does_not_use_are_closed_before_anything_else() {
        let (rec, _) = recorded(None);
        let closes: Vec<&String> = rec
            .calls
            .iter()
            .take_while(|c| !c.starts_with("write"))
            .filter(|c| c.starts_with("close_range"))
            .collect();
        // Kept: devnull (the fixture's fd), 7 (netns), 20, 21 (cgroup.procs), 30 (error pipe).
        let devnull = closes[0]
            .trim_start_matches("close_range 0..=")
            .parse::<i32>()
            .unwrap()
            + 1;
        let expect = [
            format!("close_range 0..={}", devnull - 1),
            format!("close_range {}..=6", devnull + 1),
            "close_range 8..=19".to_owned(),
            "close_range 22..=29".to_owned(),
            "close_range 31".to_owned(),
        ];
        assert!(devnull < 7, "fixture's /dev/null fd is small");
        assert_eq!(
            closes.iter().map(|s| s.as_str()).collect::<Vec<_>>(),
            expect.iter().map(String::as_str).collect::<Vec<_>>()
        );
        assert!(rec.position("close_range 31") < rec.position("write 20 0"));
    }

    #[test]
    fn all_fds_but_stdio_channel_and_error_pipe_are_closed() {
        let (rec, _) = recorded(None);
        let dups: Vec<&String> = rec.calls.iter().filter(|c| c.starts_with("dup3")).collect();
        let targets: Vec<&str> = dups.iter().map(|c| c.split(' ').nth(2).unwrap()).collect();
        assert_eq!(targets, ["4", "0", "1", "2", "3"]);
        assert!(
            dups[0].ends_with("true"),
            "the error pipe stays close-on-exec"
        );
        assert!(dups[1..].iter().all(|c| c.ends_with("false")));
        assert!(rec.calls.iter().any(|c| c == "close_range 5"));
    }
}
