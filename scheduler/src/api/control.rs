//! The control plane: one thread that owns the state database and the code store, serves every
//! Lambda operation but Invoke, and publishes each change to the engine's registry (the
//! lock-free snapshot the invoke path reads) only after it is committed.

use std::collections::{BTreeMap, HashSet};
use std::time::{Duration, SystemTime};

use base64::Engine as _;
use crossbeam_channel::{Receiver, Sender};
use serde_json::{json, Map, Value};

use crate::api::model::{
    revision_id, timestamp, AliasRecord, FunctionRecord, LayerRecord, LayerRef, LayerVersionRecord,
    Provisioned, VersionConfig,
};
use crate::api::{
    runtime, valid_layer_name, ApiError, FunctionRef, Identity, LayerArn, LAYER_NAME_PATTERN,
    LAYER_VERSION_ARN_PATTERN,
};
use crate::code::{CodeLimits, CodeStore};
use crate::engine::{Engine, Waker};
use crate::http::{percent_decode, query_pairs, Response};
use crate::store::Store;
use crate::{FunctionConfig, LATEST};

/// Lambda's limit on the layers one function uses.
const MAX_LAYERS: usize = 5;

/// A request handed over by a shard.
#[derive(Debug)]
pub(crate) struct ControlRequest {
    pub shard: usize,
    pub tag: u64,
    pub method: String,
    pub path: String,
    pub query: String,
    pub body: Vec<u8>,
    pub request_id: String,
    /// The request's `Host`, for URLs handed back to the client.
    pub host: String,
}

/// The answer, sent back to the shard.
#[derive(Debug)]
pub(crate) struct ControlReply {
    pub tag: u64,
    pub request_id: String,
    pub response: Response,
}

/// Where replies go: one channel and waker per shard.
#[derive(Debug)]
pub(crate) struct ReplyTo {
    pub replies: Vec<Sender<ControlReply>>,
    pub wakers: Vec<Waker>,
}

type Result<T> = std::result::Result<T, ApiError>;

/// The control plane's state.
pub(crate) struct Control {
    identity: Identity,
    store: Store,
    code: CodeStore,
    limits: CodeLimits,
    functions: BTreeMap<String, FunctionRecord>,
    layers: BTreeMap<String, LayerRecord>,
    /// Signs the code download URLs `GetFunction` hands out (new at every start).
    url_key: [u8; 32],
}

impl std::fmt::Debug for Control {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Control")
            .field("functions", &self.functions.len())
            .field("layers", &self.layers.len())
            .finish_non_exhaustive()
    }
}

/// Logs a registry update that failed after its change was committed. Validation happens
/// before the commit, so this means a bug; the committed state is what a restart installs.
fn published<T, E: std::fmt::Display>(what: &str, result: std::result::Result<T, E>) {
    if let Err(e) = result {
        tracing::error!(%what, error = %e, "committed change could not be published to the registry");
    }
}

fn store_error(e: impl std::fmt::Display) -> ApiError {
    tracing::error!(error = %e, "state change failed");
    ApiError::service(format!("could not save the change: {e}"))
}

fn json_body(body: &[u8]) -> Result<Map<String, Value>> {
    if body.is_empty() {
        return Ok(Map::new());
    }
    let text = std::str::from_utf8(body).map_err(|_| {
        ApiError::new(
            400,
            "InvalidRequestContentException",
            "Could not parse request body into json: the body is not valid UTF-8",
        )
    })?;
    match serde_json::from_str::<Value>(text) {
        Ok(Value::Object(map)) => Ok(map),
        Ok(_) => Err(ApiError::new(
            400,
            "InvalidRequestContentException",
            "Could not parse request body into json: expected a JSON object",
        )),
        Err(e) => Err(ApiError::new(
            400,
            "InvalidRequestContentException",
            format!("Could not parse request body into json: {e}"),
        )),
    }
}

/// Typed field access with Lambda's validation errors.
struct Fields<'a>(&'a Map<String, Value>);

impl Fields<'_> {
    fn string(&self, key: &str) -> Result<Option<String>> {
        match self.0.get(key) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::String(s)) => Ok(Some(s.clone())),
            Some(_) => Err(ApiError::invalid(format!("'{key}' must be a string"))),
        }
    }

    fn required(&self, key: &str) -> Result<String> {
        self.string(key)?.ok_or_else(|| {
            ApiError::invalid(format!(
                "1 validation error detected: Value null at '{key}' failed to satisfy constraint: Member must not be null"
            ))
        })
    }

    fn u32(&self, key: &str) -> Result<Option<u32>> {
        match self.0.get(key) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::Number(n)) => n
                .as_u64()
                .and_then(|n| u32::try_from(n).ok())
                .map(Some)
                .ok_or_else(|| {
                    ApiError::invalid(format!("'{key}' must be a non-negative integer"))
                }),
            Some(_) => Err(ApiError::invalid(format!("'{key}' must be an integer"))),
        }
    }

    /// A list of strings; `field` is the model's name for it in validation messages.
    fn strings(&self, key: &str, field: &str) -> Result<Option<Vec<String>>> {
        match self.0.get(key) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::Array(items)) => items
                .iter()
                .map(|v| match v {
                    Value::String(s) => Ok(s.clone()),
                    _ => Err(ApiError::validation(format!(
                        "1 validation error detected: Value at '{field}' failed to satisfy constraint: Member must satisfy constraint: [Member must not be null, Member must be a string]"
                    ))),
                })
                .collect::<Result<_>>()
                .map(Some),
            Some(_) => Err(ApiError::invalid(format!("'{key}' must be a list of strings"))),
        }
    }

    /// A string of at most `max` characters.
    fn bounded(&self, key: &str, field: &str, max: usize) -> Result<Option<String>> {
        let value = self.string(key)?;
        if let Some(v) = &value {
            if v.chars().count() > max {
                return Err(ApiError::validation(format!(
                    "1 validation error detected: Value '{v}' at '{field}' failed to satisfy constraint: Member must have length less than or equal to {max}"
                )));
            }
        }
        Ok(value)
    }

    fn bool(&self, key: &str) -> Result<bool> {
        match self.0.get(key) {
            None | Some(Value::Null) => Ok(false),
            Some(Value::Bool(b)) => Ok(*b),
            Some(_) => Err(ApiError::invalid(format!("'{key}' must be a boolean"))),
        }
    }

    fn object(&self, key: &str) -> Result<Option<&Map<String, Value>>> {
        match self.0.get(key) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::Object(m)) => Ok(Some(m)),
            Some(_) => Err(ApiError::invalid(format!("'{key}' must be an object"))),
        }
    }

    fn string_map(&self, key: &str) -> Result<Option<BTreeMap<String, String>>> {
        let Some(map) = self.object(key)? else {
            return Ok(None);
        };
        map.iter()
            .map(|(k, v)| match v {
                Value::String(s) => Ok((k.clone(), s.clone())),
                _ => Err(ApiError::invalid(format!(
                    "values of '{key}' must be strings"
                ))),
            })
            .collect::<Result<_>>()
            .map(Some)
    }
}

/// The API's key pattern, then the engine's rules ([`crate::config::check_environment`]), so
/// that a bad request is refused before its code is stored.
fn check_environment(env: &BTreeMap<String, String>) -> Result<()> {
    for key in env.keys() {
        let mut bytes = key.bytes();
        let valid = bytes.next().is_some_and(|b| b.is_ascii_alphabetic())
            && bytes.all(|b| b.is_ascii_alphanumeric() || b == b'_');
        if !valid {
            return Err(ApiError::invalid(format!(
                "1 validation error detected: Value at 'environment.variables' failed to satisfy constraint: Map keys must satisfy constraint: [Member must satisfy regular expression pattern: [a-zA-Z]([a-zA-Z0-9_])+] (key '{key}')"
            )));
        }
    }
    crate::config::check_environment(env.iter().map(|(k, v)| (k.as_str(), v.as_str())))?;
    Ok(())
}

fn check_role(role: &str) -> Result<()> {
    let ok = role
        .strip_prefix("arn:")
        .and_then(|r| r.split_once(":iam::"))
        .and_then(|(_, r)| r.split_once(":role/"))
        .is_some_and(|(account, name)| {
            account.len() == 12 && account.bytes().all(|b| b.is_ascii_digit()) && !name.is_empty()
        });
    if ok {
        Ok(())
    } else {
        Err(ApiError::invalid(format!(
            "1 validation error detected: Value '{role}' at 'role' failed to satisfy constraint: Member must satisfy regular expression pattern: arn:(aws[a-zA-Z-]*)?:iam::\\d{{12}}:role/?[a-zA-Z_0-9+=,.@\\-_/]+"
        )))
    }
}

