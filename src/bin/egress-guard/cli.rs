//! Arguments and dispatch (input, output and exit codes are in [`crate::io`]).

use std::ffi::OsString;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

use crate::io::{err, out, Exit};

/// The configuration's JSON Schema, checked against the parser by `tests/schema.rs`.
const SCHEMA: &str = include_str!("../../policy/schema.json");

const AFTER_HELP: &str = "\
Exit codes:
  0  success; explain: allow
  1  a policy is invalid (the message is the filter's own, prefixed by the file name); check:
     copies of the policy disagree, or --strict and warnings
  2  usage or I/O error, unknown preset
  3  explain: deny; replay: some logged connection would be newly denied
  4  explain: audit_deny (audit mode's would-deny: the connection passes, and is logged)
  5  explain without --dst: the decision depends on the destination IP or port

CONFIG and POLICY are paths to the filter's JSON configuration, or - for standard input.";

/// egress-guard's configuration tool: the Envoy filter's own policy core, natively.
#[derive(Debug, Parser)]
#[command(name = "egress-guard", version, after_help = AFTER_HELP)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Validate policies exactly as the filter does, lint them, and summarise them
    ///
    /// FILE is a JSON policy, or an Envoy configuration, ECDS resource, Istio EnvoyFilter or
    /// WasmPlugin (YAML, several documents per file, or JSON) holding egress-guard's policy:
    /// every copy is checked, and copies that differ are errors. Every error is reported, not
    /// only the first. Warnings (exit 0 unless --strict) flag rules that mean more or less than
    /// they seem: wildcards reaching into other people's domains, 0.0.0.0/0 and ::/0, rules with
    /// only ports, allow rules in passthrough mode, rules shadowed by earlier ones, duplicates.
    #[command(after_help = AFTER_HELP)]
    Check {
        /// Files (- for standard input)
        #[arg(value_name = "FILE", required = true)]
        configs: Vec<PathBuf>,
        /// Warnings are errors (exit 1)
        #[arg(long)]
        strict: bool,
        /// Print one JSON report (for CI) instead of text
        #[arg(long)]
        json: bool,
    },
    /// Show how the filter decides one connection
    ///
    /// Prints the verdict (allow, deny, audit_deny), the reason, the deciding rule (and the preset
    /// it came from), how the name was read (a host name, an IP literal, or malformed and why),
    /// and whether the network filter settles the connection when it opens, before any byte.
    #[command(after_help = AFTER_HELP)]
    Explain {
        /// Configuration file (- for standard input)
        #[arg(value_name = "CONFIG")]
        config: PathBuf,
        /// The original destination, e.g. 140.82.112.3:443 or [2001:db8::1]:443; without it the
        /// decision is taken for every IP (and every port unless --port), and explain says so
        /// when they do not all decide alike (exit 5)
        #[arg(long, value_name = "IP:PORT")]
        dst: Option<SocketAddr>,
        /// Without --dst: the destination port (any IP)
        #[arg(long, value_name = "PORT", conflicts_with = "dst", value_parser = clap::value_parser!(u16).range(1..))]
        port: Option<u16>,
        /// The TLS SNI the client sends
        #[arg(long, value_name = "NAME", conflicts_with = "host")]
        sni: Option<OsString>,
        /// The HTTP Host (or :authority) the client sends; a :port is stripped
        #[arg(long, value_name = "NAME")]
        host: Option<OsString>,
        /// Print one JSON object instead of text
        #[arg(long)]
        json: bool,
    },
    /// List the built-in presets and deny presets, or show one
    Presets {
        /// A preset name, e.g. pypi or cloud-metadata
        name: Option<String>,
    },
    /// Print the JSON Schema (draft 2020-12) of the configuration, for editors and CI
    Schema,
    /// Write the shipped Istio manifests or Envoy configurations with a policy embedded
    ///
    /// The templates are the files shipped in examples/istio/ (--istio) and envoy/ (--envoy);
    /// each place that holds the policy gets POLICY's text, and nothing else changes. The
    /// ambient egress-waypoint manifests get it without its CIDRs (they see ServiceEntry
    /// addresses), and what was left out is named on stderr. Every file is read back and its
    /// copies of the policy compared. Istio objects larger than a Kubernetes object can hold
    /// (1.5 MiB as JSON) are refused.
    #[command(after_help = AFTER_HELP)]
    Render {
        /// The policy (JSON; - for standard input)
        #[arg(value_name = "POLICY")]
        policy: PathBuf,
        /// The Istio manifests of examples/istio/ (EnvoyFilters, WasmPlugin, TrafficExtensions)
        #[arg(long, required_unless_present = "envoy", conflicts_with = "envoy")]
        istio: bool,
        /// The Envoy configurations of envoy/
        #[arg(long)]
        envoy: bool,
        /// Write the files into DIR (created if missing), under their shipped names
        #[arg(long, value_name = "DIR")]
        out: Option<PathBuf>,
        /// Only this file (repeatable); without --out, exactly one file is printed
        #[arg(long = "file", value_name = "NAME")]
        files: Vec<String>,
        /// The module's OCI image, instead of the example's registry.example.com reference
        #[arg(long, value_name = "URI", requires = "istio")]
        image: Option<String>,
        /// The module's path, instead of target/wasm32-wasip1/release/egress_guard.wasm
        #[arg(long, value_name = "PATH", requires = "envoy")]
        module: Option<String>,
    },
    /// Write a policy that allows what decision logs show passing
    ///
    /// Reads egress-guard's decision lines from Envoy logs or `kubectl logs` output (behind
    /// Envoy's or Istio's prefix, or bare JSON lines; other lines are counted and skipped) and
    /// allows what was allowed or audit_denied (never what was denied): names grouped by
    /// registrable domain, `*.parent` where at least N children of parent were seen, CIDR rules
    /// for connections without a name, the ports seen. A summary goes to standard error.
    #[command(after_help = AFTER_HELP)]
    Suggest {
        /// Log files (- for standard input)
        #[arg(value_name = "LOG", required = true)]
        logs: Vec<PathBuf>,
        /// Output: egress-guard's JSON policy, Istio ServiceEntries, or a Cilium
        /// CiliumNetworkPolicy (toFQDNs and toPorts)
        #[arg(long, value_enum, default_value = "json")]
        format: crate::suggest::Format,
        /// Use *.parent once this many distinct names directly under parent were seen (0: never)
        #[arg(long, value_name = "N", default_value_t = 3)]
        wildcard_threshold: usize,
        /// Prefix length of the CIDR rules for IPv4 destinations without a name
        #[arg(long, value_name = "BITS", default_value_t = 32, value_parser = clap::value_parser!(u8).range(0..=32))]
        prefix_len: u8,
        /// Prefix length of the CIDR rules for IPv6 destinations without a name
        #[arg(long, value_name = "BITS", default_value_t = 128, value_parser = clap::value_parser!(u8).range(0..=128))]
        prefix_len6: u8,
    },
    /// Decide every logged connection with a new policy and show what would change
    ///
    /// Each decision line's destination, name and protocol are decided again by NEW (the
    /// filter's own Policy::decide). Printed: newly denied, newly allowed, and audit would-deny
    /// changes, grouped by name and destination with counts. Exit 3 when a connection would be
    /// newly denied. A log written with "log": "denied" holds no allowed connection: collect
    /// with "all" (or in audit mode) to see what a new policy would newly deny.
    #[command(after_help = AFTER_HELP)]
    Replay {
        /// Log files (- for standard input)
        #[arg(value_name = "LOG", required = true)]
        logs: Vec<PathBuf>,
        /// The new policy (JSON)
        #[arg(long, value_name = "NEW", required = true)]
        policy: PathBuf,
        /// Print one JSON report instead of text
        #[arg(long)]
        json: bool,
    },
}

pub fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Check {
            configs,
            strict,
            json,
        } => crate::check::run(&configs, strict, json),
        Command::Explain {
            config,
            dst,
            port,
            sni,
            host,
            json,
        } => {
            let name = match (sni, host) {
                (Some(sni), _) => crate::explain::GivenName::Sni(sni.into_encoded_bytes()),
                (None, Some(host)) => crate::explain::GivenName::Host(host.into_encoded_bytes()),
                (None, None) => crate::explain::GivenName::None,
            };
            let destination = match dst {
                Some(dst) => crate::explain::Destination::Given(dst),
                None => crate::explain::Destination::Any(port),
            };
            crate::explain::run(&config, destination, &name, json)
        }
        Command::Presets { name } => crate::presets::run(name.as_deref()),
        Command::Schema => out(SCHEMA).map(|()| Exit::Ok),
        Command::Render {
            policy,
            istio,
            envoy: _,
            out,
            files,
            image,
            module,
        } => crate::render::run(&crate::render::Options {
            policy,
            target: if istio {
                crate::render::Target::Istio
            } else {
                crate::render::Target::Envoy
            },
            out,
            files,
            image,
            module,
        }),
        Command::Suggest {
            logs,
            format,
            wildcard_threshold,
            prefix_len,
            prefix_len6,
        } => crate::suggest::run(&crate::suggest::Options {
            logs,
            format,
            wildcard_threshold,
            prefix_len,
            prefix_len6,
        }),
        Command::Replay { logs, policy, json } => crate::replay::run(&logs, &policy, json),
    };
    match result {
        Ok(exit) => exit.into(),
        Err(e) => {
            err(&format!("egress-guard: {e}"));
            Exit::Usage.into()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn arguments_are_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn sni_and_host_exclude_each_other() {
        let both = Cli::try_parse_from([
            "egress-guard",
            "explain",
            "c.json",
            "--dst",
            "1.2.3.4:443",
            "--sni",
            "a",
            "--host",
            "b",
        ]);
        assert!(both.is_err());
    }

    #[test]
    fn schema_is_json() {
        let value: serde_json::Value = serde_json::from_str(SCHEMA).unwrap();
        assert_eq!(
            value["$schema"],
            "https://json-schema.org/draft/2020-12/schema"
        );
    }
}
