//! A shard's zygotes: at most one per function revision, started off the invoke path after
//! the revision's first cold start, used for its later cold starts once ready (see
//! `hearth-snapshot`).
//!
//! A zygote that fails (exits, breaks the protocol, stops answering, or is still initialising
//! after the Init allowance) is killed; its function starts environments from nothing and
//! gets a new zygote after a back-off that doubles with each failure in a row (1 s to 64 s).
//! A function whose program does not support zygote mode (it exits at once) thus costs one
//! extra start per back-off period.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use hearth_sandbox::{Environment, ExitStatus, Sandbox};
use hearth_snapshot::{ChildSpec, ForkError, Zygote, ZygoteState};

use crate::logs::Capture;
use crate::registry::{Function, Registry};

/// How long a zygote may take to become ready (its Init), as an environment's Init may.
const READY_LIMIT: Duration = Duration::from_secs(10);
/// How long the shard waits for an exit status report to follow the exit (the zygote reaps on
/// SIGCHLD; a status that comes later is "unknown").
const STATUS_WAIT: Duration = Duration::from_millis(1);
/// A zygote failing within this long after its predecessor's back-off ended doubles the
/// back-off.
const FAILURE_MEMORY: Duration = Duration::from_secs(60);
/// Zygotes one shard keeps at most (idle ones are retired after the keep-alive).
const MAX_ZYGOTES: usize = 64;
/// How long a zygote that forks no more is kept for environments it forked that still run.
const RETIRE_LIMIT: Duration = Duration::from_secs(3600);
/// Zygotes started per maintenance pass.
const STARTS_PER_PASS: usize = 2;

#[derive(Debug)]
struct Entry {
    function: Arc<Function>,
    zygote: Zygote,
    /// What the zygote prints (its Init's output), moved to the function's log.
    capture: Option<Capture>,
    /// Its last fork (or its start).
    last_used: Instant,
}

/// When a function may get its next zygote.
#[derive(Debug, Clone, Copy)]
struct BackOff {
    failures: u32,
    until: Instant,
}

/// The zygotes of one shard, by function revision id.
#[derive(Debug, Default)]
pub(crate) struct Zygotes {
    live: HashMap<u64, Entry>,
    /// Zygotes that fork no more (retired, outdated or failed) but whose environments still
    /// run: killing a zygote kills every environment it forked (they live in its pid
    /// namespace), so each is kept until its last environment is gone, or [`RETIRE_LIMIT`].
    retiring: Vec<(Entry, Instant)>,
    /// Revisions that want a zygote started (the next maintenance pass does it).
    wanted: Vec<Arc<Function>>,
    backoff: HashMap<u64, BackOff>,
}

impl Zygotes {
    /// Forks an environment from `function`'s zygote if it has a ready one: the environment,
    /// its pid in the zygote's namespace, and whether it entered namespaces the zygote's helper
    /// made ahead. `None`: it has none (one is asked for); `Some(Err)`: the zygote failed and
    /// was discarded.
    pub(crate) fn fork(
        &mut self,
        sandbox: &Sandbox,
        function: &Arc<Function>,
        child: &ChildSpec<'_>,
    ) -> Option<Result<(Environment, u64, bool), ForkError>> {
        let id = function.id();
        let Some(entry) = self.live.get_mut(&id) else {
            if !self.wanted.iter().any(|f| f.id() == id) {
                self.wanted.push(function.clone());
            }
            return None;
        };
        match entry.zygote.poll() {
            ZygoteState::Ready => {}
            ZygoteState::Starting => return None,
            ZygoteState::Broken(why) => {
                let why = why.clone();
                self.discard(id, &why);
                return Some(Err(ForkError::Broken(why)));
            }
        }
        let prepared = entry.zygote.prepared_forks();
        let forked = entry.zygote.fork(sandbox, child).map(|(env, pid)| {
            let ahead = entry.zygote.prepared_forks() > prepared;
            (env, pid, ahead)
        });
        match &forked {
            Ok(_) => entry.last_used = Instant::now(),
            Err(ForkError::Broken(why)) => {
                let why = why.clone();
                self.discard(id, &why);
            }
            // A zygote that cannot fork is replaced too (after the back-off).
            Err(e @ ForkError::Fork(_)) => {
                let why = e.to_string();
                self.discard(id, &why);
            }
            Err(_) => {}
        }
        Some(forked)
    }

    /// Discards zygote `zygote_id` of `function_id` if it is still the live one: a child it
    /// forked died before taking its invocation (with the zygote, which then is broken anyway,
    /// or on its own: its children are not to be trusted to serve).
    pub(crate) fn fail(&mut self, (function_id, zygote_id): (u64, u64), why: &str) {
        if self.zygote_id(function_id) == Some(zygote_id) {
            self.discard(function_id, why);
        }
    }

    /// The id of `function`'s current zygote.
    pub(crate) fn zygote_id(&self, function_id: u64) -> Option<u64> {
        self.live.get(&function_id).map(|e| e.zygote.id())
    }

    /// The exit status zygote `zygote_id` (of `function_id`) reported for its child `pid`;
    /// `None` if that zygote is gone or did not say in time.
    pub(crate) fn exit_status(
        &mut self,
        (function_id, zygote_id, pid): (u64, u64, u64),
    ) -> Option<ExitStatus> {
        let entry = self.entry(function_id, zygote_id)?;
        let status = entry.zygote.exit_status(pid, STATUS_WAIT);
        entry.zygote.forget(pid);
        status
    }