/// Checks a layer's `CompatibleRuntimes` (any runtime Lambda knows, at most 15) and
/// `CompatibleArchitectures` (x86_64, arm64; at most 2), as Lambda's model does.
fn check_compatibility(
    runtimes: Option<&[String]>,
    architectures: Option<&[String]>,
) -> Result<()> {
    let mut errors = Vec::new();
    for (list, field, allowed, max) in [
        (runtimes, "compatibleRuntimes", runtime::LAMBDA_RUNTIMES, 15),
        (architectures, "compatibleArchitectures", ARCHITECTURES, 2),
    ] {
        let Some(list) = list else { continue };
        let shown = format!("[{}]", list.join(", "));
        if list.len() > max {
            errors.push(format!(
                "Value '{shown}' at '{field}' failed to satisfy constraint: Member must have length less than or equal to {max}"
            ));
        }
        if list.iter().any(|v| !allowed.contains(&v.as_str())) {
            errors.push(format!(
                "Value '{shown}' at '{field}' failed to satisfy constraint: Member must satisfy constraint: [Member must satisfy enum value set: [{}]]",
                allowed.join(", ")
            ));
        }
    }
    validation_errors(errors)
}

/// Lambda's architectures.
const ARCHITECTURES: &[&str] = &["x86_64", "arm64"];

/// Lambda's "N validation error(s) detected: a; b", or Ok when there are none.
fn validation_errors(errors: Vec<String>) -> Result<()> {
    match errors.len() {
        0 => Ok(()),
        n => Err(ApiError::validation(format!(
            "{n} validation error{} detected: {}",
            if n == 1 { "" } else { "s" },
            errors.join("; ")
        ))),
    }
}

/// ListLayers' and ListLayerVersions' filters, checked as Lambda's model does.
fn layer_filters(query: &[(String, String)]) -> Result<(Option<&str>, Option<&str>)> {
    let param = |name: &str| {
        query
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    };
    let (runtime, architecture) = (param("CompatibleRuntime"), param("CompatibleArchitecture"));
    let mut errors = Vec::new();
    if let Some(r) = runtime.filter(|r| !runtime::LAMBDA_RUNTIMES.contains(r)) {
        errors.push(format!(
            "Value '{r}' at 'compatibleRuntime' failed to satisfy constraint: Member must satisfy enum value set: [{}]",
            runtime::LAMBDA_RUNTIMES.join(", ")
        ));
    }
    if let Some(a) = architecture.filter(|a| !ARCHITECTURES.contains(a)) {
        errors.push(format!(
            "Value '{a}' at 'compatibleArchitecture' failed to satisfy constraint: Member must satisfy enum value set: [x86_64, arm64]"
        ));
    }
    validation_errors(errors)?;
    Ok((runtime, architecture))
}

/// A layer version number from a path.
fn layer_version_number(raw: &str) -> Result<u64> {
    let n: i64 = raw.parse().map_err(|_| {
        ApiError::validation(format!(
            "1 validation error detected: Value '{raw}' at 'versionNumber' failed to satisfy constraint: Member must be a number"
        ))
    })?;
    u64::try_from(n)
        .ok()
        .filter(|n| *n >= 1)
        .ok_or_else(|| ApiError::invalid("Layer Version Cannot be less than 1"))
}

fn layer_not_found() -> ApiError {
    ApiError::not_found("The resource you requested does not exist.")
}

/// hearth's own counters (`GET /hearth/stats`): how invocations were served and environments
/// started, per shard and in total.
fn stats_json(shards: &[crate::ShardStats]) -> Value {
    let one = |s: &crate::ShardStats| {
        json!({
            "Invocations": {
                "Warm": s.warm, "Pool": s.pool, "Queued": s.queued, "Cold": s.cold_invocations,
                "Zygote": s.zygote_invocations, "PlacedAgain": s.placed_again,
                "Throttled": s.throttled,
            },
            "EnvironmentsStarted": {"Cold": s.cold, "Zygote": s.zygote},
            "Environments": {
                "Live": s.live, "Reaped": s.reaped, "TimedOut": s.timeouts, "Exited": s.exits,
                "ProtocolErrors": s.protocol_errors,
            },
        })
    };
    let mut total = crate::ShardStats::default();
    for s in shards {
        total.warm += s.warm;
        total.pool += s.pool;
        total.queued += s.queued;
        total.cold_invocations += s.cold_invocations;
        total.zygote_invocations += s.zygote_invocations;
        total.placed_again += s.placed_again;
        total.throttled += s.throttled;
        total.cold += s.cold;
        total.zygote += s.zygote;
        total.live += s.live;
        total.reaped += s.reaped;
        total.timeouts += s.timeouts;
        total.exits += s.exits;
        total.protocol_errors += s.protocol_errors;
    }
    json!({"Total": one(&total), "Shards": shards.iter().map(one).collect::<Vec<_>>()})
}

/// Lambda's `ProvisionedConcurrencyConfig` with `available` environments started.
fn provisioned_json(entry: &Provisioned, available: u32) -> Value {
    let available = available.min(entry.requested);
    let status = if available >= entry.requested {
        "READY"
    } else {
        "IN_PROGRESS"
    };
    json!({
        "RequestedProvisionedConcurrentExecutions": entry.requested,
        "AvailableProvisionedConcurrentExecutions": available,
        "AllocatedProvisionedConcurrentExecutions": available,
        "Status": status,
        "LastModified": entry.last_modified,
    })
}

fn precondition(expected: Option<String>, actual: &str) -> Result<()> {
    match expected {
        Some(e) if e != actual => Err(ApiError::new(
            412,
            "PreconditionFailedException",
            "The Revision Id provided does not match the latest Revision Id. Call the GetFunction/GetAlias API to retrieve the latest Revision Id",
        )),
        _ => Ok(()),
    }
}

/// Marker/MaxItems pagination over `items` (already in order), keyed by `key`.
fn paginate<T>(
    items: Vec<T>,
    query: &[(String, String)],
    key: impl Fn(&T) -> String,
) -> Result<(Vec<T>, Option<String>)> {
    let param = |name: &str| {
        query
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.clone())
    };
    let max = match param("MaxItems") {
        Some(v) => v
            .parse::<usize>()
            .ok()
            .filter(|n| (1..=10_000).contains(n))
            .ok_or_else(|| ApiError::invalid("MaxItems must be between 1 and 10000"))?,
        None => 50,
    };
    let mut items = items.into_iter().peekable();
    if let Some(marker) = param("Marker") {
        while items.peek().is_some_and(|i| key(i) <= marker) {
            items.next();
        }
    }
    let page: Vec<T> = items.by_ref().take(max).collect();
    let next = match (items.peek(), page.last()) {
        (Some(_), Some(last)) => Some(key(last)),
        _ => None,
    };
    Ok((page, next))
}

impl Control {
    /// Opens the state under `data_dir` and installs every stored function into `engine`.
    pub(crate) fn open(
        data_dir: &std::path::Path,
        identity: Identity,
        engine: &Engine,
    ) -> std::result::Result<Self, Box<dyn std::error::Error + Send + Sync>> {
        let store = Store::open(&data_dir.join("state.db"))?;
        let code = CodeStore::open(data_dir.join("code"))?;
        let mut control = Self {
            identity,
            store,
            code,
            limits: CodeLimits::default(),
            functions: BTreeMap::new(),
            layers: BTreeMap::new(),
            url_key: {
                let mut key = [0u8; 32];
                for chunk in key.chunks_mut(8) {
                    chunk.copy_from_slice(&crate::sys::random_u64().to_le_bytes());
                }
                key
            },
        };
        for record in control.store.load()? {
            let name = record.name.clone();
            if let Err(e) = control.install(engine, &record) {
                tracing::error!(function = %name, error = %e.message, "stored function could not be loaded");
            }
            control.functions.insert(name, record);
        }
        for layer in control.store.load_layers()? {
            control.layers.insert(layer.name.clone(), layer);
        }
        let keep = control.referenced_code();
        let _ = control.code.retain(&keep);
        Ok(control)
    }

    /// Every code address in use: functions' code and the layers they use (deleted layer
    /// versions included, as Lambda keeps them for the functions that use them), and every
    /// live layer version.
    fn referenced_code(&self) -> HashSet<String> {
        let layers = self
            .layers
            .values()
            .flat_map(|l| l.versions.values())
            .map(|v| v.code_sha256_hex.as_str());
        self.functions
            .values()
            .flat_map(FunctionRecord::code_addresses)
            .chain(layers)
            .map(str::to_owned)
            .collect()
    }

    fn collect_garbage(&self) {
        if let Err(e) = self.code.retain(&self.referenced_code()) {
            tracing::warn!(error = %e, "could not remove unused code");
        }
    }

