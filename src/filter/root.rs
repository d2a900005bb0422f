//! The root context: compiles the configuration, creates per-connection and per-request contexts,
//! and resolves sniff timeouts on its tick.

use std::cell::RefCell;
use std::rc::Rc;
use std::time::Duration;

use proxy_wasm::hostcalls;
use proxy_wasm::traits::{Context, HttpContext, RootContext, StreamContext};
use proxy_wasm::types::{BufferType, ContextType};

use super::http::HttpFilter;
use super::metrics::Metrics;
use super::state::{now_ns, Shared, Waiting};
use super::stream::{self, StreamFilter};
use crate::policy::{Config, Fingerprint, Policy};

/// The root context of one filter configuration.
pub(crate) struct Root {
    shared: Option<Rc<Shared>>,
    waiting: Rc<RefCell<Waiting>>,
}

impl Root {
    pub(crate) fn new() -> Root {
        Root {
            shared: None,
            waiting: Rc::new(RefCell::new(Waiting::default())),
        }
    }
}

impl Context for Root {
    fn on_done(&mut self) -> bool {
        // This configuration is going: its policy is no longer in force here. (If another
        // configuration holds the same policy, its next tick sets the gauge back to 1.)
        if let Some(shared) = &self.shared {
            shared.metrics.policy_info(0);
        }
        true
    }
}

impl RootContext for Root {
    fn on_vm_start(&mut self, _vm_configuration_size: usize) -> bool {
        sync_log_level();
        log::info!(
            "egress-guard {} ({}) started",
            env!("CARGO_PKG_VERSION"),
            option_env!("EGRESS_GUARD_GIT").unwrap_or("unknown revision")
        );
        true
    }

    fn on_configure(&mut self, _plugin_configuration_size: usize) -> bool {
        sync_log_level();
        let bytes = match hostcalls::get_buffer(BufferType::PluginConfiguration, 0, usize::MAX) {
            Ok(Some(bytes)) => bytes,
            Ok(None) => b"{}".to_vec(),
            Err(status) => {
                log::error!("egress-guard: cannot read the plugin configuration: {status:?}");
                return false;
            }
        };
        let started = now_ns();
        // Its fingerprint holds no copy of the JSON (src/policy/fingerprint.rs).
        let fingerprint = Fingerprint::of(&bytes);
        // Parse, then free the JSON before compiling, and compile taking the configuration apart:
        // a VM's linear memory never shrinks, so it keeps whatever was alive at once.
        // (from_config re-validates: cheap.)
        let parsed = Config::from_json(&bytes);
        drop(bytes);
        match parsed.and_then(Policy::from_config) {
            Ok(policy) => {
                let policy = policy.with_fingerprint(fingerprint);
                let hash = fingerprint.as_ref().map_or("-", Fingerprint::as_str);
                // Compile time and the VM's linear memory (which never shrinks, so it holds the
                // compile's peak): what `make bench-envoy` reports per VM.
                let micros = now_ns().saturating_sub(started) / 1_000;
                let memory = vm_memory_bytes();
                log::info!(
                    "egress-guard: policy loaded in {}.{:03} ms, Wasm memory {} KiB: {} policy={hash}",
                    micros / 1_000,
                    micros % 1_000,
                    memory / 1024,
                    policy.summary()
                );
                let tick = tick_period(policy.sniff().timeout_ms);
                // The previous policy of this configuration, if any, is no longer in force.
                if let Some(old) = &self.shared {
                    old.metrics.policy_info(0);
                }
                let metrics = Metrics::new(&policy);
                metrics.policy_info(1);
                self.shared = Some(Rc::new(Shared { policy, metrics }));
                if let Err(status) = hostcalls::set_tick_period(tick) {
                    log::warn!("egress-guard: cannot set the tick period: {status:?}");
                }
                true
            }
            Err(err) => {
                // Envoy refuses the filter; a dynamic update is rejected and the policy in force
                // (if any) stays.
                log::error!("egress-guard: invalid configuration: {err}");
                false
            }
        }
    }

    fn on_tick(&mut self) {
        sync_log_level();
        let Some(shared) = self.shared.clone() else {
            return;
        };
        // Still in force (a configuration holding the same policy may have been removed).
        shared.metrics.policy_info(1);
        let expired = self.waiting.borrow_mut().take_expired(now_ns());
        for (context_id, session) in expired {
            // Hostcalls for this connection (resume / close) must act on its context.
            if hostcalls::set_effective_context(context_id).is_err() {
                continue; // The connection is gone.
            }
            stream::on_timeout(&shared, &session);
            stream::sync_timer(&self.waiting, context_id, &session);
        }
    }

    fn get_type(&self) -> Option<ContextType> {
        // Runs inside context creation with the new context active: only an HTTP stream has a
        // request protocol. Returning None would make the SDK panic, so always answer.
        match hostcalls::get_property(vec!["request", "protocol"]) {
            Ok(Some(_)) => Some(ContextType::HttpContext),
            _ => Some(ContextType::StreamContext),
        }
    }

    fn create_stream_context(&self, context_id: u32) -> Option<Box<dyn StreamContext>> {
        Some(Box::new(StreamFilter::new(
            context_id,
            self.shared.clone(),
            self.waiting.clone(),
        )))
    }

    fn create_http_context(&self, _context_id: u32) -> Option<Box<dyn HttpContext>> {
        Some(Box::new(HttpFilter::new(self.shared.clone())))
    }
}

/// The size of the VM's linear memory in bytes.
fn vm_memory_bytes() -> usize {
    core::arch::wasm32::memory_size::<0>() * 65_536
}

/// Ticks often enough to resolve a timeout within a tenth of it, between 10 ms and 250 ms.
fn tick_period(timeout_ms: u32) -> Duration {
    Duration::from_millis(u64::from(timeout_ms / 10).clamp(10, 250))
}

/// Follows Envoy's log level for the `wasm` component, so that lines Envoy would drop are not
/// formatted (or even passed to the host) at all.
fn sync_log_level() {
    if let Some(level) = super::host::log_level() {
        proxy_wasm::set_log_level(level);
    }
}
