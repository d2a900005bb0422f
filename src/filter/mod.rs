//! The proxy-wasm adapter: translates hostcalls into [`crate::session`] events (and, for the
//! HTTP filter, one [`crate::session::judge`] per request) and their answers into hostcalls,
//! counters and log lines. Everything that decides lives in the core.
//!
//! Modules, without cycles: `root` (configure, get_type, tick) uses `stream`, `http`, `state`;
//! `stream` and `http` use `state`, `record`, `host`; `record` uses `state` and `report`; `state`
//! uses `metrics`.
//!
//! One module serves both filter types: only a root context is registered, and its `get_type`
//! picks an HTTP context when the new context has a request protocol, a stream context otherwise.

mod host;
mod http;
mod metrics;
mod record;
mod report;
mod root;
mod state;
mod stream;

proxy_wasm::main! {{
    // Installs the SDK's logger and its panic hook, which logs a panic at critical level before
    // the VM traps (Envoy then applies the filter's failure_policy).
    proxy_wasm::set_log_level(proxy_wasm::types::LogLevel::Info);
    proxy_wasm::set_root_context(|_| Box::new(root::Root::new()));
}}
