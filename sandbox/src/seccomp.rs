//! Seccomp policy: an allowlist kept as data (`seccomp/*.allow`, one commented rule per line),
//! compiled once with libseccomp into a BPF program that every environment loads as the last
//! step before `execve`.
//!
//! Unlisted syscalls fail with `ENOSYS` (programs that probe newer syscalls fall back); the
//! explicitly refused ones fail with `EPERM`; a syscall from another architecture, or an x32
//! syscall (`nr | 0x40000000`), kills the process.

use std::io::{Read, Seek};

use libseccomp::{
    ScmpAction, ScmpArch, ScmpArgCompare, ScmpCompareOp, ScmpFilterContext, ScmpSyscall,
};

/// The policy for native functions.
pub const NATIVE_ALLOWLIST: &str = include_str!("../seccomp/native.allow");
/// What a zygote may do beyond the native policy (see [`SeccompProgram::zygote`]).
pub const ZYGOTE_ALLOWLIST: &str = include_str!("../seccomp/zygote.allow");

/// Errors while reading or compiling a policy.
#[derive(Debug, thiserror::Error)]
pub enum SeccompError {
    /// A line of the policy file is malformed.
    #[error("seccomp policy line {line}: {why}")]
    Parse {
        /// 1-based line number.
        line: usize,
        /// What is wrong.
        why: String,
    },
    /// libseccomp refused the filter.
    #[error("compiling the seccomp filter")]
    Compile(#[source] libseccomp::error::SeccompError),
    /// Reading the compiled program back.
    #[error("exporting the seccomp filter")]
    Export(#[source] std::io::Error),
}

/// What a rule does when it matches.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    /// Let the syscall through.
    Allow,
    /// Fail it with this errno.
    Errno(i32),
}

/// One line of a policy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rule {
    /// Syscall name.
    pub syscall: String,
    /// What happens.
    pub action: Action,
    /// Optional argument condition: (argument index, mask, value); the rule matches when
    /// `arg & mask == value`.
    pub condition: Option<(u32, u64, u64)>,
}

/// Parses a policy file. Every rule must carry a `# why` comment.
pub fn parse(policy: &str) -> Result<Vec<Rule>, SeccompError> {
    let mut rules = Vec::new();
    for (i, raw) in policy.lines().enumerate() {
        let line = i + 1;
        let err = |why: String| SeccompError::Parse { line, why };
        let (body, comment) = match raw.split_once('#') {
            Some((body, comment)) => (body.trim(), comment.trim()),
            None => (raw.trim(), ""),
        };
        if body.is_empty() {
            continue;
        }
        if comment.is_empty() {
            return Err(err("every rule needs a '# why' comment".into()));
        }
        let mut words = body.split_whitespace();
        let syscall = words.next().unwrap_or_default().to_owned();
        let action = match words.next() {
            Some("allow") => Action::Allow,
            Some("errno") => match words.next() {
                Some("EPERM") => Action::Errno(libc::EPERM),
                Some("ENOSYS") => Action::Errno(libc::ENOSYS),
                Some("EACCES") => Action::Errno(libc::EACCES),
                other => return Err(err(format!("unknown errno {other:?}"))),
            },
            other => return Err(err(format!("unknown action {other:?}"))),
        };
        let condition = words
            .next()
            .map(|c| parse_condition(c).ok_or_else(|| err(format!("bad condition {c:?}"))))
            .transpose()?;
        if let Some(extra) = words.next() {
            return Err(err(format!("unexpected {extra:?}")));
        }
        rules.push(Rule {
            syscall,
            action,
            condition,
        });
    }
    Ok(rules)
}

/// `argN==V` or `argN&MASK==V` (numbers in decimal or 0x hex).
fn parse_condition(c: &str) -> Option<(u32, u64, u64)> {
    let rest = c.strip_prefix("arg")?;
    let (lhs, value) = rest.split_once("==")?;
    let (index, mask) = match lhs.split_once('&') {
        Some((index, mask)) => (index, number(mask)?),
        None => (lhs, u64::MAX),
    };
    let index: u32 = index.parse().ok().filter(|&i| i < 6)?;
    Some((index, mask, number(value)?))
}

