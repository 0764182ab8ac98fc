//! Landlock: which filesystem paths an environment may touch, enforced by the kernel after
//! `no_new_privs` and before seccomp.
//!
//! Rules (paths inside the environment): `/` read and execute; `/tmp` everything; the device
//! nodes in `/dev` read and write. Handled rights are everything the kernel's ABI knows, up to
//! the ABI hearth was written against ([`TARGET_ABI`]); on ABI 6+ abstract unix sockets and
//! signals are also scoped to the environment. Landlock must be available unless the operator
//! opts out ([`LandlockMode::BestEffort`]): a kernel without it fails closed.

use std::ffi::CString;

use landlock::{Access, AccessFs, BitFlags, Scope, ABI};

/// The rules an environment restricts itself with: what [`plan`] decides for the kernel's ABI.
/// A zygote's children apply the same rules (see `EnvSpec::zygote`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LandlockRules {
    /// The ABI the rules are written for (the kernel's, at most [`TARGET_ABI`]).
    pub abi: u32,
    /// Filesystem rights handled: every one not granted by a rule is denied.
    pub handled_fs: u64,
    /// Scopes (ABI 6+: abstract unix sockets and signals); 0 for none.
    pub scoped: u64,
    /// Paths (absolute, inside the environment) and the rights granted beneath each.
    pub rules: Vec<(CString, u64)>,
}

impl LandlockRules {
    /// `struct landlock_ruleset_attr` (no network rights handled).
    pub fn attr(&self) -> [u64; 3] {
        [self.handled_fs, 0, self.scoped]
    }

    /// How many bytes of [`LandlockRules::attr`] the kernel reads at this ABI: filesystem
    /// rights only (1-3), plus network rights (4-5), plus scopes (6+).
    pub fn attr_size(&self) -> usize {
        match self.abi {
            0..=3 => 8,
            4..=5 => 16,
            _ => 24,
        }
    }
}

/// The newest landlock ABI whose rights hearth hands out deliberately.
pub const TARGET_ABI: u32 = 6;

/// What to do when the kernel has no landlock.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum LandlockMode {
    /// Refuse to start environments (the default: fail closed).
    #[default]
    Required,
    /// Start them without landlock; seccomp, namespaces and credentials still apply.
    BestEffort,
}

/// The kernel's landlock ABI version (0 if unsupported).
pub fn kernel_abi() -> u32 {
    const LANDLOCK_CREATE_RULESET_VERSION: u32 = 1;
    // SAFETY: a NULL attribute with size 0 and the VERSION flag only queries the ABI.
    let v = unsafe {
        libc::syscall(
            libc::SYS_landlock_create_ruleset,
            std::ptr::null::<u8>(),
            0,
            LANDLOCK_CREATE_RULESET_VERSION,
        )
    };
    u32::try_from(v).unwrap_or(0)
}

fn bits(flags: BitFlags<AccessFs>) -> u64 {
    flags.bits()
}

/// The rules every environment gets, for a kernel of `abi` (0 = none).
pub(crate) fn plan(abi: u32) -> Option<LandlockRules> {
    if abi == 0 {
        return None;
    }
    let effective = abi.min(TARGET_ABI);
    let version = ABI::from(i32::try_from(effective).unwrap_or(1));
    let all = AccessFs::from_all(version);
    let read = AccessFs::from_read(version);
    let file_rw = (AccessFs::ReadFile | AccessFs::WriteFile | AccessFs::Truncate)
        & AccessFs::from_file(version);
    let mut rules = vec![
        (CString::from(c"/"), bits(read)),
        (CString::from(c"/tmp"), bits(all)),
    ];
    for dev in ["/dev/null", "/dev/zero", "/dev/random", "/dev/urandom"] {
        rules.push((CString::new(dev).unwrap_or_default(), bits(file_rw)));
    }
    let scoped = if effective >= 6 {
        (Scope::AbstractUnixSocket | Scope::Signal).bits()
    } else {
        0
    };
    Some(LandlockRules {
        abi: effective,
        handled_fs: bits(all),
        scoped,
        rules,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn root_is_read_only_and_tmp_is_writable() {
        let plan = plan(7).unwrap();
        assert_eq!(plan.abi, 6);
        let root = plan
            .rules
            .iter()
            .find(|(p, _)| p.as_bytes() == b"/")
            .unwrap()
            .1;
        let tmp = plan
            .rules
            .iter()
            .find(|(p, _)| p.as_bytes() == b"/tmp")
            .unwrap()
            .1;
        assert_eq!(root & AccessFs::WriteFile as u64, 0);
        assert_eq!(root & AccessFs::Execute as u64, AccessFs::Execute as u64);
        assert_eq!(tmp, plan.handled_fs);
        assert_ne!(plan.scoped, 0);
        // Every rule grants only handled rights.
        for (_, access) in &plan.rules {
            assert_eq!(access & !plan.handled_fs, 0);
        }
    }

    #[test]
    fn older_kernels_get_fewer_rights_and_no_scoping() {
        let plan = plan(1).unwrap();
        assert_eq!(plan.handled_fs & AccessFs::Truncate as u64, 0);
        assert_eq!(plan.scoped, 0);
        assert!(super::plan(0).is_none());
    }
}
