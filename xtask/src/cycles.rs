//! `cargo xtask cycles` (also a step of `ci`): no crate may have a cycle
//! between its top-level modules. A module `a` depends on `b` when a file
//! of `a` (its own file, or any file below it) names `crate::b`, directly
//! or inside a `use crate::{…}` group. Submodules of one top-level module
//! may use each other freely; a cycle between two top-level modules means
//! one concern is split across both, and is reported with its path.
//!
//! This reads source as text: it is a guard for the module map, not a Rust
//! parser. It ignores comments (`//` to the end of the line), which is
//! where `crate::` appears in prose, and a file's `#[cfg(test)]` tail
//! (unit tests may borrow another module's helpers). An item named through
//! a re-export at the crate root (`crate::Vm`) is not followed back to the
//! module that defines it.

use std::{
    collections::{BTreeMap, BTreeSet},
    path::{Path, PathBuf},
};

use crate::cmd::{Error, project_root};

/// The crates whose module graphs are checked: every `src` directory under
/// these folders.
const ROOTS: &[&str] = &["crates", "guest-x86", "xtask", "tests"];

/// Runs the task.
pub fn run() -> Result<(), Error> {
    let root = project_root();
    let mut cycles = Vec::new();
    for src in source_dirs(&root) {
        let graph = graph_of(&src);
        if let Some(cycle) = find_cycle(&graph) {
            let name = src
                .strip_prefix(&root)
                .unwrap_or(&src)
                .display()
                .to_string();
            cycles.push(format!("{name}: {}", cycle.join(" -> ")));
        }
    }
    if cycles.is_empty() {
        println!("cycles: no module cycle in any crate");
        Ok(())
    } else {
        for cycle in &cycles {
            eprintln!("module cycle in {cycle}");
        }
        Err(Error::Steps(cycles))
    }
}

/// Every `src` directory of a crate below [`ROOTS`] (target directories
/// skipped).
fn source_dirs(root: &Path) -> Vec<PathBuf> {
    let mut found = Vec::new();
    let mut stack: Vec<PathBuf> = ROOTS.iter().map(|r| root.join(r)).collect();
    while let Some(dir) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&dir) else {
            continue;
        };
        if dir.join("Cargo.toml").is_file() && dir.join("src").is_dir() {
            found.push(dir.join("src"));
        }
        for entry in entries.flatten() {
            let path = entry.path();
            let name = entry.file_name();
            if path.is_dir() && name != "target" && name != "src" {
                stack.push(path);
            }
        }
    }
    found.sort();
    found
}

/// Top-level module -> the top-level modules its files name.
type Graph = BTreeMap<String, BTreeSet<String>>;

/// The graph of the crate whose sources are in `src`.
fn graph_of(src: &Path) -> Graph {
    let mut graph = Graph::new();
    let mut stack = vec![src.to_path_buf()];
    while let Some(dir) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&dir) else {
            continue;
        };
        for entry in entries.flatten() {
            let path = entry.path();
            if path.is_dir() {
                stack.push(path);
            } else if path.extension().is_some_and(|e| e == "rs")
                && let Some(module) = top_module(src, &path)
                && let Ok(text) = std::fs::read_to_string(&path)
            {
                let uses = graph.entry(module.clone()).or_default();
                uses.extend(crate_refs(&text).into_iter().filter(|m| *m != module));
            }
        }
    }
    // Only edges to modules of this crate count (`crate::Error` names an
    // item of the root, not a module).
    let modules: BTreeSet<String> = graph.keys().cloned().collect();
    for uses in graph.values_mut() {
        uses.retain(|m| modules.contains(m));
    }
    graph
}

/// The top-level module a file belongs to (`None` for the crate root).
fn top_module(src: &Path, file: &Path) -> Option<String> {
    let rel = file.strip_prefix(src).ok()?;
    let first = rel.components().next()?.as_os_str().to_str()?;
    let name = first.strip_suffix(".rs").unwrap_or(first);
    (!matches!(name, "lib" | "main")).then(|| name.to_string())
}

/// The top-level modules `text` names through `crate::`.
fn crate_refs(text: &str) -> BTreeSet<String> {
    let mut refs = BTreeSet::new();
    // Test modules (at the end of a file, by this codebase's habit) may
    // use another module's helpers: only the code before them counts.
    let code_end = text.find("#[cfg(test)]").unwrap_or(text.len());
    let text = &text[..code_end];
    for line in text.lines() {
        let code = line.split("//").next().unwrap_or("");
        let mut rest = code;
        while let Some(at) = rest.find("crate::") {
            // `$crate::` in macros and `nub_crate::` are not this crate.
            let before = rest[..at].chars().next_back();
            rest = &rest[at + "crate::".len()..];
            if before.is_some_and(|c| c.is_alphanumeric() || c == '_' || c == '$') {
                continue;
            }
            if let Some(group) = rest.strip_prefix('{') {
                refs.extend(group_heads(group, text, line));
            } else {
                refs.extend(ident(rest));
            }
        }
    }
    refs
}

