//! `presets [NAME]`: the built-in presets (allow bundles for `presets`, deny bundles for
//! `deny_presets`), their hosts, addresses and ports.

use std::fmt::Write as _;

use egress_guard::policy::presets::{self, DenyPresetInfo, PresetInfo};

use crate::io::{out, Exit, UsageError};

pub fn run(name: Option<&str>) -> Result<Exit, UsageError> {
    let all = presets::all();
    let deny = presets::deny_all();
    let text = match name {
        None => all
            .iter()
            .map(describe)
            .chain(deny.iter().map(describe_deny))
            .collect::<Vec<_>>()
            .join("\n"),
        Some(name) => match (
            all.iter().find(|p| p.name == name),
            deny.iter().find(|p| p.name == name),
        ) {
            (Some(info), _) => describe(info),
            (None, Some(info)) => describe_deny(info),
            (None, None) => {
                let names = all.iter().map(|p| p.name).collect::<Vec<_>>();
                let deny_names = deny.iter().map(|p| p.name).collect::<Vec<_>>();
                return Err(UsageError(format!(
                    "no preset {name:?}; the presets are: {}; the deny presets are: {}",
                    names.join(", "),
                    deny_names.join(", ")
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
        let _ = writeln!(text, "  rule:  {}", info.preset.rule_name(n));
        let _ = writeln!(text, "  hosts: {}", rule.hosts.join(", "));
        let _ = writeln!(text, "  ports: {}", ports(rule.ports));
    }
    text
}

/// A deny preset: as [`describe`], with its addresses, and where it goes (`deny_presets`).
pub fn describe_deny(info: &DenyPresetInfo) -> String {
    let mut text = String::new();
    let _ = writeln!(text, "{} (deny preset: \"deny_presets\")", info.name);
    let _ = writeln!(text, "  {}", info.description);
    for (n, rule) in info.rules.iter().enumerate() {
        let _ = writeln!(text, "  rule:  {}", info.preset.rule_name(n));
        if !rule.hosts.is_empty() {
            let _ = writeln!(text, "  hosts: {}", rule.hosts.join(", "));
        }
        if !rule.cidrs.is_empty() {
            let _ = writeln!(text, "  cidrs: {}", rule.cidrs.join(", "));
        }
        let _ = writeln!(text, "  ports: {}", ports(rule.ports));
    }
    text
}

fn ports(ports: &[egress_guard::policy::PortRange]) -> String {
    if ports.is_empty() {
        return "any".to_string();
    }
    ports
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join(", ")
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

    #[test]
    fn describes_cloud_metadata() {
        let info = presets::deny_all().first().unwrap();
        let text = describe_deny(info);
        assert!(
            text.starts_with(
                "cloud-metadata (deny preset: \"deny_presets\")\n  cloud instance metadata"
            ),
            "{text}"
        );
        assert!(
            text.contains(
                "\n  rule:  preset-cloud-metadata\n  hosts: metadata.google.internal, \
                 metadata.goog\n  cidrs: 169.254.169.254/32, fd00:ec2::254/128, "
            ),
            "{text}"
        );
        assert!(text.ends_with("\n  ports: any\n"), "{text}");
    }
}
