//! `make bench`: the policy core's decision and compile cost against the number of rules.
//!
//! For 10, 1,000, 10,000 and 100,000 generated rules (see `common`): `Policy::decide` on names a
//! host rule matches, on IPs a CIDR rule matches, and on facts nothing matches, each over 1024
//! queries in turn (so large policies are not measured from a warm cache line); the same queries
//! through `reference::decide` (one linear scan per decision) in the same run; and
//! `Policy::from_json` on the generated JSON. Results land in criterion's directory;
//! `bench/report.py` turns them into docs/BENCHMARKS.md.
//!
//! Time is the benchmark thread's CPU time (`CLOCK_THREAD_CPUTIME_ID`), not wall time: on a
//! shared machine the time the thread spends descheduled is not the code's cost. On a quiet
//! machine the two agree.
// Benchmark code: a failure here should stop the run loudly.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)]
// One `unsafe` call: clock_gettime for the thread's CPU time.
#![allow(unsafe_code)]

#[cfg(not(target_arch = "wasm32"))]
mod common;

#[cfg(target_arch = "wasm32")]
fn main() {}

/// A criterion measurement of the calling thread's CPU time, in nanoseconds (Linux).
#[cfg(not(target_arch = "wasm32"))]
#[path = "common/cputime.rs"]
mod cputime;

#[cfg(not(target_arch = "wasm32"))]
fn main() {
    native::main();
}

#[cfg(not(target_arch = "wasm32"))]
mod native {
    use std::hint::black_box;
    use std::net::IpAddr;
    use std::time::Duration;

    use criterion::{BenchmarkId, Criterion, SamplingMode, Throughput};
    use egress_guard::policy::{reference, Config, Facts, NameFact, Policy};

    use crate::common::{generate, Generated};
    use crate::cputime::ThreadTime;

    /// The rule counts of the decision-cost target (docs/design.md, "Targets": 10 → 100,000
    /// within 2×).
    pub const SIZES: [usize; 4] = [10, 1_000, 10_000, 100_000];
    /// The seed of every generated policy: the same rules and queries on every run.
    pub const SEED: u64 = 0x5EED_E6E5;

    /// Queries of one kind, as facts.
    struct Queries {
        kind: &'static str,
        names: Vec<Option<String>>,
        dst: Vec<(IpAddr, u16)>,
    }

    impl Queries {
        fn facts(&self, i: usize) -> Facts<'_> {
            let i = i % self.dst.len();
            let (ip, port) = self.dst[i];
            let name = match &self.names[i] {
                Some(n) => NameFact::Name(n),
                None => NameFact::Absent,
            };
            Facts { ip, port, name }
        }
    }

    fn queries(g: &Generated) -> Vec<Queries> {
        vec![
            Queries {
                kind: "hit_host",
                names: g.host_queries.iter().map(|q| Some(q.0.clone())).collect(),
                dst: g.host_queries.iter().map(|q| (q.1, q.2)).collect(),
            },
            Queries {
                kind: "hit_cidr",
                names: g.cidr_queries.iter().map(|_| None).collect(),
                dst: g.cidr_queries.clone(),
            },
            Queries {
                kind: "miss",
                names: g.miss_queries.iter().map(|q| Some(q.0.clone())).collect(),
                dst: g.miss_queries.iter().map(|q| (q.1, q.2)).collect(),
            },
        ]
    }

    pub fn main() {
        let mut c = Criterion::default()
            .with_measurement(ThreadTime)
            .warm_up_time(Duration::from_millis(500))
            .measurement_time(Duration::from_secs(2))
            .configure_from_args();

        let generated: Vec<(usize, Generated)> =
            SIZES.iter().map(|&n| (n, generate(n, SEED))).collect();

        for (n, g) in &generated {
            let policy = Policy::from_json(g.json.as_bytes()).expect("generated policy compiles");
            let config = Config::from_json(g.json.as_bytes()).unwrap();
            assert_eq!(policy.rules().len(), *n);
            let qs = queries(g);
            // The compiled policy and the reference agree on (a sample of) the queries.
            let checks = if *n >= 10_000 { 8 } else { 256 };
            for q in &qs {
                for i in 0..checks {
                    let f = q.facts(i * 7);
                    assert_eq!(policy.decide(&f), reference::decide(&config, &f), "{f:?}");
                }
            }

            let mut group = c.benchmark_group("decide");
            group.throughput(Throughput::Elements(1));
            for q in &qs {
                group.bench_with_input(
                    BenchmarkId::new(format!("compiled_{}", q.kind), n),
                    q,
                    |b, q| {
                        let mut i = 0usize;
                        b.iter(|| {
                            i = i.wrapping_add(1);
                            policy.decide(black_box(&q.facts(i)))
                        })
                    },
                );
            }
            // decide_early: the network filter's question at connection open (port 443, no name).
            let early = &qs[2];
            group.bench_with_input(BenchmarkId::new("compiled_early", n), early, |b, q| {
                let mut i = 0usize;
                b.iter(|| {
                    i = i.wrapping_add(1);
                    let f = q.facts(i);
                    policy.decide_early(black_box(f.ip), black_box(f.port))
                })
            });
            group.finish();

            // The reference scans every rule (and allocates) per decision: fewer, flat samples.
            let mut group = c.benchmark_group("decide");
            group.throughput(Throughput::Elements(1));
            if *n >= 10_000 {
                group.sampling_mode(SamplingMode::Flat).sample_size(10);
                group.warm_up_time(Duration::from_millis(200));
            }
            for q in &qs {
                group.bench_with_input(
                    BenchmarkId::new(format!("reference_{}", q.kind), n),
                    q,
                    |b, q| {
                        let mut i = 0usize;
                        b.iter(|| {
                            i = i.wrapping_add(1);
                            reference::decide(&config, black_box(&q.facts(i)))
                        })
                    },
                );
            }
            group.finish();
        }

        let mut group = c.benchmark_group("compile");
        for (n, g) in &generated {
            group.throughput(Throughput::Elements(*n as u64));
            if *n >= 10_000 {
                group.sampling_mode(SamplingMode::Flat).sample_size(10);
            }
            group.bench_with_input(BenchmarkId::new("from_json", n), &g.json, |b, json| {
                b.iter(|| Policy::from_json(black_box(json.as_bytes())).unwrap())
            });
        }
        group.finish();
        c.final_summary();
    }
}
