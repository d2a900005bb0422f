//! Puts the git revision into the module's start log line (`egress-guard 0.1.0 (abc1234)`), so a
//! log tells which build is running. Outside a git checkout the line says "unknown revision".
use std::process::Command;

fn main() {
    println!("cargo:rerun-if-changed=.git/HEAD");
    println!("cargo:rerun-if-changed=.git/refs/heads");
    let revision = Command::new("git")
        .args(["rev-parse", "--short=12", "HEAD"])
        .output()
        .ok()
        .filter(|out| out.status.success())
        .and_then(|out| String::from_utf8(out.stdout).ok())
        .map(|s| s.trim().to_string())
        .filter(|s| !s.is_empty());
    if let Some(revision) = revision {
        println!("cargo:rustc-env=EGRESS_GUARD_GIT={revision}");
    }
    // The Envoy module's stack (rustc's default for wasm is 1 MiB). It is part of every VM's
    // linear memory, one VM per worker, and the deepest path uses far less: docs/BENCHMARKS.md,
    // "Memory in the VM" (`make bench` measures it). Overflowing it traps the VM (the stack is
    // placed first, so it runs off the bottom of memory rather than into the heap).
    if std::env::var("CARGO_CFG_TARGET_ARCH").as_deref() == Ok("wasm32") {
        println!("cargo:rustc-cdylib-link-arg=-zstack-size={STACK_BYTES}");
    }
}

/// The Wasm stack of the Envoy module, in bytes.
const STACK_BYTES: u32 = 128 * 1024;
