//! What the escape suites (`escape.rs`, as root, and `escape_rootless.rs`) share: reading an
//! attack program's report, and describing host files so a test can tell whether an attack
//! changed any.

use std::path::{Path, PathBuf};

use serde_json::Value;

/// Asserts that `report` (what `hearth-attack` answered for `attack`) says `blocked`, with at
/// least `min` judged calls, each of which failed with one of `errnos`.
pub fn assert_report_blocked(attack: &str, report: &Value, errnos: &[&str], min: usize) {
    assert_eq!(report["attack"], attack, "{report}");
    assert_eq!(
        report["outcome"], "blocked",
        "{attack} ESCAPED: {}",
        report["detail"]
    );
    let judged: Vec<&Value> = report["steps"]
        .as_array()
        .expect("the report lists its steps")
        .iter()
        .filter(|s| s["judged"] == true)
        .collect();
    assert!(
        judged.len() >= min,
        "{attack}: only {} judged steps: {}",
        judged.len(),
        report["detail"]
    );
    for step in judged {
        let result = step["result"].as_str().unwrap_or_default();
        assert!(
            errnos.contains(&result),
            "{attack}: {} failed with {result}, expected one of {errnos:?}\n{}",
            step["call"],
            report["detail"]
        );
    }
}

/// The step of `report` whose call starts with `call`.
pub fn step<'a>(report: &'a Value, call: &str) -> &'a Value {
    report["steps"]
        .as_array()
        .expect("the report lists its steps")
        .iter()
        .find(|s| s["call"].as_str().unwrap_or_default().starts_with(call))
        .unwrap_or_else(|| panic!("no step {call}: {}", report["detail"]))
}

/// Kind, mode, owner and contents' hash (or link target) of `path`, without following a
/// symlink.
pub fn describe(path: &Path) -> String {
    use std::os::unix::fs::MetadataExt;
    match std::fs::symlink_metadata(path) {
        Err(e) => format!("{}: {e}", path.display()),
        Ok(m) if m.file_type().is_symlink() => format!(
            "{}: symlink to {:?}",
            path.display(),
            std::fs::read_link(path)
        ),
        Ok(m) if m.is_dir() => format!(
            "{}: dir {:o} {}:{}",
            path.display(),
            m.mode(),
            m.uid(),
            m.gid()
        ),
        Ok(m) => {
            let bytes = std::fs::read(path).unwrap_or_default();
            let mut hash = std::hash::DefaultHasher::new();
            std::hash::Hash::hash(&bytes, &mut hash);
            format!(
                "{}: file {:o} {}:{} {} bytes, hash {:x}",
                path.display(),
                m.mode(),
                m.uid(),
                m.gid(),
                bytes.len(),
                std::hash::Hasher::finish(&hash)
            )
        }
    }
}

/// [`describe`] of `dir` and everything below it, in name order.
pub fn walk(dir: &Path, out: &mut Vec<String>) {
    out.push(describe(dir));
    let mut entries: Vec<PathBuf> = std::fs::read_dir(dir)
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.path())
        .collect();
    entries.sort();
    for path in entries {
        if std::fs::symlink_metadata(&path).is_ok_and(|m| m.is_dir()) {
            walk(&path, out);
        } else {
            out.push(describe(&path));
        }
    }
}
