//! No cycles between modules in any crate of the workspace (issue 19): the equivalent of
//! `cargo modules dependencies --acyclic`, read with `syn` from each crate's sources. `make modules`
//! runs just this test; `make check` and `make test` run it too.
//!
//! How the graph is built (which paths count, parent and child, re-exports) is documented in
//! `module_cycles/graph.rs`.

#[path = "module_cycles/graph.rs"]
mod graph;

use std::path::{Path, PathBuf};

use graph::{Cycle, ModuleGraph, cycles};

/// One library or binary crate of the workspace: what it is called in the report and its root file.
struct CrateRoot {
    label: String,
    root_file: PathBuf,
}

/// Every library and binary crate of the workspace's members (from the root Cargo.toml): `[lib]`
/// and `[[bin]]` paths, else `src/lib.rs`, `src/main.rs` and `src/bin/*`.
fn workspace_crates(workspace: &Path) -> Vec<CrateRoot> {
    let manifest = read_toml(&workspace.join("Cargo.toml"));
    let members = manifest["workspace"]["members"]
        .as_array()
        .expect("the root Cargo.toml lists workspace.members");
    let mut member_dirs = Vec::new();
    for member in members {
        let member = member.as_str().expect("a member is a path");
        match member.strip_suffix("/*") {
            Some(parent) => {
                let mut dirs: Vec<PathBuf> = std::fs::read_dir(workspace.join(parent))
                    .expect("a member glob's folder")
                    .map(|entry| entry.expect("a folder entry").path())
                    .filter(|dir| dir.join("Cargo.toml").exists())
                    .collect();
                dirs.sort();
                member_dirs.extend(dirs);
            }
            None => member_dirs.push(workspace.join(member)),
        }
    }
    let mut crates = Vec::new();
    for dir in member_dirs {
        let package = read_toml(&dir.join("Cargo.toml"));
        let name = package["package"]["name"]
            .as_str()
            .expect("a member has a package name")
            .to_owned();
        let lib = package
            .get("lib")
            .and_then(|lib| lib.get("path"))
            .and_then(|p| p.as_str())
            .unwrap_or("src/lib.rs");
        if dir.join(lib).exists() {
            crates.push(CrateRoot {
                label: name.clone(),
                root_file: dir.join(lib),
            });
        }
        let mut bins: Vec<(String, PathBuf)> = Vec::new();
        for bin in package
            .get("bin")
            .and_then(|b| b.as_array())
            .into_iter()
            .flatten()
        {
            let bin_name = bin["name"]
                .as_str()
                .expect("a [[bin]] has a name")
                .to_owned();
            let path = bin.get("path").and_then(|p| p.as_str()).map_or_else(
                || dir.join("src/bin").join(format!("{bin_name}.rs")),
                |p| dir.join(p),
            );
            bins.push((bin_name, path));
        }
        if dir.join("src/main.rs").exists()
            && !bins.iter().any(|(_, p)| p == &dir.join("src/main.rs"))
        {
            bins.push((name.clone(), dir.join("src/main.rs")));
        }
        if let Ok(entries) = std::fs::read_dir(dir.join("src/bin")) {
            let mut found: Vec<PathBuf> = entries
                .map(|entry| entry.expect("a folder entry").path())
                .map(|p| if p.is_dir() { p.join("main.rs") } else { p })
                .filter(|p| p.extension().is_some_and(|e| e == "rs") && p.exists())
                .collect();
            found.sort();
            for path in found {
                if !bins.iter().any(|(_, p)| p == &path) {
                    let stem = if path.ends_with("main.rs") {
                        path.parent().and_then(|p| p.file_name())
                    } else {
                        path.file_stem()
                    };
                    let bin_name = stem.map(|s| s.to_string_lossy().into_owned());
                    bins.push((bin_name.unwrap_or_default(), path));
                }
            }
        }
        for (bin_name, root_file) in bins {
            crates.push(CrateRoot {
                label: format!("{name} (bin {bin_name})"),
                root_file,
            });
        }
    }
    crates
}

