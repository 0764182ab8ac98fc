//! Warm images of execution environments: a zygote fork-server (an initialised runtime that
//! forks new environments on request) and checkpoint/restore for runtimes that cannot fork.
//!
//! Nothing is implemented here yet: environments are started from nothing by `hearth-sandbox`
//! (see hearth's README for what a cold start costs). The crate exists so that the workspace
//! has the shape DESIGN.md gives it and the dependency edges are checked from the start.
#![forbid(unsafe_code)]
#![warn(missing_docs)]
