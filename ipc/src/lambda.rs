//! Lambda's formats for what travels through the channel: the request id (a UUID) and the
//! error document a failed invocation answers with (`{"errorMessage": ..., "errorType": ...}`).
//! Shared by the runtime, which writes error documents, and the scheduler, which writes its own
//! (timeouts, exits) and formats request ids.

/// Request id bytes as a UUID's text (`8-4-4-4-12` lowercase hex), without allocating.
pub fn request_id_text(id: &[u8; 16]) -> [u8; 36] {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let mut out = [b'-'; 36];
    let mut at = 0;
    for (i, b) in id.iter().enumerate() {
        if matches!(i, 4 | 6 | 8 | 10) {
            at += 1;
        }
        out[at] = HEX[usize::from(b >> 4)];
        out[at + 1] = HEX[usize::from(b & 15)];
        at += 2;
    }
    out
}

/// Formats request id bytes as a UUID (`8-4-4-4-12` lowercase hex).
pub fn format_request_id(id: &[u8; 16]) -> String {
    String::from_utf8_lossy(&request_id_text(id)).into_owned()
}

/// A Unix time in milliseconds as UTC `YYYY-MM-DDTHH:MM:SS.mmm` (no zone suffix): the stem of
/// Lambda's timestamps (`…+0000` in API answers, `…Z` in the Telemetry API).
pub fn utc_timestamp(ms: u64) -> String {
    let secs = ms / 1000;
    let days = i64::try_from(secs / 86_400).unwrap_or(0);
    let rem = secs % 86_400;
    // Civil date from days since 1970-01-01 (Howard Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.{:03}",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60,
        ms % 1000
    )
}

/// Lambda's error document: `{"errorMessage": message, "errorType": error_type}`.
pub fn error_document(error_type: &str, message: &str) -> Vec<u8> {
    let mut out = String::with_capacity(message.len() + error_type.len() + 40);
    out.push_str("{\"errorMessage\":");
    push_json_string(&mut out, message);
    out.push_str(",\"errorType\":");
    push_json_string(&mut out, error_type);
    out.push('}');
    out.into_bytes()
}

fn push_json_string(out: &mut String, s: &str) {
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if u32::from(c) < 0x20 => out.push_str(&format!("\\u{:04x}", u32::from(c))),
            c => out.push(c),
        }
    }
    out.push('"');
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;

    #[test]
    fn error_documents_are_lambdas_shape_and_escaped() {
        assert_eq!(
            String::from_utf8(error_document("ValueError", "bad \"input\"\n\u{1}")).unwrap(),
            r#"{"errorMessage":"bad \"input\"\n\u0001","errorType":"ValueError"}"#
        );
    }

    #[test]
    fn request_ids_are_uuids() {
        let id = [
            0x12, 0x34, 0x56, 0x78, 0x9a, 0xbc, 0xde, 0xf0, 1, 2, 3, 4, 5, 6, 7, 8,
        ];
        assert_eq!(
            format_request_id(&id),
            "12345678-9abc-def0-0102-030405060708"
        );
    }
}
