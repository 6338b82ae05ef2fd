//! No module of the broker library depends on a module that depends back on it.
//!
//! The check reads `broker/src` as text: every `crate::…`, `super::…` and
//! `self::…` path in code (in `use` lines, grouped `use` trees and inline paths;
//! not in comments, string literals or `#[cfg(test)]` modules) is an edge from the
//! module of the file to the deepest module the path names, or to the module an
//! item was `pub use`d from. A module's edges to its own submodules (declaring and
//! re-exporting them) are not dependencies. Cycles are the strongly connected
//! components of that graph.
//!
//! [`ALLOWED`] lists the dependencies that lie on a cycle today (both ends in one
//! strongly connected component) and are to be removed. It only shrinks: any other
//! dependency on a cycle fails — a new cycle, or a new back edge inside an existing
//! one — and so does an allowed dependency that is no longer on a cycle, until it
//! is taken off the list.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// The dependencies on a cycle today, to be removed. Empty since the broker stopped
/// being a service locator (issue 17): the group coordinator, the tier pass and the
/// metrics take the replica manager and the services they read, and the
/// replication tasks sit on top of the broker, started by the application.
const ALLOWED: &[(&str, &str)] = &[];

/// One source file: the module it is, its text with comments and literals blanked.
struct Source {
    module: String,
    file: PathBuf,
    code: String,
}

/// Where one module refers to another, for the failure message.
#[derive(Clone)]
struct Evidence {
    file: PathBuf,
    line: usize,
    path: String,
}

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    let mut entries: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("read {}: {e}", dir.display()))
        .map(|e| e.expect("directory entry").path())
        .collect();
    entries.sort();
    for p in entries {
        if p.is_dir() {
            rust_files(&p, out);
        } else if p.extension().is_some_and(|e| e == "rs") {
            out.push(p);
        }
    }
}

/// The module path of a file below `src` (`tier/reader.rs` → `tier::reader`,
/// `tier/mod.rs` → `tier`, `lib.rs` → the crate root, ""), or `None` for the
/// binaries' files, which are other crates.
fn module_of(src: &Path, file: &Path) -> Option<String> {
    let rel = file.strip_prefix(src).ok()?;
    let mut parts: Vec<String> = rel
        .with_extension("")
        .components()
        .map(|c| c.as_os_str().to_string_lossy().into_owned())
        .collect();
    if parts == ["main"] || parts.first().is_some_and(|p| p == "bin") {
        return None;
    }
    if parts.last().is_some_and(|p| p == "mod" || p == "lib") {
        parts.pop();
    }
    Some(parts.join("::"))
}

