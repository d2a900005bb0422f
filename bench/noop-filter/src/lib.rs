//! A proxy-wasm filter that does nothing: every callback keeps the SDK's default (continue).
//!
//! `make bench-envoy` runs it beside egress-guard so the report can tell what any Wasm filter
//! costs Envoy per connection or request (creating the context, calling into the VM for each
//! event) from what egress-guard adds (property reads, the decision, counters).
//! The plugin's `root_id` picks the filter type: `noop-http` for an HTTP filter, anything else
//! for a network filter. Read once per root context, not per connection.

use proxy_wasm::hostcalls;
use proxy_wasm::traits::{Context, HttpContext, RootContext, StreamContext};
use proxy_wasm::types::ContextType;

proxy_wasm::main! {{
    proxy_wasm::set_root_context(|_| Box::new(Root { http: None }));
}}

struct Root {
    http: Option<bool>,
}

struct Noop;

impl Context for Noop {}
impl StreamContext for Noop {}
impl HttpContext for Noop {}

impl Context for Root {}

impl RootContext for Root {
    fn on_vm_start(&mut self, _: usize) -> bool {
        true
    }

    fn on_configure(&mut self, _: usize) -> bool {
        let root_id = hostcalls::get_property(vec!["plugin_root_id"])
            .ok()
            .flatten();
        self.http = Some(root_id.as_deref() == Some(b"noop-http".as_slice()));
        true
    }

    fn get_type(&self) -> Option<ContextType> {
        Some(if self.http == Some(true) {
            ContextType::HttpContext
        } else {
            ContextType::StreamContext
        })
    }

    fn create_stream_context(&self, _: u32) -> Option<Box<dyn StreamContext>> {
        Some(Box::new(Noop))
    }

    fn create_http_context(&self, _: u32) -> Option<Box<dyn HttpContext>> {
        Some(Box::new(Noop))
    }
}
