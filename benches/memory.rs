//! `make bench`: the memory a compiled policy holds, by rule count, counted by a global allocator
//! that tracks live and peak bytes.
//!
//! For each size: the bytes `Policy::from_json` leaves allocated (what the compiled policy holds
//! for as long as it is in force), the peak above the starting point while it runs (parsing and
//! compiling), and the number of allocations. Writes `bench/results/core-memory.json` (the
//! generated policies are the ones `benches/decide.rs` times).
//!
//! Natively these are 64-bit figures. `bench/wasm_memory.py` runs the same binary built for
//! wasm32-wasip1 under Node (V8, as in Envoy) for the VM's 32-bit figures; `make bench-envoy`
//! reads a real VM's linear memory from Envoy's log.
// Benchmark code: a failure here should stop the run loudly.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)]
// A global allocator is `unsafe impl GlobalAlloc`; it only forwards to `System` and counts.
#![allow(unsafe_code)]

mod common;

use std::alloc::{GlobalAlloc, Layout, System};
use std::fmt::Write as _;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Instant;

use egress_guard::policy::{Config, Policy};

struct Counting;

static LIVE: AtomicUsize = AtomicUsize::new(0);
static PEAK: AtomicUsize = AtomicUsize::new(0);
static COUNT: AtomicUsize = AtomicUsize::new(0);

fn grew(size: usize) {
    let live = LIVE.fetch_add(size, Ordering::Relaxed) + size;
    PEAK.fetch_max(live, Ordering::Relaxed);
    COUNT.fetch_add(1, Ordering::Relaxed);
}

// SAFETY: every method forwards to `System` with the caller's arguments; the counters are
// bookkeeping only.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        let p = System.alloc(layout);
        if !p.is_null() {
            grew(layout.size());
        }
        p
    }
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        let p = System.alloc_zeroed(layout);
        if !p.is_null() {
            grew(layout.size());
        }
        p
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        System.dealloc(ptr, layout);
        LIVE.fetch_sub(layout.size(), Ordering::Relaxed);
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        let p = System.realloc(ptr, layout, new_size);
        if !p.is_null() {
            LIVE.fetch_sub(layout.size(), Ordering::Relaxed);
            grew(new_size);
        }
        p
    }
}

#[global_allocator]
static ALLOCATOR: Counting = Counting;

const SIZES: [usize; 4] = [10, 1_000, 10_000, 100_000];
/// The seed `benches/decide.rs` uses.
const SEED: u64 = 0x5EED_E6E5;

