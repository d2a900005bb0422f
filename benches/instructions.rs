//! `make bench-instructions`: instructions per operation on the core's per-connection path,
//! counted by callgrind (`bench/instructions.py` runs this binary under
//! `valgrind --tool=callgrind` and reads each `op_*` function's inclusive count). Unlike times,
//! instruction counts do not move with what the machine's neighbours do, so a change of a few
//! percent shows.
//!
//! Each `op_*` function runs its operation [`RUNS`] times; the policies are compiled before, out
//! of every `op_*`. Run natively it only checks the operations' outcomes.
// Benchmark code: a failure here should stop the run loudly.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)]

mod common;

use common::conn::Case;

/// Times each operation runs.
const RUNS: u32 = 1000;

macro_rules! ops {
    ($($name:ident: $case:ident . $op:ident;)*) => {
        $(
            #[inline(never)]
            fn $name(case: &Case) -> u32 {
                // A distinct constant per function: identical bodies would be folded into one.
                std::hint::black_box(stringify!($name));
                let mut ok = 0;
                for _ in 0..RUNS {
                    ok += u32::from(case.$op());
                }
                ok
            }
        )*
        fn run(small: &Case, large: &Case) {
            $(
                let $case = match stringify!($case) {
                    "small" => small,
                    _ => large,
                };
                assert_eq!($name($case), RUNS, "{} succeeds every time", stringify!($name));
                println!("RUNS {} {}", stringify!($name), RUNS);
            )*
        }
    };
}

ops! {
    op_decide_10: small.decide;
    op_decide_10000: large.decide;
    op_sniff_client_hello: small.sniff_hello;
    op_sniff_http_head: small.sniff_head;
    op_session_10: small.session;
    op_session_10000: large.session;
    op_session_inspector_10: small.session_inspector;
    op_session_inspector_10000: large.session_inspector;
}

fn main() {
    let small = Case::new(10);
    let large = Case::new(10_000);
    run(&small, &large);
}