/// The text with comments and the contents of string and character literals
/// replaced by spaces; line breaks are kept so positions keep their line.
fn blank_comments_and_literals(text: &str) -> String {
    let c: Vec<char> = text.chars().collect();
    let mut out = String::with_capacity(text.len());
    let blank = |ch: char| if ch == '\n' { '\n' } else { ' ' };
    let mut i = 0;
    while i < c.len() {
        let next = c.get(i + 1).copied();
        if c[i] == '/' && next == Some('/') {
            while i < c.len() && c[i] != '\n' {
                out.push(' ');
                i += 1;
            }
        } else if c[i] == '/' && next == Some('*') {
            let mut depth = 0;
            while i < c.len() {
                if c[i] == '/' && c.get(i + 1) == Some(&'*') {
                    depth += 1;
                    out.push_str("  ");
                    i += 2;
                } else if c[i] == '*' && c.get(i + 1) == Some(&'/') {
                    depth -= 1;
                    out.push_str("  ");
                    i += 2;
                    if depth == 0 {
                        break;
                    }
                } else {
                    out.push(blank(c[i]));
                    i += 1;
                }
            }
        } else if c[i] == 'r'
            && (next == Some('"') || next == Some('#'))
            && (i == 0 || !(c[i - 1].is_alphanumeric() || c[i - 1] == '_'))
        {
            // A raw string r"…", r#"…"#: ends at a quote followed by as many #.
            let mut j = i + 1;
            let mut hashes = 0;
            while c.get(j) == Some(&'#') {
                hashes += 1;
                j += 1;
            }
            if c.get(j) != Some(&'"') {
                out.push(c[i]);
                i += 1;
                continue;
            }
            out.push('"');
            j += 1;
            loop {
                match c.get(j) {
                    None => break,
                    Some('"') if (1..=hashes).all(|k| c.get(j + k) == Some(&'#')) => {
                        j += 1 + hashes;
                        break;
                    }
                    Some(&ch) => {
                        out.push(blank(ch));
                        j += 1;
                    }
                }
            }
            out.push('"');
            i = j;
        } else if c[i] == '"' {
            out.push('"');
            i += 1;
            while i < c.len() && c[i] != '"' {
                if c[i] == '\\' && i + 1 < c.len() {
                    out.push(' ');
                    i += 1;
                }
                out.push(blank(c[i]));
                i += 1;
            }
            out.push('"');
            i += 1;
        } else if c[i] == '\'' {
            // A character literal ('x', '\n', '\u{7f}'), or else a lifetime.
            let end = if next == Some('\\') {
                (i + 2..c.len()).find(|&j| c[j] == '\'')
            } else if c.get(i + 2) == Some(&'\'') {
                Some(i + 2)
            } else {
                None
            };
            match end {
                Some(end) => {
                    out.push_str("' '");
                    i = end + 1;
                }
                None => {
                    out.push('\'');
                    i += 1;
                }
            }
        } else {
            out.push(c[i]);
            i += 1;
        }
    }
    out
}

/// Blanks every `#[cfg(test)] mod name { … }` block; returns the names of the
/// `#[cfg(test)] mod name;` files, which are test code too.
fn blank_test_modules(code: &mut String) -> Vec<String> {
    let mut test_files = Vec::new();
    let mut search = 0;
    while let Some(found) = code[search..].find("#[cfg(test)]") {
        let attr = search + found;
        search = attr + "#[cfg(test)]".len();
        // Skip further attributes and visibility, then expect `mod name`.
        let mut rest = code[search..].trim_start();
        while rest.starts_with("#[") {
            match rest.find(']') {
                Some(end) => rest = rest[end + 1..].trim_start(),
                None => break,
            }
        }
        for vis in ["pub(crate) ", "pub(super) ", "pub "] {
            rest = rest.strip_prefix(vis).unwrap_or(rest).trim_start();
        }
        let Some(after_mod) = rest.strip_prefix("mod ") else {
            continue;
        };
        let name: String = after_mod
            .trim_start()
            .chars()
            .take_while(|c| c.is_alphanumeric() || *c == '_')
            .collect();
        let after_name = after_mod.trim_start()[name.len()..].trim_start();
        if after_name.starts_with(';') {
            test_files.push(name);
            continue;
        }
        if !after_name.starts_with('{') {
            continue;
        }
        let open = code.len() - after_name.len();
        let mut depth = 0usize;
        let mut close = code.len();
        for (k, ch) in code[open..].char_indices() {
            match ch {
                '{' => depth += 1,
                '}' => {
                    depth -= 1;
                    if depth == 0 {
                        close = open + k + 1;
                        break;
                    }
                }
                _ => {}
            }
        }
        let blanked: String = code[attr..close]
            .chars()
            .map(|ch| if ch == '\n' { '\n' } else { ' ' })
            .collect();
        code.replace_range(attr..close, &blanked);
        search = close;
    }
    test_files
}