fn number(s: &str) -> Option<u64> {
    match s.strip_prefix("0x") {
        Some(hex) => u64::from_str_radix(hex, 16).ok(),
        None => s.parse().ok(),
    }
}

/// A compiled filter, ready to load.
#[derive(Debug, Clone)]
pub struct SeccompProgram {
    filter: Vec<libc::sock_filter>,
}

impl SeccompProgram {
    /// Compiles `rules` for x86_64; unlisted syscalls fail with `ENOSYS`.
    pub fn compile(rules: &[Rule]) -> Result<Self, SeccompError> {
        Self::compile_with_default(rules, ScmpAction::Errno(libc::ENOSYS))
    }

    fn compile_with_default(rules: &[Rule], default: ScmpAction) -> Result<Self, SeccompError> {
        let mut ctx = ScmpFilterContext::new(default).map_err(SeccompError::Compile)?;
        ctx.set_act_badarch(ScmpAction::KillProcess)
            .map_err(SeccompError::Compile)?;
        // The filter is loaded after no_new_privs is set explicitly.
        ctx.set_ctl_nnp(false).map_err(SeccompError::Compile)?;
        // A binary tree of syscall numbers instead of one comparison per rule: O(log n) per
        // syscall, and much cheaper to load, because the kernel emulates the filter for every
        // syscall number when it is installed (its action cache). Measured on the development
        // machine: loading costs about 3.5 us per instruction a linear filter walks.
        ctx.set_ctl_optimize(2).map_err(SeccompError::Compile)?;
        for rule in rules {
            // libseccomp refuses rules that repeat the default action; they are its outcome
            // anyway (e.g. clone3 -> ENOSYS is listed for the reader's sake).
            let repeats_default = match (rule.action, default) {
                (Action::Errno(e), ScmpAction::Errno(d)) => e == d,
                (Action::Allow, ScmpAction::Allow) => true,
                _ => false,
            };
            // (A conditional one too: what it matches gets the default action anyway.)
            if repeats_default {
                continue;
            }
            let syscall = ScmpSyscall::from_name_by_arch(&rule.syscall, ScmpArch::X8664)
                .map_err(SeccompError::Compile)?;
            let action = match rule.action {
                Action::Allow => ScmpAction::Allow,
                Action::Errno(e) => ScmpAction::Errno(e),
            };
            match rule.condition {
                None => ctx.add_rule_exact(action, syscall),
                Some((arg, mask, value)) => {
                    let op = if mask == u64::MAX {
                        ScmpCompareOp::Equal
                    } else {
                        ScmpCompareOp::MaskedEqual(mask)
                    };
                    ctx.add_rule_conditional_exact(
                        action,
                        syscall,
                        &[ScmpArgCompare::new(arg, op, value)],
                    )
                }
            }
            .map_err(SeccompError::Compile)?;
        }
        let mut file = tempfile_in_memory().map_err(SeccompError::Export)?;
        ctx.export_bpf(&file).map_err(SeccompError::Compile)?;
        let mut bytes = Vec::new();
        file.rewind().map_err(SeccompError::Export)?;
        file.read_to_end(&mut bytes).map_err(SeccompError::Export)?;
        let filter = bytes
            .chunks_exact(8)
            .map(|c| libc::sock_filter {
                code: u16::from_ne_bytes([c[0], c[1]]),
                jt: c[2],
                jf: c[3],
                k: u32::from_ne_bytes([c[4], c[5], c[6], c[7]]),
            })
            .collect();
        Ok(Self { filter })
    }

    /// The native allowlist, compiled.
    pub fn native() -> Result<Self, SeccompError> {
        Self::compile(&parse(NATIVE_ALLOWLIST)?)
    }

