//! The source's dependencies run one way. Each top-level module of `src/` may use only the
//! modules before it in [`LAYERS`], and the second-level modules inside one module import
//! each other without a cycle. Files in a second-level module's own directory
//! (`eval/canary/probe.rs`) extend it and count as it. The contract crates (`features`, `history`, `keyed`, `relative`, `runtime`, all
//! re-exported from `ssmkit-format` and `ssmkit-runtime`) sit under every layer.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// The layers, lowest first.
const LAYERS: [&str; 19] = [
    "error", "lock", "atomic", "layout", "backend", "config", "manifest", "canary", "datagen",
    "data", "metrics", "model", "run", "train", "eval", "export", "pipeline", "bench", "cli",
];

/// The crates below every layer, as `lib.rs` re-exports them.
const CONTRACTS: [&str; 5] = ["features", "history", "keyed", "relative", "runtime"];

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// `text` without its `#[cfg(test)] mod tests { … }` blocks (or `mod tests;` lines) and
/// `//` comments.
fn code(text: &str) -> String {
    let mut text = text.to_string();
    // A test module in a file of its own (`mod tests;`) is skipped with its file.
    text = text.replace("#[cfg(test)]\nmod tests;", "");
    while let Some(at) = text.find("#[cfg(test)]\nmod tests") {
        let open = at + text[at..].find('{').unwrap();
        let mut depth = 0;
        let mut end = text.len();
        for (i, c) in text[open..].char_indices() {
            match c {
                '{' => depth += 1,
                '}' => {
                    depth -= 1;
                    if depth == 0 {
                        end = open + i + 1;
                        break;
                    }
                }
                _ => {}
            }
        }
        text.replace_range(at..end, "");
    }
    text.lines()
        .map(|l| l.split("//").next().unwrap())
        .collect::<Vec<_>>()
        .join("\n")
}

/// The leading lowercase segments of a path: `eval::split::Case` gives `["eval", "split"]`.
fn segments(path: &str) -> Vec<&str> {
    path.split("::")
        .map(|s| {
            let s = s.trim_start();
            let end = s
                .find(|c: char| !(c.is_alphanumeric() || c == '_'))
                .unwrap_or(s.len());
            &s[..end]
        })
        .take_while(|s| s.starts_with(|c: char| c.is_ascii_lowercase()))
        .collect()
}

/// The module paths a file names after `prefix` (`crate::`, `super::`), each group of a
/// `prefix{a::B, c}` import on its own.
fn paths_after<'a>(code: &'a str, prefix: &str) -> Vec<Vec<&'a str>> {
    let mut out = Vec::new();
    for (at, _) in code.match_indices(prefix) {
        let before = code[..at].chars().next_back();
        if before.is_some_and(|c| c.is_alphanumeric() || c == '_' || c == ':') {
            continue;
        }
        let rest = &code[at + prefix.len()..];
        if let Some(group) = rest.strip_prefix('{') {
            let group = &group[..group.find('}').unwrap_or(group.len())];
            out.extend(group.split(',').map(segments));
        } else {
            out.push(segments(rest));
        }
    }
    out.retain(|p| !p.is_empty());
    out
}

/// Each source file as (its module path under `src/`, its code); test modules' files
/// (`tests.rs`) are not the source's.
fn sources() -> Vec<(Vec<String>, String)> {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    rust_files(&src, &mut files);
    files.sort();
    files
        .into_iter()
        .filter_map(|f| {
            let rel = f.strip_prefix(&src).unwrap().with_extension("");
            let mut module: Vec<String> = rel
                .iter()
                .map(|s| s.to_string_lossy().into_owned())
                .collect();
            if module.last().is_some_and(|m| m == "mod") {
                module.pop();
            }
            if module == ["lib"]
                || module == ["main"]
                || module.last().is_some_and(|m| m == "tests")
            {
                return None;
            }
            Some((module, code(&std::fs::read_to_string(&f).unwrap())))
        })
        .collect()
}