fn read_toml(path: &Path) -> toml::Table {
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    text.parse()
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// The report of `cycles` in crate `label`: `label: a -> b -> a`, then where each edge is, relative to
/// `workspace`.
fn describe(label: &str, cycles: &[Cycle], workspace: &Path) -> String {
    let mut text = String::new();
    for cycle in cycles {
        text.push_str(&format!("{label}: {}\n", cycle.chain()));
        for (pair, evidence) in cycle.modules.windows(2).zip(&cycle.evidence) {
            let file = evidence
                .file
                .strip_prefix(workspace)
                .unwrap_or(&evidence.file);
            text.push_str(&format!(
                "    {} -> {}: {}:{} names `{}`\n",
                graph::module_name(&pair[0]),
                graph::module_name(&pair[1]),
                file.display(),
                evidence.line,
                evidence.path
            ));
        }
    }
    text
}

#[test]
fn no_module_cycles_in_any_crate() {
    // Cargo sets the variable when it runs the test too: pointed at another checkout's tests crate,
    // the test binary checks that checkout.
    let tests_crate = std::env::var_os("CARGO_MANIFEST_DIR")
        .map_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")), PathBuf::from);
    let workspace = tests_crate
        .parent()
        .expect("the tests crate sits in the workspace");
    let crates = workspace_crates(workspace);
    assert!(
        crates.iter().any(|c| c.label == "lathe-engine"),
        "the engine is among the crates checked"
    );
    let mut report = String::new();
    let mut count = 0;
    for krate in &crates {
        let graph = ModuleGraph::read(&krate.root_file).unwrap_or_else(|e| panic!("{e}"));
        let found = cycles(&graph);
        count += found.len();
        report.push_str(&describe(&krate.label, &found, workspace));
    }
    assert!(
        count == 0,
        "{count} module cycles (break each by moving what both modules need into a module of its own):\n{report}"
    );
}

/// Synthetic crates in a temporary folder: `files` are (path under src, text); returns the graph.
fn graph_of(files: &[(&str, &str)]) -> ModuleGraph {
    let dir = tempfile::tempdir().expect("a temporary folder");
    for (path, text) in files {
        let path = dir.path().join("src").join(path);
        std::fs::create_dir_all(path.parent().expect("a parent")).expect("a folder");
        std::fs::write(&path, text).expect("a source file");
    }
    ModuleGraph::read(&dir.path().join("src/lib.rs")).expect("a readable crate")
}

fn chains(graph: &ModuleGraph) -> Vec<String> {
    cycles(graph).iter().map(Cycle::chain).collect()
}

#[test]
fn a_cycle_between_siblings_is_found_with_where_each_edge_is() {
    let graph = graph_of(&[
        ("lib.rs", "mod a;\nmod b;\n"),
        ("a.rs", "use crate::b::B;\npub struct A(B);\n"),
        (
            "b.rs",
            "pub struct B;\n\nfn make() -> crate::a::A {\n    todo!()\n}\n",
        ),
    ]);
    let found = cycles(&graph);
    assert_eq!(
        found.iter().map(Cycle::chain).collect::<Vec<_>>(),
        ["a -> b -> a"]
    );
    let lines: Vec<(String, usize, String)> = found[0]
        .evidence
        .iter()
        .map(|e| {
            (
                e.file
                    .file_name()
                    .map(|n| n.to_string_lossy().into_owned())
                    .unwrap_or_default(),
                e.line,
                e.path.clone(),
            )
        })
        .collect();
    assert_eq!(
        lines,
        [
            ("a.rs".to_owned(), 1, "crate::b::B".to_owned()),
            ("b.rs".to_owned(), 3, "crate::a::A".to_owned())
        ]
    );
}

#[test]
fn an_acyclic_crate_passes() {
    let graph = graph_of(&[
        (
            "lib.rs",
            "pub mod a;\npub mod b;\npub mod c;\npub use a::A;\n",
        ),
        ("a.rs", "pub struct A(pub crate::b::B);\n"),
        ("b.rs", "pub struct B(pub crate::c::C);\n"),
        ("c.rs", "pub struct C;\n"),
    ]);
    assert_eq!(graph.edge_names(), ["a -> b", "b -> c"]);
    assert!(chains(&graph).is_empty());
}

#[test]
fn super_paths_resolve_to_the_parent_and_its_children() {
    let graph = graph_of(&[
        ("lib.rs", "mod p;\n"),
        ("p/mod.rs", "mod x;\nmod y;\npub struct Shared;\n"),
        (
            "p/x.rs",
            "pub fn f() -> super::y::Y {\n    super::y::Y\n}\n",
        ),
        (
            "p/y.rs",
            "pub struct Y;\npub fn g() {\n    let _ = super::x::f();\n}\n",
        ),
    ]);
    assert_eq!(graph.edge_names(), ["p::x -> p::y", "p::y -> p::x"]);
    assert_eq!(chains(&graph), ["p::x -> p::y -> p::x"]);
}

#[test]
fn use_groups_resolve_to_each_module_named() {
    let graph = graph_of(&[
        ("lib.rs", "mod a;\nmod user;\n"),
        ("a/mod.rs", "pub mod b;\npub mod c;\n"),
        ("a/b.rs", "pub fn f() {}\n"),
        ("a/c.rs", "pub struct D;\n"),
        (
            "user.rs",
            "use crate::a::{b, c::D};\n\nfn go(_: D) {\n    b::f();\n}\n",
        ),
    ]);
    assert_eq!(graph.edge_names(), ["user -> a::b", "user -> a::c"]);
}

#[test]
fn test_modules_and_items_are_ignored() {
    let graph = graph_of(&[
        ("lib.rs", "mod a;\nmod b;\n"),
        (
            "a.rs",
            "pub struct A;\n\n#[cfg(test)]\nmod tests {\n    use crate::b::B;\n}\n\n#[cfg(test)]\nfn helper() -> crate::b::B {\n    crate::b::B\n}\n",
        ),
        ("b.rs", "pub struct B(crate::a::A);\n"),
    ]);
    assert_eq!(graph.edge_names(), ["b -> a"]);
    assert!(chains(&graph).is_empty());
    assert_eq!(graph.module_names(), ["crate", "a", "b"]);
}

#[test]
fn a_parent_using_its_children_is_ownership_but_a_child_using_its_parent_counts() {
    let graph = graph_of(&[
        (
            "lib.rs",
            "mod album;\nmod render;\npub struct Streams;\n\npub fn run() {\n    render::go();\n}\n",
        ),
        (
            "album/mod.rs",
            "pub mod fade;\npub struct Album;\n\npub fn plan() {\n    fade::apply();\n}\n",
        ),
        (
            "album/fade.rs",
            "pub fn apply() {\n    let _ = crate::Streams;\n}\n",
        ),
        (
            "render.rs",
            "pub fn go() {\n    let _ = crate::album::Album;\n}\n",
        ),
    ]);
    assert_eq!(
        graph.edge_names(),
        ["album::fade -> crate", "render -> album"]
    );
    assert!(chains(&graph).is_empty());
}

#[test]
fn reexports_lead_to_the_module_that_defines_the_item() {
    let graph = graph_of(&[
        ("lib.rs", "mod album;\nmod render;\n"),
        (
            "album/mod.rs",
            "mod fade;\nmod gain;\npub use fade::Fade;\npub use gain::*;\n",
        ),
        (
            "album/fade.rs",
            "pub struct Fade(crate::render::TrackFades);\n",
        ),
        (
            "album/gain.rs",
            "pub struct Gain;\nfn apply() {\n    let _ = crate::render::BLOCK_FRAMES;\n}\n",
        ),
        (
            "render.rs",
            "use crate::album::Gain;\npub struct TrackFades;\npub const BLOCK_FRAMES: usize = 4096;\n\nfn go(_: crate::album::Fade, _: Gain) {\n    println!(\"{}\", crate::album::Gain);\n}\n",
        ),
    ]);
    assert_eq!(
        chains(&graph),
        [
            "album::fade -> render -> album::fade",
            "album::gain -> render -> album::gain"
        ]
    );
}

#[test]
fn inline_modules_and_macro_arguments_are_read() {
    let graph = graph_of(&[
        ("lib.rs", "mod a;\nmod outer {\n    pub mod inner;\n}\n"),
        (
            "outer/inner.rs",
            "pub fn f() {\n    println!(\"{}\", crate::a::X);\n}\n",
        ),
        (
            "a.rs",
            "pub const X: u8 = 1;\npub fn g() {\n    crate::outer::inner::f();\n}\n",
        ),
    ]);
    assert_eq!(chains(&graph), ["a -> outer::inner -> a"]);
}
