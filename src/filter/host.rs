//! The one hostcall the SDK cannot make soundly: `proxy_get_log_level`.
//!
//! Envoy answers with its `wasm` logger's spdlog level unclamped, which is 6 when that logger is
//! off (`--log-level off`, `/logging?wasm=off`). The SDK reads the answer into its `LogLevel`
//! enum, whose values are 0–5, so 6 there is undefined behaviour. Here it is a plain `u32`.
#![allow(unsafe_code)]

use proxy_wasm::types::LogLevel;

#[allow(clashing_extern_declarations)] // The SDK declares the same import with an enum pointer.
#[link(wasm_import_module = "env")]
extern "C" {
    fn proxy_get_log_level(return_level: *mut u32) -> u32;
}

/// Envoy's level for wasm logs; `Critical` when it is off (the SDK's logger then drops all).
/// `None` when the host does not answer.
pub(crate) fn log_level() -> Option<LogLevel> {
    let mut level: u32 = 0;
    // SAFETY: the host writes one u32 through the pointer, which is valid for the call.
    let status = unsafe { proxy_get_log_level(&mut level) };
    if status != 0 {
        return None;
    }
    Some(match level {
        0 => LogLevel::Trace,
        1 => LogLevel::Debug,
        2 => LogLevel::Info,
        3 => LogLevel::Warn,
        4 => LogLevel::Error,
        _ => LogLevel::Critical,
    })
}
