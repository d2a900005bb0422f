//! `cargo bench --bench sniff`: what a message arriving one byte per callback costs the parsers.
//!
//! Four 64 KiB cases, each at `sniff.max_bytes` = 65,536 (the largest): an HTTP request head
//! (60-byte header lines), a ClientHello in 1-byte records, a ClientHello in 16 KiB records,
//! and a later request head on a keep-alive connection (`Pipeline::scan`). Each is measured
//! three ways in the same run:
//!
//! - `one_call`: the whole message in one call (`sniff`, or one `Pipeline::scan`);
//! - `byte_at_a_time`: every prefix in turn to one `Sniffer` (or one `Pipeline`), as the filter
//!   sees a client that sends one byte per packet;
//! - `afresh`: every prefix in turn to `sniff` (or `parse_request_head` on the later head's
//!   window), which is what the filter did before `Sniffer`: quadratic.
//!
//! Results land in criterion's directory (group `sniff`); `bench/report.py --criterion` collects
//! them into bench/results/core-sniff.json and docs/BENCHMARKS.md. Time is the benchmark
//! thread's CPU time (`benches/common/cputime.rs`).
// Benchmark code: a failure here should stop the run loudly.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)]
// One `unsafe` call: clock_gettime for the thread's CPU time.
#![allow(unsafe_code)]