    /// A zygote's policy: the native one, with the syscalls [`ZYGOTE_ALLOWLIST`] names ruled
    /// by its lines instead.
    pub fn zygote() -> Result<Self, SeccompError> {
        Self::compile(&zygote_rules()?)
    }

    /// What a zygote's child loads on top of the zygote's policy to end up under exactly the
    /// native one: for each syscall the zygote policy rules differently, the native policy's
    /// rules (`ENOSYS` where it has none); every other syscall allowed, since the zygote's
    /// filter already rules it as the native policy does. A few rules instead of the whole
    /// policy: the kernel's cost to load a filter grows with the instructions it walks for
    /// every syscall number (about 100 us for the native policy on the development machine).
    pub fn zygote_child() -> Result<Self, SeccompError> {
        let overridden: Vec<String> = parse(ZYGOTE_ALLOWLIST)?
            .into_iter()
            .map(|r| r.syscall)
            .collect();
        let native = parse(NATIVE_ALLOWLIST)?;
        let mut rules = Vec::new();
        for name in overridden.iter().collect::<std::collections::BTreeSet<_>>() {
            let own: Vec<Rule> = native
                .iter()
                .filter(|r| &r.syscall == name)
                .cloned()
                .collect();
            if own.is_empty() {
                rules.push(Rule {
                    syscall: name.clone(),
                    action: Action::Errno(libc::ENOSYS),
                    condition: None,
                });
            }
            rules.extend(own);
        }
        Self::compile_with_default(&rules, ScmpAction::Allow)
    }
}

/// The rules of a zygote's policy (see [`SeccompProgram::zygote`]).
pub fn zygote_rules() -> Result<Vec<Rule>, SeccompError> {
    let overrides = parse(ZYGOTE_ALLOWLIST)?;
    let mut rules: Vec<Rule> = parse(NATIVE_ALLOWLIST)?
        .into_iter()
        .filter(|r| !overrides.iter().any(|o| o.syscall == r.syscall))
        .collect();
    rules.extend(overrides);
    Ok(rules)
}

impl SeccompProgram {
    /// The BPF instructions.
    pub fn instructions(&self) -> &[libc::sock_filter] {
        &self.filter
    }

    /// The instructions as the kernel lays out `struct sock_filter` (8 bytes each, native
    /// byte order), for a zygote to load into its children.
    pub fn as_bytes(&self) -> Vec<u8> {
        let mut bytes = Vec::with_capacity(self.filter.len() * 8);
        for f in &self.filter {
            bytes.extend_from_slice(&f.code.to_ne_bytes());
            bytes.extend_from_slice(&[f.jt, f.jf]);
            bytes.extend_from_slice(&f.k.to_ne_bytes());
        }
        bytes
    }
}

/// A policy rule with its syscall resolved to the x86_64 number the filter matches.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResolvedRule {
    /// Syscall name, as written in the policy.
    pub syscall: String,
    /// Its x86_64 number.
    pub nr: i32,
    /// What happens when the rule matches.
    pub action: Action,
    /// The rule's argument condition, as in [`Rule::condition`].
    pub condition: Option<(u32, u64, u64)>,
}

/// Resolves each rule's syscall to its x86_64 number with libseccomp, as
/// [`SeccompProgram::compile`] does, in the policy's order. Used by the seccomp sweep to know
/// which numbers the filter lets through.
pub fn resolve(rules: &[Rule]) -> Result<Vec<ResolvedRule>, SeccompError> {
    rules
        .iter()
        .map(|rule| {
            let syscall = ScmpSyscall::from_name_by_arch(&rule.syscall, ScmpArch::X8664)
                .map_err(SeccompError::Compile)?;
            Ok(ResolvedRule {
                syscall: rule.syscall.clone(),
                nr: i32::from(syscall),
                action: rule.action,
                condition: rule.condition,
            })
        })
        .collect()
}

