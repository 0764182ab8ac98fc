//! Invoke, served on the shard that received the request: the response is written straight from
//! the completion's payload into the connection's output buffer.

use crate::api::ApiError;
use crate::http::{push_header, write_head, Persist};
use crate::{FunctionError, InvokeError, Outcome};

/// `X-Amz-Invocation-Type`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum InvocationType {
    /// Wait for the answer (the default).
    RequestResponse,
    /// Answer 202 at once; the function runs afterwards.
    Event,
    /// Check the function exists and the caller may invoke it; 204.
    DryRun,
}

impl InvocationType {
    pub(crate) fn from_header(value: Option<&[u8]>) -> Result<Self, ApiError> {
        match value {
            None | Some(b"RequestResponse") => Ok(Self::RequestResponse),
            Some(b"Event") => Ok(Self::Event),
            Some(b"DryRun") => Ok(Self::DryRun),
            Some(other) => Err(ApiError::invalid(format!(
                "1 validation error detected: Value '{}' at 'invocationType' failed to satisfy constraint: Member must satisfy enum value set: [Event, RequestResponse, DryRun]",
                String::from_utf8_lossy(other)
            ))),
        }
    }
}

/// The error an invocation that never reached its function gets.
pub(crate) fn invoke_error(e: &InvokeError, arn: &str) -> ApiError {
    match e {
        InvokeError::NotFound(_) => ApiError::not_found(format!("Function not found: {arn}")),
        InvokeError::Throttled(t) => ApiError {
            status: 429,
            error_type: "TooManyRequestsException",
            message: "Rate Exceeded.".into(),
            reason: Some(t.reason.as_str()),
        },
        InvokeError::RequestTooLarge(_) => ApiError::new(
            413,
            "RequestTooLargeException",
            format!(
                "Request must be smaller than {} bytes for the InvokeFunction operation",
                super::MAX_SYNC_PAYLOAD
            ),
        ),
        InvokeError::Service(m) => ApiError::service(m.clone()),
    }
}

/// Writes the response of a finished synchronous invocation.
pub(crate) fn write_result(
    out: &mut Vec<u8>,
    persist: Persist,
    version: &str,
    outcome: &Outcome,
    payload: &[u8],
    log: Option<&str>,
) {
    let request_id = hearth_ipc::request_id_text(&outcome.request_id);
    let request_id = std::str::from_utf8(&request_id).unwrap_or_default();
    write_head(out, 200, payload.len(), request_id, persist);
    push_header(out, "Content-Type", b"application/json");
    push_header(out, "X-Amz-Executed-Version", version.as_bytes());
    if let Some(error) = outcome.error {
        // Lambda reports every error of a function on a custom runtime as Unhandled.
        let _: FunctionError = error;
        push_header(out, "X-Amz-Function-Error", b"Unhandled");
    }
    if let Some(log) = log {
        push_header(out, "X-Amz-Log-Result", log.as_bytes());
    }
    out.extend_from_slice(b"\r\n");
    out.extend_from_slice(payload);
}
