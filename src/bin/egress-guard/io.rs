//! Input, output and exit codes, shared by every subcommand.

use std::fmt;
use std::io::{self, Read, Write};
use std::path::Path;
use std::process::ExitCode;

/// Exit codes (documented in `--help` and the README).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Exit {
    /// Success; for `explain`, the connection passes (allow, or audit's would-deny).
    Ok = 0,
    /// A configuration is invalid.
    Invalid = 1,
    /// Bad arguments, an unreadable file, an unknown preset.
    Usage = 2,
    /// `explain`: the connection is denied; `replay`: something would be newly denied.
    Denied = 3,
    /// `explain`: audit mode's would-deny (the connection passes, and is logged).
    AuditDeny = 4,
    /// `explain` without `--dst`: the decision depends on the destination IP or port.
    Depends = 5,
}

impl From<Exit> for ExitCode {
    fn from(exit: Exit) -> ExitCode {
        ExitCode::from(exit as u8)
    }
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
