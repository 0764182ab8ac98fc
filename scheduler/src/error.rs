//! Errors, named as Lambda names them.
//!
//! An invocation either never reaches a function ([`InvokeError`]: throttled, not found, too
//! large, or the platform could not start an environment) or reaches it and fails
//! ([`FunctionError`]: what Lambda reports with `X-Amz-Function-Error: Unhandled` and an error
//! document as the payload). The throttle path is allocation-free: [`Throttle`] is `Copy`.

use std::fmt;

use hearth_ipc::ProtocolError;
use hearth_sandbox::{ExitStatus, SetupFailure};

/// Which concurrency limit refused an invocation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ThrottleReason {
    /// The function's reserved concurrency is in use.
    ReservedFunctionConcurrentInvocationLimitExceeded,
    /// The account's unreserved concurrency is in use.
    ConcurrentInvocationLimitExceeded,
}

impl ThrottleReason {
    /// Lambda's `Reason` field.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::ReservedFunctionConcurrentInvocationLimitExceeded => {
                "ReservedFunctionConcurrentInvocationLimitExceeded"
            }
            Self::ConcurrentInvocationLimitExceeded => "ConcurrentInvocationLimitExceeded",
        }
    }
}

/// An invocation refused by admission control.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Throttle {
    /// Which limit.
    pub reason: ThrottleReason,
    /// Its value.
    pub limit: u32,
}

impl fmt::Display for Throttle {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.reason {
            ThrottleReason::ReservedFunctionConcurrentInvocationLimitExceeded => {
                write!(
                    f,
                    "Rate Exceeded: the function's reserved concurrency of {} is in use",
                    self.limit
                )
            }
            ThrottleReason::ConcurrentInvocationLimitExceeded => {
                write!(
                    f,
                    "Rate Exceeded: the account's unreserved concurrency of {} is in use",
                    self.limit
                )
            }
        }
    }
}

/// The invocation did not reach the function.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum InvokeError {
    /// `ResourceNotFoundException`.
    #[error("Function not found: {0}")]
    NotFound(String),
    /// `TooManyRequestsException`.
    #[error("{0}")]
    Throttled(Throttle),
    /// `RequestTooLargeException`.
    #[error("Request must be smaller than {max} bytes for the InvokeFunction operation (got {0})", max = hearth_ipc::MAX_PAYLOAD)]
    RequestTooLarge(usize),
    /// `ServiceException`: hearth could not run the invocation. Safe to retry: the function did
    /// not run.
    #[error("{0}")]
    Service(String),
}

impl InvokeError {
    /// Lambda's error type name (`x-amzn-ErrorType`).
    pub fn error_type(&self) -> &'static str {
        match self {
            Self::NotFound(_) => "ResourceNotFoundException",
            Self::Throttled(_) => "TooManyRequestsException",
            Self::RequestTooLarge(_) => "RequestTooLargeException",
            Self::Service(_) => "ServiceException",
        }
    }
}

/// The function ran (or its environment was started for it) and the invocation failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FunctionError {
    /// The handler returned an error; the payload is its error document.
    Handled,
    /// The invocation ran past the function's timeout; the environment was killed.
    Timedout,
    /// The environment exited (crash, `exit`, OOM kill) while running the invocation.
    ExitError(ExitStatus),
    /// The function's program could not be executed (missing or not executable).
    InvalidEntrypoint(i32),
    /// The runtime wrote something into its channel that the protocol does not allow.
    InvalidResponse(ProtocolError),
    /// The response was larger than the limit; the value is its size.
    ResponseSizeTooLarge(u32),
}

impl FunctionError {
    /// Lambda's `errorType` for errors hearth detects itself (`None` for handled errors, whose
    /// type is in their payload).
    pub fn error_type(&self) -> Option<&'static str> {
        match self {
            Self::Handled => None,
            Self::Timedout => Some("Sandbox.Timedout"),
            Self::ExitError(_) => Some("Runtime.ExitError"),
            Self::InvalidEntrypoint(_) => Some("Runtime.InvalidEntrypoint"),
            Self::InvalidResponse(_) => Some("Runtime.InvalidResponse"),
            Self::ResponseSizeTooLarge(_) => Some("Function.ResponseSizeTooLarge"),
        }
    }

    /// Lambda's error document for errors hearth detects itself.
    #[cfg_attr(loom, allow(dead_code))]
    pub(crate) fn document(&self, request_id: &str, timeout: std::time::Duration) -> Vec<u8> {
        let message = match self {
            Self::Handled => return Vec::new(),
            Self::Timedout => format!("RequestId: {request_id} Error: Task timed out after {:.2} seconds", timeout.as_secs_f64()),
            Self::ExitError(status) => format!("RequestId: {request_id} Error: Runtime exited with error: {status}"),
            Self::InvalidEntrypoint(errno) => format!(
                "RequestId: {request_id} Error: could not execute the function's program: {}",
                std::io::Error::from_raw_os_error(*errno)
            ),
            Self::InvalidResponse(e) => format!("RequestId: {request_id} Error: the runtime broke the channel protocol: {e}"),
            Self::ResponseSizeTooLarge(len) => format!(
                "Response payload size ({len} bytes) exceeded maximum allowed payload size ({} bytes).",
                hearth_ipc::MAX_PAYLOAD
            ),
        };
        hearth_ipc::error_document(self.error_type().unwrap_or_default(), &message)
    }
}

impl From<SetupFailure> for FunctionError {
    fn from(f: SetupFailure) -> Self {
        Self::InvalidEntrypoint(f.errno)
    }
}

/// A registry operation was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RegistryError {
    /// `ResourceConflictException`.
    #[error("Function already exist: {0}")]
    AlreadyExists(String),
    /// `ResourceNotFoundException`.
    #[error("Function not found: {0}")]
    NotFound(String),
    /// `InvalidParameterValueException`.
    #[error("{0}")]
    InvalidParameter(String),
}

impl RegistryError {
    /// Lambda's error type name.
    pub fn error_type(&self) -> &'static str {
        match self {
            Self::AlreadyExists(_) => "ResourceConflictException",
            Self::NotFound(_) => "ResourceNotFoundException",
            Self::InvalidParameter(_) => "InvalidParameterValueException",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn platform_error_documents_look_like_lambdas() {
        let doc = FunctionError::Timedout.document("abc", std::time::Duration::from_secs(3));
        assert_eq!(
            String::from_utf8(doc).unwrap(),
            r#"{"errorMessage":"RequestId: abc Error: Task timed out after 3.00 seconds","errorType":"Sandbox.Timedout"}"#
        );
        let doc = FunctionError::ExitError(ExitStatus::Signaled(9))
            .document("abc", std::time::Duration::ZERO);
        assert!(String::from_utf8(doc)
            .unwrap()
            .contains("Runtime exited with error: signal: killed"));
        assert_eq!(
            FunctionError::ResponseSizeTooLarge(7_000_000).error_type(),
            Some("Function.ResponseSizeTooLarge")
        );
    }
}
