//! What the control plane stores about functions, and the JSON shapes Lambda answers with.

use std::collections::BTreeMap;
use std::time::SystemTime;

use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

use crate::api::Identity;

/// The code and configuration of `$LATEST` or of one published version.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub(crate) struct VersionConfig {
    pub version: String,
    pub runtime: String,
    pub handler: String,
    pub role: String,
    pub description: String,
    pub memory_size: u32,
    pub timeout: u32,
    pub environment: BTreeMap<String, String>,
    pub ephemeral_storage: u32,
    /// Hex SHA-256 of the zip: the code's address in the code store.
    pub code_sha256_hex: String,
    /// Base64 SHA-256 of the zip (Lambda's `CodeSha256`).
    pub code_sha256: String,
    pub code_size: u64,
    pub last_modified: String,
    pub revision_id: String,
    /// Layer versions in Lambda's order (absent in rows written before layers existed).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub layers: Vec<LayerRef>,
    /// `SnapStart.ApplyOn` as the client set it: `None` or `PublishedVersions`. Stored and
    /// shown so that templates setting it work unchanged; hearth has no checkpoint/restore, so
    /// its `OptimizationStatus` is always `Off` and the function's `StateReason` says why.
    #[serde(
        default = "snap_start_none",
        skip_serializing_if = "is_snap_start_none"
    )]
    pub snap_start: String,
}

fn snap_start_none() -> String {
    "None".into()
}

fn is_snap_start_none(apply_on: &String) -> bool {
    apply_on == "None"
}

/// What a function with `SnapStart.ApplyOn = PublishedVersions` says in its `StateReason`.
pub(crate) const SNAP_START_REASON: &str = "SnapStart is not available on hearth: it has no \
checkpoint/restore (CRIU 3.17, the one Debian ships, cannot restore on this kernel). New \
environments fork from the function's initialised zygote where its runtime allows, and \
otherwise start from nothing.";

/// One layer version a function uses. The code address is kept with the function, so the
/// function keeps working (and its layer's code is kept) after the layer version is deleted,
/// as in Lambda.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct LayerRef {
    /// `arn:aws:lambda:REGION:ACCOUNT:layer:NAME:N`.
    pub arn: String,
    /// Hex SHA-256 of the layer's zip: its address in the code store.
    pub code_sha256_hex: String,
    pub code_size: u64,
}

impl VersionConfig {
    /// Whether two configurations run the same code the same way (what PublishVersion compares).
    pub(crate) fn same_function(&self, other: &Self) -> bool {
        self.runtime == other.runtime
            && self.handler == other.handler
            && self.role == other.role
            && self.description == other.description
            && self.memory_size == other.memory_size
            && self.timeout == other.timeout
            && self.environment == other.environment
            && self.ephemeral_storage == other.ephemeral_storage
            && self.code_sha256_hex == other.code_sha256_hex
            && self.layers == other.layers
            && self.snap_start == other.snap_start
    }

    /// Lambda's `FunctionConfiguration`.
    pub(crate) fn to_json(&self, name: &str, identity: &Identity, qualified: bool) -> Value {
        let qualifier = qualified.then_some(self.version.as_str());
        let mut config = json!({
            "FunctionName": name,
            "FunctionArn": identity.function_arn(name, qualifier),
            "Runtime": self.runtime,
            "Role": self.role,
            "Handler": self.handler,
            "CodeSize": self.code_size,
            "Description": self.description,
            "Timeout": self.timeout,
            "MemorySize": self.memory_size,
            "LastModified": self.last_modified,
            "CodeSha256": self.code_sha256,
            "Version": self.version,
            "TracingConfig": {"Mode": "PassThrough"},
            "RevisionId": self.revision_id,
            "State": "Active",
            "LastUpdateStatus": "Successful",
            "PackageType": "Zip",
            "Architectures": ["x86_64"],
            "EphemeralStorage": {"Size": self.ephemeral_storage},
            "SnapStart": {"ApplyOn": self.snap_start, "OptimizationStatus": "Off"},
            "LoggingConfig": {"LogFormat": "Text", "LogGroup": format!("/aws/lambda/{name}")},
        });
        if !self.environment.is_empty() {
            config["Environment"] = json!({ "Variables": self.environment });
        }
        if !is_snap_start_none(&self.snap_start) {
            config["StateReason"] = SNAP_START_REASON.into();
        }
        if !self.layers.is_empty() {
            let layers: Vec<Value> = self
                .layers
                .iter()
                .map(|l| json!({"Arn": l.arn, "CodeSize": l.code_size}))
                .collect();
            config["Layers"] = layers.into();
        }
        config
    }

    /// The code store addresses this configuration runs: its own code, then its layers'.
    pub(crate) fn code_addresses(&self) -> impl Iterator<Item = &str> {
        std::iter::once(self.code_sha256_hex.as_str())
            .chain(self.layers.iter().map(|l| l.code_sha256_hex.as_str()))
    }
}

/// An alias.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub(crate) struct AliasRecord {
    pub name: String,
    pub function_version: String,
    pub description: String,
    /// `RoutingConfig.AdditionalVersionWeights`: at most one version and its weight.
    pub additional: BTreeMap<String, f64>,
    pub revision_id: String,
}

impl AliasRecord {
    /// Lambda's `AliasConfiguration`.
    pub(crate) fn to_json(&self, function: &str, identity: &Identity) -> Value {
        let mut alias = json!({
            "AliasArn": identity.function_arn(function, Some(&self.name)),
            "Name": self.name,
            "FunctionVersion": self.function_version,
            "Description": self.description,
            "RevisionId": self.revision_id,
        });
        if !self.additional.is_empty() {
            alias["RoutingConfig"] = json!({ "AdditionalVersionWeights": self.additional });
        }
        alias
    }
}

