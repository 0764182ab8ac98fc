//! The function registry: an immutable snapshot behind an [`ArcSwap`], so the invoke path
//! resolves a name (and a version or alias) with a few atomic operations and no lock, while the
//! control plane replaces the snapshot under a mutex.
//!
//! Each function has `$LATEST` (mutable: an update installs a new revision), numbered versions
//! (immutable) and aliases (a version, optionally splitting traffic with a second one by weight).
//! Every revision of every version is a separate [`Function`] with its own id, so warm
//! environments are never reused across code or configuration.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use arc_swap::ArcSwap;

use crate::admission::{Account, FunctionConcurrency};
use crate::config::{FunctionConfig, Launch};
use crate::error::RegistryError;

/// The version name of a function's mutable head.
pub const LATEST: &str = "$LATEST";

/// One version of a function as the invoke path sees it. Immutable but for its provisioned
/// concurrency target; a configuration change makes a new one (with a new `id`, so warm
/// environments of the old code are never reused for the new).
#[derive(Debug)]
pub struct Function {
    id: u64,
    version: String,
    config: FunctionConfig,
    concurrency: Arc<FunctionConcurrency>,
    env: Vec<(String, String)>,
    /// Runtime API header lines passed with each invocation ([`Launch::RuntimeApi`] only).
    runtime_context: Vec<u8>,
    arn: String,
    provisioned: AtomicU32,
}

impl Function {
    /// Unique per configuration revision.
    pub fn id(&self) -> u64 {
        self.id
    }

    /// Name.
    pub fn name(&self) -> &str {
        &self.config.name
    }

    /// `$LATEST` or a version number.
    pub fn version(&self) -> &str {
        &self.version
    }

    /// Configuration.
    pub fn config(&self) -> &FunctionConfig {
        &self.config
    }

    /// Concurrency counters (shared by every version and revision of the function).
    pub fn concurrency(&self) -> &FunctionConcurrency {
        &self.concurrency
    }

    /// The complete environment of the function's process: Lambda's variables, then the
    /// function's own.
    pub fn process_env(&self) -> &[(String, String)] {
        &self.env
    }

    /// Extra Runtime API headers sent with each invocation (empty for native functions): the
    /// invoked function's ARN, qualified by its version unless it is `$LATEST`.
    pub fn runtime_context(&self) -> &[u8] {
        &self.runtime_context
    }

    /// The function's unqualified ARN.
    pub fn arn(&self) -> &str {
        &self.arn
    }

    /// Environments the shards keep started for this version (provisioned concurrency).
    pub fn provisioned(&self) -> u32 {
        self.provisioned.load(Ordering::Relaxed)
    }
}

/// Lambda's variables for `config`, then the function's own.
fn process_env(config: &FunctionConfig, version: &str, region: &str) -> Vec<(String, String)> {
    let mut env: Vec<(String, String)> = [
        ("_HANDLER", config.handler.clone()),
        ("AWS_LAMBDA_FUNCTION_NAME", config.name.clone()),
        (
            "AWS_LAMBDA_FUNCTION_MEMORY_SIZE",
            config.memory_mb.to_string(),
        ),
        ("AWS_LAMBDA_FUNCTION_VERSION", version.into()),
        ("AWS_LAMBDA_INITIALIZATION_TYPE", "on-demand".into()),
        (
            "AWS_LAMBDA_LOG_GROUP_NAME",
            format!("/aws/lambda/{}", config.name),
        ),
        ("AWS_REGION", region.into()),
        ("AWS_DEFAULT_REGION", region.into()),
        ("LAMBDA_TASK_ROOT", "/var/task".into()),
        ("LAMBDA_RUNTIME_DIR", "/var/runtime".into()),
        ("TZ", ":UTC".into()),
        (
            "AWS_LAMBDA_LOG_STREAM_NAME",
            format!("hearth/[{version}]{}", config.name),
        ),
        ("LANG", "en_US.UTF-8".into()),
        ("PATH", "/usr/local/bin:/usr/bin/:/bin:/opt/bin".into()),
        (hearth_ipc::CHANNEL_FD_ENV, "3".into()),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v))
    .collect();
    // Lambda lists eight library directories here; hearth lists only those that exist in the
    // environment. Each missing one costs the dynamic loader about ten failed lookups per
    // library at every cold start (measured for Lambda's eight: +0.6 ms to start the sample
    // function on the development machine).
    if config.code_dir.join("lib").is_dir() {
        env.push(("LD_LIBRARY_PATH".into(), "/var/task/lib".into()));
    }
    if config.launch == Launch::RuntimeApi {
        env.push(("AWS_LAMBDA_RUNTIME_API".into(), "127.0.0.1:9001".into()));
    }
    // Lambda names the managed runtime here (the OS-only `provided` runtimes get none).
    if !config.runtime.is_empty() && !config.runtime.starts_with("provided") {
        env.push((
            "AWS_EXECUTION_ENV".into(),
            format!("AWS_Lambda_{}", config.runtime),
        ));
    }
    env.extend(config.environment.iter().cloned());
    env
}