/// The first path segment of every item in a `use crate::{…}` group that
/// starts at `group` (the rest of its line). The group may span lines: it
/// is then read from `text`, from `line` on.
fn group_heads(group: &str, text: &str, line: &str) -> Vec<String> {
    let start = text.find(line).map_or(0, |i| i + line.len() - group.len());
    let mut heads = Vec::new();
    let mut depth = 1;
    let mut expect_head = true;
    let mut chars = text[start..].char_indices().peekable();
    while let Some((i, c)) = chars.next() {
        match c {
            '{' => depth += 1,
            '}' => {
                depth -= 1;
                if depth == 0 {
                    break;
                }
            }
            ',' if depth == 1 => expect_head = true,
            c if expect_head && depth == 1 && (c.is_alphabetic() || c == '_') => {
                if let Some(name) = ident(&text[start + i..]) {
                    for _ in 1..name.len() {
                        chars.next();
                    }
                    heads.push(name);
                }
                expect_head = false;
            }
            _ => {}
        }
    }
    heads
}

/// The identifier `s` starts with, if any.
fn ident(s: &str) -> Option<String> {
    let end = s
        .find(|c: char| !(c.is_alphanumeric() || c == '_'))
        .unwrap_or(s.len());
    (end > 0).then(|| s[..end].to_string())
}

/// A cycle in `graph`, as the modules along it (first repeated at the end).
fn find_cycle(graph: &Graph) -> Option<Vec<String>> {
    #[derive(Clone, Copy, PartialEq)]
    enum Mark {
        Visiting,
        Done,
    }
    fn visit(
        node: &str,
        graph: &Graph,
        marks: &mut BTreeMap<String, Mark>,
        path: &mut Vec<String>,
    ) -> Option<Vec<String>> {
        match marks.get(node) {
            Some(Mark::Done) => return None,
            Some(Mark::Visiting) => {
                let from = path.iter().position(|n| n == node).unwrap_or(0);
                let mut cycle = path[from..].to_vec();
                cycle.push(node.to_string());
                return Some(cycle);
            }
            None => {}
        }
        marks.insert(node.to_string(), Mark::Visiting);
        path.push(node.to_string());
        for next in graph.get(node).into_iter().flatten() {
            if let Some(cycle) = visit(next, graph, marks, path) {
                return Some(cycle);
            }
        }
        path.pop();
        marks.insert(node.to_string(), Mark::Done);
        None
    }
    let mut marks = BTreeMap::new();
    for node in graph.keys() {
        if let Some(cycle) = visit(node, graph, &mut marks, &mut Vec::new()) {
            return Some(cycle);
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn set(items: &[&str]) -> BTreeSet<String> {
        items.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn paths_and_groups_are_read_comments_and_other_crates_are_not() {
        let text = "use crate::{\n    error::{A, B},\n    frames::{self, C},\n    pool,\n};\n\
                    fn f() { crate::watchdog::arm(); nub_crate::x(); $crate::y(); }\n\
                    // crate::prose is not code\n\
                    #[cfg(test)]\nmod tests { use crate::testing; }\n";
        assert_eq!(
            crate_refs(text),
            set(&["error", "frames", "pool", "watchdog"])
        );
    }

    #[test]
    fn a_cycle_is_found_with_its_path_and_a_dag_has_none() {
        let mut graph = Graph::new();
        graph.insert("a".into(), set(&["b"]));
        graph.insert("b".into(), set(&["c"]));
        graph.insert("c".into(), set(&[]));
        assert_eq!(find_cycle(&graph), None);
        graph.insert("c".into(), set(&["a"]));
        assert_eq!(
            find_cycle(&graph),
            Some(vec!["a".into(), "b".into(), "c".into(), "a".into()])
        );
    }

    #[test]
    fn files_belong_to_their_top_level_module() {
        let src = Path::new("/x/src");
        assert_eq!(
            top_module(src, Path::new("/x/src/engine/resident/vcpu.rs")),
            Some("engine".into())
        );
        assert_eq!(
            top_module(src, Path::new("/x/src/frames.rs")),
            Some("frames".into())
        );
        assert_eq!(top_module(src, Path::new("/x/src/lib.rs")), None);
    }
}
