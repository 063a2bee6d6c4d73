//! The house rules of the product crate's layout, checked by `cargo xtask test`:
//! - every source file opens with a `//!` comment saying what it owns;
//! - no product source file is longer than [`MAX_LINES`] (tests live in files of their own:
//!   `tests.rs`, or anything under a `tests/` folder, and are not counted);
//! - no import cycle between modules: among the modules of one folder (siblings), none may
//!   depend on another that depends back on it, directly or through other siblings. A module
//!   depends on a sibling when any of its files names a path into it (`crate::…`,
//!   `super::…`, and `use` groups). A parent and its own children may name each other.
//!
//! The reader is lexical (it does not run rustc): comments and string literals are skipped,
//! and every `crate::`/`super::` path in the code counts, not only `use` lines.
use std::{
    collections::{BTreeMap, BTreeSet},
    fs,
    path::{Path, PathBuf},
};

use anyhow::{Context, Result};

/// The longest a product source file may be.
pub const MAX_LINES: usize = 800;

/// One file of the tree: its module path (`["model", "incremental"]`; empty for the crate
/// root) and its text.
pub struct SourceFile {
    pub rel: PathBuf,
    pub module: Vec<String>,
    pub text: String,
}

/// Reads every `.rs` file under `src` (a crate's `src/`), with its module path.
pub fn read_tree(src: &Path) -> Result<Vec<SourceFile>> {
    let mut out = Vec::new();
    let mut stack = vec![src.to_path_buf()];
    while let Some(dir) = stack.pop() {
        for entry in fs::read_dir(&dir).with_context(|| format!("reading {}", dir.display()))? {
            let path = entry?.path();
            if path.is_dir() {
                stack.push(path);
            } else if path.extension().is_some_and(|e| e == "rs") {
                let rel = path.strip_prefix(src).unwrap().to_path_buf();
                let text = fs::read_to_string(&path)
                    .with_context(|| format!("reading {}", path.display()))?;
                out.push(SourceFile {
                    module: module_of(&rel),
                    rel,
                    text,
                });
            }
        }
    }
    out.sort_by(|a, b| a.rel.cmp(&b.rel));
    Ok(out)
}

/// `model/incremental.rs` → `model::incremental`; `model/mod.rs` → `model`; `lib.rs`,
/// `main.rs` and `bin/*.rs` → the crate root.
fn module_of(rel: &Path) -> Vec<String> {
    let mut parts: Vec<String> = rel
        .iter()
        .map(|p| p.to_string_lossy().trim_end_matches(".rs").to_string())
        .collect();
    if parts.first().is_some_and(|p| p == "bin") {
        return Vec::new();
    }
    if parts
        .last()
        .is_some_and(|p| p == "mod" || p == "lib" || p == "main")
    {
        parts.pop();
    }
    parts
}

/// Test code: `tests.rs`, `*_tests.rs`, or anything under a `tests` folder.
pub fn is_test_file(rel: &Path) -> bool {
    rel.iter().any(|p| p == "tests")
        || rel
            .file_stem()
            .is_some_and(|s| s == "tests" || s.to_string_lossy().ends_with("_tests"))
}

/// Every rule broken in `files`, one line each (empty when the tree keeps them all).
pub fn check(files: &[SourceFile]) -> Vec<String> {
    let mut problems = Vec::new();
    for f in files {
        let first = f.text.lines().find(|l| !l.trim().is_empty()).unwrap_or("");
        if !first.starts_with("//!") {
            problems.push(format!(
                "{}: does not open with a `//!` comment saying what it owns",
                f.rel.display()
            ));
        }
        let lines = f.text.lines().count();
        if !is_test_file(&f.rel) && lines > MAX_LINES {
            problems.push(format!(
                "{}: {lines} lines, more than {MAX_LINES} (split it, or move tests to a file of their own)",
                f.rel.display()
            ));
        }
    }
    problems.extend(cycles(files));
    problems
}

