//! Builds one isolated execution environment: a process tree in its own pid, mount, ipc, uts
//! and cgroup namespaces (plus a user namespace when hearth is not root), with no network, a
//! minimal read-only root, the function code read-only at `/var/task`, a size-limited tmpfs at
//! `/tmp`, a private `/proc`, a seccomp allowlist, landlock, no capabilities, `no_new_privs`,
//! its own cgroup with memory, pids and CPU limits, and only stdio and its channel open.
//!
//! [`Sandbox::new`] does the once-per-daemon work (compile the seccomp filter, check landlock,
//! create the empty network namespace, prepare the root skeleton and the cgroup subtree);
//! [`Sandbox::spawn`] starts one environment with `clone3` (see [`child`] for the steps, in
//! order) and returns at once; the child finishes its setup on its own and reports a failed step
//! through a pipe ([`Environment::poll_setup`]).
#![warn(missing_docs)]

pub mod cgroup;
mod child;
pub mod landlock;
mod netns;
mod plan;
mod root;
pub mod seccomp;
mod spawn;
mod step;
mod sys;

pub use cgroup::{CgroupError, EnvCgroup, Hierarchy, Limits};
pub use landlock::{LandlockMode, LandlockRules};
pub use seccomp::{SeccompError, SeccompProgram};
pub use spawn::{
    chrooted, pipe, setup_error_pipe, AdoptError, CgroupPolicy, EnvSpec, Environment, Sandbox,
    SandboxConfig, SandboxError, SetupFailure, SetupState, SpawnError, ZygoteSpec,
};
pub use step::Step;
pub use sys::{sealed_memfd, ExitStatus};
