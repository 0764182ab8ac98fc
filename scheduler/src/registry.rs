//! The function registry: an immutable snapshot behind an [`ArcSwap`], so the invoke path
//! resolves a name with a few atomic operations and no lock, while the control plane replaces
//! the snapshot under a mutex.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use arc_swap::ArcSwap;

use crate::admission::{Account, FunctionConcurrency};
use crate::config::FunctionConfig;
use crate::error::RegistryError;

/// A function as the invoke path sees it. Immutable; a configuration change makes a new one
/// (with a new `id`, so warm environments of the old code are never reused for the new).
#[derive(Debug)]
pub struct Function {
    id: u64,
    config: FunctionConfig,
    concurrency: Arc<FunctionConcurrency>,
    env: Vec<(String, String)>,
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

    /// Configuration.
    pub fn config(&self) -> &FunctionConfig {
        &self.config
    }

    /// Concurrency counters (shared by every revision of the function).
    pub fn concurrency(&self) -> &FunctionConcurrency {
        &self.concurrency
    }

    /// The complete environment of the function's process: Lambda's variables, then the
    /// function's own.
    pub fn process_env(&self) -> &[(String, String)] {
        &self.env
    }
}

/// Lambda's variables for `config`, then the function's own.
fn process_env(config: &FunctionConfig, region: &str) -> Vec<(String, String)> {
    let mut env: Vec<(String, String)> = [
        ("_HANDLER", config.handler.clone()),
        ("AWS_LAMBDA_FUNCTION_NAME", config.name.clone()),
        (
            "AWS_LAMBDA_FUNCTION_MEMORY_SIZE",
            config.memory_mb.to_string(),
        ),
        ("AWS_LAMBDA_FUNCTION_VERSION", "$LATEST".into()),
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
    env.extend(config.environment.iter().cloned());
    env
}

/// One snapshot of every function.
#[derive(Debug, Default)]
struct Snapshot {
    functions: HashMap<String, Arc<Function>>,
}

/// The registry.
#[derive(Debug)]
pub(crate) struct Registry {
    snapshot: ArcSwap<Snapshot>,
    /// Serialises writers (they read-modify-write the snapshot); readers never take it.
    write: Mutex<()>,
    next_id: AtomicU64,
    region: String,
}

impl Registry {
    pub(crate) fn new(region: String) -> Self {
        Self {
            snapshot: ArcSwap::from_pointee(Snapshot::default()),
            write: Mutex::new(()),
            next_id: AtomicU64::new(1),
            region,
        }
    }

    /// The current revision of `name`. Lock-free.
    pub(crate) fn get(&self, name: &str) -> Option<Arc<Function>> {
        self.snapshot.load().functions.get(name).cloned()
    }

    /// Whether `id` is still the current revision of some function. Lock-free.
    pub(crate) fn is_current(&self, name: &str, id: u64) -> bool {
        self.snapshot
            .load()
            .functions
            .get(name)
            .is_some_and(|f| f.id == id)
    }

    pub(crate) fn list(&self) -> Vec<Arc<Function>> {
        let mut all: Vec<_> = self.snapshot.load().functions.values().cloned().collect();
        all.sort_by(|a, b| a.name().cmp(b.name()));
        all
    }

    fn modify<R>(
        &self,
        f: impl FnOnce(&mut HashMap<String, Arc<Function>>) -> Result<R, RegistryError>,
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
        concurrency: Arc<FunctionConcurrency>,
    ) -> Arc<Function> {
        Arc::new(Function {
            id: self.next_id.fetch_add(1, Ordering::Relaxed),
            env: process_env(&config, &self.region),
            config,
            concurrency,
        })
    }

    pub(crate) fn create(&self, config: FunctionConfig) -> Result<Arc<Function>, RegistryError> {
        config.validate()?;
        self.modify(|functions| {
            if functions.contains_key(&config.name) {
                return Err(RegistryError::AlreadyExists(config.name.clone()));
            }
            let function = self.revision(config, Arc::default());
            functions.insert(function.name().to_owned(), function.clone());
            Ok(function)
        })
    }

    pub(crate) fn update(&self, config: FunctionConfig) -> Result<Arc<Function>, RegistryError> {
        config.validate()?;
        self.modify(|functions| {
            let old = functions
                .get(&config.name)
                .ok_or_else(|| RegistryError::NotFound(config.name.clone()))?;
            let function = self.revision(config, old.concurrency.clone());
            functions.insert(function.name().to_owned(), function.clone());
            Ok(function)
        })
    }

    pub(crate) fn delete(&self, account: &Account, name: &str) -> Result<(), RegistryError> {
        self.modify(|functions| {
            let old = functions
                .remove(name)
                .ok_or_else(|| RegistryError::NotFound(name.to_owned()))?;
            if old.concurrency.reserved().is_some() {
                let elsewhere = reserved_total(functions, None);
                account
                    .set_reservation(&old.concurrency, None, elsewhere)
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
            let function = functions
                .get(name)
                .ok_or_else(|| RegistryError::NotFound(name.to_owned()))?;
            let elsewhere = reserved_total(functions, Some(name));
            account
                .set_reservation(&function.concurrency, reservation, elsewhere)
                .map_err(RegistryError::InvalidParameter)
        })
    }
}

fn reserved_total(functions: &HashMap<String, Arc<Function>>, except: Option<&str>) -> u32 {
    functions
        .values()
        .filter(|f| Some(f.name()) != except)
        .filter_map(|f| f.concurrency.reserved())
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
        let registry = Registry::new("us-east-1".into());
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
        let registry = Registry::new("r".into());
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