    /// The engine's configuration of one version.
    fn engine_config(&self, name: &str, config: &VersionConfig) -> Result<FunctionConfig> {
        let code = self.code.get(&config.code_sha256_hex).ok_or_else(|| {
            ApiError::service(format!("the code of {name} is missing from the code store"))
        })?;
        let runtime = runtime::lookup(&config.runtime).ok_or_else(|| {
            ApiError::service(format!(
                "{name} uses the runtime {}, which this hearth build does not know",
                config.runtime
            ))
        })?;
        let mut engine = FunctionConfig::new(name, code.dir, config.handler.clone());
        engine.launch = runtime.launch;
        engine.runtime = config.runtime.clone();
        engine.command = runtime.command.to_owned();
        engine.args = runtime.args.iter().map(|a| (*a).to_owned()).collect();
        engine.layers = config
            .layers
            .iter()
            .map(|layer| {
                self.code
                    .get(&layer.code_sha256_hex)
                    .map(|c| c.dir)
                    .ok_or_else(|| {
                        ApiError::service(format!(
                            "the code of {}, a layer of {name}, is missing from the code store",
                            layer.arn
                        ))
                    })
            })
            .collect::<Result<_>>()?;
        engine.memory_mb = config.memory_size;
        engine.timeout = Duration::from_secs(u64::from(config.timeout));
        engine.environment = config
            .environment
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        engine.ephemeral_storage_mb = config.ephemeral_storage;
        Ok(engine)
    }

    /// Puts a stored function into the engine's registry (at start).
    /// Every part is attempted; a part that fails is logged and the rest still installed.
    fn install(&self, engine: &Engine, record: &FunctionRecord) -> Result<()> {
        let name = &record.name;
        engine.create_function(self.engine_config(name, &record.latest)?)?;
        for (n, config) in &record.versions {
            let version = self
                .engine_config(name, config)
                .and_then(|c| Ok(engine.put_version(c, &n.to_string())?));
            published(&format!("{name}:{n}"), version.map_err(|e| e.message));
        }
        published(
            name,
            self.install_aliases(engine, record).map_err(|e| e.message),
        );
        if let Some(n) = record.reserved {
            published(name, engine.put_function_concurrency(name, n));
        }
        published(
            name,
            self.install_provisioned(engine, record)
                .map_err(|e| e.message),
        );
        Ok(())
    }

    fn install_aliases(&self, engine: &Engine, record: &FunctionRecord) -> Result<()> {
        for alias in record.aliases.values() {
            let secondary = alias.additional.iter().next().map(|(v, w)| {
                #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
                let weight = (w.clamp(0.0, 1.0) * 1_000_000.0).round() as u32;
                (v.as_str(), weight)
            });
            // One alias that cannot be installed does not keep the others out.
            published(
                &format!("{}:{}", record.name, alias.name),
                engine.put_alias(
                    &record.name,
                    &alias.name,
                    &alias.function_version,
                    secondary,
                ),
            );
        }
        Ok(())
    }

    /// Sets each version's provisioned target to the sum over the configurations naming it.
    fn install_provisioned(&self, engine: &Engine, record: &FunctionRecord) -> Result<()> {
        let mut totals: BTreeMap<String, u32> =
            record.versions.keys().map(|n| (n.to_string(), 0)).collect();
        for (qualifier, p) in &record.provisioned {
            if let Some(version) = record.version_of(qualifier) {
                let total = totals.entry(version).or_default();
                *total = total.saturating_add(p.requested);
            }
        }
        for (version, total) in totals {
            published(
                &format!("{}:{version}", record.name),
                engine.set_provisioned(&record.name, &version, total),
            );
        }
        Ok(())
    }

    /// Serves requests until `stop` fires.
    pub(crate) fn run(
        &mut self,
        engine: &Engine,
        requests: &Receiver<ControlRequest>,
        stop: &Receiver<()>,
        reply_to: &ReplyTo,
    ) {
        loop {
            crossbeam_channel::select! {
                recv(requests) -> request => {
                    let Ok(request) = request else { return };
                    let response = self.handle(engine, &request).unwrap_or_else(|e| e.response());
                    if let Some(tx) = reply_to.replies.get(request.shard) {
                        let _ = tx.send(ControlReply { tag: request.tag, request_id: request.request_id, response });
                    }
                    if let Some(waker) = reply_to.wakers.get(request.shard) {
                        waker.wake();
                    }
                }
                recv(stop) -> _ => return,
            }
        }
    }

    fn handle(&mut self, engine: &Engine, request: &ControlRequest) -> Result<Response> {
        let query: Vec<(String, String)> = query_pairs(&request.query).collect();
        let segments: Vec<&str> = request
            .path
            .trim_start_matches('/')
            .trim_end_matches('/')
            .split('/')
            .collect();
        let body = &request.body;
        let method = request.method.as_str();
        match (method, segments.as_slice()) {
            ("GET", ["hearth", "stats"]) => Ok(Response::json(200, &stats_json(&engine.stats()))),
            ("GET", ["2015-03-31", "functions"]) => self.list_functions(&query),
            ("POST", ["2015-03-31", "functions"]) => self.create_function(engine, body),
            ("GET", ["2015-03-31", "functions", f]) => {
                self.get_function(f, &query, true, &request.host)
            }
            ("GET", ["hearth", "code", file]) => self.download_code(file, &query),
            ("DELETE", ["2015-03-31", "functions", f]) => self.delete_function(engine, f, &query),
            ("GET", ["2015-03-31", "functions", f, "configuration"]) => {
                self.get_function(f, &query, false, &request.host)
            }
            ("PUT", ["2015-03-31", "functions", f, "configuration"]) => {
                self.update_configuration(engine, f, body)
            }
            ("PUT", ["2015-03-31", "functions", f, "code"]) => self.update_code(engine, f, body),
            ("GET", ["2015-03-31", "functions", f, "versions"]) => self.list_versions(f, &query),
            ("POST", ["2015-03-31", "functions", f, "versions"]) => {
                self.publish_version(engine, f, body)
            }
            ("GET", ["2015-03-31", "functions", f, "aliases"]) => self.list_aliases(f, &query),
            ("POST", ["2015-03-31", "functions", f, "aliases"]) => {
                self.put_alias(engine, f, None, body)
            }
            ("GET", ["2015-03-31", "functions", f, "aliases", a]) => self.get_alias(f, a),
            ("PUT", ["2015-03-31", "functions", f, "aliases", a]) => {
                self.put_alias(engine, f, Some(a), body)
            }
            ("DELETE", ["2015-03-31", "functions", f, "aliases", a]) => {
                self.delete_alias(engine, f, a)
            }
            ("PUT", ["2017-10-31", "functions", f, "concurrency"]) => {
                self.put_concurrency(engine, f, body)
            }
            ("DELETE", ["2017-10-31", "functions", f, "concurrency"]) => {
                self.delete_concurrency(engine, f)
            }
            ("GET", ["2019-09-30", "functions", f, "concurrency"]) => self.get_concurrency(f),
            (_, ["2019-09-30", "functions", f, "provisioned-concurrency"]) => {
                self.provisioned(engine, method, f, &query, body)
            }
            ("GET", ["2016-08-19", "account-settings"]) => Ok(self.account_settings(engine)),
            ("GET", ["2018-10-31", "layers"]) => {
                if query
                    .iter()
                    .any(|(k, v)| k == "find" && v == "LayerVersion")
                {
                    self.get_layer_version_by_arn(&query, &request.host)
                } else {
                    self.list_layers(&query)
                }
            }
            ("POST", ["2018-10-31", "layers", l, "versions"]) => {
                self.publish_layer_version(l, body, &request.host)
            }
            ("GET", ["2018-10-31", "layers", l, "versions"]) => self.list_layer_versions(l, &query),
            ("GET", ["2018-10-31", "layers", l, "versions", n]) => {
                self.get_layer_version(l, n, &request.host)
            }
            ("DELETE", ["2018-10-31", "layers", l, "versions", n]) => {
                self.delete_layer_version(l, n)
            }
            (_, ["2017-03-31", "tags", arn]) => self.tags(method, arn, &query, body),
            _ => Err(ApiError::new(
                404,
                "UnknownOperationException",
                format!("Unknown operation: {method} {}", request.path),
            )),
        }
    }

    // ----- lookups --------------------------------------------------------------------------

    fn function_ref(&self, raw: &str, query: &[(String, String)]) -> Result<FunctionRef> {
        let qualifier = query
            .iter()
            .find(|(k, _)| k == "Qualifier")
            .map(|(_, v)| v.clone());
        FunctionRef::parse(raw, &self.identity)?.with_query_qualifier(qualifier)
    }

    fn record(&self, name: &str) -> Result<&FunctionRecord> {
        self.functions.get(name).ok_or_else(|| {
            ApiError::not_found(format!(
                "Function not found: {}",
                self.identity.function_arn(name, None)
            ))
        })
    }

    fn record_mut(&mut self, name: &str) -> Result<&mut FunctionRecord> {
        let arn = self.identity.function_arn(name, None);
        self.functions
            .get_mut(name)
            .ok_or_else(|| ApiError::not_found(format!("Function not found: {arn}")))
    }

    fn config_json(&self, record: &FunctionRecord, qualifier: Option<&str>) -> Result<Value> {
        let config = record.config(qualifier).ok_or_else(|| {
            ApiError::not_found(format!(
                "Function not found: {}",
                self.identity.function_arn(&record.name, qualifier)
            ))
        })?;
        let qualified = qualifier.is_some_and(|q| q != LATEST);
        Ok(config.to_json(&record.name, &self.identity, qualified))
    }

    // ----- functions ------------------------------------------------------------------------

