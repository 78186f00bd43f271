//! The house rules of the source tree, checked on every test run: no module of
//! `orchard-server` or `orchard-agent` imports a module that imports it back (directly
//! or through others), and the server's domain folders import only what their
//! `mod.rs` allows.
//!
//! A module's imports are the `crate::…` and `super::…` paths in its code (comments
//! and its `#[cfg(test)]` module left out), each resolved to the longest module path
//! it names; a folder's `pub use child::…` counts as an import of that child.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// Module name (`engine::reconcile`, `crate` for the root) → its code.
fn modules(src: &Path) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    let mut dirs = vec![src.to_path_buf()];
    while let Some(dir) = dirs.pop() {
        for entry in std::fs::read_dir(&dir).expect("source folder is readable") {
            let path = entry.expect("folder entry").path();
            if path.is_dir() {
                dirs.push(path);
                continue;
            }
            if path.extension().and_then(|e| e.to_str()) != Some("rs") {
                continue;
            }
            let rel = path
                .strip_prefix(src)
                .expect("inside src")
                .with_extension("");
            let mut parts: Vec<String> = rel
                .components()
                .map(|c| c.as_os_str().to_string_lossy().into_owned())
                .collect();
            if parts.last().is_some_and(|p| p == "mod") {
                parts.pop();
            }
            let name = match parts.as_slice() {
                [only] if only == "lib" || only == "main" => "crate".to_owned(),
                _ => parts.join("::"),
            };
            let text = std::fs::read_to_string(&path).expect("source file is readable");
            out.insert(name, code_of(&text));
        }
    }
    out
}

/// The code of a file without comments and without its test module.
fn code_of(text: &str) -> String {
    let text = match text.find("#[cfg(test)]\nmod tests") {
        Some(at) => &text[..at],
        None => text,
    };
    text.lines()
        .map(|line| match line.find("//") {
            Some(at) => &line[..at],
            None => line,
        })
        .collect::<Vec<_>>()
        .join("\n")
}

/// The paths a code text names after `prefix` (`crate::` or `super::`), with brace
/// groups expanded one level: `crate::a::{b, c::D}` gives `a::b` and `a::c::D`.
fn paths_after(code: &str, prefix: &str) -> Vec<String> {
    let is_path = |c: char| c.is_ascii_alphanumeric() || c == '_' || c == ':';
    let mut out = Vec::new();
    let mut rest = code;
    while let Some(at) = rest.find(prefix) {
        let before = rest[..at].chars().next_back();
        rest = &rest[at + prefix.len()..];
        if before.is_some_and(|c| c.is_ascii_alphanumeric() || c == '_') {
            continue;
        }
        let end = rest.find(|c: char| !is_path(c)).unwrap_or(rest.len());
        let base = rest[..end].trim_end_matches(':');
        if rest[end..].starts_with('{') {
            let close = rest[end..].find('}').map_or(rest.len(), |c| end + c);
            for item in rest[end + 1..close].split(',') {
                let item: String = item.trim().chars().take_while(|c| is_path(*c)).collect();
                if !item.is_empty() {
                    out.push(format!("{base}::{item}"));
                }
            }
        } else if !base.is_empty() {
            out.push(base.to_owned());
        }
    }
    out
}

/// Which module each module imports.
fn imports(modules: &BTreeMap<String, String>) -> BTreeMap<String, BTreeSet<String>> {
    let resolve = |path: &str| -> Option<String> {
        let segments: Vec<&str> = path.split("::").filter(|s| !s.is_empty()).collect();
        (1..=segments.len())
            .rev()
            .map(|n| segments[..n].join("::"))
            .find(|name| modules.contains_key(name))
    };
    let mut out = BTreeMap::new();
    for (name, code) in modules {
        let own = |child: &str| match name.as_str() {
            "crate" => child.to_owned(),
            _ => format!("{name}::{child}"),
        };
        let parent = name.rsplit_once("::").map_or("", |(p, _)| p);
        let mut deps = BTreeSet::new();
        for path in paths_after(code, "crate::") {
            deps.extend(resolve(&path));
        }
        for path in paths_after(code, "super::") {
            let full = if parent.is_empty() {
                path
            } else {
                format!("{parent}::{path}")
            };
            deps.extend(resolve(&full));
        }
        for line in code.lines() {
            if let Some(child) = line.trim().strip_prefix("pub use ")
                && let Some((child, _)) = child.split_once("::")
            {
                deps.extend(resolve(&own(child)));
            }
        }
        deps.remove(name);
        out.insert(name.clone(), deps);
    }
    out
}

