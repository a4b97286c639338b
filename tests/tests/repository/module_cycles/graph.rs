//! The module graph of one crate, read from its sources with `syn`, and the cycles in it.
//!
//! Nodes are modules (`crate` for the root, then `render`, `album::fade`, ...). There is an edge A -> B
//! when code in A (items, `use` trees, paths in expressions, types, patterns and the paths of macros,
//! and the arguments of macros that parse as expressions, such as `format!`) names something through
//! `crate::`, `super::`, `self::`, a child module's name or a name A imported with `use`. The path is
//! resolved to the deepest module it passes through; a name that module re-exports (`pub use`, also
//! through a glob) is followed to the module that defines it, so naming `crate::Error` is a use of
//! `error`, not of the root.
//!
//! Parent and child: a module's use of its own descendants is NOT an edge. A parent declares its
//! children, re-exports and dispatches to them (lib.rs's `run` calling `master::run`): that is the
//! ownership, and counting it would make every child's `crate::Streams` or `super::Shared` a cycle with
//! its facade. A descendant's use of an ancestor IS an edge, so a cycle through a parent's own items
//! (`album::fade -> render -> album`) is found. `#[cfg(test)]` modules and items are skipped.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::path::{Path, PathBuf};

use syn::visit::Visit;

/// A module's path from the crate root (empty for the root).
pub type ModulePath = Vec<String>;

/// Where an edge was seen first: the file, its line, and the path as written.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Evidence {
    pub file: PathBuf,
    pub line: usize,
    pub path: String,
}

/// One crate's modules and the uses between them.
#[derive(Default)]
pub struct ModuleGraph {
    modules: BTreeMap<ModulePath, Module>,
    /// Each edge with the first place it is seen.
    pub edges: BTreeMap<(ModulePath, ModulePath), Evidence>,
}

struct Module {
    file: PathBuf,
    items: Vec<syn::Item>,
    /// Names imported by `use` (alias -> the path as written).
    imports: BTreeMap<String, Vec<String>>,
    /// `use path::*` targets, as written.
    globs: Vec<Vec<String>>,
    /// Names of the items defined here.
    defined: BTreeSet<String>,
}

/// The name a module is printed with: `crate` for the root, else `a::b`.
pub fn module_name(path: &[String]) -> String {
    if path.is_empty() {
        "crate".to_owned()
    } else {
        path.join("::")
    }
}

impl ModuleGraph {
    /// Reads the crate whose root file (lib.rs, main.rs, ...) is `root_file`, following `mod`
    /// declarations.
    pub fn read(root_file: &Path) -> Result<Self, String> {
        let mut graph = ModuleGraph::default();
        let children_dir = root_file.parent().unwrap_or(Path::new(".")).to_path_buf();
        graph.load_file(Vec::new(), root_file, &children_dir)?;
        let paths: Vec<ModulePath> = graph.modules.keys().cloned().collect();
        for path in paths {
            graph.collect_edges(&path);
        }
        Ok(graph)
    }

    /// The crate's module names.
    pub fn module_names(&self) -> Vec<String> {
        self.modules.keys().map(|m| module_name(m)).collect()
    }

    /// The edges as `a -> b` strings.
    pub fn edge_names(&self) -> Vec<String> {
        self.edges
            .keys()
            .map(|(a, b)| format!("{} -> {}", module_name(a), module_name(b)))
            .collect()
    }

    fn load_file(
        &mut self,
        path: ModulePath,
        file: &Path,
        children_dir: &Path,
    ) -> Result<(), String> {
        let text = std::fs::read_to_string(file).map_err(|e| format!("{}: {e}", file.display()))?;
        let parsed = syn::parse_file(&text)
            .map_err(|e| format!("{}:{}: {e}", file.display(), e.span().start().line))?;
        self.load_items(path, file, parsed.items, children_dir)
    }

