//! Proves the layers point one way: protocol ← broker ← endpoint ← shard ← server. Each
//! source file may name only the modules of its own layer and those below it; a `crate::` path
//! (or a `super::` that climbs out of the layer) to anything above fails this test with the
//! file, the line and the rule.

use std::path::{Path, PathBuf};

/// For each layer (a folder of src/ or a file at its top), the crate modules its files may
/// name. A layer always may name itself.
const RULES: &[(&str, &[&str])] = &[
    // Sans-IO codecs: their own limit types, nothing of the crate.
    ("protocol", &[]),
    // Sans-IO pub/sub: codecs only.
    ("broker", &["protocol"]),
    // The byte stream under an endpoint.
    ("transport", &["protocol"]),
    // Connection-time authentication: request heads and the broker's grants.
    ("auth", &["protocol", "broker"]),
    // What leaves on ringcast's own initiative (webhooks): the broker's events.
    ("egress", &["protocol", "broker"]),
    // Per-connection state machines: codecs, the broker's types, the transport, the
    // authenticator.
    ("endpoint", &["protocol", "broker", "transport", "auth"]),
    // Counters of every layer, gathered.
    (
        "stats",
        &["protocol", "broker", "auth", "endpoint", "transport"],
    ),
    ("metrics", &["stats", "endpoint", "auth"]),
    // The configuration composes every layer's limits.
    (
        "config",
        &[
            "protocol",
            "broker",
            "auth",
            "endpoint",
            "egress",
            "transport",
        ],
    ),
    // The driver: everything below the server.
    (
        "shard",
        &[
            "protocol",
            "broker",
            "auth",
            "transport",
            "endpoint",
            "stats",
            "metrics",
            "config",
            "egress",
        ],
    ),
];

fn source_files(directory: &Path, files: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(directory).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            source_files(&path, files);
        } else if path.extension().is_some_and(|extension| extension == "rs") {
            files.push(path);
        }
    }
}

/// The crate modules a line names through `crate::…` (several in one `use crate::{a, b}`).
fn crate_paths(line: &str) -> Vec<String> {
    let mut names = Vec::new();
    for (at, _) in line.match_indices("crate::") {
        let rest = &line[at + "crate::".len()..];
        if let Some(group) = rest.strip_prefix('{') {
            let group = group.split('}').next().unwrap_or("");
            for item in group.split(',') {
                let name: String = item
                    .trim()
                    .chars()
                    .take_while(|c| c.is_alphanumeric() || *c == '_')
                    .collect();
                names.push(name);
            }
        } else {
            let name: String = rest
                .chars()
                .take_while(|c| c.is_alphanumeric() || *c == '_')
                .collect();
            names.push(name);
        }
    }
    names.retain(|name| !name.is_empty());
    names
}

/// How many folders deep below src/ a file's module is (its `super` count to reach the root).
fn module_depth(relative: &Path) -> usize {
    let components = relative.components().count();
    let is_mod = relative.file_name().is_some_and(|name| name == "mod.rs");
    if is_mod { components - 1 } else { components }
}

#[test]
fn layers_point_one_way() {
    let source = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    source_files(&source, &mut files);
    let mut violations = Vec::new();
    for file in &files {
        let relative = file.strip_prefix(&source).unwrap();
        let layer = relative
            .components()
            .next()
            .unwrap()
            .as_os_str()
            .to_string_lossy()
            .trim_end_matches(".rs")
            .to_string();
        let Some((_, allowed)) = RULES.iter().find(|(name, _)| *name == layer) else {
            continue; // The server, the binary and their helpers may name anything.
        };
        let climb = "super::".repeat(module_depth(relative));
        let text = std::fs::read_to_string(file).unwrap();
        // An inline test module is one level deeper: its `super::` is the file's own module.
        let tests_start = text
            .lines()
            .position(|line| line.trim() == "#[cfg(test)]")
            .unwrap_or(usize::MAX);
        for (number, line) in text.lines().enumerate() {
            let code = line.split("//").next().unwrap_or("");
            for name in crate_paths(code) {
                if name != layer && !allowed.contains(&name.as_str()) {
                    violations.push(format!(
                        "{}:{}: the {layer} layer names crate::{name}: {}",
                        relative.display(),
                        number + 1,
                        line.trim()
                    ));
                }
            }
            if !climb.is_empty() && number < tests_start && code.contains(&climb) {
                violations.push(format!(
                    "{}:{}: `{climb}` climbs out of the {layer} layer: {}",
                    relative.display(),
                    number + 1,
                    line.trim()
                ));
            }
        }
    }
    assert!(
        violations.is_empty(),
        "layers must point one way (protocol ← broker ← endpoint ← shard ← server):\n{}",
        violations.join("\n")
    );
}

/// Proves the checker itself catches what it must: a group import, a plain path, a climb.
#[test]
fn the_checker_finds_upward_paths() {
    assert_eq!(
        crate_paths("use crate::{config, broker::Command};"),
        ["config", "broker"]
    );
    assert_eq!(
        crate_paths("let x = crate::shard::Shard::new();"),
        ["shard"]
    );
    assert_eq!(module_depth(Path::new("protocol/mod.rs")), 1);
    assert_eq!(module_depth(Path::new("protocol/http1/head.rs")), 3);
}
