//! `egress-guard`: the native command-line tool on the filter's own core.
//!
//! - `check FILE...` validates policies exactly as the filter's `on_configure` does (same
//!   errors, every one of them), lints them, and summarises them; FILE may also be an Envoy
//!   configuration, EnvoyFilter or WasmPlugin, whose copies of the policy must agree;
//! - `explain CONFIG [--dst IP:PORT] [--sni NAME | --host NAME] [--json]` shows how the filter
//!   decides one connection (without `--dst`: for every destination, or what it depends on);
//! - `render POLICY --istio | --envoy` writes the shipped manifests or configs with a policy;
//! - `suggest LOG...` writes a policy allowing what decision logs show passing;
//! - `replay LOG... --policy NEW` shows what a new policy would change for logged connections;
//! - `presets [NAME]` lists the built-in presets;
//! - `schema` prints the configuration's JSON Schema (draft 2020-12).
//!
//! Exit codes: 0 success (`explain`: allow), 1 invalid policy (`check`: also copies that
//! disagree, or warnings under `--strict`), 2 usage or I/O error, 3 `explain`: deny, `replay`:
//! something newly denied, 4 `explain`: audit_deny, 5 `explain` without `--dst`: the decision
//! depends on the destination.
//!
//! The tool is native only; on wasm32 (where the Envoy module is built) this is a stub.

#[cfg(not(target_arch = "wasm32"))]
mod by_name;
#[cfg(not(target_arch = "wasm32"))]
mod check;
#[cfg(not(target_arch = "wasm32"))]
mod cli;
#[cfg(not(target_arch = "wasm32"))]
mod container;
#[cfg(not(target_arch = "wasm32"))]
mod explain;
#[cfg(not(target_arch = "wasm32"))]
mod io;
#[cfg(not(target_arch = "wasm32"))]
mod lint;
#[cfg(not(target_arch = "wasm32"))]
mod logs;
#[cfg(not(target_arch = "wasm32"))]
mod presets;
#[cfg(not(target_arch = "wasm32"))]
mod render;
#[cfg(not(target_arch = "wasm32"))]
mod replay;
#[cfg(not(target_arch = "wasm32"))]
mod suggest;

#[cfg(not(target_arch = "wasm32"))]
fn main() -> std::process::ExitCode {
    cli::main()
}

#[cfg(target_arch = "wasm32")]
fn main() -> std::process::ExitCode {
    eprintln!("egress-guard: the command-line tool is built natively, not for wasm32");
    std::process::ExitCode::from(2)
}