    fn create_function(&mut self, engine: &Engine, body: &[u8]) -> Result<Response> {
        let body = json_body(body)?;
        let fields = Fields(&body);
        let name = fields.required("FunctionName")?;
        let name = FunctionRef::parse_decoded(&name, &self.identity)?;
        if name.qualifier.is_some() {
            return Err(ApiError::invalid("FunctionName must not carry a qualifier"));
        }
        let name = name.name;
        if let Some(package) = fields.string("PackageType")? {
            if package != "Zip" {
                return Err(ApiError::invalid(format!(
                    "PackageType {package} is not supported by hearth; use Zip"
                )));
            }
        }
        let runtime = fields.required("Runtime")?;
        runtime::check(&runtime)?;
        let role = fields.required("Role")?;
        check_role(&role)?;
        if let Some(architectures) = body.get("Architectures") {
            if architectures != &json!(["x86_64"]) {
                return Err(ApiError::invalid("this machine runs x86_64 functions only"));
            }
        }
        let environment = Self::environment(&fields)?.unwrap_or_default();
        check_environment(&environment)?;
        let layers = self.resolve_layers(&fields)?.unwrap_or_default();
        let code = fields
            .object("Code")?
            .ok_or_else(|| ApiError::invalid("1 validation error detected: Value null at 'code' failed to satisfy constraint: Member must not be null"))?;
        let stored = self.store_code(code, "Code")?;
        let tags = fields.string_map("Tags")?.unwrap_or_default();
        let config = VersionConfig {
            version: LATEST.into(),
            runtime,
            handler: fields.string("Handler")?.unwrap_or_default(),
            role,
            description: fields.string("Description")?.unwrap_or_default(),
            memory_size: fields.u32("MemorySize")?.unwrap_or(128),
            timeout: fields.u32("Timeout")?.unwrap_or(3),
            environment,
            ephemeral_storage: Self::ephemeral(&fields)?.unwrap_or(512),
            snap_start: Self::snap_start(&fields)?.unwrap_or_else(|| "None".into()),
            code_sha256_hex: stored.sha256_hex,
            code_sha256: stored.sha256_base64,
            code_size: stored.size,
            last_modified: timestamp(SystemTime::now()),
            revision_id: revision_id(),
            layers,
        };
        let engine_config = self.engine_config(&name, &config)?;
        engine_config.validate()?;
        if self.functions.contains_key(&name) {
            return Err(ApiError::conflict(format!(
                "Function already exist: {name}"
            )));
        }
        let mut record = FunctionRecord {
            name: name.clone(),
            latest: config,
            versions: BTreeMap::new(),
            aliases: BTreeMap::new(),
            tags,
            reserved: None,
            provisioned: BTreeMap::new(),
            next_version: 1,
        };
        let version = fields
            .bool("Publish")?
            .then(|| Self::new_version(&mut record));
        self.store.put(&record, version).map_err(store_error)?;
        let qualifier = version.map(|n| n.to_string());
        let response = self.config_json(&record, qualifier.as_deref())?;
        self.functions.insert(name.clone(), record);
        published(&name, engine.create_function(engine_config.clone()));
        if let Some(q) = qualifier {
            published(&name, engine.put_version(engine_config, &q));
        }
        Ok(Response::json(201, &response))
    }

    fn environment(fields: &Fields<'_>) -> Result<Option<BTreeMap<String, String>>> {
        match fields.object("Environment")? {
            None => Ok(None),
            Some(env) => Ok(Some(
                Fields(env).string_map("Variables")?.unwrap_or_default(),
            )),
        }
    }

    /// `SnapStart.ApplyOn`, checked as Lambda checks it.
    fn snap_start(fields: &Fields<'_>) -> Result<Option<String>> {
        let Some(snap) = fields.object("SnapStart")? else {
            return Ok(None);
        };
        match Fields(snap).string("ApplyOn")? {
            Some(v) if v == "None" || v == "PublishedVersions" => Ok(Some(v)),
            Some(v) => Err(ApiError::invalid(format!(
                "1 validation error detected: Value '{v}' at 'snapStart.applyOn' failed to satisfy constraint: Member must satisfy enum value set: [PublishedVersions, None]"
            ))),
            None => Ok(Some("None".into())),
        }
    }

    fn ephemeral(fields: &Fields<'_>) -> Result<Option<u32>> {
        match fields.object("EphemeralStorage")? {
            None => Ok(None),
            Some(e) => Fields(e).u32("Size"),
        }
    }

    /// Stores `{what}.ZipFile` (`what` is `Code` for functions, `Content` for layers).
    fn store_code(&self, code: &Map<String, Value>, what: &str) -> Result<crate::code::StoredCode> {
        if code.contains_key("S3Bucket") || code.contains_key("ImageUri") {
            return Err(ApiError::invalid(format!(
                "hearth accepts code as {what}.ZipFile only (no S3 locations or images)"
            )));
        }
        let zip = Fields(code).string("ZipFile")?.ok_or_else(|| {
            let kind = if what == "Code" {
                "function code"
            } else {
                "layer content"
            };
            ApiError::invalid(format!(
                "Please provide a source for {kind} ({what}.ZipFile)."
            ))
        })?;
        let bytes = base64::engine::general_purpose::STANDARD
            .decode(zip.as_bytes())
            .map_err(|_| ApiError::invalid(format!("{what}.ZipFile must be base64-encoded")))?;
        self.code
            .put_zip(&bytes, &self.limits)
            .map_err(|e| ApiError::new(e.status(), e.error_type(), e.to_string()))
    }

    /// The signature of a code download URL.
    fn url_signature(&self, address: &str, expires: u64) -> String {
        use hmac::Mac;
        let Ok(mut mac) = hmac::Hmac::<sha2::Sha256>::new_from_slice(&self.url_key) else {
            return String::new();
        };
        mac.update(format!("{address}\n{expires}").as_bytes());
        mac.finalize()
            .into_bytes()
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect()
    }

