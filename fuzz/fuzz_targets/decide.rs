//! Differential: a structured configuration (valid by construction, written as JSON and parsed)
//! compiled into a `Policy`, then for arbitrary facts `Policy::decide` equals
//! `reference::decide`, malformed and too-large input is denied, and `decide_early(ip, port) ==
//! Some(d)` implies `decide` gives `d` with no name and with the fuzzed name.
#![no_main]

use arbitrary::Unstructured;
use egress_guard::policy::{classify_sni, Config, NameFact, Policy};
use egress_guard_fuzz::{gen, oracle};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let mut u = Unstructured::new(data);
    let Ok(generated) = gen::config(&mut u, false) else {
        return;
    };
    let json = generated.doc.text();
    let config = match Config::from_json(json.as_bytes()) {
        Ok(config) => config,
        Err(e) => panic!("valid configuration rejected: {e}\n{json}"),
    };
    assert_eq!(config, generated.expected, "{json}");
    let policy = match Policy::compile(&config) {
        Ok(policy) => policy,
        Err(e) => panic!("does not compile: {e}\n{json}"),
    };
    let count = u.int_in_range(1..=24).unwrap_or(1);
    for _ in 0..count {
        let (Ok(ip), Ok(port), Ok(pick)) =
            (gen::ip(&mut u), gen::port(&mut u), u.int_in_range(0u8..=9))
        else {
            break;
        };
        let raw: String = match pick {
            0..=3 if !generated.names.is_empty() => {
                let Ok(name) = u.choose(&generated.names) else {
                    break;
                };
                name.clone()
            }
            0..=6 => gen::name(&mut u).unwrap_or_default(),
            _ => {
                let bytes: &[u8] = u.arbitrary().unwrap_or_default();
                String::from_utf8_lossy(bytes).into_owned()
            }
        };
        let class = classify_sni(raw.as_bytes());
        let name = match u.int_in_range(0u8..=15).unwrap_or(0) {
            0 => NameFact::Absent,
            1 => NameFact::Malformed,
            2 => NameFact::TooLarge,
            _ => NameFact::from(&class),
        };
        oracle::check_decision(&config, &policy, ip, port, name);
    }
});
