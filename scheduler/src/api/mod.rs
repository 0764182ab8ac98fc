//! Lambda's REST API: routes, function identifiers, and errors in Lambda's shape
//! (`x-amzn-ErrorType` header, `{"Type", "message"}` body), so boto3 raises its modeled
//! exception classes.
//!
//! `Invoke` is served on the shard that received it ([`invoke`]); every other operation goes to
//! the control thread ([`control`]), which owns the SQLite store.

pub(crate) mod control;
pub(crate) mod invoke;
pub(crate) mod model;
pub(crate) mod runtime;

use crate::http::{percent_decode, Response};

/// Lambda's limit on a synchronous invocation's payload (6 MB).
pub const MAX_SYNC_PAYLOAD: usize = 6 * 1024 * 1024;
/// hearth's limit on an asynchronous invocation's payload (1 MiB).
pub const MAX_ASYNC_PAYLOAD: usize = 1024 * 1024;
/// Largest control-plane request: a 50 MB zip, base64-encoded, in JSON.
pub const MAX_CONTROL_BODY: usize = 70_167_211;

/// The identity hearth answers as: ARNs are `arn:aws:lambda:{region}:{account}:function:...`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Identity {
    /// Region name.
    pub region: String,
    /// Twelve-digit account id.
    pub account: String,
}

impl Default for Identity {
    fn default() -> Self {
        Self {
            region: "us-east-1".into(),
            account: "000000000000".into(),
        }
    }
}

impl Identity {
    /// `arn:aws:lambda:...:function:name[:qualifier]`.
    pub(crate) fn function_arn(&self, name: &str, qualifier: Option<&str>) -> String {
        let mut arn = format!(
            "arn:aws:lambda:{}:{}:function:{name}",
            self.region, self.account
        );
        if let Some(q) = qualifier {
            arn.push(':');
            arn.push_str(q);
        }
        arn
    }

    /// `arn:aws:lambda:...:layer:name[:version]`.
    pub(crate) fn layer_arn(&self, name: &str, version: Option<u64>) -> String {
        let mut arn = format!(
            "arn:aws:lambda:{}:{}:layer:{name}",
            self.region, self.account
        );
        if let Some(v) = version {
            arn.push_str(&format!(":{v}"));
        }
        arn
    }
}

/// An error answered in Lambda's shape.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct ApiError {
    pub status: u16,
    pub error_type: &'static str,
    pub message: String,
    /// Lambda's `Reason` field (throttles).
    pub reason: Option<&'static str>,
}

impl ApiError {
    pub(crate) fn new(status: u16, error_type: &'static str, message: impl Into<String>) -> Self {
        Self {
            status,
            error_type,
            message: message.into(),
            reason: None,
        }
    }

    pub(crate) fn invalid(message: impl Into<String>) -> Self {
        Self::new(400, "InvalidParameterValueException", message)
    }

    pub(crate) fn not_found(message: impl Into<String>) -> Self {
        Self::new(404, "ResourceNotFoundException", message)
    }

    pub(crate) fn conflict(message: impl Into<String>) -> Self {
        Self::new(409, "ResourceConflictException", message)
    }

    /// A request that breaks a constraint of Lambda's API model (length, pattern, enum).
    pub(crate) fn validation(message: impl Into<String>) -> Self {
        Self::new(400, "ValidationException", message)
    }

    pub(crate) fn service(message: impl Into<String>) -> Self {
        Self::new(500, "ServiceException", message)
    }

    /// The response; `Type` is `User` for 4xx errors and `Service` for 5xx, as Lambda sends.
    pub(crate) fn response(&self) -> Response {
        let mut body = serde_json::json!({
            "Type": if self.status >= 500 { "Service" } else { "User" },
            "message": self.message,
        });
        if let Some(reason) = self.reason {
            body["Reason"] = reason.into();
        }
        let mut response = Response::json(self.status, &body);
        response
            .headers
            .push(("x-amzn-ErrorType", self.error_type.to_owned()));
        if self.status == 429 {
            response.headers.push(("Retry-After", "1".into()));
        }
        response
    }
}

impl From<crate::RegistryError> for ApiError {
    fn from(e: crate::RegistryError) -> Self {
        let error_type = e.error_type();
        let status = match error_type {
            "ResourceNotFoundException" => 404,
            "ResourceConflictException" => 409,
            _ => 400,
        };
        Self::new(status, error_type, e.to_string())
    }
}

/// A function named in a path: `name`, `name:qualifier`, `account:function:name[:qualifier]`
/// or a full ARN.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct FunctionRef {
    pub name: String,
    pub qualifier: Option<String>,
}

