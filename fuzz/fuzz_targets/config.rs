//! `Config::from_json` and `Policy::from_json` on arbitrary bytes: no panic; both agree; an
//! error is one line naming its path; an accepted configuration compiles, reads back from its
//! own JSON unchanged, and decides like the reference implementation.
#![no_main]

use egress_guard::policy::Config;
use egress_guard_fuzz::oracle;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    match Config::from_json(data) {
        Ok(config) => {
            oracle::check_accepted(data, &config);
        }
        Err(e) => oracle::check_error(data, &e),
    }
});