    fn load_items(
        &mut self,
        path: ModulePath,
        file: &Path,
        items: Vec<syn::Item>,
        children_dir: &Path,
    ) -> Result<(), String> {
        let mut imports = BTreeMap::new();
        let mut globs = Vec::new();
        let mut defined = BTreeSet::new();
        let mut children = Vec::new();
        for item in &items {
            if is_test_only(item_attrs(item)) {
                continue;
            }
            match item {
                syn::Item::Use(item_use) => {
                    flatten_use(
                        &item_use.tree,
                        Vec::new(),
                        &mut |segments, alias| match alias {
                            Some(alias) => {
                                imports.insert(alias, segments);
                            }
                            None => globs.push(segments),
                        },
                    );
                }
                syn::Item::Mod(item_mod) => children.push(item_mod.clone()),
                other => {
                    if let Some(name) = item_name(other) {
                        defined.insert(name);
                    }
                }
            }
        }
        self.modules.insert(
            path.clone(),
            Module {
                file: file.to_path_buf(),
                items,
                imports,
                globs,
                defined,
            },
        );
        for child in children {
            let name = child.ident.to_string();
            let mut child_path = path.clone();
            child_path.push(name.clone());
            let path_attr = path_attribute(&child.attrs);
            match child.content {
                Some((_, items)) => {
                    let dir = match &path_attr {
                        Some(p) => children_dir.join(p),
                        None => children_dir.join(&name),
                    };
                    self.load_items(child_path, file, items, &dir)?;
                }
                None => {
                    let (child_file, dir) = match &path_attr {
                        Some(p) => {
                            let child_file = children_dir.join(p);
                            let dir = child_file.parent().unwrap_or(Path::new(".")).to_path_buf();
                            (child_file, dir)
                        }
                        None => {
                            let flat = children_dir.join(format!("{name}.rs"));
                            if flat.exists() {
                                (flat, children_dir.join(&name))
                            } else {
                                let dir = children_dir.join(&name);
                                (dir.join("mod.rs"), dir)
                            }
                        }
                    };
                    self.load_file(child_path, &child_file, &dir)?;
                }
            }
        }
        Ok(())
    }

    fn collect_edges(&mut self, path: &ModulePath) {
        let Some(module) = self.modules.get(path) else {
            return;
        };
        let mut collector = PathCollector { found: Vec::new() };
        for item in &module.items {
            collector.visit_item(item);
        }
        let file = module.file.clone();
        for (segments, line) in collector.found {
            let Some(target) = self.resolve(path, &segments, 0) else {
                continue;
            };
            // Self-uses and uses of one's own descendants (the ownership) are not edges.
            if target.starts_with(path) {
                continue;
            }
            let evidence = Evidence {
                file: file.clone(),
                line,
                path: segments.join("::"),
            };
            self.edges
                .entry((path.clone(), target))
                .and_modify(|e| {
                    if evidence < *e {
                        *e = evidence.clone();
                    }
                })
                .or_insert(evidence);
        }
    }

    /// The module that `segments`, written in module `from`, names (the deepest module it reaches,
    /// re-exports followed); `None` when it is not a path into this crate.
    fn resolve(&self, from: &ModulePath, segments: &[String], depth: usize) -> Option<ModulePath> {
        if depth > 16 {
            return None;
        }
        let (first, rest) = segments.split_first()?;
        let (base, rest): (ModulePath, &[String]) = match first.as_str() {
            "crate" => (Vec::new(), rest),
            "self" => (from.clone(), rest),
            "super" => {
                let mut base = from.clone();
                base.pop()?;
                let mut rest = rest;
                while rest.first().is_some_and(|s| s == "super") {
                    base.pop()?;
                    rest = &rest[1..];
                }
                (base, rest)
            }
            name => {
                let mut child = from.clone();
                child.push(name.to_owned());
                if self.modules.contains_key(&child) {
                    (from.clone(), segments)
                } else {
                    let module = self.modules.get(from)?;
                    let imported = module.imports.get(name)?;
                    let mut full = imported.clone();
                    full.extend_from_slice(rest);
                    return self.resolve(from, &full, depth + 1);
                }
            }
        };
        let mut current = base;
        let mut index = 0;
        while index < rest.len() {
            let mut next = current.clone();
            next.push(rest[index].clone());
            if !self.modules.contains_key(&next) {
                break;
            }
            current = next;
            index += 1;
        }
        if let Some(name) = rest.get(index) {
            if let Some(reexported) =
                self.follow_reexport(&current, name, &rest[index + 1..], depth)
            {
                return Some(reexported);
            }
        }
        Some(current)
    }

    /// `name` in `module` when the module does not define it but imports it (`use`, or a glob that
    /// holds it): the module it comes from.
    fn follow_reexport(
        &self,
        module_path: &ModulePath,
        name: &str,
        rest: &[String],
        depth: usize,
    ) -> Option<ModulePath> {
        let module = self.modules.get(module_path)?;
        if module.defined.contains(name) {
            return None;
        }
        if let Some(imported) = module.imports.get(name) {
            let mut full = imported.clone();
            full.extend_from_slice(rest);
            return self.resolve(module_path, &full, depth + 1);
        }
        for glob in &module.globs {
            let Some(source) = self.resolve(module_path, glob, depth + 1) else {
                continue;
            };
            let Some(source_module) = self.modules.get(&source) else {
                continue;
            };
            if source_module.defined.contains(name) || source_module.imports.contains_key(name) {
                let mut full = glob.clone();
                full.push(name.to_owned());
                full.extend_from_slice(rest);
                return self.resolve(module_path, &full, depth + 1);
            }
        }
        None
    }
}

