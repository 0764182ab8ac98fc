//! The runtimes hearth accepts, as one table: how each starts a function's program, and which
//! interpreter the host must have for it.
//!
//! Every runtime is served through Lambda's Runtime API ([`Launch::RuntimeApi`]): `hearth-init`
//! is the environment's first process and starts the program named here. The OS-only runtimes
//! (`provided*`) run the function's own `/var/task/bootstrap` (hearth-init falls back to
//! `/opt/bootstrap` when the code has none, as Lambda does); a native hearth function is
//! handed hearth's channel by hearth-init and keeps its fast path. The managed runtimes run the
//! host's interpreter on hearth's bootstrap in `/var/runtime`, so they are accepted only where
//! that interpreter is installed.

use std::path::Path;

use crate::api::ApiError;
use crate::Launch;

/// How functions of one runtime are started.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct RuntimeSpec {
    /// Lambda's runtime identifier (`Runtime`).
    pub name: &'static str,
    pub launch: Launch,
    /// The program started inside the environment.
    pub command: &'static str,
    pub args: &'static [&'static str],
    /// A program the host must have (outside the environment) for the runtime to be accepted.
    pub interpreter: Option<&'static str>,
}

const BOOTSTRAP: &str = "/var/task/bootstrap";
const PYTHON: &str = "/usr/bin/python3";
const PYTHON_ARGS: &[&str] = &["/var/runtime/python/bootstrap.py"];
const NODE: &str = "/usr/bin/node";
const NODE_ARGS: &[&str] = &["/var/runtime/node/bootstrap.mjs"];

const fn os_only(name: &'static str) -> RuntimeSpec {
    RuntimeSpec {
        name,
        launch: Launch::RuntimeApi,
        command: BOOTSTRAP,
        args: &[],
        interpreter: None,
    }
}

const fn python(name: &'static str) -> RuntimeSpec {
    RuntimeSpec {
        name,
        launch: Launch::RuntimeApi,
        command: PYTHON,
        args: PYTHON_ARGS,
        interpreter: Some(PYTHON),
    }
}

const fn node(name: &'static str) -> RuntimeSpec {
    RuntimeSpec {
        name,
        launch: Launch::RuntimeApi,
        command: NODE,
        args: NODE_ARGS,
        interpreter: Some(NODE),
    }
}

/// Every runtime hearth accepts, in the order error messages list them.
pub(crate) const RUNTIMES: &[RuntimeSpec] = &[
    node("nodejs18.x"),
    node("nodejs20.x"),
    node("nodejs22.x"),
    os_only("provided"),
    os_only("provided.al2"),
    os_only("provided.al2023"),
    python("python3.8"),
    python("python3.9"),
    python("python3.10"),
    python("python3.11"),
    python("python3.12"),
    python("python3.13"),
];

/// The table's entry for `name`, whether or not the host can run it.
pub(crate) fn lookup(name: &str) -> Option<&'static RuntimeSpec> {
    RUNTIMES.iter().find(|r| r.name == name)
}

/// Checks a `Runtime` parameter: a runtime of the table whose interpreter the host has.
pub(crate) fn check(name: &str) -> Result<&'static RuntimeSpec, ApiError> {
    check_with(name, |p| Path::new(p).exists())
}

/// [`check`] with the host's files given by `exists` (for tests).
fn check_with(name: &str, exists: impl Fn(&str) -> bool) -> Result<&'static RuntimeSpec, ApiError> {
    let spec = lookup(name).ok_or_else(|| {
        let names: Vec<&str> = RUNTIMES.iter().map(|r| r.name).collect();
        ApiError::invalid(format!(
            "Value {name} at 'runtime' failed to satisfy constraint: Member must satisfy enum value set: [{}]",
            names.join(", ")
        ))
    })?;
    match spec.interpreter {
        Some(program) if !exists(program) => Err(ApiError::invalid(format!(
            "The runtime parameter of {name} is not available on this hearth host: it runs {program}, which is not installed. Install it on the host, or choose another runtime."
        ))),
        _ => Ok(spec),
    }
}

/// Every runtime name Lambda knows (botocore's `Runtime` enum), for layers' compatible-runtime
/// lists, which may name runtimes this host cannot run.
pub(crate) const LAMBDA_RUNTIMES: &[&str] = &[
    "nodejs",
    "nodejs4.3",
    "nodejs6.10",
    "nodejs8.10",
    "nodejs10.x",
    "nodejs12.x",
    "nodejs14.x",
    "nodejs16.x",
    "nodejs18.x",
    "nodejs20.x",
    "nodejs22.x",
    "nodejs24.x",
    "java8",
    "java8.al2",
    "java11",
    "java17",
    "java21",
    "java25",
    "python2.7",
    "python3.6",
    "python3.7",
    "python3.8",
    "python3.9",
    "python3.10",
    "python3.11",
    "python3.12",
    "python3.13",
    "python3.14",
    "dotnetcore1.0",
    "dotnetcore2.0",
    "dotnetcore2.1",
    "dotnetcore3.1",
    "dotnet6",
    "dotnet8",
    "dotnet10",
    "nodejs4.3-edge",
    "go1.x",
    "ruby2.5",
    "ruby2.7",
    "ruby3.2",
    "ruby3.3",
    "ruby3.4",
    "provided",
    "provided.al2",
    "provided.al2023",
];

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table_decides_launch_command_and_arguments() {
        let all = |_: &str| true;
        for name in ["provided", "provided.al2", "provided.al2023"] {
            let spec = check_with(name, |_| false).unwrap();
            assert_eq!(
                (spec.launch, spec.command, spec.args),
                (Launch::RuntimeApi, "/var/task/bootstrap", &[][..])
            );
        }
        for v in 8..=13 {
            let spec = check_with(&format!("python3.{v}"), all).unwrap();
            assert_eq!(
                (spec.launch, spec.command, spec.args),
                (
                    Launch::RuntimeApi,
                    "/usr/bin/python3",
                    &["/var/runtime/python/bootstrap.py"][..]
                )
            );
        }
        for v in [18, 20, 22] {
            let spec = check_with(&format!("nodejs{v}.x"), all).unwrap();
            assert_eq!(
                (spec.command, spec.args),
                ("/usr/bin/node", &["/var/runtime/node/bootstrap.mjs"][..])
            );
        }
        // Every runtime hearth runs is one Lambda knows.
        assert!(RUNTIMES.iter().all(|r| LAMBDA_RUNTIMES.contains(&r.name)));
    }

    #[test]
    fn missing_interpreters_and_unknown_runtimes_are_refused() {
        let only = |have: &'static str| move |p: &str| p == have;
        let err = check_with("python3.12", only("/usr/bin/node")).unwrap_err();
        assert_eq!(err.error_type, "InvalidParameterValueException");
        assert!(err.message.contains("/usr/bin/python3"), "{}", err.message);
        assert!(check_with("nodejs20.x", only("/usr/bin/node")).is_ok());
        assert!(check_with("nodejs20.x", only("/usr/bin/python3")).is_err());
        for bad in [
            "java21",
            "python2.7",
            "python3.14",
            "nodejs16.x",
            "",
            "PROVIDED",
        ] {
            let err = check_with(bad, |_| true).unwrap_err();
            assert_eq!(
                (err.status, err.error_type),
                (400, "InvalidParameterValueException")
            );
            assert!(
                err.message.starts_with(&format!(
                    "Value {bad} at 'runtime' failed to satisfy constraint: Member must satisfy enum value set: [nodejs18.x, "
                )),
                "{}",
                err.message
            );
        }
    }
}
