//! The steps that build an environment inside the new process, in the order they run. A
//! failure is reported as `(step, errno)` and becomes a [`crate::SetupFailure`] naming the step.

/// One step of environment setup, run by the child between `clone3` and `execve`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(u32)]
#[allow(missing_docs)] // each variant's meaning is its Display text
pub enum Step {
    ResetSignals = 1,
    CloseInheritedFds,
    WaitUserNamespace,
    JoinCgroup,
    UnshareCgroupNamespace,
    JoinNetworkNamespace,
    LoopbackUp,
    ParentDeathSignal,
    MakeMountsPrivate,
    BindRoot,
    BindUsr,
    BindHostDir,
    BindCode,
    BindRuntime,
    MountTmp,
    MountProc,
    BindDevice,
    EnterNewRoot,
    PivotRoot,
    DetachOldRoot,
    Chroot,
    ChdirRoot,
    RemountRootReadOnly,
    SetHostname,
    ResourceLimit,
    ArrangeFds,
    CloseFds,
    DropBoundingSet,
    ClearAmbientCaps,
    SetGroups,
    SetGid,
    SetUid,
    DropCapabilities,
    NoNewPrivs,
    LandlockCreate,
    LandlockRule,
    LandlockRestrict,
    UnblockSignals,
    Seccomp,
    Exec,
    /// A zygote's child forked through libc creating its mount, ipc and uts namespaces.
    EnterNamespaces,
}

impl Step {
    const ALL: [Step; 41] = [
        Step::ResetSignals,
        Step::CloseInheritedFds,
        Step::WaitUserNamespace,
        Step::JoinCgroup,
        Step::UnshareCgroupNamespace,
        Step::JoinNetworkNamespace,
        Step::LoopbackUp,
        Step::ParentDeathSignal,
        Step::MakeMountsPrivate,
        Step::BindRoot,
        Step::BindUsr,
        Step::BindHostDir,
        Step::BindCode,
        Step::BindRuntime,
        Step::MountTmp,
        Step::MountProc,
        Step::BindDevice,
        Step::EnterNewRoot,
        Step::PivotRoot,
        Step::DetachOldRoot,
        Step::Chroot,
        Step::ChdirRoot,
        Step::RemountRootReadOnly,
        Step::SetHostname,
        Step::ResourceLimit,
        Step::ArrangeFds,
        Step::CloseFds,
        Step::DropBoundingSet,
        Step::ClearAmbientCaps,
        Step::SetGroups,
        Step::SetGid,
        Step::SetUid,
        Step::DropCapabilities,
        Step::NoNewPrivs,
        Step::LandlockCreate,
        Step::LandlockRule,
        Step::LandlockRestrict,
        Step::UnblockSignals,
        Step::Seccomp,
        Step::Exec,
        Step::EnterNamespaces,
    ];

    /// Decodes a step number read from the child's error pipe.
    pub fn from_u32(n: u32) -> Option<Self> {
        Self::ALL.iter().copied().find(|s| *s as u32 == n)
    }
}

impl std::fmt::Display for Step {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Step::ResetSignals => "resetting signal handlers",
            Step::CloseInheritedFds => "closing the daemon's other file descriptors",
            Step::WaitUserNamespace => "waiting for the user namespace id maps",
            Step::JoinCgroup => "joining the environment's cgroup",
            Step::UnshareCgroupNamespace => "creating the cgroup namespace",
            Step::JoinNetworkNamespace => "joining the empty network namespace",
            Step::LoopbackUp => "bringing up loopback in the environment's network namespace",
            Step::ParentDeathSignal => "setting the parent-death signal",
            Step::MakeMountsPrivate => "making all mounts private",
            Step::BindRoot => "bind-mounting the root skeleton",
            Step::BindUsr => "bind-mounting /usr read-only",
            Step::BindHostDir => "bind-mounting a host library directory read-only",
            Step::BindCode => "bind-mounting the function code at /var/task read-only",
            Step::BindRuntime => {
                "mounting the runtime directory at /var/runtime and the layers at /opt read-only"
            }
            Step::MountTmp => "mounting the size-limited tmpfs at /tmp",
            Step::MountProc => "mounting a private /proc",
            Step::BindDevice => "bind-mounting a device node into /dev",
            Step::EnterNewRoot => "entering the new root",
            Step::PivotRoot => "pivot_root into the new root",
            Step::DetachOldRoot => "detaching the old root",
            Step::Chroot => {
                "changing root into the new root (chroot: the daemon's root is not a mount point)"
            }
            Step::ChdirRoot => "changing directory to /",
            Step::RemountRootReadOnly => "remounting the root read-only",
            Step::SetHostname => "setting the hostname",
            Step::ResourceLimit => "setting resource limits",
            Step::ArrangeFds => "arranging file descriptors",
            Step::CloseFds => "closing inherited file descriptors",
            Step::DropBoundingSet => "dropping the capability bounding set",
            Step::ClearAmbientCaps => "clearing ambient capabilities",
            Step::SetGroups => "clearing supplementary groups",
            Step::SetGid => "switching to the function's group id",
            Step::SetUid => "switching to the function's user id",
            Step::DropCapabilities => "dropping all capabilities",
            Step::NoNewPrivs => "setting no_new_privs",
            Step::LandlockCreate => "creating the landlock ruleset",
            Step::LandlockRule => "adding a landlock rule",
            Step::LandlockRestrict => "enforcing landlock",
            Step::UnblockSignals => "unblocking signals",
            Step::Seccomp => "loading the seccomp filter",
            Step::Exec => "executing the function",
            Step::EnterNamespaces => {
                "creating the mount, ipc and uts namespaces of an environment forked by a zygote"
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_step_round_trips_through_its_number() {
        for step in Step::ALL {
            assert_eq!(Step::from_u32(step as u32), Some(step));
        }
        assert_eq!(Step::from_u32(0), None);
        assert_eq!(Step::from_u32(999), None);
    }
}
