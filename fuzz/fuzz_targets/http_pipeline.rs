//! `sniff::pipeline` on arbitrary bytes after a first request head: no panic, no endless loop,
//! and the same heads (or the same refusal) whether the bytes arrive whole, byte by byte, or cut
//! where the first input byte says — the filter's buffer holds or lets go exactly as here. The
//! later heads go through the pipeline's own `HeadParser`, so those cuts split them too. The
//! first head, fed to a `HeadParser` and to a `Sniffer` byte by byte and at the cut points,
//! answers exactly as `parse_request_head` and `sniff` on each prefix.
#![no_main]

use egress_guard::sniff::http::{parse_request_head, HeadParser};
use egress_guard::sniff::pipeline::{Pipeline, Step};
use egress_guard::sniff::{sniff, Outcome, Sniffer};
use egress_guard_fuzz::prefixes;
use libfuzzer_sys::fuzz_target;

/// Small, so the byte-by-byte delivery stays cheap and the cap is reached.
const MAX_HEAD: usize = 512;

#[derive(Debug, PartialEq)]
enum End {
    Hosts(Vec<Option<String>>),
    Refused(Vec<Option<String>>, Step),
}

fn run(stream: &[u8], first_len: usize, cuts: &[usize], first: &Pipeline) -> End {
    let mut pipeline = first.clone();
    let mut hosts = Vec::new();
    let mut buffer = Vec::new();
    let mut start = 0;
    let ends = cuts
        .iter()
        .copied()
        .filter(|&c| c > first_len && c < stream.len())
        .chain([stream.len()]);
    for end in ends {
        if end <= start {
            continue;
        }
        buffer.extend_from_slice(&stream[start..end]);
        start = end;
        let mut steps = 0;
        loop {
            steps += 1;
            assert!(steps <= buffer.len() + 2, "scan does not advance");
            match pipeline.scan(&buffer) {
                Step::Forward => {
                    buffer.clear();
                    pipeline.flushed();
                    break;
                }
                Step::Hold => break,
                Step::Head(head) => hosts.push(head.host),
                refused => return End::Refused(hosts, refused),
            }
        }
    }
    End::Hosts(hosts)
}

fuzz_target!(|data: &[u8]| {
    let Some((&seed, stream)) = data.split_first() else {
        return;
    };
    let first = prefixes::check_resumed(
        stream,
        HeadParser::new,
        HeadParser::feed,
        parse_request_head,
    );
    prefixes::check_resumed(
        stream,
        Sniffer::new,
        |s, b| s.feed(b, MAX_HEAD),
        |b| sniff(b, MAX_HEAD),
    );
    let Outcome::Found(head) = first else {
        return;
    };
    let first = Pipeline::after(&head, MAX_HEAD);
    let whole = run(stream, head.head_len, &[], &first);
    let step = usize::from(seed % 31) + 1;
    let cuts: Vec<usize> = (head.head_len..stream.len()).step_by(step).collect();
    assert_eq!(
        run(stream, head.head_len, &cuts, &first),
        whole,
        "cut every {step}"
    );
    if stream.len() <= 4096 {
        let every: Vec<usize> = (0..stream.len()).collect();
        assert_eq!(
            run(stream, head.head_len, &every, &first),
            whole,
            "byte by byte"
        );
    }
});