/// The paths of a `use` tree starting at `s` (`a::b`, `a::{b, c::{d, e}}`, or a
/// plain path in code), each as segments, and how many bytes were read.
fn use_tree(s: &str) -> (Vec<Vec<String>>, usize) {
    let b = s.as_bytes();
    let mut i = 0;
    let mut prefix: Vec<String> = Vec::new();
    loop {
        while i < b.len() && b[i].is_ascii_whitespace() {
            i += 1;
        }
        if i < b.len() && b[i] == b'{' {
            i += 1;
            let mut paths = Vec::new();
            loop {
                let (sub, used) = use_tree(&s[i..]);
                i += used;
                for p in sub {
                    let mut full = prefix.clone();
                    full.extend(p);
                    paths.push(full);
                }
                while i < b.len() && b[i].is_ascii_whitespace() {
                    i += 1;
                }
                match b.get(i) {
                    Some(b',') => i += 1,
                    Some(b'}') => {
                        i += 1;
                        break;
                    }
                    _ => break,
                }
                // A trailing comma before the closing brace.
                let ahead = s[i..].trim_start();
                if ahead.starts_with('}') {
                    i = s.len() - ahead.len() + 1;
                    break;
                }
            }
            if paths.is_empty() {
                paths.push(prefix);
            }
            return (paths, i);
        }
        let start = i;
        while i < b.len() && (b[i].is_ascii_alphanumeric() || b[i] == b'_') {
            i += 1;
        }
        if i == start {
            return (vec![prefix], i);
        }
        prefix.push(s[start..i].to_string());
        if s[i..].starts_with("::") {
            i += 2;
        } else {
            return (vec![prefix], i);
        }
    }
}

/// Every path in `code` that starts at `crate`, `super` or `self`, with its byte
/// offset. `self` alone (a method receiver, `Self`) is no path.
fn crate_paths(code: &str) -> Vec<(usize, Vec<String>)> {
    let b = code.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while i < b.len() {
        let word_start = i == 0 || !(b[i - 1].is_ascii_alphanumeric() || b[i - 1] == b'_');
        let starts = ["crate::", "super::", "self::"]
            .iter()
            .any(|p| b[i..].starts_with(p.as_bytes()));
        if word_start && starts && (i < 2 || &b[i - 2..i] != b"::") {
            let (paths, used) = use_tree(&code[i..]);
            out.extend(paths.into_iter().map(|p| (i, p)));
            i += used.max(1);
        } else {
            i += 1;
        }
    }
    out
}

/// The module `segments` (as written in `from`) name: absolute segments first,
/// then the deepest known module among their prefixes, followed through a
/// `pub use` of the next segment when there is one.
fn resolve(
    from: &Source,
    segments: &[String],
    modules: &BTreeSet<String>,
    reexports: &BTreeMap<(String, String), String>,
) -> Option<String> {
    let mut base: Vec<String> = if from.module.is_empty() {
        Vec::new()
    } else {
        from.module.split("::").map(str::to_string).collect()
    };
    let mut segs = segments.iter().peekable();
    match segs.peek().map(|s| s.as_str()) {
        Some("crate") => {
            base.clear();
            segs.next();
        }
        Some("self") => {
            segs.next();
        }
        Some("super") => {
            // `super` is the parent module, for `a/b.rs` and `a/b/mod.rs` alike.
            while segs.peek().is_some_and(|s| s.as_str() == "super") {
                base.pop();
                segs.next();
            }
        }
        _ => {}
    }
    let mut absolute = base;
    absolute.extend(segs.filter(|s| s.as_str() != "self").cloned());
    for k in (0..=absolute.len()).rev() {
        let candidate = absolute[..k].join("::");
        if modules.contains(&candidate) {
            if let Some(item) = absolute.get(k) {
                if let Some(target) = reexports.get(&(candidate.clone(), item.clone())) {
                    return Some(target.clone());
                }
            }
            return Some(candidate);
        }
    }
    None
}

fn sources() -> Vec<Source> {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    rust_files(&src, &mut files);
    let mut sources = Vec::new();
    let mut test_only = BTreeSet::new();
    for file in files {
        let Some(module) = module_of(&src, &file) else {
            continue;
        };
        let text = std::fs::read_to_string(&file)
            .unwrap_or_else(|e| panic!("read {}: {e}", file.display()));
        let mut code = blank_comments_and_literals(&text);
        for name in blank_test_modules(&mut code) {
            let child = if module.is_empty() {
                name
            } else {
                format!("{module}::{name}")
            };
            test_only.insert(child);
        }
        sources.push(Source { module, file, code });
    }
    // Test files, and the modules below them.
    sources.retain(|s| {
        !test_only
            .iter()
            .any(|t| s.module == *t || s.module.starts_with(&format!("{t}::")))
    });
    sources
}