    /// Forgets a child whose environment is gone.
    pub(crate) fn forget(&mut self, (function_id, zygote_id, pid): (u64, u64, u64)) {
        if let Some(entry) = self.entry(function_id, zygote_id) {
            entry.zygote.forget(pid);
        }
    }

    /// Zygote `zygote_id`, live or retiring.
    fn entry(&mut self, function_id: u64, zygote_id: u64) -> Option<&mut Entry> {
        match self.live.get_mut(&function_id) {
            Some(entry) if entry.zygote.id() == zygote_id => Some(entry),
            _ => self
                .retiring
                .iter_mut()
                .map(|(entry, _)| entry)
                .find(|entry| entry.zygote.id() == zygote_id),
        }
    }

    /// Stops forking from `entry`; it is killed once its environments are gone.
    fn retire(&mut self, entry: Entry) {
        if entry.zygote.has_live_children() {
            self.retiring.push((entry, Instant::now()));
        }
    }

    /// Kills a failed zygote and backs off before the next.
    fn discard(&mut self, id: u64, why: &str) {
        if let Some(entry) = self.live.remove(&id) {
            let now = Instant::now();
            let failures = self
                .backoff
                .get(&id)
                .filter(|b| now.saturating_duration_since(b.until) < FAILURE_MEMORY)
                .map_or(0, |b| b.failures)
                + 1;
            let delay = Duration::from_secs(1 << (failures - 1).min(6));
            tracing::warn!(
                function = entry.function.name(),
                version = entry.function.version(),
                error = why,
                retry_in = ?delay,
                "zygote discarded; environments start from nothing meanwhile"
            );
            self.retire(entry);
            self.backoff.insert(
                id,
                BackOff {
                    failures,
                    until: now + delay,
                },
            );
        }
    }

    /// Housekeeping: drops zygotes of outdated revisions and failed ones, and hands what each
    /// printed (its Init's output) to `log`.
    /// Zygotes that forked nothing for `keep_alive` are retired (a cold start asks again).
    pub(crate) fn maintain(
        &mut self,
        registry: &Registry,
        keep_alive: Duration,
        mut log: impl FnMut(&str, &mut Capture),
    ) {
        let now = Instant::now();
        let mut failed = Vec::new();
        let (keep, retired): (HashMap<u64, Entry>, HashMap<u64, Entry>) =
            std::mem::take(&mut self.live)
                .into_iter()
                .partition(|(_, entry)| {
                    registry.is_current(entry.function.name(), entry.function.id())
                        && now.duration_since(entry.last_used) < keep_alive
                });
        self.live = keep;
        for entry in retired.into_values() {
            self.retire(entry);
        }
        self.retiring.retain_mut(|(entry, since)| {
            let _ = entry.zygote.poll();
            entry.zygote.has_live_children() && now.duration_since(*since) < RETIRE_LIMIT
        });
        for (&id, entry) in &mut self.live {
            if let Some(capture) = entry.capture.as_mut() {
                log(entry.function.name(), capture);
            }
            let state = entry.zygote.poll().clone();
            match state {
                ZygoteState::Broken(why) => failed.push((id, why)),
                ZygoteState::Starting if now - entry.zygote.started() > READY_LIMIT => {
                    failed.push((id, format!("not ready after {READY_LIMIT:?}")));
                }
                _ => {}
            }
        }
        for (id, why) in failed {
            self.discard(id, &why);
        }
    }

    /// Takes the revisions that want a zygote now (at most a few per pass, none in back-off
    /// or outdated).
    pub(crate) fn take_wanted(&mut self, registry: &Registry) -> Vec<Arc<Function>> {
        let now = Instant::now();
        let backoff = &self.backoff;
        let live = &self.live;
        self.wanted
            .retain(|f| registry.is_current(f.name(), f.id()) && !live.contains_key(&f.id()));
        let mut ready = Vec::new();
        let room = MAX_ZYGOTES.saturating_sub(live.len()).min(STARTS_PER_PASS);
        self.wanted.retain(|f| {
            let waiting = backoff.get(&f.id()).is_some_and(|b| now < b.until);
            if waiting || ready.len() == room {
                return true;
            }
            ready.push(f.clone());
            false
        });
        ready
    }

    /// Records a started zygote.
    pub(crate) fn insert(
        &mut self,
        function: Arc<Function>,
        zygote: Zygote,
        capture: Option<Capture>,
    ) {
        self.live.insert(
            function.id(),
            Entry {
                function,
                zygote,
                capture,
                last_used: Instant::now(),
            },
        );
    }

    /// A zygote could not even be started: back off as for a failed one.
    pub(crate) fn start_failed(&mut self, function: &Function, why: &str) {
        let now = Instant::now();
        let failures = self
            .backoff
            .get(&function.id())
            .filter(|b| now.saturating_duration_since(b.until) < FAILURE_MEMORY)
            .map_or(0, |b| b.failures)
            + 1;
        tracing::warn!(
            function = function.name(),
            error = why,
            "could not start a zygote"
        );
        self.backoff.insert(
            function.id(),
            BackOff {
                failures,
                until: now + Duration::from_secs(1 << (failures - 1).min(6)),
            },
        );
    }

    /// Pids of the zygote processes.
    pub(crate) fn pids(&mut self) -> Vec<i32> {
        self.live
            .values_mut()
            .map(|e| e.zygote.process().pid())
            .collect()
    }

    /// Kills every zygote (and so every environment forked from one).
    pub(crate) fn clear(&mut self) {
        self.live.clear();
        self.retiring.clear();
        self.wanted.clear();
    }
}