/// A provisioned concurrency configuration.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub(crate) struct Provisioned {
    pub requested: u32,
    pub last_modified: String,
}

/// Everything stored about one function. Versions are stored in their own rows.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub(crate) struct FunctionRecord {
    pub name: String,
    pub latest: VersionConfig,
    #[serde(skip)]
    pub versions: BTreeMap<u64, VersionConfig>,
    pub aliases: BTreeMap<String, AliasRecord>,
    pub tags: BTreeMap<String, String>,
    pub reserved: Option<u32>,
    /// By qualifier (version number or alias name).
    pub provisioned: BTreeMap<String, Provisioned>,
    /// Version numbers are never reused, even after a delete.
    pub next_version: u64,
}

impl FunctionRecord {
    /// `$LATEST`, a version or (resolved to its version) an alias.
    pub(crate) fn config(&self, qualifier: Option<&str>) -> Option<&VersionConfig> {
        match qualifier {
            None | Some(crate::LATEST) => Some(&self.latest),
            Some(q) => match q.parse::<u64>() {
                Ok(n) => self.versions.get(&n),
                Err(_) => {
                    let alias = self.aliases.get(q)?;
                    self.config(Some(&alias.function_version))
                }
            },
        }
    }

    /// The version a qualifier names (an alias's primary version).
    pub(crate) fn version_of(&self, qualifier: &str) -> Option<String> {
        if self.aliases.contains_key(qualifier) {
            return self
                .aliases
                .get(qualifier)
                .map(|a| a.function_version.clone());
        }
        self.config(Some(qualifier)).map(|c| c.version.clone())
    }

    /// Every code address the function uses, its layers' included.
    pub(crate) fn code_addresses(&self) -> impl Iterator<Item = &str> {
        std::iter::once(&self.latest)
            .chain(self.versions.values())
            .flat_map(VersionConfig::code_addresses)
    }
}

/// One published version of a layer. Immutable once published.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct LayerVersionRecord {
    pub version: u64,
    pub description: String,
    /// `None` when not given (Lambda then omits the field).
    pub license_info: Option<String>,
    pub compatible_runtimes: Option<Vec<String>>,
    pub compatible_architectures: Option<Vec<String>>,
    pub created_date: String,
    /// Hex SHA-256 of the zip: its address in the code store.
    pub code_sha256_hex: String,
    /// Base64 SHA-256 of the zip (Lambda's `CodeSha256`).
    pub code_sha256: String,
    pub code_size: u64,
}

impl LayerVersionRecord {
    /// Whether this version matches ListLayers/ListLayerVersions filters: a version that names
    /// no compatible runtimes (architectures) matches no runtime (architecture) filter.
    pub(crate) fn matches(&self, runtime: Option<&str>, architecture: Option<&str>) -> bool {
        let has = |list: &Option<Vec<String>>, want: Option<&str>| {
            want.is_none_or(|w| list.as_ref().is_some_and(|l| l.iter().any(|x| x == w)))
        };
        has(&self.compatible_runtimes, runtime) && has(&self.compatible_architectures, architecture)
    }

    /// Lambda's `LayerVersionsListItem`.
    pub(crate) fn list_item_json(&self, layer: &str, identity: &Identity) -> Value {
        let mut item = json!({
            "LayerVersionArn": identity.layer_arn(layer, Some(self.version)),
            "Version": self.version,
            "Description": self.description,
            "CreatedDate": self.created_date,
        });
        if let Some(runtimes) = &self.compatible_runtimes {
            item["CompatibleRuntimes"] = json!(runtimes);
        }
        if let Some(architectures) = &self.compatible_architectures {
            item["CompatibleArchitectures"] = json!(architectures);
        }
        if let Some(license) = &self.license_info {
            item["LicenseInfo"] = json!(license);
        }
        item
    }

    /// Lambda's `GetLayerVersionResponse` (also PublishLayerVersion's); `location` is the
    /// presigned download URL of the zip.
    pub(crate) fn to_json(&self, layer: &str, identity: &Identity, location: String) -> Value {
        let mut response = self.list_item_json(layer, identity);
        response["LayerArn"] = identity.layer_arn(layer, None).into();
        response["Content"] = json!({
            "Location": location,
            "CodeSha256": self.code_sha256,
            "CodeSize": self.code_size,
        });
        response
    }
}

/// A layer: its versions and the next version number (never reused, even after deletes).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct LayerRecord {
    pub name: String,
    pub versions: BTreeMap<u64, LayerVersionRecord>,
    pub next_version: u64,
}

/// Lambda's timestamp format, `2026-11-27T20:45:57.123+0000`.
pub(crate) fn timestamp(now: SystemTime) -> String {
    let ms = now
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX));
    format!("{}+0000", hearth_ipc::utc_timestamp(ms))
}

/// A new revision id (a version 4 UUID).
pub(crate) fn revision_id() -> String {
    let mut rng = crate::sys::random_u64() | 1;
    hearth_ipc::format_request_id(&crate::sys::uuid_v4(&mut rng))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn timestamps_in_lambda_format() {
        let t = SystemTime::UNIX_EPOCH + Duration::from_millis(1_795_812_357_123);
        assert_eq!(timestamp(t), "2026-11-27T20:45:57.123+0000");
        assert_eq!(
            timestamp(SystemTime::UNIX_EPOCH + Duration::from_secs(951_782_400)),
            "2000-02-29T00:00:00.000+0000"
        );
    }
}
