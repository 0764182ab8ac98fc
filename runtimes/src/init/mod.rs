//! `hearth-init`: the first process (pid 1) of an environment whose function speaks Lambda's
//! Runtime API.
//!
//! ```text
//!  shard ──ring──▶ ring thread ──(event)──▶ main thread ──HTTP 127.0.0.1:9001──▶ runtime
//!        ◀─ring── main thread ◀──────────── POST /invocation/{id}/response ◀────┘
//! ```
//!
//! It listens on `127.0.0.1:9001` inside the environment's own network namespace (loopback
//! only), starts the runtime (`bootstrap`, or a managed runtime's interpreter), and relays:
//! when the runtime asks for `/next`, the ring thread waits for the next request on the
//! channel (spinning briefly, then sleeping on its doorbell) and hands it over; the runtime's
//! answer goes back into the response ring. As pid 1 it also reaps orphaned processes, and when
//! the runtime exits it answers the invocation in flight with `Runtime.ExitError` and exits too,
//! so the scheduler starts a fresh environment next time, as Lambda does.
//!
//! The channel stays open as fd 3 for the runtime: a `provided` bootstrap linking
//! `hearth-runtime` may read the ring itself (the fast path) and never call the Runtime API.
//! Only one of the two may consume the ring; a runtime that uses both breaks its own channel,
//! which the scheduler detects and answers as `Runtime.InvalidResponse`.
//!
//! Everything here runs inside the sandbox with the function's privileges: a runtime that
//! subverts it gains nothing it did not have.

mod api;
mod extensions;
mod http;

use std::ffi::OsString;
use std::io;
use std::path::{Path, PathBuf};

pub use api::run;

/// The Python runtime's bootstrap (`/var/runtime/python/bootstrap.py`).
const PYTHON_BOOTSTRAP: &str = include_str!("../../python/bootstrap.py");
/// The Node.js runtime's bootstrap (`/var/runtime/node/bootstrap.mjs`).
const NODE_BOOTSTRAP: &str = include_str!("../../node/bootstrap.mjs");

/// Writes the managed runtimes' files under `dir` (which the scheduler then shows at
/// `/var/runtime`): `python/bootstrap.py`, `node/bootstrap.mjs`.
pub fn install_runtime_files(dir: &Path) -> io::Result<()> {
    for (rel, content) in [
        ("python/bootstrap.py", PYTHON_BOOTSTRAP),
        ("node/bootstrap.mjs", NODE_BOOTSTRAP),
    ] {
        let path = dir.join(rel);
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent)?;
        }
        std::fs::write(&path, content)?;
    }
    Ok(())
}

/// Where a `provided` runtime's bootstrap is looked for, in Lambda's order.
const BOOTSTRAPS: [&str; 2] = ["/var/task/bootstrap", "/opt/bootstrap"];

/// The program to start: `argv[0]`, except that Lambda's `/var/task/bootstrap` falls back to
/// `/opt/bootstrap` (a layer's) when the code has none. `Err` carries Lambda's error message.
fn resolve_program(argv: &[OsString]) -> Result<(PathBuf, Vec<OsString>), String> {
    let Some((program, args)) = argv.split_first() else {
        return Err("hearth-init was started without a program".into());
    };
    let program = PathBuf::from(program);
    if program == Path::new(BOOTSTRAPS[0]) {
        return BOOTSTRAPS
            .iter()
            .map(PathBuf::from)
            .find(|p| p.exists())
            .map(|p| (p, args.to_vec()))
            .ok_or_else(|| {
                format!(
                    "Couldn't find valid bootstrap(s): [{}]",
                    BOOTSTRAPS.join(" ")
                )
            });
    }
    Ok((program, args.to_vec()))
}