/// The sibling-to-sibling dependencies of the product files (test files left out).
pub fn dependencies(files: &[SourceFile]) -> BTreeMap<Vec<String>, BTreeSet<Vec<String>>> {
    let modules: BTreeSet<Vec<String>> = files.iter().map(|f| f.module.clone()).collect();
    let mut deps: BTreeMap<Vec<String>, BTreeSet<Vec<String>>> = BTreeMap::new();
    for f in files.iter().filter(|f| !is_test_file(&f.rel)) {
        // A file inside a `#[cfg(test)] mod tests { … }` block is still product code; a
        // block of that kind in a product file is not followed (it names test helpers).
        let code = strip_test_blocks(&strip_comments_and_strings(&f.text));
        for path in paths_in(&code, &f.module) {
            let Some(target) = longest_module(&modules, &path) else {
                continue;
            };
            // Lift the edge to the two siblings under the common ancestor.
            let common = f
                .module
                .iter()
                .zip(&target)
                .take_while(|(a, b)| a == b)
                .count();
            if common == f.module.len() || common == target.len() {
                continue; // the same module, an ancestor or a descendant
            }
            let from = f.module[..=common].to_vec();
            let to = target[..=common].to_vec();
            deps.entry(from).or_default().insert(to);
        }
    }
    deps
}

/// Each cycle among sibling modules, as "a -> b -> a".
fn cycles(files: &[SourceFile]) -> Vec<String> {
    let deps = dependencies(files);
    let mut found = BTreeSet::new();
    for start in deps.keys() {
        // Depth-first search for a path back to `start`.
        let mut stack = vec![(start.clone(), vec![start.clone()])];
        let mut seen = BTreeSet::new();
        while let Some((node, path)) = stack.pop() {
            for next in deps.get(&node).into_iter().flatten() {
                if next == start {
                    let mut cycle = path.clone();
                    // One report per cycle, whichever module it is found from.
                    let min = (0..cycle.len()).min_by_key(|&i| &cycle[i]).unwrap();
                    cycle.rotate_left(min);
                    cycle.push(cycle[0].clone());
                    found.insert(cycle);
                } else if seen.insert(next.clone()) {
                    let mut p = path.clone();
                    p.push(next.clone());
                    stack.push((next.clone(), p));
                }
            }
        }
    }
    found
        .into_iter()
        .map(|c| {
            let names: Vec<String> = c.iter().map(|m| m.join("::")).collect();
            format!("import cycle: {}", names.join(" -> "))
        })
        .collect()
}

/// The module `path` names: the longest prefix of it that is a module of the tree.
fn longest_module(modules: &BTreeSet<Vec<String>>, path: &[String]) -> Option<Vec<String>> {
    (1..=path.len())
        .rev()
        .map(|n| path[..n].to_vec())
        .find(|p| modules.contains(p))
}