/// The Runtime API headers of every invocation of `config` (see [`Function::runtime_context`]).
fn runtime_context(config: &FunctionConfig, version: &str, region: &str, account: &str) -> Vec<u8> {
    if config.launch != Launch::RuntimeApi {
        return Vec::new();
    }
    let qualifier = if version == LATEST {
        String::new()
    } else {
        format!(":{version}")
    };
    format!(
        "Lambda-Runtime-Invoked-Function-Arn: arn:aws:lambda:{region}:{account}:function:{}{qualifier}\n",
        config.name
    )
    .into_bytes()
}

/// An alias as the invoke path sees it.
#[derive(Debug, Clone)]
pub struct Alias {
    /// The version it points to.
    pub primary: Arc<Function>,
    /// A second version and the share of invocations it gets, in millionths.
    pub secondary: Option<(Arc<Function>, u32)>,
}

/// Everything known about one function name.
#[derive(Debug, Clone)]
struct Entry {
    latest: Arc<Function>,
    versions: HashMap<String, Arc<Function>>,
    aliases: HashMap<String, Alias>,
}

impl Entry {
    fn version(&self, version: &str) -> Option<&Arc<Function>> {
        if version == LATEST {
            Some(&self.latest)
        } else {
            self.versions.get(version)
        }
    }

    fn all(&self) -> impl Iterator<Item = &Arc<Function>> {
        std::iter::once(&self.latest).chain(self.versions.values())
    }
}

/// One snapshot of every function.
#[derive(Debug, Default)]
struct Snapshot {
    functions: HashMap<String, Entry>,
}

/// The registry.
#[derive(Debug)]
pub(crate) struct Registry {
    snapshot: ArcSwap<Snapshot>,
    /// Serialises writers (they read-modify-write the snapshot); readers never take it.
    write: Mutex<()>,
    next_id: AtomicU64,
    region: String,
    account: String,
}

impl Registry {
    pub(crate) fn new(region: String, account: String) -> Self {
        Self {
            account,
            snapshot: ArcSwap::from_pointee(Snapshot::default()),
            write: Mutex::new(()),
            next_id: AtomicU64::new(1),
            region,
        }
    }

    /// The current revision of `name`'s `$LATEST`. Lock-free.
    pub(crate) fn get(&self, name: &str) -> Option<Arc<Function>> {
        self.snapshot
            .load()
            .functions
            .get(name)
            .map(|e| e.latest.clone())
    }

    /// The version `qualifier` (a version number, `$LATEST` or an alias; `None` is `$LATEST`)
    /// of `name`. An alias with a traffic split picks by `draw`, a uniform number below one
    /// million. Lock-free.
    pub(crate) fn resolve(
        &self,
        name: &str,
        qualifier: Option<&str>,
        draw: u32,
    ) -> Option<Arc<Function>> {
        let snapshot = self.snapshot.load();
        let entry = snapshot.functions.get(name)?;
        let Some(qualifier) = qualifier else {
            return Some(entry.latest.clone());
        };
        if let Some(version) = entry.version(qualifier) {
            return Some(version.clone());
        }
        let alias = entry.aliases.get(qualifier)?;
        match &alias.secondary {
            Some((second, weight)) if draw < *weight => Some(second.clone()),
            _ => Some(alias.primary.clone()),
        }
    }

    /// Whether `id` is still a current revision of some version of `name`. Lock-free.
    pub(crate) fn is_current(&self, name: &str, id: u64) -> bool {
        self.snapshot
            .load()
            .functions
            .get(name)
            .is_some_and(|e| e.all().any(|f| f.id == id))
    }

    /// Every function's `$LATEST`, by name.
    pub(crate) fn list(&self) -> Vec<Arc<Function>> {
        let mut all: Vec<_> = self
            .snapshot
            .load()
            .functions
            .values()
            .map(|e| e.latest.clone())
            .collect();
        all.sort_by(|a, b| a.name().cmp(b.name()));
        all
    }

    /// Every version with a provisioned concurrency target.
    pub(crate) fn provisioned(&self) -> Vec<Arc<Function>> {
        self.snapshot
            .load()
            .functions
            .values()
            .flat_map(Entry::all)
            .filter(|f| f.provisioned() > 0)
            .cloned()
            .collect()
    }

    fn modify<R>(
        &self,
        f: impl FnOnce(&mut HashMap<String, Entry>) -> Result<R, RegistryError>,
    ) -> Result<R, RegistryError> {
        let _guard = self
            .write
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let mut functions = self.snapshot.load().functions.clone();
        let result = f(&mut functions)?;
        self.snapshot.store(Arc::new(Snapshot { functions }));
        Ok(result)
    }

