//! `egress-guard`: the native command-line tool on the filter's own core.
//!
//! - `check CONFIG...` validates configurations exactly as the filter's `on_configure` does (same
//!   errors) and summarises them;
//! - `explain CONFIG --dst IP:PORT [--sni NAME | --host NAME] [--json]` shows how the filter
//!   decides one connection;
//! - `presets [NAME]` lists the built-in presets;
//! - `schema` prints the configuration's JSON Schema (draft 2020-12).
//!
//! Exit codes: 0 success (for `explain`: the connection passes, audit would-denies included),
//! 1 invalid configuration, 2 usage or I/O error, 3 `explain`: the connection is denied.
//!
//! The tool is native only; on wasm32 (where the Envoy module is built) this is a stub.

#[cfg(not(target_arch = "wasm32"))]
mod check;
#[cfg(not(target_arch = "wasm32"))]
mod cli;
#[cfg(not(target_arch = "wasm32"))]
mod container;
#[cfg(not(target_arch = "wasm32"))]
mod explain;
#[cfg(not(target_arch = "wasm32"))]
mod lint;
#[cfg(not(target_arch = "wasm32"))]
mod presets;
#[cfg(not(target_arch = "wasm32"))]
mod render;

#[cfg(not(target_arch = "wasm32"))]
fn main() -> std::process::ExitCode {
    cli::main()
}

#[cfg(target_arch = "wasm32")]
fn main() -> std::process::ExitCode {
    eprintln!("egress-guard: the command-line tool is built natively, not for wasm32");
    std::process::ExitCode::from(2)
}
