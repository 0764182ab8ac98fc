//! hearth's cross-crate suites live in `tests/`; the sample functions they run live in
//! `src/bin/`. This library holds what both share.
#![warn(missing_docs)]

use std::path::PathBuf;

/// Path of a binary built from this workspace (e.g. the sample function), next to the test
/// executable's own directory (`target/<profile>/`).
pub fn workspace_binary(name: &str) -> PathBuf {
    let exe = std::env::current_exe().expect("current_exe");
    let mut dir = exe.parent().expect("exe dir").to_path_buf();
    // Test executables live in target/<profile>/deps; binaries in target/<profile>.
    if dir.ends_with("deps") {
        dir.pop();
    }
    let path = dir.join(name);
    assert!(
        path.exists(),
        "{} is missing: build the workspace first (cargo build --workspace)",
        path.display()
    );
    path
}