/// Module → the modules it depends on, with where.
fn dependency_graph(sources: &[Source]) -> BTreeMap<String, BTreeMap<String, Evidence>> {
    let modules: BTreeSet<String> = sources.iter().map(|s| s.module.clone()).collect();
    let no_reexports = BTreeMap::new();
    // `pub use a::b::Item;` in module m: m::Item is a's b's Item.
    let mut reexports = BTreeMap::new();
    for s in sources {
        let mut search = 0;
        while let Some(found) = s.code[search..].find("use ") {
            let at = search + found;
            search = at + 4;
            let before = s.code[..at].trim_end();
            let public = before.ends_with("pub") || before.ends_with(')');
            let word_start = at == 0 || !s.code.as_bytes()[at - 1].is_ascii_alphanumeric();
            if !public || !word_start {
                continue;
            }
            let (paths, _) = use_tree(&s.code[search..]);
            for p in paths {
                let Some(item) = p.last().cloned() else {
                    continue;
                };
                let mut relative = p.clone();
                if !matches!(p[0].as_str(), "crate" | "super" | "self") {
                    relative.insert(0, "self".to_string());
                }
                if let Some(target) = resolve(s, &relative, &modules, &no_reexports) {
                    if target != s.module {
                        reexports.insert((s.module.clone(), item), target);
                    }
                }
            }
        }
    }
    let mut graph: BTreeMap<String, BTreeMap<String, Evidence>> = BTreeMap::new();
    for s in sources {
        let deps = graph.entry(s.module.clone()).or_default();
        for (offset, path) in crate_paths(&s.code) {
            let Some(target) = resolve(s, &path, &modules, &reexports) else {
                continue;
            };
            let own_submodule =
                s.module.is_empty() || target.starts_with(&format!("{}::", s.module));
            if target == s.module || own_submodule {
                continue;
            }
            deps.entry(target).or_insert_with(|| Evidence {
                file: s.file.clone(),
                line: s.code[..offset].matches('\n').count() + 1,
                path: path.join("::"),
            });
        }
    }
    graph
}

/// The strongly connected components of more than one module (Tarjan), each sorted.
fn cycles(graph: &BTreeMap<String, BTreeMap<String, Evidence>>) -> BTreeSet<Vec<String>> {
    struct Tarjan<'g> {
        graph: &'g BTreeMap<String, BTreeMap<String, Evidence>>,
        index: BTreeMap<&'g str, usize>,
        low: BTreeMap<&'g str, usize>,
        stack: Vec<&'g str>,
        on_stack: BTreeSet<&'g str>,
        found: BTreeSet<Vec<String>>,
    }
    impl<'g> Tarjan<'g> {
        fn visit(&mut self, v: &'g str) {
            let n = self.index.len();
            self.index.insert(v, n);
            self.low.insert(v, n);
            self.stack.push(v);
            self.on_stack.insert(v);
            let graph = self.graph;
            for w in graph.get(v).into_iter().flat_map(|d| d.keys()) {
                let w = w.as_str();
                if !self.index.contains_key(w) {
                    self.visit(w);
                    let lw = self.low[w];
                    let lv = self.low.get_mut(v).expect("visited");
                    *lv = (*lv).min(lw);
                } else if self.on_stack.contains(w) {
                    let iw = self.index[w];
                    let lv = self.low.get_mut(v).expect("visited");
                    *lv = (*lv).min(iw);
                }
            }
            if self.low[v] == self.index[v] {
                let mut component = Vec::new();
                while let Some(w) = self.stack.pop() {
                    self.on_stack.remove(w);
                    component.push(w.to_string());
                    if w == v {
                        break;
                    }
                }
                if component.len() > 1 {
                    component.sort();
                    self.found.insert(component);
                }
            }
        }
    }
    let mut t = Tarjan {
        graph,
        index: BTreeMap::new(),
        low: BTreeMap::new(),
        stack: Vec::new(),
        on_stack: BTreeSet::new(),
        found: BTreeSet::new(),
    };
    for v in graph.keys() {
        if !t.index.contains_key(v.as_str()) {
            t.visit(v);
        }
    }
    t.found
}