    /// A URL that downloads a function's zip without credentials for ten minutes, as Lambda's
    /// presigned `Code.Location` does.
    fn code_url(&self, host: &str, address: &str) -> String {
        let expires = SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs())
            + 600;
        format!(
            "http://{host}/hearth/code/{address}.zip?Expires={expires}&Signature={}",
            self.url_signature(address, expires)
        )
    }

    fn download_code(&self, file: &str, query: &[(String, String)]) -> Result<Response> {
        let denied = || {
            ApiError::new(
                403,
                "AccessDeniedException",
                "The code URL is invalid or has expired",
            )
        };
        let address = file.strip_suffix(".zip").ok_or_else(denied)?;
        let param = |k: &str| {
            query
                .iter()
                .find(|(key, _)| key == k)
                .map(|(_, v)| v.as_str())
        };
        let expires: u64 = param("Expires")
            .and_then(|e| e.parse().ok())
            .ok_or_else(denied)?;
        let now = SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        let expected = self.url_signature(address, expires);
        let given = param("Signature").unwrap_or("");
        let same = expected.len() == given.len()
            && expected
                .bytes()
                .zip(given.bytes())
                .fold(0, |acc, (a, b)| acc | (a ^ b))
                == 0;
        if !same || now > expires {
            return Err(denied());
        }
        let path = self.code.zip_path(address).ok_or_else(denied)?;
        let body =
            std::fs::read(path).map_err(|e| ApiError::service(format!("reading code: {e}")))?;
        Ok(Response {
            status: 200,
            headers: vec![("Content-Type", "application/zip".into())],
            body,
        })
    }

    fn get_function(
        &self,
        raw: &str,
        query: &[(String, String)],
        full: bool,
        host: &str,
    ) -> Result<Response> {
        let function = self.function_ref(raw, query)?;
        let record = self.record(&function.name)?;
        let configuration = self.config_json(record, function.qualifier.as_deref())?;
        if !full {
            return Ok(Response::json(200, &configuration));
        }
        let config = record
            .config(function.qualifier.as_deref())
            .unwrap_or(&record.latest);
        let location = self.code_url(host, &config.code_sha256_hex);
        let mut response = json!({
            "Configuration": configuration,
            "Code": {"RepositoryType": "S3", "Location": location},
        });
        if !record.tags.is_empty() {
            response["Tags"] = json!(record.tags);
        }
        if let Some(n) = record.reserved {
            response["Concurrency"] = json!({"ReservedConcurrentExecutions": n});
        }
        Ok(Response::json(200, &response))
    }

    fn delete_function(
        &mut self,
        engine: &Engine,
        raw: &str,
        query: &[(String, String)],
    ) -> Result<Response> {
        let function = self.function_ref(raw, query)?;
        let record = self.record(&function.name)?;
        match function.qualifier.as_deref() {
            None => {
                self.store
                    .delete_function(&function.name)
                    .map_err(store_error)?;
                self.functions.remove(&function.name);
                published(&function.name, engine.delete_function(&function.name));
                self.collect_garbage();
            }
            Some(LATEST) => {
                return Err(ApiError::invalid(
                    "$LATEST version cannot be deleted without deleting the function.",
                ))
            }
            Some(q) => {
                let n: u64 = q.parse().map_err(|_| {
                    ApiError::invalid(
                        "Deletion of aliases is not supported by DeleteFunction; use DeleteAlias.",
                    )
                })?;
                if !record.versions.contains_key(&n) {
                    return Err(ApiError::not_found(format!(
                        "Function not found: {}",
                        self.identity.function_arn(&function.name, Some(q))
                    )));
                }
                let users: Vec<&str> = record
                    .aliases
                    .values()
                    .filter(|a| a.function_version == q || a.additional.contains_key(q))
                    .map(|a| a.name.as_str())
                    .collect();
                if !users.is_empty() {
                    return Err(ApiError::conflict(format!(
                        "Unable to delete version because the following aliases reference it: [{}]",
                        users.join(", ")
                    )));
                }
                let mut record = record.clone();
                record.versions.remove(&n);
                record.provisioned.remove(q);
                self.store.delete_version(&record, n).map_err(store_error)?;
                self.functions.insert(function.name.clone(), record);
                published(&function.name, engine.delete_version(&function.name, q));
                self.collect_garbage();
            }
        }
        Ok(Response::empty(204))
    }

    fn list_functions(&self, query: &[(String, String)]) -> Result<Response> {
        let all_versions = query
            .iter()
            .any(|(k, v)| k == "FunctionVersion" && v == "ALL");
        // (name, position, configuration): $LATEST, then each version when asked for ALL.
        let all: Vec<(&str, usize, &VersionConfig)> = self
            .functions
            .values()
            .flat_map(|r| {
                let versions =
                    std::iter::once(&r.latest).chain(r.versions.values().filter(|_| all_versions));
                versions.enumerate().map(|(i, v)| (r.name.as_str(), i, v))
            })
            .collect();
        // Markers sort like the list: '!' sorts before every character a name may hold.
        let (page, next) = paginate(all, query, |(name, i, _)| format!("{name}!{i:010}"))?;
        let functions: Vec<Value> = page
            .iter()
            .map(|(name, _, v)| v.to_json(name, &self.identity, v.version != LATEST))
            .collect();
        let mut response = json!({ "Functions": functions });
        if let Some(next) = next {
            response["NextMarker"] = next.into();
        }
        Ok(Response::json(200, &response))
    }

    /// Publishes a change to `$LATEST`: store, then engine.
    fn commit_latest(
        &mut self,
        engine: &Engine,
        name: &str,
        latest: VersionConfig,
        publish: bool,
    ) -> Result<Response> {
        let engine_config = self.engine_config(name, &latest)?;
        engine_config.validate()?;
        let mut record = self.record(name)?.clone();
        record.latest = latest;
        let version = publish.then(|| Self::new_version(&mut record));
        self.store.put(&record, version).map_err(store_error)?;
        let qualifier = version.map(|n| n.to_string());
        let response = self.config_json(&record, qualifier.as_deref())?;
        self.functions.insert(name.to_owned(), record);
        published(name, engine.update_function(engine_config.clone()));
        if let Some(q) = qualifier {
            published(name, engine.put_version(engine_config, &q));
        }
        self.collect_garbage();
        Ok(Response::json(200, &response))
    }

    fn update_code(&mut self, engine: &Engine, raw: &str, body: &[u8]) -> Result<Response> {
        let body = json_body(body)?;
        let fields = Fields(&body);
        let function = self.function_ref(raw, &[])?;
        let record = self.record(&function.name)?;
        precondition(fields.string("RevisionId")?, &record.latest.revision_id)?;
        let stored = self.store_code(&body, "Code")?;
        if fields.bool("DryRun")? {
            return Ok(Response::json(
                200,
                &record.latest.to_json(&record.name, &self.identity, false),
            ));
        }
        let mut latest = record.latest.clone();
        latest.code_sha256_hex = stored.sha256_hex;
        latest.code_sha256 = stored.sha256_base64;
        latest.code_size = stored.size;
        latest.last_modified = timestamp(SystemTime::now());
        latest.revision_id = revision_id();
        let publish = fields.bool("Publish")?;
        self.commit_latest(engine, &function.name, latest, publish)
    }

    fn update_configuration(
        &mut self,
        engine: &Engine,
        raw: &str,
        body: &[u8],
    ) -> Result<Response> {
        let body = json_body(body)?;
        let fields = Fields(&body);
        let function = self.function_ref(raw, &[])?;
        let record = self.record(&function.name)?;
        precondition(fields.string("RevisionId")?, &record.latest.revision_id)?;
        let mut latest = record.latest.clone();
        if let Some(runtime) = fields.string("Runtime")? {
            runtime::check(&runtime)?;
            latest.runtime = runtime;
        }
        if let Some(role) = fields.string("Role")? {
            check_role(&role)?;
            latest.role = role;
        }
        if let Some(handler) = fields.string("Handler")? {
            latest.handler = handler;
        }
        if let Some(description) = fields.string("Description")? {
            latest.description = description;
        }
        if let Some(memory) = fields.u32("MemorySize")? {
            latest.memory_size = memory;
        }
        if let Some(timeout) = fields.u32("Timeout")? {
            latest.timeout = timeout;
        }
        if let Some(env) = Self::environment(&fields)? {
            check_environment(&env)?;
            latest.environment = env;
        }
        if let Some(size) = Self::ephemeral(&fields)? {
            latest.ephemeral_storage = size;
        }
        if let Some(apply_on) = Self::snap_start(&fields)? {
            latest.snap_start = apply_on;
        }
        if let Some(layers) = self.resolve_layers(&fields)? {
            latest.layers = layers;
        }
        latest.last_modified = timestamp(SystemTime::now());
        latest.revision_id = revision_id();
        self.commit_latest(engine, &function.name, latest, false)
    }

    // ----- versions -------------------------------------------------------------------------

    /// Adds the next version, a copy of `$LATEST`; returns its number.
    fn new_version(record: &mut FunctionRecord) -> u64 {
        let n = record.next_version;
        record.next_version += 1;
        let mut config = record.latest.clone();
        config.version = n.to_string();
        config.revision_id = revision_id();
        record.versions.insert(n, config);
        n
    }

    fn publish_version(&mut self, engine: &Engine, raw: &str, body: &[u8]) -> Result<Response> {
        let body = json_body(body)?;
        let fields = Fields(&body);
        let function = self.function_ref(raw, &[])?;
        let mut record = self.record(&function.name)?.clone();
        precondition(fields.string("RevisionId")?, &record.latest.revision_id)?;
        if let Some(sha) = fields.string("CodeSha256")? {
            if sha != record.latest.code_sha256 {
                return Err(ApiError::invalid(format!(
                    "CodeSHA256 ({sha}) is different from current CodeSHA256 in $LATEST ({}). Please try again with the CodeSHA256 in $LATEST.",
                    record.latest.code_sha256
                )));
            }
        }
        // Publishing an unchanged function returns the version that already holds it.
        if let Some((n, _)) = record
            .versions
            .iter()
            .next_back()
            .filter(|(_, v)| v.same_function(&record.latest))
        {
            let response = self.config_json(&record, Some(&n.to_string()))?;
            return Ok(Response::json(201, &response));
        }
        let n = Self::new_version(&mut record);
        if let Some(description) = fields.string("Description")? {
            if let Some(v) = record.versions.get_mut(&n) {
                v.description = description;
            }
        }
        let engine_config = self.engine_config(&record.name, &record.latest)?;
        self.store.put(&record, Some(n)).map_err(store_error)?;
        let response = self.config_json(&record, Some(&n.to_string()))?;
        let name = record.name.clone();
        self.functions.insert(name.clone(), record);
        published(&name, engine.put_version(engine_config, &n.to_string()));
        Ok(Response::json(201, &response))
    }

    fn list_versions(&self, raw: &str, query: &[(String, String)]) -> Result<Response> {
        let function = self.function_ref(raw, &[])?;
        let record = self.record(&function.name)?;
        // Ordered as Lambda lists them: $LATEST, then 1, 2, ...; markers are positions.
        let all: Vec<(usize, &VersionConfig)> = std::iter::once(&record.latest)
            .chain(record.versions.values())
            .enumerate()
            .collect();
        let (page, next) = paginate(all, query, |(i, _)| format!("{i:010}"))?;
        let versions: Vec<Value> = page
            .iter()
            .map(|(_, v)| v.to_json(&record.name, &self.identity, true))
            .collect();
        let mut response = json!({ "Versions": versions });
        if let Some(next) = next {
            response["NextMarker"] = next.into();
        }
        Ok(Response::json(200, &response))
    }

    // ----- aliases --------------------------------------------------------------------------

    fn alias_not_found(&self, function: &str, alias: &str) -> ApiError {
        ApiError::not_found(format!(
            "Alias not found: {}",
            self.identity.function_arn(function, Some(alias))
        ))
    }

    fn get_alias(&self, raw: &str, alias: &str) -> Result<Response> {
        let function = self.function_ref(raw, &[])?;
        let record = self.record(&function.name)?;
        let alias = record
            .aliases
            .get(alias)
            .ok_or_else(|| self.alias_not_found(&record.name, alias))?;
        Ok(Response::json(
            200,
            &alias.to_json(&record.name, &self.identity),
        ))
    }

    /// CreateAlias (`existing` is `None`) or UpdateAlias.
    fn put_alias(
        &mut self,
        engine: &Engine,
        raw: &str,
        existing: Option<&str>,
        body: &[u8],
    ) -> Result<Response> {
        let body = json_body(body)?;
        let fields = Fields(&body);
        let function = self.function_ref(raw, &[])?;
        let mut record = self.record(&function.name)?.clone();
        let mut alias = match existing {
            Some(name) => {
                let alias = record
                    .aliases
                    .get(name)
                    .cloned()
                    .ok_or_else(|| self.alias_not_found(&record.name, name))?;
                precondition(fields.string("RevisionId")?, &alias.revision_id)?;
                alias
            }
            None => {
                let name = fields.required("Name")?;
                let valid = !name.is_empty()
                    && name.len() <= 128
                    && !name.bytes().all(|b| b.is_ascii_digit())
                    && name
                        .bytes()
                        .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
                if !valid {
                    return Err(ApiError::invalid(format!(
                        "1 validation error detected: Value '{name}' at 'name' failed to satisfy constraint: Member must satisfy regular expression pattern: (?!^[0-9]+$)([a-zA-Z0-9-_]+)"
                    )));
                }
                if record.aliases.contains_key(&name) {
                    return Err(ApiError::conflict(format!(
                        "Alias already exists: {}",
                        self.identity.function_arn(&record.name, Some(&name))
                    )));
                }
                AliasRecord {
                    function_version: fields.required("FunctionVersion")?,
                    name,
                    description: String::new(),
                    additional: BTreeMap::new(),
                    revision_id: String::new(),
                }
            }
        };
        if let Some(version) = fields.string("FunctionVersion")? {
            alias.function_version = version;
        }
        if let Some(description) = fields.string("Description")? {
            alias.description = description;
        }
        if let Some(routing) = fields.object("RoutingConfig")? {
            alias.additional = BTreeMap::new();
            if let Some(weights) = Fields(routing).object("AdditionalVersionWeights")? {
                if weights.len() > 1 {
                    return Err(ApiError::invalid(
                        "Number of items in AdditionalVersionWeights cannot be greater than 1",
                    ));
                }
                for (version, weight) in weights {
                    let weight = weight
                        .as_f64()
                        .filter(|w| (0.0..=1.0).contains(w))
                        .ok_or_else(|| {
                            ApiError::invalid(
                                "AdditionalVersionWeights values must be between 0.0 and 1.0",
                            )
                        })?;
                    alias.additional.insert(version.clone(), weight);
                }
            }
        }
        let exists = |v: &str| {
            v == LATEST
                || v.parse::<u64>()
                    .is_ok_and(|n| record.versions.contains_key(&n))
        };
        if !exists(&alias.function_version) {
            return Err(ApiError::not_found(format!(
                "Function not found: {}",
                self.identity
                    .function_arn(&record.name, Some(&alias.function_version))
            )));
        }
        for version in alias.additional.keys() {
            if version == &alias.function_version {
                return Err(ApiError::invalid("Invalid function version. The additional version cannot be the same as the primary version."));
            }
            if version == LATEST || alias.function_version == LATEST {
                return Err(ApiError::invalid(
                    "$LATEST is not supported for an alias pointing to more than 1 version",
                ));
            }
            if !exists(version) {
                return Err(ApiError::not_found(format!(
                    "Function not found: {}",
                    self.identity.function_arn(&record.name, Some(version))
                )));
            }
        }
        alias.revision_id = revision_id();
        record.aliases.insert(alias.name.clone(), alias.clone());
        self.store.put(&record, None).map_err(store_error)?;
        let status = if existing.is_some() { 200 } else { 201 };
        let response = alias.to_json(&record.name, &self.identity);
        self.functions.insert(record.name.clone(), record.clone());
        published(
            &record.name,
            self.install_aliases(engine, &record).map_err(|e| e.message),
        );
        published(
            &record.name,
            self.install_provisioned(engine, &record)
                .map_err(|e| e.message),
        );
        Ok(Response::json(status, &response))
    }

    fn delete_alias(&mut self, engine: &Engine, raw: &str, alias: &str) -> Result<Response> {
        let function = self.function_ref(raw, &[])?;
        let mut record = self.record(&function.name)?.clone();
        if record.aliases.remove(alias).is_none() {
            return Err(self.alias_not_found(&record.name, alias));
        }
        record.provisioned.remove(alias);
        self.store.put(&record, None).map_err(store_error)?;
        self.functions.insert(record.name.clone(), record.clone());
        published(&record.name, engine.delete_alias(&record.name, alias));
        published(
            &record.name,
            self.install_provisioned(engine, &record)
                .map_err(|e| e.message),
        );
        Ok(Response::empty(204))
    }

    fn list_aliases(&self, raw: &str, query: &[(String, String)]) -> Result<Response> {
        let function = self.function_ref(raw, &[])?;
        let record = self.record(&function.name)?;
        let version = query
            .iter()
            .find(|(k, _)| k == "FunctionVersion")
            .map(|(_, v)| v.as_str());
        let all: Vec<&AliasRecord> = record
            .aliases
            .values()
            .filter(|a| version.is_none_or(|v| a.function_version == v))
            .collect();
        let (page, next) = paginate(all, query, |a| a.name.clone())?;
        let aliases: Vec<Value> = page
            .iter()
            .map(|a| a.to_json(&record.name, &self.identity))
            .collect();
        let mut response = json!({ "Aliases": aliases });
        if let Some(next) = next {
            response["NextMarker"] = next.into();
        }
        Ok(Response::json(200, &response))
    }

    // ----- concurrency ----------------------------------------------------------------------

    fn put_concurrency(&mut self, engine: &Engine, raw: &str, body: &[u8]) -> Result<Response> {
        let body = json_body(body)?;
        let n = Fields(&body).u32("ReservedConcurrentExecutions")?.ok_or_else(|| {
            ApiError::invalid("1 validation error detected: Value null at 'reservedConcurrentExecutions' failed to satisfy constraint: Member must not be null")
        })?;
        let function = self.function_ref(raw, &[])?;
        let record = self.record_mut(&function.name)?;
        let previous = record.reserved;
        engine.put_function_concurrency(&function.name, n)?;
        record.reserved = Some(n);
        let record = record.clone();
        if let Err(e) = self.store.put(&record, None) {
            // Not saved: put the engine back as it was.
            let _ = match previous {
                Some(p) => engine.put_function_concurrency(&function.name, p),
                None => engine.delete_function_concurrency(&function.name),
            };
            if let Some(r) = self.functions.get_mut(&function.name) {
                r.reserved = previous;
            }
            return Err(store_error(e));
        }
        Ok(Response::json(
            200,
            &json!({"ReservedConcurrentExecutions": n}),
        ))
    }

    fn delete_concurrency(&mut self, engine: &Engine, raw: &str) -> Result<Response> {
        let function = self.function_ref(raw, &[])?;
        let mut record = self.record(&function.name)?.clone();
        record.reserved = None;
        self.store.put(&record, None).map_err(store_error)?;
        self.functions.insert(record.name.clone(), record);
        published(
            &function.name,
            engine.delete_function_concurrency(&function.name),
        );
        Ok(Response::empty(204))
    }

    fn get_concurrency(&self, raw: &str) -> Result<Response> {
        let function = self.function_ref(raw, &[])?;
        let record = self.record(&function.name)?;
        let body = match record.reserved {
            Some(n) => json!({"ReservedConcurrentExecutions": n}),
            None => json!({}),
        };
        Ok(Response::json(200, &body))
    }

    fn account_settings(&self, engine: &Engine) -> Response {
        let (limit, unreserved) = engine.account_concurrency();
        let total: u64 = self
            .functions
            .values()
            .flat_map(|r| std::iter::once(&r.latest).chain(r.versions.values()))
            .map(|v| v.code_size)
            .chain(
                self.layers
                    .values()
                    .flat_map(|l| l.versions.values())
                    .map(|v| v.code_size),
            )
            .sum();
        Response::json(
            200,
            &json!({
                "AccountLimit": {
                    "TotalCodeSize": 80_530_636_800u64,
                    "CodeSizeUnzipped": self.limits.max_unzipped_bytes,
                    "CodeSizeZipped": self.limits.max_zip_bytes,
                    "ConcurrentExecutions": limit,
                    "UnreservedConcurrentExecutions": unreserved,
                },
                "AccountUsage": {
                    "TotalCodeSize": total,
                    "FunctionCount": self.functions.len(),
                },
            }),
        )
    }

    fn provisioned(
        &mut self,
        engine: &Engine,
        method: &str,
        raw: &str,
        query: &[(String, String)],
        body: &[u8],
    ) -> Result<Response> {
        let function = self.function_ref(raw, query)?;
        let qualifier = function.qualifier.clone().ok_or_else(|| {
            ApiError::invalid("1 validation error detected: Value null at 'qualifier' failed to satisfy constraint: Member must not be null")
        })?;
        if qualifier == LATEST {
            return Err(ApiError::invalid(
                "Provisioned Concurrency Configs cannot be applied to unpublished function versions.",
            ));
        }
        let mut record = self.record(&function.name)?.clone();
        let version = record.version_of(&qualifier).ok_or_else(|| {
            ApiError::not_found(format!(
                "Function not found: {}",
                self.identity.function_arn(&record.name, Some(&qualifier))
            ))
        })?;
        let not_found = || {
            ApiError::new(
                404,
                "ProvisionedConcurrencyConfigNotFoundException",
                "No Provisioned Concurrency Config found for this function",
            )
        };
        match method {
            "PUT" => {
                let body = json_body(body)?;
                let n = Fields(&body)
                    .u32("ProvisionedConcurrentExecutions")?
                    .filter(|n| *n >= 1)
                    .ok_or_else(|| {
                        ApiError::invalid("ProvisionedConcurrentExecutions must be at least 1")
                    })?;
                let (limit, _) = engine.account_concurrency();
                if n > record.reserved.unwrap_or(limit) {
                    return Err(ApiError::invalid(
                        "Requested Provisioned Concurrency should not be greater than the reservedConcurrentExecution for function",
                    ));
                }
                let entry = Provisioned {
                    requested: n,
                    last_modified: timestamp(SystemTime::now()),
                };
                record.provisioned.insert(qualifier.clone(), entry.clone());
                self.store.put(&record, None).map_err(store_error)?;
                self.functions.insert(record.name.clone(), record.clone());
                published(
                    &record.name,
                    self.install_provisioned(engine, &record)
                        .map_err(|e| e.message),
                );
                Ok(Response::json(202, &provisioned_json(&entry, 0)))
            }
            "GET" => {
                let entry = record.provisioned.get(&qualifier).ok_or_else(not_found)?;
                let id = engine
                    .resolve(&record.name, Some(&version), 0)
                    .map(|f| f.id());
                let live = id.map_or(0, |id| engine.live_environments(id));
                let available = u32::try_from(live).unwrap_or(u32::MAX);
                Ok(Response::json(200, &provisioned_json(entry, available)))
            }
            "DELETE" => {
                record
                    .provisioned
                    .remove(&qualifier)
                    .ok_or_else(not_found)?;
                self.store.put(&record, None).map_err(store_error)?;
                self.functions.insert(record.name.clone(), record.clone());
                published(
                    &record.name,
                    self.install_provisioned(engine, &record)
                        .map_err(|e| e.message),
                );
                Ok(Response::empty(204))
            }
            _ => Err(ApiError::new(
                404,
                "UnknownOperationException",
                "Unknown operation",
            )),
        }
    }

    // ----- layers ---------------------------------------------------------------------------

    /// The layer a `{LayerName}` path segment names (a name or a layer ARN without version);
    /// `None` for another account's or region's layer, which hearth never holds.
    fn layer_name(&self, raw: &str) -> Result<Option<String>> {
        let text = percent_decode(raw).ok_or_else(|| {
            ApiError::invalid("The layer name is not valid percent-encoded UTF-8")
        })?;
        let bad = || {
            ApiError::validation(format!(
                "1 validation error detected: Value '{text}' at 'layerName' failed to satisfy constraint: Member must satisfy regular expression pattern: {LAYER_NAME_PATTERN}"
            ))
        };
        if text.len() > 140 {
            return Err(bad());
        }
        if text.starts_with("arn:") {
            let arn = LayerArn::parse(&text)
                .filter(|a| a.version.is_none())
                .ok_or_else(bad)?;
            return Ok(self.own_layer(&arn).then_some(arn.name));
        }
        if valid_layer_name(&text) {
            Ok(Some(text))
        } else {
            Err(bad())
        }
    }

    fn own_layer(&self, arn: &LayerArn) -> bool {
        arn.account == self.identity.account && arn.region == self.identity.region
    }

    /// A live layer version.
    fn layer_version(&self, name: &str, n: u64) -> Option<&LayerVersionRecord> {
        self.layers.get(name)?.versions.get(&n)
    }

    fn layer_version_json(&self, name: &str, version: &LayerVersionRecord, host: &str) -> Value {
        let location = self.code_url(host, &version.code_sha256_hex);
        version.to_json(name, &self.identity, location)
    }

    /// Resolves the `Layers` of CreateFunction and UpdateFunctionConfiguration (`None` when
    /// absent), with Lambda's checks and messages.
    fn resolve_layers(&self, fields: &Fields<'_>) -> Result<Option<Vec<LayerRef>>> {
        let Some(arns) = fields.strings("Layers", "layers")? else {
            return Ok(None);
        };
        if arns.len() > MAX_LAYERS {
            return Err(ApiError::invalid(format!(
                "Cannot reference more than {MAX_LAYERS} layers."
            )));
        }
        let mut seen: BTreeMap<String, &str> = BTreeMap::new();
        let mut layers = Vec::with_capacity(arns.len());
        for arn in &arns {
            let parsed = LayerArn::parse(arn)
                .filter(|a| a.version.is_some() && arn.len() <= 140)
                .ok_or_else(|| {
                    ApiError::validation(format!(
                        "1 validation error detected: Value '[{}]' at 'layers' failed to satisfy constraint: Member must satisfy constraint: [Member must have length less than or equal to 140, Member must have length greater than or equal to 1, Member must satisfy regular expression pattern: {LAYER_VERSION_ARN_PATTERN}, Member must not be null]",
                        arns.join(", ")
                    ))
                })?;
            if parsed.account == self.identity.account && parsed.region != self.identity.region {
                return Err(ApiError::invalid(format!(
                    "Layers are not in the same region as the function. Layers are expected to be in region {}.",
                    self.identity.region
                )));
            }
            let n = parsed.version.unwrap_or(0);
            let version = self
                .own_layer(&parsed)
                .then(|| self.layer_version(&parsed.name, n))
                .flatten()
                .ok_or_else(|| ApiError::invalid(format!("Layer version {arn} does not exist.")))?;
            if let Some(other) = seen.insert(parsed.name.clone(), arn) {
                return Err(ApiError::invalid(format!(
                    "Two different versions of the same layer are not allowed to be referenced in the same function. {other} and {arn} are versions of the same layer."
                )));
            }
            layers.push(LayerRef {
                arn: self.identity.layer_arn(&parsed.name, Some(n)),
                code_sha256_hex: version.code_sha256_hex.clone(),
                code_size: version.code_size,
            });
        }
        Ok(Some(layers))
    }

    fn publish_layer_version(&mut self, raw: &str, body: &[u8], host: &str) -> Result<Response> {
        let body = json_body(body)?;
        let fields = Fields(&body);
        let name = self.layer_name(raw)?.ok_or_else(|| {
            ApiError::new(
                403,
                "AccessDeniedException",
                "Layers can only be published in this hearth's own account and region",
            )
        })?;
        let description = fields
            .bounded("Description", "description", 256)?
            .unwrap_or_default();
        let license_info = fields.bounded("LicenseInfo", "licenseInfo", 512)?;
        let compatible_runtimes = fields.strings("CompatibleRuntimes", "compatibleRuntimes")?;
        let compatible_architectures =
            fields.strings("CompatibleArchitectures", "compatibleArchitectures")?;
        check_compatibility(
            compatible_runtimes.as_deref(),
            compatible_architectures.as_deref(),
        )?;
        let content = fields.object("Content")?.ok_or_else(|| {
            ApiError::validation("1 validation error detected: Value null at 'content' failed to satisfy constraint: Member must not be null")
        })?;
        let stored = self.store_code(content, "Content")?;
        let mut layer = self
            .layers
            .get(&name)
            .cloned()
            .unwrap_or_else(|| LayerRecord {
                name: name.clone(),
                versions: BTreeMap::new(),
                next_version: 1,
            });
        let version = LayerVersionRecord {
            version: layer.next_version,
            description,
            license_info,
            compatible_runtimes,
            compatible_architectures,
            created_date: timestamp(SystemTime::now()),
            code_sha256_hex: stored.sha256_hex,
            code_sha256: stored.sha256_base64,
            code_size: stored.size,
        };
        layer.next_version += 1;
        layer.versions.insert(version.version, version.clone());
        self.store
            .put_layer_version(&layer, &version)
            .map_err(store_error)?;
        let response = self.layer_version_json(&name, &version, host);
        self.layers.insert(name, layer);
        Ok(Response::json(201, &response))
    }

    fn get_layer_version(&self, raw: &str, raw_version: &str, host: &str) -> Result<Response> {
        let n = layer_version_number(raw_version)?;
        let name = self.layer_name(raw)?.ok_or_else(layer_not_found)?;
        let version = self.layer_version(&name, n).ok_or_else(layer_not_found)?;
        Ok(Response::json(
            200,
            &self.layer_version_json(&name, version, host),
        ))
    }

    fn get_layer_version_by_arn(&self, query: &[(String, String)], host: &str) -> Result<Response> {
        let arn = query
            .iter()
            .find(|(k, _)| k == "Arn")
            .map(|(_, v)| v.as_str())
            .ok_or_else(|| {
                ApiError::validation("1 validation error detected: Value null at 'arn' failed to satisfy constraint: Member must not be null")
            })?;
        let parsed = LayerArn::parse(arn)
            .filter(|a| a.version.is_some())
            .ok_or_else(|| {
                ApiError::validation(format!(
                    "1 validation error detected: Value '{arn}' at 'arn' failed to satisfy constraint: Member must satisfy regular expression pattern: {LAYER_VERSION_ARN_PATTERN}"
                ))
            })?;
        let version = self
            .own_layer(&parsed)
            .then(|| self.layer_version(&parsed.name, parsed.version.unwrap_or(0)))
            .flatten()
            .ok_or_else(layer_not_found)?;
        Ok(Response::json(
            200,
            &self.layer_version_json(&parsed.name, version, host),
        ))
    }

    /// ListLayers: each layer with its newest version that matches the filters.
    fn list_layers(&self, query: &[(String, String)]) -> Result<Response> {
        let (runtime, architecture) = layer_filters(query)?;
        let all: Vec<(&str, &LayerVersionRecord)> = self
            .layers
            .values()
            .filter_map(|layer| {
                let latest = layer
                    .versions
                    .values()
                    .rev()
                    .find(|v| v.matches(runtime, architecture))?;
                Some((layer.name.as_str(), latest))
            })
            .collect();
        let (page, next) = paginate(all, query, |(name, _)| (*name).to_owned())?;
        let layers: Vec<Value> = page
            .iter()
            .map(|(name, latest)| {
                json!({
                    "LayerName": name,
                    "LayerArn": self.identity.layer_arn(name, None),
                    "LatestMatchingVersion": latest.list_item_json(name, &self.identity),
                })
            })
            .collect();
        let mut response = json!({ "Layers": layers });
        if let Some(next) = next {
            response["NextMarker"] = next.into();
        }
        Ok(Response::json(200, &response))
    }

    /// ListLayerVersions: newest first, as Lambda lists them; a layer hearth does not hold has
    /// no versions (not an error, as in Lambda).
    fn list_layer_versions(&self, raw: &str, query: &[(String, String)]) -> Result<Response> {
        let (runtime, architecture) = layer_filters(query)?;
        let name = self.layer_name(raw)?;
        let layer = name.as_deref().and_then(|n| self.layers.get(n));
        let all: Vec<&LayerVersionRecord> = layer
            .map(|l| {
                l.versions
                    .values()
                    .rev()
                    .filter(|v| v.matches(runtime, architecture))
                    .collect()
            })
            .unwrap_or_default();
        // Markers must sort like the list: newest first is ascending in (MAX - version).
        let (page, next) = paginate(all, query, |v| format!("{:020}", u64::MAX - v.version))?;
        let versions: Vec<Value> = match layer {
            Some(l) => page
                .iter()
                .map(|v| v.list_item_json(&l.name, &self.identity))
                .collect(),
            None => Vec::new(),
        };
        let mut response = json!({ "LayerVersions": versions });
        if let Some(next) = next {
            response["NextMarker"] = next.into();
        }
        Ok(Response::json(200, &response))
    }

    /// DeleteLayerVersion: idempotent (204 for a version that does not exist), as in Lambda.
    /// Functions that use the version keep its code (see [`Self::referenced_code`]).
    fn delete_layer_version(&mut self, raw: &str, raw_version: &str) -> Result<Response> {
        let n = layer_version_number(raw_version)?;
        let Some(name) = self.layer_name(raw)? else {
            return Ok(Response::empty(204));
        };
        if self.layer_version(&name, n).is_some() {
            self.store
                .delete_layer_version(&name, n)
                .map_err(store_error)?;
            if let Some(layer) = self.layers.get_mut(&name) {
                layer.versions.remove(&n);
            }
            self.collect_garbage();
        }
        Ok(Response::empty(204))
    }

    // ----- tags -----------------------------------------------------------------------------

    fn tags(
        &mut self,
        method: &str,
        raw_arn: &str,
        query: &[(String, String)],
        body: &[u8],
    ) -> Result<Response> {
        let arn = crate::http::percent_decode(raw_arn).ok_or_else(|| {
            ApiError::invalid("The resource ARN is not valid percent-encoded UTF-8")
        })?;
        if !arn.starts_with("arn:") {
            return Err(ApiError::invalid(format!(
                "1 validation error detected: Value '{arn}' at 'resource' failed to satisfy constraint: Member must satisfy regular expression pattern: arn:(aws[a-zA-Z-]*):lambda:[a-z]{{2}}((-gov)|(-iso([a-z]?)))?-[a-z]+-\\d{{1}}:\\d{{12}}:(function:[a-zA-Z0-9-_]+(:(\\$LATEST|[a-zA-Z0-9-_]+))?|layer:[a-zA-Z0-9-_]+)"
            )));
        }
        let function = FunctionRef::parse_decoded(&arn, &self.identity)?;
        let mut record = self.record(&function.name)?.clone();
        match method {
            "GET" => Ok(Response::json(200, &json!({ "Tags": record.tags }))),
            "POST" => {
                let body = json_body(body)?;
                let tags = Fields(&body)
                    .string_map("Tags")?
                    .ok_or_else(|| ApiError::invalid("Tags must not be null"))?;
                record.tags.extend(tags);
                if record.tags.len() > 50 {
                    return Err(ApiError::invalid("A function can have at most 50 tags"));
                }
                self.store.put(&record, None).map_err(store_error)?;
                self.functions.insert(record.name.clone(), record);
                Ok(Response::empty(204))
            }
            "DELETE" => {
                for (_, key) in query.iter().filter(|(k, _)| k == "tagKeys") {
                    record.tags.remove(key);
                }
                self.store.put(&record, None).map_err(store_error)?;
                self.functions.insert(record.name.clone(), record);
                Ok(Response::empty(204))
            }
            _ => Err(ApiError::new(
                404,
                "UnknownOperationException",
                "Unknown operation",
            )),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn environment_rules() {
        let env = |pairs: &[(&str, &str)]| -> BTreeMap<String, String> {
            pairs
                .iter()
                .map(|(k, v)| ((*k).into(), (*v).into()))
                .collect()
        };
        assert!(check_environment(&env(&[("GREETING", "hi")])).is_ok());
        assert!(check_environment(&env(&[("AWS_REGION", "x")])).is_err());
        assert!(check_environment(&env(&[("1X", "x")])).is_err());
        assert!(check_environment(&env(&[("BIG", &"x".repeat(4100))])).is_err());
    }

    #[test]
    fn pagination() {
        let items: Vec<String> = (0..5).map(|i| format!("f{i}")).collect();
        let q = |pairs: &[(&str, &str)]| -> Vec<(String, String)> {
            pairs
                .iter()
                .map(|(k, v)| ((*k).into(), (*v).into()))
                .collect()
        };
        let (page, next) = paginate(items.clone(), &q(&[("MaxItems", "2")]), Clone::clone).unwrap();
        assert_eq!(page, ["f0", "f1"]);
        assert_eq!(next.as_deref(), Some("f1"));
        let (page, next) = paginate(
            items.clone(),
            &q(&[("MaxItems", "2"), ("Marker", "f3")]),
            Clone::clone,
        )
        .unwrap();
        assert_eq!(page, ["f4"]);
        assert_eq!(next, None);
        assert!(paginate(items, &q(&[("MaxItems", "0")]), Clone::clone).is_err());
    }

    #[test]
    fn roles() {
        assert!(check_role("arn:aws:iam::123456789012:role/lambda").is_ok());
        assert!(check_role("not-a-role").is_err());
    }

    #[test]
    fn layer_parameters() {
        let list = |v: &[&str]| -> Vec<String> { v.iter().map(|s| (*s).to_owned()).collect() };
        assert!(check_compatibility(
            Some(&list(&["python3.12", "java21"])),
            Some(&list(&["x86_64", "arm64"]))
        )
        .is_ok());
        let err = check_compatibility(Some(&list(&["cobol"])), Some(&list(&["mips"]))).unwrap_err();
        assert_eq!((err.status, err.error_type), (400, "ValidationException"));
        assert!(
            err.message.starts_with(
                "2 validation errors detected: Value '[cobol]' at 'compatibleRuntimes'"
            ),
            "{}",
            err.message
        );
        assert!(check_compatibility(Some(&list(&["provided"; 16])), None).is_err());
        assert!(check_compatibility(None, Some(&list(&["x86_64"; 3]))).is_err());
        assert_eq!(layer_version_number("7").unwrap(), 7);
        for bad in ["0", "-1"] {
            let err = layer_version_number(bad).unwrap_err();
            assert_eq!(err.message, "Layer Version Cannot be less than 1");
        }
        assert_eq!(
            layer_version_number("x").unwrap_err().error_type,
            "ValidationException"
        );
    }
}