    fn revision(
        &self,
        config: FunctionConfig,
        version: &str,
        concurrency: Arc<FunctionConcurrency>,
    ) -> Arc<Function> {
        Arc::new(Function {
            id: self.next_id.fetch_add(1, Ordering::Relaxed),
            env: process_env(&config, version, &self.region),
            runtime_context: runtime_context(&config, version, &self.region, &self.account),
            arn: format!(
                "arn:aws:lambda:{}:{}:function:{}",
                self.region, self.account, config.name
            ),
            version: version.to_owned(),
            config,
            concurrency,
            provisioned: AtomicU32::new(0),
        })
    }

    pub(crate) fn create(&self, config: FunctionConfig) -> Result<Arc<Function>, RegistryError> {
        config.validate()?;
        self.modify(|functions| {
            if functions.contains_key(&config.name) {
                return Err(RegistryError::AlreadyExists(config.name.clone()));
            }
            let function = self.revision(config, LATEST, Arc::default());
            functions.insert(
                function.name().to_owned(),
                Entry {
                    latest: function.clone(),
                    versions: HashMap::new(),
                    aliases: HashMap::new(),
                },
            );
            Ok(function)
        })
    }

    /// Replaces `$LATEST`.
    pub(crate) fn update(&self, config: FunctionConfig) -> Result<Arc<Function>, RegistryError> {
        config.validate()?;
        self.modify(|functions| {
            let entry = functions
                .get_mut(&config.name)
                .ok_or_else(|| RegistryError::NotFound(config.name.clone()))?;
            let function = self.revision(config, LATEST, entry.latest.concurrency.clone());
            entry.latest = function.clone();
            Ok(function)
        })
    }

    /// Installs (or replaces) numbered version `version` of `config.name`.
    pub(crate) fn put_version(
        &self,
        config: FunctionConfig,
        version: &str,
    ) -> Result<Arc<Function>, RegistryError> {
        config.validate()?;
        if version == LATEST || version.is_empty() {
            return Err(RegistryError::InvalidParameter(format!(
                "'{version}' is not a version number"
            )));
        }
        self.modify(|functions| {
            let entry = functions
                .get_mut(&config.name)
                .ok_or_else(|| RegistryError::NotFound(config.name.clone()))?;
            let function = self.revision(config, version, entry.latest.concurrency.clone());
            entry.versions.insert(version.to_owned(), function.clone());
            Ok(function)
        })
    }

    /// Removes numbered version `version` (and every alias that routes to it).
    pub(crate) fn delete_version(&self, name: &str, version: &str) -> Result<(), RegistryError> {
        self.modify(|functions| {
            let entry = functions
                .get_mut(name)
                .ok_or_else(|| RegistryError::NotFound(name.to_owned()))?;
            let removed = entry
                .versions
                .remove(version)
                .ok_or_else(|| RegistryError::NotFound(format!("{name}:{version}")))?;
            entry.aliases.retain(|_, a| {
                a.primary.id != removed.id
                    && a.secondary.as_ref().is_none_or(|s| s.0.id != removed.id)
            });
            Ok(())
        })
    }

    /// Points alias `alias` of `name` at `version`, sending `weight` millionths of the traffic
    /// to `secondary` if given.
    pub(crate) fn put_alias(
        &self,
        name: &str,
        alias: &str,
        version: &str,
        secondary: Option<(&str, u32)>,
    ) -> Result<(), RegistryError> {
        self.modify(|functions| {
            let entry = functions
                .get_mut(name)
                .ok_or_else(|| RegistryError::NotFound(name.to_owned()))?;
            let find = |v: &str| {
                entry
                    .version(v)
                    .cloned()
                    .ok_or_else(|| RegistryError::NotFound(format!("{name}:{v}")))
            };
            let primary = find(version)?;
            let secondary = match secondary {
                Some((v, weight)) => Some((find(v)?, weight.min(1_000_000))),
                None => None,
            };
            entry
                .aliases
                .insert(alias.to_owned(), Alias { primary, secondary });
            Ok(())
        })
    }

    /// Removes an alias.
    pub(crate) fn delete_alias(&self, name: &str, alias: &str) -> Result<(), RegistryError> {
        self.modify(|functions| {
            functions
                .get_mut(name)
                .and_then(|e| e.aliases.remove(alias))
                .map(|_| ())
                .ok_or_else(|| RegistryError::NotFound(format!("{name}:{alias}")))
        })
    }

    /// Sets how many environments the shards keep started for `version` of `name`.
    pub(crate) fn set_provisioned(
        &self,
        name: &str,
        version: &str,
        count: u32,
    ) -> Result<(), RegistryError> {
        let snapshot = self.snapshot.load();
        let function = snapshot
            .functions
            .get(name)
            .and_then(|e| e.version(version))
            .ok_or_else(|| RegistryError::NotFound(format!("{name}:{version}")))?;
        function.provisioned.store(count, Ordering::Relaxed);
        Ok(())
    }

