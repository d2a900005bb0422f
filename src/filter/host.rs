//! The hostcalls the SDK cannot make safely.
//!
//! `proxy_get_log_level`: Envoy answers with its `wasm` logger's spdlog level unclamped, which
//! is 6 when that logger is off (`--log-level off`, `/logging?wasm=off`). The SDK reads the
//! answer into its `LogLevel` enum, whose values are 0–5, so 6 there is undefined behaviour.
//! Here it is a plain `u32`.
//!
//! `proxy_set_buffer_bytes`: the SDK's `set_buffer` panics (killing the VM) on any status but
//! `Ok`, and a connection's data buffer can be gone when the filter asks. Here the status is
//! returned.
//!
//! `proxy_call_foreign_function`: the SDK's `call_foreign_function` panics on a status outside
//! the few it expects (and reads the host's answer into its `Status` enum, where a value such as
//! `InvalidMemoryAccess` has no variant). Here the status is a plain `u32`.
#![allow(unsafe_code)]

use proxy_wasm::types::{BufferType, LogLevel};

#[allow(clashing_extern_declarations)] // The SDK declares the same imports with enum types.
#[link(wasm_import_module = "env")]
extern "C" {
    fn proxy_get_log_level(return_level: *mut u32) -> u32;
    fn proxy_set_buffer_bytes(
        buffer_type: u32,
        start: usize,
        size: usize,
        buffer_data: *const u8,
        buffer_size: usize,
    ) -> u32;
    fn proxy_call_foreign_function(
        function_name_data: *const u8,
        function_name_size: usize,
        arguments_data: *const u8,
        arguments_size: usize,
        results_data: *mut *mut u8,
        results_size: *mut usize,
    ) -> u32;
}

/// Calls one of the host's foreign functions with `arguments`; its result, if any, is dropped.
/// `Err(status)` if the host refuses (1 `NotFound`: no such function, or no factory for a
/// filter-state key; 2 `BadArgument`: a value the factory refused).
pub(crate) fn call_foreign_function(name: &str, arguments: &[u8]) -> Result<(), u32> {
    let mut results: *mut u8 = std::ptr::null_mut();
    let mut size: usize = 0;
    // SAFETY: the host reads `name` and `arguments` during the call; it writes through the two
    // out-pointers, valid for the call.
    let status = unsafe {
        proxy_call_foreign_function(
            name.as_ptr(),
            name.len(),
            arguments.as_ptr(),
            arguments.len(),
            &mut results,
            &mut size,
        )
    };
    if !results.is_null() {
        // SAFETY: the host allocated the result through the module's `proxy_on_memory_allocate`
        // (a `Vec<u8>` of capacity `size`, forgotten), exactly as the SDK reclaims it.
        drop(unsafe { Vec::from_raw_parts(results, size, size) });
    }
    if status == 0 {
        Ok(())
    } else {
        Err(status)
    }
}

/// Replaces `size` bytes at `start` of a buffer with `value` (Envoy: at `start` 0 it drains
/// `size` bytes and prepends `value`). `Err(status)` if the host refuses.
pub(crate) fn set_buffer(
    buffer_type: BufferType,
    start: usize,
    size: usize,
    value: &[u8],
) -> Result<(), u32> {
    // SAFETY: the host reads `value.len()` bytes from `value`, valid for the call.
    let status = unsafe {
        proxy_set_buffer_bytes(buffer_type as u32, start, size, value.as_ptr(), value.len())
    };
    if status == 0 {
        Ok(())
    } else {
        Err(status)
    }
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