/// A cycle: the modules in order, the first repeated at the end, and each edge's evidence.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Cycle {
    pub modules: Vec<ModulePath>,
    pub evidence: Vec<Evidence>,
}

impl Cycle {
    /// `a -> b -> a`.
    pub fn chain(&self) -> String {
        self.modules
            .iter()
            .map(|m| module_name(m))
            .collect::<Vec<_>>()
            .join(" -> ")
    }
}

/// The shortest cycle through each edge that lies on one, each cycle once (started at its smallest
/// module), shortest first, then by name.
pub fn cycles(graph: &ModuleGraph) -> Vec<Cycle> {
    let mut adjacency: BTreeMap<&ModulePath, BTreeSet<&ModulePath>> = BTreeMap::new();
    for (from, to) in graph.edges.keys() {
        adjacency.entry(from).or_default().insert(to);
    }
    let mut found: BTreeSet<Vec<ModulePath>> = BTreeSet::new();
    for (from, to) in graph.edges.keys() {
        let Some(back) = shortest_path(&adjacency, to, from) else {
            continue;
        };
        let mut ring: Vec<ModulePath> = std::iter::once(from.clone()).chain(back).collect();
        ring.pop(); // `from` again
        let start = (0..ring.len()).min_by_key(|&i| &ring[i]).unwrap_or(0);
        ring.rotate_left(start);
        found.insert(ring);
    }
    let mut cycles: Vec<Cycle> = found
        .into_iter()
        .map(|ring| {
            let mut modules = ring.clone();
            modules.push(ring[0].clone());
            let evidence = modules
                .windows(2)
                .filter_map(|pair| {
                    graph
                        .edges
                        .get(&(pair[0].clone(), pair[1].clone()))
                        .cloned()
                })
                .collect();
            Cycle { modules, evidence }
        })
        .collect();
    cycles.sort_by_key(|c| (c.modules.len(), c.chain()));
    cycles
}

/// The shortest path from `start` to `goal` (both included), breadth first in name order.
fn shortest_path(
    adjacency: &BTreeMap<&ModulePath, BTreeSet<&ModulePath>>,
    start: &ModulePath,
    goal: &ModulePath,
) -> Option<Vec<ModulePath>> {
    let mut previous: BTreeMap<&ModulePath, &ModulePath> = BTreeMap::new();
    let mut queue = VecDeque::from([start]);
    let mut seen = BTreeSet::from([start]);
    while let Some(node) = queue.pop_front() {
        if node == goal {
            let mut path = vec![node.clone()];
            let mut cursor = node;
            while let Some(&before) = previous.get(cursor) {
                path.push(before.clone());
                cursor = before;
            }
            path.reverse();
            return Some(path);
        }
        for &next in adjacency.get(node).into_iter().flatten() {
            if seen.insert(next) {
                previous.insert(next, node);
                queue.push_back(next);
            }
        }
    }
    None
}

/// Collects every multi-segment path (and every `use` path) with its line, skipping nested modules
/// (each is read on its own) and test-only items.
struct PathCollector {
    found: Vec<(Vec<String>, usize)>,
}

impl<'ast> Visit<'ast> for PathCollector {
    fn visit_item(&mut self, item: &'ast syn::Item) {
        if !is_test_only(item_attrs(item)) {
            syn::visit::visit_item(self, item);
        }
    }

