//! A proxy-wasm filter that does nothing: every callback keeps the SDK's default (continue).
//!
//! `make bench-envoy` runs it beside egress-guard so the report can tell what any Wasm filter
//! costs Envoy per connection or request (creating the context, calling into the VM for each
//! event) from what egress-guard adds (property reads, the decision, counters).
//! The plugin's `root_id` picks the filter type: `noop-http` for an HTTP filter, anything else
//! for a network filter. Read once per root context, not per connection.
//!
//! With a plugin configuration (`make bench-profile`), it makes the hostcalls that
//! configuration lists once per connection (network filter) or request (HTTP filter), and nothing
//! else: what those hostcalls cost Envoy, apart from any filter's own code. The configuration is
//! a comma-separated list of `property:<dotted.path>`, `header:<name>` (a request header),
//! `time` (the clock) and `counter` (increments a counter). Without one (the no-op of
//! `make bench-envoy`) it makes none.

use std::rc::Rc;

use proxy_wasm::hostcalls;
use proxy_wasm::traits::{Context, HttpContext, RootContext, StreamContext};
use proxy_wasm::types::{Action, BufferType, ContextType, MapType, MetricType};

proxy_wasm::main! {{
    proxy_wasm::set_root_context(|_| Box::new(Root { http: None, calls: None }));
}}

struct Root {
    http: Option<bool>,
    calls: Option<Rc<Vec<Call>>>,
}

enum Call {
    Property(Vec<String>),
    Header(String),
    Time,
    Counter(u32),
}

struct Noop;

impl Context for Noop {}
impl StreamContext for Noop {}
impl HttpContext for Noop {}

/// Makes its calls once per connection or request.
struct Calls(Rc<Vec<Call>>);

impl Calls {
    fn make(&self) {
        for call in self.0.iter() {
            match call {
                Call::Property(path) => {
                    let path = path.iter().map(String::as_str).collect();
                    let _ = hostcalls::get_property(path);
                }
                Call::Header(name) => {
                    let _ = hostcalls::get_map_value_bytes(MapType::HttpRequestHeaders, name);
                }
                Call::Time => {
                    let _ = hostcalls::get_current_time();
                }
                Call::Counter(id) => {
                    let _ = hostcalls::increment_metric(*id, 1);
                }
            }
        }
    }
}

impl Context for Calls {}

impl StreamContext for Calls {
    fn on_new_connection(&mut self) -> Action {
        self.make();
        Action::Continue
    }
}

impl HttpContext for Calls {
    fn on_http_request_headers(&mut self, _: usize, _: bool) -> Action {
        self.make();
        Action::Continue
    }
}

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
        let config = hostcalls::get_buffer(BufferType::PluginConfiguration, 0, usize::MAX)
            .ok()
            .flatten()
            .unwrap_or_default();
        let config = String::from_utf8_lossy(&config);
        let calls: Vec<Call> = config
            .split(',')
            .map(str::trim)
            .filter(|c| !c.is_empty())
            .filter_map(|c| match c.split_once(':') {
                Some(("property", path)) => {
                    Some(Call::Property(path.split('.').map(String::from).collect()))
                }
                Some(("header", name)) => Some(Call::Header(name.to_string())),
                _ if c == "time" => Some(Call::Time),
                _ if c == "counter" => {
                    hostcalls::define_metric(MetricType::Counter, "noop_calls_total")
                        .ok()
                        .map(Call::Counter)
                }
                _ => None,
            })
            .collect();
        self.calls = (!calls.is_empty()).then(|| Rc::new(calls));
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
        match &self.calls {
            Some(calls) => Some(Box::new(Calls(calls.clone()))),
            None => Some(Box::new(Noop)),
        }
    }

    fn create_http_context(&self, _: u32) -> Option<Box<dyn HttpContext>> {
        match &self.calls {
            Some(calls) => Some(Box::new(Calls(calls.clone()))),
            None => Some(Box::new(Noop)),
        }
    }
}
