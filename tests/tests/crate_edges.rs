//! The crate graph DESIGN.md allows, checked against `cargo metadata`: a crate may depend on
//! a sibling only along an allowed edge, and the system-facing crates stay where they belong.

use std::collections::{BTreeMap, BTreeSet};
use std::process::Command;

use serde_json::Value;

/// Workspace crate -> the workspace crates it may depend on (`None`: anything).
fn allowed() -> BTreeMap<&'static str, Option<BTreeSet<&'static str>>> {
    let set = |v: &[&'static str]| Some(v.iter().copied().collect());
    BTreeMap::from([
        ("hearth-ipc", set(&[])),
        ("hearth-sandbox", set(&[])),
        ("hearth-snapshot", set(&["hearth-sandbox", "hearth-ipc"])),
        ("hearth-runtime", set(&["hearth-ipc"])),
        (
            "hearth-scheduler",
            set(&["hearth-ipc", "hearth-sandbox", "hearth-snapshot"]),
        ),
        ("hearth-bench", None),
        ("hearth-tests", None),
    ])
}

/// External crates confined to some workspace crates (STYLE.md §1).
fn confined() -> BTreeMap<&'static str, BTreeSet<&'static str>> {
    let set = |v: &[&'static str]| v.iter().copied().collect();
    BTreeMap::from([
        ("libseccomp", set(&["hearth-sandbox"])),
        ("landlock", set(&["hearth-sandbox"])),
        ("caps", set(&["hearth-sandbox"])),
        ("io-uring", set(&["hearth-scheduler", "hearth-ipc"])),
        ("tokio-uring", set(&["hearth-scheduler", "hearth-ipc"])),
        ("mimalloc", set(&["hearth-bench"])),
    ])
}

/// `cargo metadata` of the workspace; with `deps`, the resolved graph of every dependency too.
fn metadata(deps: bool) -> Value {
    let manifest = concat!(env!("CARGO_MANIFEST_DIR"), "/../Cargo.toml");
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let mut args = vec![
        "metadata",
        "--format-version",
        "1",
        "--offline",
        "--manifest-path",
        manifest,
    ];
    // The resolved graph for this platform only: resolving every platform's dependencies
    // offline would need crates no Linux build downloads (found by a clean-machine run).
    let platform = format!("{}-unknown-linux-gnu", std::env::consts::ARCH);
    if deps {
        args.extend(["--filter-platform", platform.as_str()]);
    } else {
        args.push("--no-deps");
    }
    let out = Command::new(cargo)
        .args(&args)
        .output()
        .expect("running cargo metadata");
    assert!(
        out.status.success(),
        "cargo metadata failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("cargo metadata JSON")
}

#[test]
fn every_dependency_edge_is_allowed_by_the_design() {
    let meta = metadata(false);
    let allowed = allowed();
    let confined = confined();
    let packages = meta["packages"].as_array().unwrap();
    let members: BTreeSet<&str> = packages
        .iter()
        .map(|p| p["name"].as_str().unwrap())
        .collect();
    assert_eq!(
        members,
        allowed.keys().copied().collect(),
        "the workspace members are the crates of DESIGN.md"
    );

    let mut violations = Vec::new();
    for package in packages {
        let name = package["name"].as_str().unwrap();
        for dep in package["dependencies"].as_array().unwrap() {
            let dep_name = dep["name"].as_str().unwrap();
            if members.contains(dep_name) {
                if let Some(Some(ok)) = allowed.get(name) {
                    if !ok.contains(dep_name) {
                        violations.push(format!(
                            "{name} -> {dep_name} is not an edge DESIGN.md allows"
                        ));
                    }
                }
            }
            if let Some(owners) = confined.get(dep_name) {
                if !owners.contains(name) {
                    violations.push(format!(
                        "{name} uses {dep_name}, which belongs in {owners:?} only"
                    ));
                }
            }
        }
    }
    assert!(violations.is_empty(), "{violations:#?}");
}

#[test]
fn environment_code_never_links_the_scheduler_or_the_sandbox() {
    // hearth-runtime is linked into every native function and runs inside the environment's
    // seccomp allowlist: nothing it pulls in, however indirectly, may be the scheduler's or the
    // sandbox's machinery.
    let meta = metadata(true);
    let packages: BTreeMap<&str, &str> = meta["packages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| (p["id"].as_str().unwrap(), p["name"].as_str().unwrap()))
        .collect();
    let nodes: BTreeMap<&str, &Value> = meta["resolve"]["nodes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|n| (n["id"].as_str().unwrap(), n))
        .collect();
    let root = packages
        .iter()
        .find(|(_, name)| **name == "hearth-runtime")
        .map(|(id, _)| *id)
        .unwrap();
    // Walk normal (not dev, not build) dependencies from hearth-runtime.
    let mut linked = BTreeSet::new();
    let mut todo = vec![root];
    while let Some(id) = todo.pop() {
        for dep in nodes[id]["deps"].as_array().unwrap() {
            let normal = dep["dep_kinds"]
                .as_array()
                .unwrap()
                .iter()
                .any(|k| k["kind"].is_null());
            let dep_id = dep["pkg"].as_str().unwrap();
            if normal && linked.insert(packages[dep_id]) {
                todo.push(dep_id);
            }
        }
    }
    assert!(
        linked.contains("hearth-ipc"),
        "the walk sees the runtime's dependencies: {linked:?}"
    );
    let forbidden = [
        "hearth-scheduler",
        "hearth-sandbox",
        "hearth-snapshot",
        "libseccomp",
        "landlock",
        "io-uring",
        "mimalloc",
    ];
    let found: Vec<&&str> = forbidden.iter().filter(|f| linked.contains(**f)).collect();
    assert!(
        found.is_empty(),
        "hearth-runtime links {found:?} (all of it: {linked:?})"
    );
}