/// Code without comments, string and char literals (their insides become spaces).
fn strip_comments_and_strings(text: &str) -> String {
    let b: Vec<char> = text.chars().collect();
    let mut out = String::with_capacity(text.len());
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            '/' if b.get(i + 1) == Some(&'/') => {
                while i < b.len() && b[i] != '\n' {
                    i += 1;
                }
            }
            '/' if b.get(i + 1) == Some(&'*') => {
                i += 2;
                while i < b.len() && !(b[i] == '*' && b.get(i + 1) == Some(&'/')) {
                    i += 1;
                }
                i += 2;
            }
            'r' if matches!(b.get(i + 1), Some('"') | Some('#'))
                && !b
                    .get(i.wrapping_sub(1))
                    .is_some_and(|c| c.is_alphanumeric() || *c == '_') =>
            {
                // Raw string: r"…", r#"…"#.
                let mut j = i + 1;
                let mut hashes = 0;
                while b.get(j) == Some(&'#') {
                    hashes += 1;
                    j += 1;
                }
                if b.get(j) != Some(&'"') {
                    out.push(b[i]);
                    i += 1;
                    continue;
                }
                j += 1;
                loop {
                    if j >= b.len() {
                        break;
                    }
                    if b[j] == '"' && (0..hashes).all(|h| b.get(j + 1 + h) == Some(&'#')) {
                        j += 1 + hashes;
                        break;
                    }
                    j += 1;
                }
                out.push(' ');
                i = j;
            }
            '"' => {
                i += 1;
                while i < b.len() && b[i] != '"' {
                    if b[i] == '\\' {
                        i += 1;
                    }
                    i += 1;
                }
                i += 1;
                out.push(' ');
            }
            '\'' if b.get(i + 2) == Some(&'\'') || b.get(i + 1) == Some(&'\\') => {
                // A char literal ('a', '\n', '\''); a lifetime ('a) is left alone.
                i += 1;
                while i < b.len() && b[i] != '\'' {
                    if b[i] == '\\' {
                        i += 1;
                    }
                    i += 1;
                }
                i += 1;
                out.push(' ');
            }
            c => {
                out.push(c);
                i += 1;
            }
        }
    }
    out
}

/// Code without its `#[cfg(test)]` items (a `mod tests { … }` block or a `mod tests;` line).
fn strip_test_blocks(code: &str) -> String {
    let mut out = String::with_capacity(code.len());
    let mut rest = code;
    while let Some(at) = rest.find("#[cfg(test)]") {
        out.push_str(&rest[..at]);
        let after = &rest[at..];
        // The item ends at its `;` or at the brace closing its first `{`.
        let semi = after.find(';');
        let brace = after.find('{');
        let end = match (semi, brace) {
            (Some(s), Some(b)) if s < b => s + 1,
            (_, Some(b)) => {
                let mut depth = 0;
                let mut end = after.len();
                for (i, c) in after[b..].char_indices() {
                    match c {
                        '{' => depth += 1,
                        '}' => {
                            depth -= 1;
                            if depth == 0 {
                                end = b + i + 1;
                                break;
                            }
                        }
                        _ => {}
                    }
                }
                end
            }
            (Some(s), None) => s + 1,
            (None, None) => after.len(),
        };
        rest = &after[end..];
    }
    out.push_str(rest);
    out
}

/// Every module path named in `code` with `crate::` or `super::`, as absolute paths
/// (`use crate::{a::{b, c}, d}` gives `a::b`, `a::c` and `d`).
fn paths_in(code: &str, module: &[String]) -> Vec<Vec<String>> {
    let chars: Vec<char> = code.chars().collect();
    let mut out = Vec::new();
    let mut i = 0;
    while i < chars.len() {
        let boundary = i == 0 || !(chars[i - 1].is_alphanumeric() || chars[i - 1] == '_');
        let word = |w: &str| chars[i..].iter().take(w.len()).copied().eq(w.chars());
        if boundary && (word("crate::") || word("super::")) {
            let mut base: Vec<String> = Vec::new();
            let mut j = i;
            if word("crate::") {
                j += "crate::".len();
            } else {
                base = module.to_vec();
                while chars[j..].iter().take(7).copied().eq("super::".chars()) {
                    base.pop();
                    j += "super::".len();
                }
            }
            let (paths, end) = use_tree(&chars, j);
            for p in paths {
                let mut full = base.clone();
                full.extend(p);
                out.push(full);
            }
            i = end.max(i + 1);
        } else {
            i += 1;
        }
    }
    out
}