    pub(crate) fn delete(&self, account: &Account, name: &str) -> Result<(), RegistryError> {
        self.modify(|functions| {
            let old = functions
                .remove(name)
                .ok_or_else(|| RegistryError::NotFound(name.to_owned()))?;
            if old.latest.concurrency.reserved().is_some() {
                let elsewhere = reserved_total(functions, None);
                account
                    .set_reservation(&old.latest.concurrency, None, elsewhere)
                    .map_err(RegistryError::InvalidParameter)?;
            }
            Ok(())
        })
    }

    pub(crate) fn set_reservation(
        &self,
        account: &Account,
        name: &str,
        reservation: Option<u32>,
    ) -> Result<(), RegistryError> {
        self.modify(|functions| {
            let entry = functions
                .get(name)
                .ok_or_else(|| RegistryError::NotFound(name.to_owned()))?;
            let elsewhere = reserved_total(functions, Some(name));
            account
                .set_reservation(&entry.latest.concurrency, reservation, elsewhere)
                .map_err(RegistryError::InvalidParameter)
        })
    }
}

fn reserved_total(functions: &HashMap<String, Entry>, except: Option<&str>) -> u32 {
    functions
        .iter()
        .filter(|(name, _)| Some(name.as_str()) != except)
        .filter_map(|(_, e)| e.latest.concurrency.reserved())
        .fold(0u32, u32::saturating_add)
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;

    fn config(name: &str) -> FunctionConfig {
        FunctionConfig::new(name, "/tmp", "echo")
    }

    #[test]
    fn create_get_update_delete() {
        let account = Account::new(1000);
        let registry = Registry::new("us-east-1".into(), "123456789012".into());
        let first = registry.create(config("a")).unwrap();
        assert_eq!(
            registry.create(config("a")).unwrap_err().error_type(),
            "ResourceConflictException"
        );
        assert_eq!(registry.get("a").unwrap().id(), first.id());
        let second = registry
            .update(FunctionConfig {
                memory_mb: 256,
                ..config("a")
            })
            .unwrap();
        assert_ne!(second.id(), first.id(), "an update is a new revision");
        assert!(
            std::ptr::eq(first.concurrency(), second.concurrency()),
            "concurrency survives updates"
        );
        assert!(!registry.is_current("a", first.id()));
        assert!(second
            .process_env()
            .contains(&("AWS_LAMBDA_FUNCTION_MEMORY_SIZE".into(), "256".into())));
        let v1 = registry.put_version(config("a"), "1").unwrap();
        assert_eq!(v1.version(), "1");
        assert!(v1
            .process_env()
            .contains(&("AWS_LAMBDA_FUNCTION_VERSION".into(), "1".into())));
        registry.put_alias("a", "live", "1", None).unwrap();
        assert_eq!(
            registry.resolve("a", Some("live"), 0).unwrap().id(),
            v1.id()
        );
        assert_eq!(
            registry.resolve("a", Some("$LATEST"), 0).unwrap().id(),
            second.id()
        );
        registry
            .put_alias("a", "split", "1", Some(("$LATEST", 250_000)))
            .unwrap();
        assert_eq!(
            registry.resolve("a", Some("split"), 249_999).unwrap().id(),
            second.id()
        );
        assert_eq!(
            registry.resolve("a", Some("split"), 250_000).unwrap().id(),
            v1.id()
        );
        assert!(registry.is_current("a", v1.id()));
        registry.delete_version("a", "1").unwrap();
        assert!(
            registry.resolve("a", Some("live"), 0).is_none(),
            "aliases of a deleted version go too"
        );
        assert!(!registry.is_current("a", v1.id()));
        registry.delete(&account, "a").unwrap();
        assert!(registry.get("a").is_none());
        assert_eq!(
            registry.delete(&account, "a").unwrap_err().error_type(),
            "ResourceNotFoundException"
        );
    }

    #[test]
    fn reservations_add_up_across_functions() {
        let account = Account::new(1000);
        let registry = Registry::new("r".into(), "123456789012".into());
        registry.create(config("a")).unwrap();
        registry.create(config("b")).unwrap();
        registry.set_reservation(&account, "a", Some(600)).unwrap();
        assert!(registry.set_reservation(&account, "b", Some(301)).is_err());
        registry.set_reservation(&account, "b", Some(300)).unwrap();
        assert_eq!(account.unreserved_limit(), 100);
        registry.delete(&account, "a").unwrap();
        assert_eq!(
            account.unreserved_limit(),
            700,
            "deleting a function returns its reservation"
        );
    }
}
