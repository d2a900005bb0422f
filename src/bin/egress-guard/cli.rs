//! Arguments, dispatch, input and output, exit codes.

use std::ffi::OsString;
use std::fmt;
use std::io::{self, Read, Write};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// The configuration's JSON Schema, checked against the parser by `tests/schema.rs`.
const SCHEMA: &str = include_str!("../../policy/schema.json");

/// Exit codes (documented in `--help` and the README).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Exit {
    /// Success; for `explain`, the connection passes (allow, or audit's would-deny).
    Ok = 0,
    /// A configuration is invalid.
    Invalid = 1,
    /// Bad arguments, an unreadable file, an unknown preset.
    Usage = 2,
    /// `explain`: the connection is denied.
    Denied = 3,
}

impl From<Exit> for ExitCode {
    fn from(exit: Exit) -> ExitCode {
        ExitCode::from(exit as u8)
    }
}

const AFTER_HELP: &str = "\
Exit codes:
  0  success; for explain: the connection passes (allow, or audit mode's would-deny)
  1  a configuration is invalid (the message is the filter's own, prefixed by the file name)
  2  usage or I/O error, unknown preset
  3  explain: the connection is denied

CONFIG is a path to the filter's JSON configuration, or - for standard input.";

/// egress-guard's configuration tool: the Envoy filter's own policy core, natively.
#[derive(Debug, Parser)]
#[command(name = "egress-guard", version, after_help = AFTER_HELP)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Validate configurations exactly as the filter does, and summarise them
    #[command(after_help = AFTER_HELP)]
    Check {
        /// Configuration files (- for standard input)
        #[arg(value_name = "CONFIG", required = true)]
        configs: Vec<PathBuf>,
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
        /// The original destination, e.g. 140.82.112.3:443 or [2001:db8::1]:443
        #[arg(long, value_name = "IP:PORT")]
        dst: SocketAddr,
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
    /// List the built-in presets, or show one
    Presets {
        /// A preset name, e.g. pypi
        name: Option<String>,
    },
    /// Print the JSON Schema (draft 2020-12) of the configuration, for editors and CI
    Schema,
}

/// A failure that ends the command with [`Exit::Usage`].
#[derive(Debug)]
pub struct UsageError(pub String);

impl fmt::Display for UsageError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A configuration as read: its name for messages, and its bytes.
pub struct Input {
    /// The path as given, or `<stdin>`.
    pub label: String,
    /// The file's bytes.
    pub bytes: Vec<u8>,
}

/// Reads a configuration file, or standard input for `-`.
pub fn read_input(path: &Path) -> Result<Input, UsageError> {
    if path == Path::new("-") {
        let mut bytes = Vec::new();
        io::stdin()
            .lock()
            .read_to_end(&mut bytes)
            .map_err(|e| UsageError(format!("<stdin>: {e}")))?;
        return Ok(Input {
            label: "<stdin>".to_string(),
            bytes,
        });
    }
    let label = path.display().to_string();
    match std::fs::read(path) {
        Ok(bytes) => Ok(Input { label, bytes }),
        Err(e) => Err(UsageError(format!("{label}: {e}"))),
    }
}

/// Writes to standard output. A closed pipe (`egress-guard schema | head`) is not an error.
pub fn out(text: &str) -> Result<(), UsageError> {
    let mut stdout = io::stdout().lock();
    match stdout
        .write_all(text.as_bytes())
        .and_then(|()| stdout.flush())
    {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == io::ErrorKind::BrokenPipe => Ok(()),
        Err(e) => Err(UsageError(format!("cannot write to standard output: {e}"))),
    }
}

/// Writes a message line to standard error (nothing more can be done if that fails).
pub fn err(line: &str) {
    let _ = writeln!(io::stderr().lock(), "{line}");
}

pub fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Check { configs } => crate::check::run(&configs),
        Command::Explain {
            config,
            dst,
            sni,
            host,
            json,
        } => {
            let name = match (sni, host) {
                (Some(sni), _) => crate::explain::GivenName::Sni(sni.into_encoded_bytes()),
                (None, Some(host)) => crate::explain::GivenName::Host(host.into_encoded_bytes()),
                (None, None) => crate::explain::GivenName::None,
            };
            crate::explain::run(&config, dst, &name, json)
        }
        Command::Presets { name } => crate::presets::run(name.as_deref()),
        Command::Schema => out(SCHEMA).map(|()| Exit::Ok),
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