#[cfg(target_arch = "wasm32")]
fn main() {}

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
    use std::time::Duration;

    use criterion::{BenchmarkId, Criterion, SamplingMode, Throughput};
    use egress_guard::sniff::http::{parse_request_head, RequestHead};
    use egress_guard::sniff::pipeline::{Pipeline, Step};
    use egress_guard::sniff::{sniff, Outcome, Sniffed, Sniffer};

    use crate::cputime::ThreadTime;

    /// `sniff.max_bytes` at its largest.
    const CAP: usize = 65536;

    /// A request head of exactly `len` bytes, in 60-byte header lines.
    fn head_of(len: usize) -> Vec<u8> {
        let mut head = b"GET /index.html HTTP/1.1\r\nHost: a.example\r\n".to_vec();
        while head.len() + 60 + 8 < len - 2 {
            head.extend_from_slice(format!("X: {}\r\n", "v".repeat(55)).as_bytes());
        }
        let rest = len - 2 - head.len() - 5;
        head.extend_from_slice(format!("Y: {}\r\n\r\n", "w".repeat(rest)).as_bytes());
        assert_eq!(head.len(), len);
        head
    }

    /// A TLS 1.2-shaped ClientHello message (handshake header included) of exactly `len` bytes
    /// with SNI `a.example`, padded by a padding extension.
    fn hello_of(len: usize) -> Vec<u8> {
        let vec16 = |data: &[u8]| {
            let mut out = (data.len() as u16).to_be_bytes().to_vec();
            out.extend_from_slice(data);
            out
        };
        let ext = |kind: u16, data: &[u8]| {
            let mut out = kind.to_be_bytes().to_vec();
            out.extend(vec16(data));
            out
        };
        let mut sni = vec![0];
        sni.extend(vec16(b"a.example"));
        let mut body = vec![3, 3];
        body.extend([0x5a; 32]);
        body.push(0); // session id
        body.extend(vec16(&[0x13, 0x01]));
        body.extend([1, 0]); // compression: null
        let fixed = 4 + body.len() + 2 + ext(0, &vec16(&sni)).len() + 4;
        let mut block = ext(0, &vec16(&sni));
        block.extend(ext(21, &vec![0; len - fixed]));
        body.extend(vec16(&block));
        let mut message = vec![1];
        message.extend(&(body.len() as u32).to_be_bytes()[1..]);
        message.extend(body);
        assert_eq!(message.len(), len);
        message
    }

    /// `message` framed as handshake records of at most `chunk` bytes.
    fn records(message: &[u8], chunk: usize) -> Vec<u8> {
        let mut out = Vec::new();
        for piece in message.chunks(chunk) {
            out.extend([22, 3, 1]);
            out.extend((piece.len() as u16).to_be_bytes());
            out.extend(piece);
        }
        out
    }

    fn byte_at_a_time(input: &[u8]) -> Sniffed {
        let mut sniffer = Sniffer::new();
        let mut last = Sniffed::NeedMore;
        for end in 0..=input.len() {
            last = sniffer.feed(black_box(&input[..end]), CAP);
        }
        last
    }

    fn afresh(input: &[u8]) -> Sniffed {
        let mut last = Sniffed::NeedMore;
        for end in 0..=input.len() {
            last = sniff(black_box(&input[..end]), CAP);
        }
        last
    }

    /// A keep-alive connection: a first (decided) head, then a 64 KiB one.
    struct Later {
        first: RequestHead,
        stream: Vec<u8>,
    }

    impl Later {
        fn new() -> Later {
            let first = b"GET / HTTP/1.1\r\nHost: a.example\r\n\r\n";
            let Outcome::Found(head) = parse_request_head(first) else {
                panic!("first head");
            };
            let mut stream = first.to_vec();
            stream.extend(head_of(CAP - 100));
            Later {
                first: head,
                stream,
            }
        }

        fn one_call(&self) -> Step {
            Pipeline::after(&self.first, CAP).scan(black_box(&self.stream))
        }

        fn byte_at_a_time(&self) -> Step {
            let mut pipeline = Pipeline::after(&self.first, CAP);
            let start = self.first.head_len;
            // The first call lets the first request go (`Split`); the filter's buffers start
            // at the later head after that.
            let _ = pipeline.scan(black_box(&self.stream[..=start]));
            let later = &self.stream[start..];
            let mut last = Step::Hold;
            for end in 2..=later.len() {
                last = pipeline.scan(black_box(&later[..end]));
            }
            last
        }

        /// What `Pipeline::scan` did per call before: the head window parsed from its start.
        fn afresh(&self) -> Outcome<RequestHead> {
            let later = &self.stream[self.first.head_len..];
            let mut last = Outcome::NeedMore;
            for end in 1..=later.len() {
                last = parse_request_head(black_box(&later[..end]));
            }
            last
        }
    }

    pub fn main() {
        let mut c = Criterion::default()
            .with_measurement(ThreadTime)
            .warm_up_time(Duration::from_millis(500))
            .measurement_time(Duration::from_secs(3))
            .configure_from_args();

        let cases: Vec<(&str, Vec<u8>)> = vec![
            ("http_head", head_of(CAP - 100)),
            ("tls_1_byte_records", records(&hello_of(CAP / 6 - 10), 1)),
            ("tls_16k_records", records(&hello_of(CAP - 100), 1 << 14)),
        ];
        for (name, input) in &cases {
            assert!(input.len() <= CAP, "{name}");
            let whole = sniff(input, CAP);
            assert!(
                matches!(whole, Sniffed::Http(_) | Sniffed::Tls(_)),
                "{name}"
            );
            assert_eq!(byte_at_a_time(input), whole, "{name}");
        }
        let later = Later::new();
        assert!(matches!(later.one_call(), Step::Head(_)));
        assert_eq!(later.byte_at_a_time(), later.one_call());

        let mut group = c.benchmark_group("sniff");
        for (name, input) in &cases {
            group.throughput(Throughput::Bytes(input.len() as u64));
            let id = |how: &str| BenchmarkId::new(format!("{name}_{how}"), input.len());
            group.bench_with_input(id("one_call"), input, |b, i| b.iter(|| sniff(i, CAP)));
            group.bench_with_input(id("byte_at_a_time"), input, |b, i| {
                b.iter(|| byte_at_a_time(i))
            });
        }
        let len = later.stream.len() - later.first.head_len;
        group.throughput(Throughput::Bytes(len as u64));
        group.bench_function(BenchmarkId::new("later_head_one_call", len), |b| {
            b.iter(|| later.one_call())
        });
        group.bench_function(BenchmarkId::new("later_head_byte_at_a_time", len), |b| {
            b.iter(|| later.byte_at_a_time())
        });
        group.finish();

        // The quadratic way takes seconds per iteration: ten flat samples of one iteration.
        let mut group = c.benchmark_group("sniff");
        group
            .sampling_mode(SamplingMode::Flat)
            .sample_size(10)
            .warm_up_time(Duration::from_millis(1))
            .measurement_time(Duration::from_secs(20));
        for (name, input) in &cases {
            group.throughput(Throughput::Bytes(input.len() as u64));
            let id = BenchmarkId::new(format!("{name}_afresh"), input.len());
            group.bench_with_input(id, input, |b, i| b.iter(|| afresh(i)));
        }
        group.throughput(Throughput::Bytes(len as u64));
        group.bench_function(BenchmarkId::new("later_head_afresh", len), |b| {
            b.iter(|| later.afresh())
        });
        group.finish();
        c.final_summary();
    }
}
