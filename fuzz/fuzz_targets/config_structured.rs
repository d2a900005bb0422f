//! Structured configurations, with injected faults: a document without faults is accepted and
//! parses to exactly the configuration generated; a document with one fault is rejected with
//! that fault's path and kind; with two, it is rejected.
#![no_main]

use arbitrary::Unstructured;
use egress_guard::policy::Config;
use egress_guard_fuzz::{gen, oracle};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let mut u = Unstructured::new(data);
    let Ok(generated) = gen::config(&mut u, true) else {
        return;
    };
    let json = generated.doc.text();
    match (
        Config::from_json(json.as_bytes()),
        generated.faults.as_slice(),
    ) {
        (Ok(config), []) => {
            assert_eq!(config, generated.expected, "{json}");
            oracle::check_accepted(json.as_bytes(), &config);
        }
        (Err(e), []) => panic!("valid configuration rejected: {e}\n{json}"),
        (Ok(_), faults) => panic!("accepted despite {faults:?}\n{json}"),
        (Err(e), [fault]) => {
            oracle::check_error(json.as_bytes(), &e);
            assert_eq!(
                (e.path.as_str(), e.kind),
                (fault.path.as_str(), fault.kind),
                "{fault:?} reported as {e}\n{json}"
            );
        }
        (Err(e), _) => oracle::check_error(json.as_bytes(), &e),
    }
});