    fn visit_item_mod(&mut self, _: &'ast syn::ItemMod) {}

    fn visit_impl_item(&mut self, item: &'ast syn::ImplItem) {
        let attrs: &[syn::Attribute] = match item {
            syn::ImplItem::Const(i) => &i.attrs,
            syn::ImplItem::Fn(i) => &i.attrs,
            syn::ImplItem::Type(i) => &i.attrs,
            syn::ImplItem::Macro(i) => &i.attrs,
            _ => &[],
        };
        if !is_test_only(attrs) {
            syn::visit::visit_impl_item(self, item);
        }
    }

    fn visit_item_use(&mut self, item: &'ast syn::ItemUse) {
        let line = item.use_token.span.start().line;
        flatten_use(&item.tree, Vec::new(), &mut |segments, _| {
            self.found.push((segments, line));
        });
    }

    fn visit_visibility(&mut self, _: &'ast syn::Visibility) {}

    fn visit_path(&mut self, path: &'ast syn::Path) {
        if path.leading_colon.is_none() && path.segments.len() >= 2 {
            let segments = path.segments.iter().map(|s| s.ident.to_string()).collect();
            let line = path
                .segments
                .first()
                .map_or(0, |s| s.ident.span().start().line);
            self.found.push((segments, line));
        }
        syn::visit::visit_path(self, path);
    }

    fn visit_macro(&mut self, mac: &'ast syn::Macro) {
        self.visit_path(&mac.path);
        // Arguments of expression-like macros (format!, vec!, assert!, ...): what syn can parse.
        let parser = syn::punctuated::Punctuated::<syn::Expr, syn::Token![,]>::parse_terminated;
        if let Ok(arguments) = syn::parse::Parser::parse2(parser, mac.tokens.clone()) {
            for argument in &arguments {
                self.visit_expr(argument);
            }
        }
    }
}

/// Calls `emit(segments, alias)` for each path of a `use` tree: `alias` is the name it brings into
/// scope, `None` for a glob.
fn flatten_use(
    tree: &syn::UseTree,
    prefix: Vec<String>,
    emit: &mut dyn FnMut(Vec<String>, Option<String>),
) {
    let with = |name: &syn::Ident| {
        let mut path = prefix.clone();
        path.push(name.to_string());
        path
    };
    match tree {
        syn::UseTree::Path(p) => flatten_use(&p.tree, with(&p.ident), emit),
        syn::UseTree::Name(n) if n.ident == "self" => {
            let alias = prefix.last().cloned();
            emit(prefix.clone(), alias);
        }
        syn::UseTree::Name(n) => emit(with(&n.ident), Some(n.ident.to_string())),
        syn::UseTree::Rename(r) if r.ident == "self" => {
            emit(prefix.clone(), Some(r.rename.to_string()));
        }
        syn::UseTree::Rename(r) => emit(with(&r.ident), Some(r.rename.to_string())),
        syn::UseTree::Glob(_) => emit(prefix.clone(), None),
        syn::UseTree::Group(g) => {
            for tree in &g.items {
                flatten_use(tree, prefix.clone(), emit);
            }
        }
    }
}

fn item_attrs(item: &syn::Item) -> &[syn::Attribute] {
    match item {
        syn::Item::Const(i) => &i.attrs,
        syn::Item::Enum(i) => &i.attrs,
        syn::Item::ExternCrate(i) => &i.attrs,
        syn::Item::Fn(i) => &i.attrs,
        syn::Item::ForeignMod(i) => &i.attrs,
        syn::Item::Impl(i) => &i.attrs,
        syn::Item::Macro(i) => &i.attrs,
        syn::Item::Mod(i) => &i.attrs,
        syn::Item::Static(i) => &i.attrs,
        syn::Item::Struct(i) => &i.attrs,
        syn::Item::Trait(i) => &i.attrs,
        syn::Item::TraitAlias(i) => &i.attrs,
        syn::Item::Type(i) => &i.attrs,
        syn::Item::Union(i) => &i.attrs,
        syn::Item::Use(i) => &i.attrs,
        _ => &[],
    }
}

fn item_name(item: &syn::Item) -> Option<String> {
    let ident = match item {
        syn::Item::Const(i) => &i.ident,
        syn::Item::Enum(i) => &i.ident,
        syn::Item::Fn(i) => &i.sig.ident,
        syn::Item::Macro(i) => i.ident.as_ref()?,
        syn::Item::Static(i) => &i.ident,
        syn::Item::Struct(i) => &i.ident,
        syn::Item::Trait(i) => &i.ident,
        syn::Item::TraitAlias(i) => &i.ident,
        syn::Item::Type(i) => &i.ident,
        syn::Item::Union(i) => &i.ident,
        _ => return None,
    };
    Some(ident.to_string())
}

/// `#[cfg(test)]`, or `#[cfg(all(test, ...))]`: compiled only for the crate's own unit tests.
fn is_test_only(attrs: &[syn::Attribute]) -> bool {
    attrs.iter().any(|attr| {
        if !attr.path().is_ident("cfg") {
            return false;
        }
        let Ok(list) = attr.meta.require_list() else {
            return false;
        };
        let tokens: String = list.tokens.to_string().split_whitespace().collect();
        tokens == "test"
            || (tokens.starts_with("all(") && tokens[4..].split([',', ')']).any(|t| t == "test"))
    })
}

/// The value of `#[path = "..."]`.
fn path_attribute(attrs: &[syn::Attribute]) -> Option<String> {
    attrs.iter().find_map(|attr| {
        let syn::Meta::NameValue(nv) = &attr.meta else {
            return None;
        };
        if !nv.path.is_ident("path") {
            return None;
        }
        match &nv.value {
            syn::Expr::Lit(syn::ExprLit {
                lit: syn::Lit::Str(s),
                ..
            }) => Some(s.value()),
            _ => None,
        }
    })
}