/// Parses a path or a `{…}` group starting at `i`; returns its paths and where it ended.
fn use_tree(chars: &[char], mut i: usize) -> (Vec<Vec<String>>, usize) {
    let skip_ws = |i: &mut usize| {
        while *i < chars.len() && chars[*i].is_whitespace() {
            *i += 1;
        }
    };
    skip_ws(&mut i);
    if chars.get(i) == Some(&'{') {
        i += 1;
        let mut all = Vec::new();
        loop {
            skip_ws(&mut i);
            match chars.get(i) {
                None => return (all, i),
                Some('}') => return (all, i + 1),
                Some(',') => i += 1,
                _ => {
                    let (paths, end) = use_tree(chars, i);
                    all.extend(paths);
                    // Skip what follows the path up to the next separator (`as name`, `*`).
                    i = end;
                    while i < chars.len() && chars[i] != ',' && chars[i] != '}' {
                        i += 1;
                    }
                }
            }
        }
    }
    let mut segs = Vec::new();
    loop {
        let start = i;
        while i < chars.len() && (chars[i].is_alphanumeric() || chars[i] == '_') {
            i += 1;
        }
        if i == start {
            break;
        }
        segs.push(chars[start..i].iter().collect::<String>());
        if chars.get(i) == Some(&':') && chars.get(i + 1) == Some(&':') {
            i += 2;
            if chars.get(i) == Some(&'{') {
                let (paths, end) = use_tree(chars, i);
                let out = paths
                    .into_iter()
                    .map(|p| segs.iter().cloned().chain(p).collect())
                    .collect();
                return (out, end);
            }
        } else {
            break;
        }
    }
    let segs = segs.into_iter().filter(|s| s != "self").collect::<Vec<_>>();
    (vec![segs], i)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn file(rel: &str, text: &str) -> SourceFile {
        let rel = PathBuf::from(rel);
        SourceFile {
            module: module_of(&rel),
            rel,
            text: text.to_string(),
        }
    }

    #[test]
    fn use_groups_and_super_paths_resolve() {
        let code = "use crate::{a::{b, c::D}, e as f}; fn x() { super::super::g::h(); }";
        let got = paths_in(code, &["m".into(), "n".into()]);
        let names: Vec<String> = got.iter().map(|p| p.join("::")).collect();
        assert_eq!(names, ["a::b", "a::c::D", "e", "g::h"]);
    }

    #[test]
    fn comments_strings_and_test_blocks_do_not_count() {
        let code = strip_test_blocks(&strip_comments_and_strings(
            "// crate::a\nlet s = \"crate::b\"; /* crate::c */\n#[cfg(test)]\nmod tests { use crate::d; }\nuse crate::e;",
        ));
        let got = paths_in(&code, &[]);
        assert_eq!(got, vec![vec!["e".to_string()]]);
    }

    #[test]
    fn a_cycle_between_siblings_is_found_and_parents_may_name_children() {
        let ok = [
            file("lib.rs", "//! root\npub mod a; pub mod b;"),
            file("a/mod.rs", "//! a\nmod x; pub use x::X; use crate::b::B;"),
            file("a/x.rs", "//! x\nuse super::Y; use crate::a::Z;"),
            file("b.rs", "//! b\npub struct B;"),
        ];
        assert_eq!(check(&ok), Vec::<String>::new());
        let bad = [
            file("lib.rs", "//! root\npub mod a; pub mod b;"),
            file("a/mod.rs", "//! a\nmod x;"),
            file("a/x.rs", "//! x\nuse crate::b::B;"),
            file("b.rs", "//! b\nuse crate::a::X;"),
        ];
        assert_eq!(check(&bad), ["import cycle: a -> b -> a"]);
    }

    #[test]
    fn long_files_and_missing_docs_are_reported_but_test_files_may_be_long() {
        let long = format!("//! long\n{}", "fn f() {}\n".repeat(MAX_LINES));
        let files = [
            file("a.rs", &long),
            file("a/tests.rs", &long),
            file("b.rs", "use std::fs;"),
        ];
        let problems = check(&files);
        assert_eq!(problems.len(), 2, "{problems:?}");
        assert!(problems[0].starts_with("a.rs: 801 lines"), "{problems:?}");
        assert!(
            problems[1].starts_with("b.rs: does not open"),
            "{problems:?}"
        );
    }
}
