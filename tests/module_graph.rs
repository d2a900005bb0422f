//! The crate's modules import each other without cycles: `src/` is read as a graph (one node per
//! module file, an edge for every `crate::…` or `super::…` path that names another module) and
//! a cycle fails the test with its path. Test modules are left out; a module declaring its
//! children (`mod x;`) is not an edge.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)]

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::path::Path;

/// Module path (`policy::hosts`) of every non-test source file of the library.
fn modules(dir: &Path, prefix: &[String], out: &mut BTreeMap<Vec<String>, String>) {
    for entry in fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        let name = path.file_stem().unwrap().to_string_lossy().to_string();
        if path.is_dir() {
            if name == "bin" {
                continue;
            }
            let mut p = prefix.to_vec();
            p.push(name);
            modules(&path, &p, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            if name == "tests" || name.ends_with("_tests") || name == "testutil" {
                continue;
            }
            let mut p = prefix.to_vec();
            if name != "mod" && name != "lib" && name != "main" {
                p.push(name);
            }
            out.insert(p, fs::read_to_string(&path).unwrap());
        }
    }
}

/// The longest known module that `path` (segments after `crate`) starts with.
fn resolve(path: &[String], known: &BTreeMap<Vec<String>, String>) -> Option<Vec<String>> {
    (1..=path.len())
        .rev()
        .map(|n| path[..n].to_vec())
        .find(|p| known.contains_key(p))
}

/// Code outside `#[cfg(test)]` modules (a `#[cfg(test)] mod tests { … }` at the end of a file).
fn non_test(src: &str) -> &str {
    src.find("#[cfg(test)]\nmod tests {")
        .map_or(src, |i| &src[..i])
}

#[test]
fn the_library_has_no_module_cycles() {
    let mut known = BTreeMap::new();
    modules(
        Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/src")),
        &[],
        &mut known,
    );
    assert!(known.len() > 20, "read {} modules", known.len());
    assert_acyclic(&known);
}

#[test]
fn the_command_line_tool_has_no_module_cycles() {
    let mut known = BTreeMap::new();
    let root = concat!(env!("CARGO_MANIFEST_DIR"), "/src/bin/egress-guard");
    modules(Path::new(root), &[], &mut known);
    assert!(known.len() > 8, "read {} modules", known.len());
    assert_acyclic(&known);
}

/// Fails with the path of the first cycle among `known`'s modules.
fn assert_acyclic(known: &BTreeMap<Vec<String>, String>) {
    let mut edges: BTreeMap<Vec<String>, BTreeSet<Vec<String>>> = BTreeMap::new();
    for (module, src) in known {
        // Comments (doc links name modules too) are not dependencies.
        let text: String = non_test(src)
            .lines()
            .filter(|l| !l.trim_start().starts_with("//"))
            .collect::<Vec<_>>()
            .join("\n");
        let text = text.as_str();
        let mut add = |path: Vec<String>| {
            if let Some(target) = resolve(&path, known) {
                // A module using its own descendants is structure, not a dependency.
                if &target != module && !target.starts_with(module) {
                    edges.entry(module.clone()).or_default().insert(target);
                }
            }
        };
        for (i, _) in text.match_indices("crate::") {
            let rest = &text[i + "crate::".len()..];
            add(segments(rest));
        }
        for (i, _) in text.match_indices("super::") {
            if text[..i].ends_with("super::") {
                continue; // counted from the first `super::`
            }
            let mut base = module.clone();
            let mut rest = &text[i..];
            while let Some(r) = rest.strip_prefix("super::") {
                base.pop();
                rest = r;
            }
            let mut path = base;
            path.extend(segments(rest));
            add(path);
        }
    }
    // Depth-first search for a cycle.
    fn visit(
        node: &Vec<String>,
        edges: &BTreeMap<Vec<String>, BTreeSet<Vec<String>>>,
        stack: &mut Vec<Vec<String>>,
        done: &mut BTreeSet<Vec<String>>,
    ) {
        if done.contains(node) {
            return;
        }
        if let Some(at) = stack.iter().position(|n| n == node) {
            let cycle: Vec<String> = stack[at..]
                .iter()
                .chain([node])
                .map(|m| m.join("::"))
                .collect();
            panic!("module cycle: {}", cycle.join(" -> "));
        }
        stack.push(node.clone());
        for next in edges.get(node).into_iter().flatten() {
            visit(next, edges, stack, done);
        }
        stack.pop();
        done.insert(node.clone());
    }
    let mut done = BTreeSet::new();
    for node in known.keys() {
        visit(node, &edges, &mut Vec::new(), &mut done);
    }
}

/// The identifier segments of a path (`a::b::{c, d}` gives `a, b`; `a::b::c` gives `a, b, c`).
fn segments(rest: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut rest = rest;
    loop {
        let ident: String = rest
            .chars()
            .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
            .collect();
        if ident.is_empty() {
            break;
        }
        rest = &rest[ident.len()..];
        out.push(ident);
        match rest.strip_prefix("::") {
            Some(r) => rest = r,
            None => break,
        }
    }
    out
}

#[test]
fn the_path_reader_reads_module_paths() {
    assert_eq!(segments("policy::name::{a, b}"), ["policy", "name"]);
    assert_eq!(
        segments("sniff::http::parse_request_head(x)"),
        ["sniff", "http", "parse_request_head"]
    );
}