/// Every x86_64 syscall number (0..=1023) libseccomp has a name for, with the name, in
/// ascending order. Numbers it does not know (syscalls newer than the library) are left out.
pub fn x86_64_syscall_names() -> Vec<(i32, String)> {
    (0..=1023)
        .filter_map(|nr| {
            ScmpSyscall::from(nr)
                .get_name_by_arch(ScmpArch::X8664)
                .ok()
                .map(|name| (nr, name))
        })
        .collect()
}

fn tempfile_in_memory() -> std::io::Result<std::fs::File> {
    // SAFETY: memfd_create with a static name; the fd is owned by the File.
    let fd = unsafe { libc::memfd_create(c"hearth-seccomp".as_ptr(), libc::MFD_CLOEXEC) };
    if fd < 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: a fresh fd nobody else owns.
    Ok(std::fs::File::from(unsafe { crate::sys::own_fd(fd) }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_zygote_policy_widens_only_what_children_need() {
        let native = parse(NATIVE_ALLOWLIST).unwrap();
        let zygote = zygote_rules().unwrap();
        SeccompProgram::zygote().unwrap();
        SeccompProgram::zygote_child().unwrap();
        let names = |rules: &[Rule], name: &str| {
            rules
                .iter()
                .filter(|r| r.syscall == name)
                .cloned()
                .collect::<Vec<_>>()
        };
        // Still refused to a zygote: everything the native policy refuses but these.
        let widened = [
            "unshare",
            "setns",
            "pidfd_open",
            "sched_setscheduler",
            "mount",
            "capset",
            "landlock_create_ruleset",
            "landlock_add_rule",
            "landlock_restrict_self",
            "io_uring_register",
        ];
        for rule in &native {
            if !widened.contains(&rule.syscall.as_str()) {
                assert!(zygote.contains(rule), "{rule:?} lost");
            }
        }
        // unshare: a pid namespace (zygote), mount+ipc+uts and a cgroup namespace (child),
        // never a user or network namespace; setns only into a pid namespace (back to its own)
        // and into the mount, ipc and uts namespaces its helper made; mounts only
        // with the two flag sets a child uses.
        let conditions = |name| {
            names(&zygote, name)
                .iter()
                .map(|r| (r.action, r.condition))
                .collect::<Vec<_>>()
        };
        assert_eq!(
            conditions("unshare"),
            [
                (Action::Allow, Some((0, u64::MAX, 0x2000_0000))),
                (Action::Allow, Some((0, u64::MAX, 0x0c02_0000))),
                (Action::Allow, Some((0, u64::MAX, 0x0200_0000))),
            ]
        );
        assert_eq!(
            conditions("setns"),
            [
                (Action::Allow, Some((1, u64::MAX, 0x2000_0000))),
                (Action::Allow, Some((1, u64::MAX, 0x0002_0000))),
                (Action::Allow, Some((1, u64::MAX, 0x0800_0000))),
                (Action::Allow, Some((1, u64::MAX, 0x0400_0000))),
            ]
        );
        assert!(names(&zygote, "mount")
            .iter()
            .all(|r| r.condition.is_some() && r.action == Action::Allow));
        // io_uring: registering and unregistering buffers (opcodes 0 and 1) on the ring hearth
        // gave it, nothing else; no ring of its own, no submissions.
        assert_eq!(
            conditions("io_uring_register"),
            [
                (Action::Allow, Some((1, u64::MAX, 0))),
                (Action::Allow, Some((1, u64::MAX, 1))),
            ]
        );
        for still in [
            "clone",
            "ptrace",
            "bpf",
            "io_uring_setup",
            "io_uring_enter",
            "umount2",
            "move_mount",
        ] {
            assert_eq!(names(&zygote, still), names(&native, still), "{still}");
        }
    }

    /// The children's filter allows by default and restates the native rules of each syscall
    /// the zygote policy widens: stacked on the zygote's, it equals the native policy only if
    /// the native rules of each such syscall decide every call (an unconditional rule), or the
    /// syscall is unlisted there (the child filter then refuses it with ENOSYS).
    #[test]
    fn the_native_rules_of_every_widened_syscall_decide_every_call() {
        let native = parse(NATIVE_ALLOWLIST).unwrap();
        for name in parse(ZYGOTE_ALLOWLIST).unwrap().iter().map(|r| &r.syscall) {
            let own: Vec<&Rule> = native.iter().filter(|r| &r.syscall == name).collect();
            assert!(
                own.is_empty() || own.iter().any(|r| r.condition.is_none()),
                "native's rules for {name} are all conditional: the child filter would let the \
                 rest through ({own:?})"
            );
        }
    }

    #[test]
    fn the_native_allowlist_parses_and_compiles() {
        let rules = parse(NATIVE_ALLOWLIST).unwrap();
        assert!(rules.len() > 150);
        for denied in [
            "io_uring_setup",
            "mount",
            "unshare",
            "setns",
            "ptrace",
            "bpf",
            "keyctl",
            "userfaultfd",
            "perf_event_open",
        ] {
            let rule = rules
                .iter()
                .find(|r| r.syscall == denied)
                .unwrap_or_else(|| panic!("{denied} not in the policy"));
            assert_eq!(rule.action, Action::Errno(libc::EPERM), "{denied}");
        }
        let program = SeccompProgram::compile(&rules).unwrap();
        assert!(program.instructions().len() > 50);
    }

    #[test]
    fn rules_resolve_to_x86_64_numbers() {
        let rules = parse(NATIVE_ALLOWLIST).unwrap();
        let resolved = resolve(&rules).unwrap();
        assert_eq!(resolved.len(), rules.len());
        let nr_of = |name: &str| resolved.iter().find(|r| r.syscall == name).unwrap().nr;
        assert_eq!(i64::from(nr_of("read")), libc::SYS_read);
        assert_eq!(i64::from(nr_of("clone")), libc::SYS_clone);
        assert_eq!(i64::from(nr_of("io_uring_setup")), libc::SYS_io_uring_setup);
        assert_eq!(i64::from(nr_of("futex_waitv")), libc::SYS_futex_waitv);
        let ioctl: Vec<_> = resolved.iter().filter(|r| r.syscall == "ioctl").collect();
        assert!(ioctl.len() > 1);
        assert!(ioctl.iter().all(|r| i64::from(r.nr) == libc::SYS_ioctl));
        assert_eq!(ioctl[0].condition, Some((1, 0xffff_ffff, 0x5401)));
        let unknown = resolve(&[Rule {
            syscall: "no_such_syscall".into(),
            action: Action::Allow,
            condition: None,
        }]);
        assert!(matches!(unknown, Err(SeccompError::Compile(_))));
    }

    #[test]
    fn x86_64_names_cover_the_table() {
        let names = x86_64_syscall_names();
        assert!(names.len() > 300, "{}", names.len());
        assert!(names.windows(2).all(|w| w[0].0 < w[1].0));
        let name = |nr: i64| {
            names
                .iter()
                .find(|(n, _)| i64::from(*n) == nr)
                .map(|(_, s)| s.as_str())
        };
        assert_eq!(name(libc::SYS_read), Some("read"));
        assert_eq!(name(libc::SYS_getpid), Some("getpid"));
        assert_eq!(name(libc::SYS_io_uring_setup), Some("io_uring_setup"));
        // x32-only numbers are not x86_64 syscalls.
        assert!(names.iter().all(|(nr, _)| *nr < 512), "{names:?}");
    }

    #[test]
    fn malformed_lines_are_refused_with_their_number() {
        let err = parse("read allow # ok\nwrite allow\n").unwrap_err();
        assert!(matches!(err, SeccompError::Parse { line: 2, .. }), "{err}");
        let err = parse("ioctl allow arg9==1 # no such arg\n").unwrap_err();
        assert!(matches!(err, SeccompError::Parse { line: 1, .. }), "{err}");
        assert_eq!(
            parse_condition("arg1&0xffffffff==0x5401"),
            Some((1, 0xffff_ffff, 0x5401))
        );
        assert_eq!(parse_condition("arg0==10"), Some((0, u64::MAX, 10)));
    }
}
