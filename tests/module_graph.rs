//! The crate's top-level modules form no dependency cycle, of any length (issue 19, item 1).
//!
//! A module depends on another when its code (comments and `#[cfg(test)]` parts left out) names
//! `crate::other`, or `crate::Error` (the `error` module). Every strongly connected component
//! of that graph must be a single module; a failure names the modules of each cycle and the
//! edges between them, so the fix is plain: give the lower layer its own type.

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::path::Path;

type Graph = BTreeMap<String, BTreeSet<String>>;

/// Code without `//` comments (line and doc), cut at the first `#[cfg(test)]`.
fn code(text: &str) -> String {
    let text = text.split("#[cfg(test)]").next().unwrap_or("");
    text.lines()
        .map(|l| match l.find("//") {
            // A `//` inside a string (a URL) is rare in this crate and only adds text.
            Some(i) => &l[..i],
            None => l,
        })
        .collect::<Vec<_>>()
        .join("\n")
}

/// The top-level modules `text` names.
fn deps(text: &str) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    let ident = |s: &str| -> String {
        s.chars()
            .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
            .collect()
    };
    for (i, _) in text.match_indices("crate::") {
        let rest = &text[i + "crate::".len()..];
        if let Some(group) = rest.strip_prefix('{') {
            // use crate::{a::X, b, Error};
            let group = group.split('}').next().unwrap_or("");
            for item in group.split(',') {
                let name = ident(item.trim());
                if !name.is_empty() {
                    out.insert(name);
                }
            }
        } else {
            let name = ident(rest);
            if !name.is_empty() {
                out.insert(name);
            }
        }
    }
    out.into_iter()
        .map(|n| if n == "Error" { "error".into() } else { n })
        .filter(|n| n.chars().next().is_some_and(|c| c.is_ascii_lowercase()))
        .collect()
}

fn walk(dir: &Path, root: &Path, graph: &mut Graph) {
    for entry in fs::read_dir(dir).expect("read src") {
        let path = entry.expect("an entry").path();
        if path.is_dir() {
            walk(&path, root, graph);
            continue;
        }
        if path.extension().is_none_or(|e| e != "rs") {
            continue;
        }
        let rel = path.strip_prefix(root).unwrap();
        let first = rel
            .components()
            .next()
            .unwrap()
            .as_os_str()
            .to_string_lossy();
        let top = first.trim_end_matches(".rs").to_owned();
        if top == "main" || top == "lib" {
            continue;
        }
        let text = fs::read_to_string(&path).expect("read a source file");
        let mut d = deps(&code(&text));
        d.remove(&top);
        graph.entry(top).or_default().extend(d);
    }
}

/// Strongly connected components with more than one module (Tarjan).
fn cycles(graph: &Graph) -> Vec<Vec<String>> {
    struct T<'g> {
        g: &'g Graph,
        index: BTreeMap<&'g str, usize>,
        low: BTreeMap<&'g str, usize>,
        stack: Vec<&'g str>,
        on: BTreeSet<&'g str>,
        next: usize,
        out: Vec<Vec<String>>,
    }
    impl<'g> T<'g> {
        fn visit(&mut self, v: &'g str) {
            self.index.insert(v, self.next);
            self.low.insert(v, self.next);
            self.next += 1;
            self.stack.push(v);
            self.on.insert(v);
            for w in self.g.get(v).into_iter().flatten() {
                let w = w.as_str();
                if !self.g.contains_key(w) {
                    continue;
                }
                if !self.index.contains_key(w) {
                    self.visit(w);
                    let m = self.low[v].min(self.low[w]);
                    self.low.insert(v, m);
                } else if self.on.contains(w) {
                    let m = self.low[v].min(self.index[w]);
                    self.low.insert(v, m);
                }
            }
            if self.low[v] == self.index[v] {
                let mut comp = Vec::new();
                while let Some(w) = self.stack.pop() {
                    self.on.remove(w);
                    comp.push(w.to_owned());
                    if w == v {
                        break;
                    }
                }
                if comp.len() > 1 {
                    comp.sort();
                    self.out.push(comp);
                }
            }
        }
    }
    let mut t = T {
        g: graph,
        index: BTreeMap::new(),
        low: BTreeMap::new(),
        stack: Vec::new(),
        on: BTreeSet::new(),
        next: 0,
        out: Vec::new(),
    };
    for v in graph.keys() {
        if !t.index.contains_key(v.as_str()) {
            t.visit(v);
        }
    }
    t.out
}

#[test]
fn the_module_graph_has_no_cycle() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut graph = Graph::new();
    walk(&root, &root, &mut graph);
    assert!(graph.len() > 10, "read the modules: {graph:?}");
    let found = cycles(&graph);
    let mut why = String::new();
    for comp in &found {
        why.push_str(&format!("a cycle of {} modules: {comp:?}\n", comp.len()));
        for v in comp {
            let inside: Vec<&String> = graph[v].iter().filter(|w| comp.contains(w)).collect();
            why.push_str(&format!("  {v} -> {inside:?}\n"));
        }
    }
    assert!(found.is_empty(), "{why}");
}

#[test]
fn the_cycle_finder_finds_a_loop_that_is_not_a_pair() {
    let mut g = Graph::new();
    for (a, b) in [("a", "b"), ("b", "c"), ("c", "a"), ("c", "d")] {
        g.entry(a.into()).or_default().insert(b.into());
        g.entry(b.into()).or_default();
    }
    g.entry("d".into()).or_default();
    assert_eq!(cycles(&g), vec![vec!["a", "b", "c"]]);
    assert_eq!(
        deps("use crate::{plan::X, Error};\nlet x = crate::journal::y();"),
        ["error", "journal", "plan"]
            .iter()
            .map(|s| s.to_string())
            .collect()
    );
}