/// The dependencies that lie on a cycle: both ends in one strongly connected
/// component.
fn cycle_edges(graph: &BTreeMap<String, BTreeMap<String, Evidence>>) -> BTreeSet<(String, String)> {
    let components = cycles(graph);
    let mut edges = BTreeSet::new();
    for c in &components {
        for from in c {
            for to in graph.get(from).into_iter().flat_map(|d| d.keys()) {
                if c.contains(to) {
                    edges.insert((from.clone(), to.clone()));
                }
            }
        }
    }
    edges
}

#[test]
fn no_module_depends_on_a_module_that_depends_back_on_it() {
    let sources = sources();
    assert!(
        sources.iter().any(|s| s.module == "tier::reader"),
        "the broker's modules were not found"
    );
    let graph = dependency_graph(&sources);
    let found = cycle_edges(&graph);
    let allowed: BTreeSet<(String, String)> = ALLOWED
        .iter()
        .map(|(from, to)| (from.to_string(), to.to_string()))
        .collect();
    let src = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut message = String::new();
    let new: Vec<&(String, String)> = found.difference(&allowed).collect();
    if !new.is_empty() {
        message.push_str(
            "new dependencies on a module cycle (break the cycle; ALLOWED only shrinks):\n",
        );
        for (from, to) in new {
            let e = &graph[from][to];
            let file = e.file.strip_prefix(src).unwrap_or(&e.file);
            message.push_str(&format!(
                "  {from} -> {to}  ({}:{}: {})\n",
                file.display(),
                e.line,
                e.path
            ));
        }
        message.push_str("cycles now:\n");
        for c in cycles(&graph) {
            message.push_str(&format!("  [{}]\n", c.join(", ")));
        }
    }
    let gone: Vec<&(String, String)> = allowed.difference(&found).collect();
    if !gone.is_empty() {
        message.push_str(
            "allowed dependencies that are no longer on a cycle: remove them from ALLOWED\n",
        );
        for (from, to) in gone {
            message.push_str(&format!("  (\"{from}\", \"{to}\"),\n"));
        }
    }
    assert!(message.is_empty(), "{message}");
}

#[test]
fn a_cycle_through_use_trees_super_and_reexports_is_found() {
    let module = |module: &str, code: &str| Source {
        module: module.to_string(),
        file: PathBuf::from(format!("{module}.rs")),
        code: {
            let mut code = blank_comments_and_literals(code);
            blank_test_modules(&mut code);
            code
        },
    };
    let sources = vec![
        module("", "pub mod tier;\npub mod kafka;\n"),
        module(
            "tier",
            "pub mod cache;\npub mod reader;\npub use reader::Reader;\n",
        ),
        // Through a grouped use tree and a re-export in the parent.
        module("tier::cache", "use crate::{kafka, tier::{Reader}};\n"),
        // Through super, spread over lines.
        module("tier::reader", "use super::{\n    cache::Chunk,\n};\n"),
        // Comments, strings and test modules are no dependencies.
        module(
            "kafka",
            "// crate::tier::cache\nconst S: &str = \"crate::tier::cache\";\n\
             #[cfg(test)]\nmod tests {\n    use crate::tier::cache;\n    fn f() { let _ = '{'; }\n}\n",
        ),
    ];
    let graph = dependency_graph(&sources);
    assert_eq!(
        cycles(&graph),
        BTreeSet::from([vec!["tier::cache".to_string(), "tier::reader".to_string()]])
    );
    assert!(graph["kafka"].is_empty(), "{:?}", graph["kafka"].keys());
    assert!(graph["tier::cache"].contains_key("kafka"));
    assert!(
        !graph["tier"].contains_key("tier::reader"),
        "a parent's own submodule"
    );
}