/// Every set of modules that import each other in a circle.
fn circles(graph: &BTreeMap<String, BTreeSet<String>>) -> Vec<Vec<String>> {
    // A module is in a circle with `m` when each reaches the other.
    let reach = |from: &str| -> BTreeSet<String> {
        let mut seen = BTreeSet::new();
        let mut todo = vec![from.to_owned()];
        while let Some(m) = todo.pop() {
            for d in graph.get(&m).into_iter().flatten() {
                if seen.insert(d.clone()) {
                    todo.push(d.clone());
                }
            }
        }
        seen
    };
    let reaches: BTreeMap<&String, BTreeSet<String>> =
        graph.keys().map(|m| (m, reach(m))).collect();
    let mut done = BTreeSet::new();
    let mut out = Vec::new();
    for (m, r) in &reaches {
        if done.contains(*m) || !r.contains(*m) {
            continue;
        }
        let circle: Vec<String> = r
            .iter()
            .filter(|o| reaches.get(o).is_some_and(|back| back.contains(*m)))
            .cloned()
            .collect();
        done.extend(circle.iter().cloned());
        out.push(circle);
    }
    out
}

fn crate_src(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("..")
        .join(name)
        .join("src")
}

fn describe(graph: &BTreeMap<String, BTreeSet<String>>, circle: &[String]) -> String {
    circle
        .iter()
        .map(|m| {
            let back: Vec<&String> = graph[m].iter().filter(|d| circle.contains(d)).collect();
            format!("{m} -> {back:?}")
        })
        .collect::<Vec<_>>()
        .join("; ")
}

#[test]
fn no_module_of_the_server_or_the_agent_imports_one_that_imports_it_back() {
    for name in ["server", "agent"] {
        let graph = imports(&modules(&crate_src(name)));
        assert!(graph.len() > 5, "{name}: the source tree was not found");
        let found = circles(&graph);
        assert!(
            found.is_empty(),
            "{name}: modules import each other in a circle: {}",
            found
                .iter()
                .map(|c| describe(&graph, c))
                .collect::<Vec<_>>()
                .join(" | ")
        );
    }
}

/// What each domain folder of the server may not import (see each folder's `mod.rs`).
const SERVER_FOLDER_RULES: &[(&str, &[&str])] = &[
    (
        "store",
        &[
            "device", "engine", "apple", "push", "http", "admin", "state", "server", "error",
        ],
    ),
    (
        "push",
        &[
            "state", "engine", "apple", "http", "admin", "server", "error",
        ],
    ),
    ("device", &["apple", "push", "http", "admin", "server"]),
    ("engine", &["device", "push", "http", "admin", "server"]),
    ("apple", &["device", "push", "http", "admin", "server"]),
];

/// Imports that break [`SERVER_FOLDER_RULES`].
fn broken_rules(graph: &BTreeMap<String, BTreeSet<String>>) -> Vec<String> {
    let top = |m: &str| m.split("::").next().unwrap_or(m).to_owned();
    let mut broken = Vec::new();
    for (module, deps) in graph {
        for (folder, forbidden) in SERVER_FOLDER_RULES {
            if top(module) != *folder {
                continue;
            }
            for dep in deps {
                // Apple's side hands new versions to the engine's update planner and
                // uses nothing else of the engine.
                let apple_into_engine =
                    *folder == "apple" && top(dep) == "engine" && dep != "engine::updates";
                if forbidden.contains(&top(dep).as_str()) || apple_into_engine {
                    broken.push(format!("{module} imports {dep}"));
                }
            }
        }
    }
    broken
}

#[test]
fn server_folders_import_only_what_their_rules_allow() {
    let broken = broken_rules(&imports(&modules(&crate_src("server"))));
    assert!(broken.is_empty(), "folder rules broken: {broken:?}");
}

#[test]
fn the_check_finds_a_circle_and_a_broken_rule() {
    // The same functions on a made-up tree: a circle and a forbidden import are found.
    let mut tree = BTreeMap::new();
    tree.insert("crate".to_owned(), String::new());
    tree.insert(
        "engine".to_owned(),
        "pub mod reconcile;\npub mod reclaim;".to_owned(),
    );
    tree.insert(
        "engine::reconcile".to_owned(),
        "use crate::engine::{reclaim::run_once, precedence};\nuse crate::push::PushHub;".to_owned(),
    );
    tree.insert(
        "engine::reclaim".to_owned(),
        "use super::reconcile::wanted; // crate::http::never".to_owned(),
    );
    tree.insert("push".to_owned(), String::new());
    let graph = imports(&tree);
    assert_eq!(
        graph["engine::reconcile"],
        BTreeSet::from([
            "engine".to_owned(),
            "engine::reclaim".to_owned(),
            "push".to_owned()
        ]),
        "brace groups, the longest module path, and no comments"
    );
    let found = circles(&graph);
    assert_eq!(
        found,
        vec![vec![
            "engine::reclaim".to_owned(),
            "engine::reconcile".to_owned()
        ]]
    );
    assert_eq!(
        broken_rules(&graph),
        vec!["engine::reconcile imports push".to_owned()]
    );
    assert!(
        code_of("use crate::a;\n#[cfg(test)]\nmod tests {\nuse crate::b;\n}").contains("crate::a")
    );
    assert!(
        !code_of("use crate::a;\n#[cfg(test)]\nmod tests {\nuse crate::b;\n}").contains("crate::b")
    );
}