/// Each import of a module from its own layer or one above it.
fn upward(sources: &[(Vec<String>, String)]) -> Vec<String> {
    let mut wrong = Vec::new();
    for (module, code) in sources {
        let layer = LAYERS
            .iter()
            .position(|l| *l == module[0])
            .unwrap_or_else(|| panic!("src/{} is in no layer: add it to LAYERS", module[0]));
        for path in paths_after(code, "crate::") {
            let used = path[0];
            if used == module[0] || CONTRACTS.contains(&used) {
                continue;
            }
            match LAYERS.iter().position(|l| *l == used) {
                Some(at) if at < layer => {}
                _ => wrong.push(format!("{} uses crate::{}", module.join("::"), path[0])),
            }
        }
    }
    wrong.sort();
    wrong.dedup();
    wrong
}

/// A cycle among the second-level modules of one top-level module, if there is one.
fn cycle(sources: &[(Vec<String>, String)]) -> Option<Vec<String>> {
    let mut edges: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for (module, code) in sources {
        if module.len() < 2 {
            continue;
        }
        let from = format!("{}::{}", module[0], module[1]);
        let mut to = Vec::new();
        for path in paths_after(code, "crate::") {
            if path[0] == module[0] && path.len() > 1 {
                to.push(format!("{}::{}", path[0], path[1]));
            }
        }
        if module.len() == 2 {
            for path in paths_after(code, "super::") {
                to.push(format!("{}::{}", module[0], path[0]));
            }
        }
        let set = edges.entry(from.clone()).or_default();
        set.extend(to.into_iter().filter(|t| *t != from));
    }
    let nodes: Vec<String> = edges.keys().cloned().collect();
    // Depth-first search for a back edge.
    fn visit(
        n: &str,
        edges: &BTreeMap<String, BTreeSet<String>>,
        state: &mut BTreeMap<String, u8>,
        stack: &mut Vec<String>,
    ) -> Option<Vec<String>> {
        match state.get(n) {
            Some(2) => return None,
            Some(1) => {
                let at = stack.iter().position(|s| s == n).unwrap();
                let mut cycle = stack[at..].to_vec();
                cycle.push(n.to_string());
                return Some(cycle);
            }
            _ => {}
        }
        state.insert(n.to_string(), 1);
        stack.push(n.to_string());
        for m in edges.get(n).into_iter().flatten() {
            if edges.contains_key(m)
                && let Some(cycle) = visit(m, edges, state, stack)
            {
                return Some(cycle);
            }
        }
        stack.pop();
        state.insert(n.to_string(), 2);
        None
    }
    let mut state = BTreeMap::new();
    nodes
        .iter()
        .find_map(|n| visit(n, &edges, &mut state, &mut Vec::new()))
}

fn module(path: &str, code: &str) -> (Vec<String>, String) {
    (
        path.split("::").map(String::from).collect(),
        code.to_string(),
    )
}

#[test]
fn every_module_uses_only_the_layers_below_it() {
    let wrong = upward(&sources());
    assert!(
        wrong.is_empty(),
        "imports against the layers:\n{}",
        wrong.join("\n")
    );
    // The check itself: a model file that reaches up into train is caught, one that
    // uses data and the contracts is not.
    let planted = [
        module(
            "model::scorer",
            "use crate::data::Dataset;\nuse crate::features::FEATURE_DIM;\n",
        ),
        module("model::loss", "use crate::train::TrainOptions;\n"),
    ];
    assert_eq!(upward(&planted), ["model::loss uses crate::train"]);
}

#[test]
fn the_files_of_a_module_import_each_other_without_a_cycle() {
    let found = cycle(&sources());
    assert!(
        found.is_none(),
        "an import cycle: {}",
        found.unwrap().join(" → ")
    );
    let planted = [
        module("eval::phase", "use super::output::write_report;\n"),
        module("eval::output", "use crate::eval::phase::EvalOptions;\n"),
        module("eval::split", "use super::Unit;\n"),
    ];
    assert_eq!(
        cycle(&planted).unwrap(),
        ["eval::output", "eval::phase", "eval::output"]
    );
}

#[test]
fn the_import_scan_reads_paths_and_groups_and_skips_comments() {
    let code = code(
        "use crate::train::TrainConfig;\n// crate::eval::x in a comment\nuse super::{split::Case, Unit};\nfn f() { crate::eval::split::test_cases(); }\n",
    );
    assert_eq!(
        paths_after(&code, "crate::"),
        [vec!["train"], vec!["eval", "split", "test_cases"]]
    );
    assert_eq!(paths_after(&code, "super::"), [vec!["split"]]);
}