fn main() {
    // Where the stack starts (it grows down): under Node, bench/wasm_memory.mjs paints the stack
    // before the run and finds the deepest byte written after it (the 100,000-rule compile
    // above included). A pointer's address, not a dereference.
    let top = 0u8;
    println!("STACK_TOP {}", std::ptr::addr_of!(top) as usize);
    let mut rows = Vec::new();
    for n in SIZES {
        let g = common::generate(n, SEED);
        let json = g.json;
        let base = LIVE.load(Ordering::Relaxed);
        PEAK.store(base, Ordering::Relaxed);
        let count = COUNT.load(Ordering::Relaxed);
        let started = Instant::now();
        let policy = Policy::from_json(json.as_bytes()).expect("generated policy compiles");
        let compile_ms = started.elapsed().as_secs_f64() * 1e3;
        let retained = LIVE.load(Ordering::Relaxed) - base;
        let peak = PEAK.load(Ordering::Relaxed) - base;
        let allocations = COUNT.load(Ordering::Relaxed) - count;
        let summary = policy.summary();
        drop(policy);
        // The two phases of `from_json`: parsing into a Config, then compiling it.
        let base = LIVE.load(Ordering::Relaxed);
        PEAK.store(base, Ordering::Relaxed);
        let config = Config::from_json(json.as_bytes()).unwrap();
        let config_retained = LIVE.load(Ordering::Relaxed) - base;
        let config_peak = PEAK.load(Ordering::Relaxed) - base;
        let mid = LIVE.load(Ordering::Relaxed);
        PEAK.store(mid, Ordering::Relaxed);
        // As the filter compiles: taking the configuration apart (so the peak above `mid` is
        // what compiling adds to the parsed configuration, which it frees as it goes).
        let policy = Policy::from_config(config).unwrap();
        let compile_peak = PEAK.load(Ordering::Relaxed) - mid;
        drop(policy);
        let leaked = LIVE.load(Ordering::Relaxed).saturating_sub(base);
        assert_eq!(
            leaked, 0,
            "dropping the policy frees what compiling allocated"
        );
        println!(
            "{n:>7} rules ({} hosts, {} cidrs; JSON {} bytes): retained {:.2} MiB ({:.0} B/rule), \
             peak {:.2} MiB, {allocations} allocations, {compile_ms:.1} ms; parse: config {:.2} MiB \
             (peak {:.2}), compile: peak {:.2} MiB above the config",
            summary.hosts,
            summary.cidrs,
            json.len(),
            retained as f64 / 1048576.0,
            retained as f64 / n as f64,
            peak as f64 / 1048576.0,
            config_retained as f64 / 1048576.0,
            config_peak as f64 / 1048576.0,
            compile_peak as f64 / 1048576.0,
        );
        let mut row = String::new();
        write!(
            row,
            "{{\"rules\":{n},\"hosts\":{},\"cidrs\":{},\"json_bytes\":{},\"retained_bytes\":{retained},\
             \"peak_bytes\":{peak},\"allocations\":{allocations},\"compile_ms_once\":{compile_ms:.3},\
             \"config_bytes\":{config_retained},\"config_peak_bytes\":{config_peak},\
             \"compile_peak_bytes\":{compile_peak}}}",
            summary.hosts,
            summary.cidrs,
            json.len()
        )
        .unwrap();
        rows.push(row);
    }
    stack_probes();
    let json = format!(
        "{{\"seed\":{SEED},\"pointer_bytes\":{},\"sizes\":[{}]}}\n",
        std::mem::size_of::<usize>(),
        rows.join(",")
    );
    if cfg!(target_arch = "wasm32") {
        // Under a WASI runner (bench/wasm_memory.py), with no directory to write to.
        print!("RESULT {json}");
        return;
    }
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("bench/results");
    std::fs::create_dir_all(&dir).unwrap();
    let out = dir.join("core-memory.json");
    std::fs::write(&out, json).unwrap();
    println!("wrote {}", out.display());
}

/// Inputs that go deep, for the stack measurement (bench/wasm_memory.mjs): JSON nested far past
/// serde_json's recursion limit (128) at every place a configuration can nest, glob patterns at
/// the nesting limit, and the per-connection path (`benches/common/conn.rs`).
fn stack_probes() {
    let deep = |open: &str, n: usize| open.repeat(n);
    let cases = [
        deep("[", 100_000),
        format!("{{\"allow\":{}", deep("[", 100_000)),
        format!("{{\"allow\":[{{\"hosts\":{}", deep("[", 100_000)),
        format!("{{\"allow\":[{{\"ports\":{}", deep("[", 100_000)),
        format!("{{\"allow\":[{{\"cidrs\":{}", deep("[", 100_000)),
        format!("{{\"sniff\":{}", deep("{\"a\":", 100_000)),
        format!("{{\"presets\":{}", deep("[", 100_000)),
        format!("{{\"x\":{}", deep("[", 100_000)),
    ];
    for json in &cases {
        assert!(Policy::from_json(json.as_bytes()).is_err());
    }
    let nested = format!("{}a{}.example.com", "{".repeat(8), "}".repeat(8));
    let wide = "{a,b}{a,b}{a,b}{a,b}{a,b}{a,b}{a,b}{a,b}.example.com";
    let globs = format!(
        "{{\"allow\":[{{\"hosts\":[\"{nested}\",\"{wide}\",\"*{}*\"]}}]}}",
        "a*".repeat(100)
    );
    let policy = Policy::from_json(globs.as_bytes()).unwrap();
    let long = format!("{}.example.com", "a".repeat(60));
    let facts = egress_guard::policy::Facts {
        ip: "192.0.2.1".parse().unwrap(),
        port: 443,
        name: egress_guard::policy::NameFact::Name(&long),
    };
    std::hint::black_box(policy.decide(&facts));
    for rules in [10, 10_000] {
        let case = common::conn::Case::new(rules);
        assert!(case.decide() && case.sniff_hello() && case.sniff_head());
        assert!(case.session() && case.session_inspector());
    }
}