/// Lambda's pattern for version numbers and alias names.
fn valid_qualifier(q: &str) -> bool {
    !q.is_empty()
        && q.len() <= 128
        && (q == crate::LATEST
            || q.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_'))
}

fn valid_name(n: &str) -> bool {
    !n.is_empty()
        && n.len() <= 64
        && n.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

impl FunctionRef {
    /// Parses a percent-encoded path segment naming a function.
    pub(crate) fn parse(raw: &str, identity: &Identity) -> Result<Self, ApiError> {
        let text = percent_decode(raw).ok_or_else(|| {
            ApiError::invalid("The function name is not valid percent-encoded UTF-8")
        })?;
        Self::parse_decoded(&text, identity)
    }

    pub(crate) fn parse_decoded(text: &str, identity: &Identity) -> Result<Self, ApiError> {
        let bad = || {
            ApiError::invalid(format!(
                "1 validation error detected: Value '{text}' at 'functionName' failed to satisfy constraint: Member must satisfy regular expression pattern: (arn:(aws[a-zA-Z-]*)?:lambda:)?([a-z]{{2}}(-gov)?-[a-z]+-\\d{{1}}:)?(\\d{{12}}:)?(function:)?([a-zA-Z0-9-_]+)(:(\\$LATEST|[a-zA-Z0-9-_]+))?"
            ))
        };
        if text.len() > 170 {
            return Err(bad());
        }
        let parts: Vec<&str> = text.split(':').collect();
        let (account, region, rest) = match parts.as_slice() {
            ["arn", _partition, "lambda", region, account, "function", rest @ ..] => {
                (Some(*account), Some(*region), rest)
            }
            [account, "function", rest @ ..] => (Some(*account), None, rest),
            rest => (None, None, rest),
        };
        let (name, qualifier) = match rest {
            [name] => (*name, None),
            [name, qualifier] => (*name, Some(*qualifier)),
            _ => return Err(bad()),
        };
        if !valid_name(name) || qualifier.is_some_and(|q| !valid_qualifier(q)) {
            return Err(bad());
        }
        if account.is_some_and(|a| a != identity.account)
            || region.is_some_and(|r| r != identity.region)
        {
            return Err(ApiError::not_found(format!("Function not found: {text}")));
        }
        Ok(Self {
            name: name.to_owned(),
            qualifier: qualifier.map(str::to_owned),
        })
    }

    /// Merges a `?Qualifier=` parameter, which must agree with one in the name.
    pub(crate) fn with_query_qualifier(mut self, query: Option<String>) -> Result<Self, ApiError> {
        match (query, &self.qualifier) {
            (Some(q), Some(own)) if &q != own => Err(ApiError::invalid(
                "The derived qualifier from the function name does not match the specified qualifier.",
            )),
            (Some(q), _) => {
                if !valid_qualifier(&q) {
                    return Err(ApiError::invalid(format!(
                        "1 validation error detected: Value '{q}' at 'qualifier' failed to satisfy constraint: Member must satisfy regular expression pattern: (|[a-zA-Z0-9$_-]+)"
                    )));
                }
                self.qualifier = Some(q);
                Ok(self)
            }
            (None, _) => Ok(self),
        }
    }
}

/// Lambda's pattern for `LayerName` (a name or a layer ARN without a version).
pub(crate) const LAYER_NAME_PATTERN: &str = "(arn:(aws[a-zA-Z-]*)?:lambda:[a-z]{2}((-gov)|(-iso([a-z]?)))?-[a-z]+-\\d{1}:\\d{12}:layer:[a-zA-Z0-9-_]+)|[a-zA-Z0-9-_]+";

/// Lambda's pattern for `LayerVersionArn`.
pub(crate) const LAYER_VERSION_ARN_PATTERN: &str = "arn:(aws[a-zA-Z-]*)?:lambda:[a-z]{2}((-gov)|(-iso([a-z]?)))?-[a-z]+-\\d{1}:\\d{12}:layer:[a-zA-Z0-9-_]+:[0-9]+";

/// A layer ARN, `arn:PARTITION:lambda:REGION:ACCOUNT:layer:NAME[:VERSION]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct LayerArn {
    pub region: String,
    pub account: String,
    pub name: String,
    pub version: Option<u64>,
}

impl LayerArn {
    /// Parses a layer ARN (with or without a version); `None` if it is not one.
    pub(crate) fn parse(text: &str) -> Option<Self> {
        let parts: Vec<&str> = text.split(':').collect();
        let (partition, region, account, name, version) = match parts.as_slice() {
            ["arn", p, "lambda", r, a, "layer", n] => (*p, *r, *a, *n, None),
            ["arn", p, "lambda", r, a, "layer", n, v] => (*p, *r, *a, *n, Some(*v)),
            _ => return None,
        };
        let region_ok = region.len() >= 4
            && region
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-');
        let version = match version {
            None => None,
            Some(v) if !v.is_empty() && v.bytes().all(|b| b.is_ascii_digit()) => {
                Some(v.parse().ok()?)
            }
            Some(_) => return None,
        };
        let valid = partition.starts_with("aws")
            && region_ok
            && account.len() == 12
            && account.bytes().all(|b| b.is_ascii_digit())
            && valid_layer_name(name);
        valid.then(|| Self {
            region: region.to_owned(),
            account: account.to_owned(),
            name: name.to_owned(),
            version,
        })
    }
}

/// `[a-zA-Z0-9-_]+`, at most 140 characters (the limit of the whole `LayerName`).
pub(crate) fn valid_layer_name(n: &str) -> bool {
    !n.is_empty()
        && n.len() <= 140
        && n.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

/// The function segment of an Invoke path, `/2015-03-31/functions/{id}/invocations`.
pub(crate) fn invoke_target<'a>(method: &str, path: &'a str) -> Option<&'a str> {
    if method != "POST" {
        return None;
    }
    let rest = path.strip_prefix("/2015-03-31/functions/")?;
    let id = rest.strip_suffix("/invocations")?;
    (!id.is_empty() && !id.contains('/')).then_some(id)
}

