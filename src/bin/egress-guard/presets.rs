//! `presets [NAME]`: the built-in presets, their hosts and ports.

use std::fmt::Write as _;

use egress_guard::policy::presets::{self, PresetInfo};

use crate::io::{out, Exit, UsageError};

pub fn run(name: Option<&str>) -> Result<Exit, UsageError> {
    let all = presets::all();
    let text = match name {
        None => all.iter().map(describe).collect::<Vec<_>>().join("\n"),
        Some(name) => match all.iter().find(|p| p.name == name) {
            Some(info) => describe(info),
            None => {
                let names = all.iter().map(|p| p.name).collect::<Vec<_>>();
                return Err(UsageError(format!(
                    "no preset {name:?}; the presets are: {}",
                    names.join(", ")
                )));
            }
        },
    };
    out(&text)?;
    Ok(Exit::Ok)
}

/// A preset's name, description, and each rule's name, hosts and ports.
pub fn describe(info: &PresetInfo) -> String {
    let mut text = String::new();
    let _ = writeln!(text, "{}", info.name);
    let _ = writeln!(text, "  {}", info.description);
    for (n, rule) in info.rules.iter().enumerate() {
        let ports = rule
            .ports
            .iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>();
        let _ = writeln!(text, "  rule:  {}", info.preset.rule_name(n));
        let _ = writeln!(text, "  hosts: {}", rule.hosts.join(", "));
        let _ = writeln!(text, "  ports: {}", ports.join(", "));
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn describes_pypi() {
        let pypi = presets::all().iter().find(|p| p.name == "pypi").unwrap();
        assert_eq!(
            describe(pypi),
            "pypi\n  PyPI: pypi.org and files.pythonhosted.org on 443\n  rule:  preset-pypi\n  \
             hosts: pypi.org, files.pythonhosted.org\n  ports: 443\n"
        );
    }
}
