//! Prints the configuration document a `decide` or `config_structured` input generates, and
//! its faults: `cargo run --manifest-path fuzz/Cargo.toml --example show_generated -- [--faults]
//! FILE...` (`--faults` for `config_structured` inputs).

use arbitrary::Unstructured;

fn main() {
    let mut faulty = false;
    for arg in std::env::args().skip(1) {
        if arg == "--faults" {
            faulty = true;
            continue;
        }
        let data = match std::fs::read(&arg) {
            Ok(data) => data,
            Err(e) => {
                eprintln!("{arg}: {e}");
                std::process::exit(1);
            }
        };
        let mut u = Unstructured::new(&data);
        match egress_guard_fuzz::gen::config(&mut u, faulty) {
            Ok(g) => println!("{arg}\n{}\nfaults: {:?}\n", g.doc.text(), g.faults),
            Err(e) => println!("{arg}: no configuration ({e})\n"),
        }
    }
}