/// A new request id, in Lambda's format.
pub(crate) fn new_request_id(rng: &mut u64) -> String {
    hearth_ipc::format_request_id(&crate::sys::uuid_v4(rng))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn function_references() {
        let id = Identity::default();
        let parse = |s: &str| FunctionRef::parse(s, &id);
        assert_eq!(
            parse("f").unwrap(),
            FunctionRef {
                name: "f".into(),
                qualifier: None
            }
        );
        assert_eq!(parse("f%3A7").unwrap().qualifier.as_deref(), Some("7"));
        assert_eq!(
            parse("arn:aws:lambda:us-east-1:000000000000:function:f:live")
                .unwrap()
                .qualifier
                .as_deref(),
            Some("live")
        );
        assert_eq!(parse("000000000000:function:f").unwrap().name, "f");
        assert_eq!(
            parse("f:$LATEST").unwrap().qualifier.as_deref(),
            Some("$LATEST")
        );
        assert_eq!(
            parse("arn:aws:lambda:us-east-1:111111111111:function:f")
                .unwrap_err()
                .status,
            404
        );
        for bad in ["", "a b", "f:1:2", "f%zz", "x:y:z:w:v", &"a".repeat(65)] {
            assert_eq!(
                parse(bad).unwrap_err().error_type,
                "InvalidParameterValueException",
                "{bad}"
            );
        }
        let r = parse("f:1").unwrap();
        assert!(r.clone().with_query_qualifier(Some("2".into())).is_err());
        assert!(r.with_query_qualifier(Some("1".into())).is_ok());
    }

    #[test]
    fn layer_arns() {
        assert_eq!(
            LayerArn::parse("arn:aws:lambda:us-east-1:000000000000:layer:my-layer_1:12"),
            Some(LayerArn {
                region: "us-east-1".into(),
                account: "000000000000".into(),
                name: "my-layer_1".into(),
                version: Some(12),
            })
        );
        assert_eq!(
            LayerArn::parse("arn:aws:lambda:eu-west-2:123456789012:layer:l")
                .unwrap()
                .version,
            None
        );
        for bad in [
            "l",
            "arn:aws:lambda:us-east-1:000000000000:function:f:1",
            "arn:aws:lambda:us-east-1:00000000000:layer:l:1",
            "arn:aws:lambda:us-east-1:000000000000:layer:l:x",
            "arn:aws:lambda:us-east-1:000000000000:layer:l:",
            "arn:aws:lambda:us-east-1:000000000000:layer:a b:1",
            "arn:aws:lambda:us-east-1:000000000000:layer:l:1:2",
            "arn:other:lambda:us-east-1:000000000000:layer:l:1",
        ] {
            assert_eq!(LayerArn::parse(bad), None, "{bad}");
        }
    }

    #[test]
    fn invoke_targets() {
        assert_eq!(
            invoke_target("POST", "/2015-03-31/functions/f%3A1/invocations"),
            Some("f%3A1")
        );
        assert_eq!(
            invoke_target("GET", "/2015-03-31/functions/f/invocations"),
            None
        );
        assert_eq!(
            invoke_target("POST", "/2015-03-31/functions/a/b/invocations"),
            None
        );
    }
}
