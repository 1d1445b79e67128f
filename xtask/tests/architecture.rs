//! Checks the architecture invariants of ARCHITECTURE.md that code can check.
//!
//! Every check iterates over the workspace members that `cargo metadata` reports, so a
//! crate added later is covered without touching this file, except that it must be placed
//! in [`LAYERS`], the dependency table of the architecture.

#![allow(
    clippy::unwrap_used,
    reason = "test helpers: a failed unwrap is a failed check"
)]

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

use serde_json::Value;

/// Each crate with the crates of this workspace it may depend on. Arrows point down:
/// a crate may only use crates listed above it. Dev-dependencies are not checked, since a
/// test may exercise a crate through a higher layer.
const LAYERS: &[(&str, &[&str])] = &[
    ("pool-core", &[]),
    ("pool-storage", &["pool-core"]),
    ("pool-sqlite", &["pool-core", "pool-storage"]),
    ("pool-azure", &["pool-core", "pool-storage"]),
    ("pool-s3", &["pool-core", "pool-storage"]),
    ("pool-runtime", &["pool-core", "pool-storage"]),
    (
        "pool-cli",
        &[
            "pool-core",
            "pool-storage",
            "pool-sqlite",
            "pool-azure",
            "pool-s3",
            "pool-runtime",
        ],
    ),
    ("xtask", &[]),
];

/// Crates `pool-core` must not reach through its normal or build dependencies: async
/// runtimes and their helpers, storage and HTTP clients, cloud SDKs, and our own crates.
fn forbidden_in_core(name: &str) -> bool {
    const NAMES: &[&str] = &[
        "tokio",
        "async-std",
        "smol",
        "async-trait",
        "futures",
        "mio",
        "rusqlite",
        "libsqlite3-sys",
        "reqwest",
        "hyper",
    ];
    const PREFIXES: &[&str] = &["tokio-", "futures-", "aws-", "azure_", "hyper-", "pool-"];
    NAMES.contains(&name) || PREFIXES.iter().any(|prefix| name.starts_with(prefix))
}

/// Source text that shows `pool-core` reading a clock, doing I/O or being async.
const FORBIDDEN_IN_CORE_SOURCE: &[&str] = &[
    "SystemTime",
    "Instant::now",
    "std::fs",
    "std::net",
    "std::io::stdin",
    "std::process",
    "std::thread",
    "std::env",
    "tokio",
    "async fn",
    ".await",
];

/// One workspace member as `cargo metadata` describes it.
struct Member {
    name: String,
    dir: PathBuf,
    /// Our own crates among its normal and build dependencies.
    internal_deps: BTreeSet<String>,
}

struct Workspace {
    root: PathBuf,
    members: Vec<Member>,
    metadata: Value,
}

fn workspace() -> &'static Workspace {
    static WORKSPACE: OnceLock<Workspace> = OnceLock::new();
    WORKSPACE.get_or_init(load_workspace)
}

fn load_workspace() -> Workspace {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_path_buf();
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let output = Command::new(cargo)
        .args(["metadata", "--format-version", "1", "--all-features"])
        .current_dir(&root)
        .output()
        .expect("cargo metadata runs");
    assert!(
        output.status.success(),
        "cargo metadata failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    let metadata: Value = serde_json::from_slice(&output.stdout).expect("metadata is JSON");
    let member_ids: BTreeSet<&str> = metadata["workspace_members"]
        .as_array()
        .unwrap()
        .iter()
        .map(|id| id.as_str().unwrap())
        .collect();
    let packages = metadata["packages"].as_array().unwrap();
    let member_packages: Vec<&Value> = packages
        .iter()
        .filter(|package| member_ids.contains(package["id"].as_str().unwrap()))
        .collect();
    let member_names: BTreeSet<String> = member_packages
        .iter()
        .map(|package| name_of(package))
        .collect();
    let members = member_packages
        .iter()
        .map(|package| Member {
            name: name_of(package),
            dir: Path::new(package["manifest_path"].as_str().unwrap())
                .parent()
                .unwrap()
                .to_path_buf(),
            internal_deps: package["dependencies"]
                .as_array()
                .unwrap()
                .iter()
                .filter(|dep| dep["kind"].as_str() != Some("dev"))
                .map(name_of)
                .filter(|name| member_names.contains(name))
                .collect(),
        })
        .collect();
    Workspace {
        root,
        members,
        metadata,
    }
}

fn name_of(value: &Value) -> String {
    value["name"].as_str().unwrap().to_owned()
}

fn member(name: &str) -> &'static Member {
    workspace()
        .members
        .iter()
        .find(|member| member.name == name)
        .unwrap_or_else(|| panic!("{name} is a workspace member"))
}

/// Every non-dev dependency of the package `root_name`, transitively, by crate name.
fn transitive_deps(root_name: &str) -> BTreeSet<String> {
    let metadata = &workspace().metadata;
    let names: BTreeMap<&str, &str> = metadata["packages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|package| {
            (
                package["id"].as_str().unwrap(),
                package["name"].as_str().unwrap(),
            )
        })
        .collect();
    let nodes: BTreeMap<&str, &Value> = metadata["resolve"]["nodes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|node| (node["id"].as_str().unwrap(), node))
        .collect();
    let root_id = names
        .iter()
        .find(|(_, name)| **name == root_name)
        .unwrap()
        .0;
    let mut seen = BTreeSet::new();
    let mut queue = vec![*root_id];
    while let Some(id) = queue.pop() {
        for dep in nodes[id]["deps"].as_array().unwrap() {
            let non_dev = dep["dep_kinds"]
                .as_array()
                .unwrap()
                .iter()
                .any(|kind| kind["kind"].as_str() != Some("dev"));
            let dep_id = dep["pkg"].as_str().unwrap();
            if non_dev && seen.insert(dep_id) {
                queue.push(dep_id);
            }
        }
    }
    seen.into_iter().map(|id| names[id].to_owned()).collect()
}

/// Every `.rs` file under `dir`, skipping build output folders.
fn rust_files(dir: &Path) -> Vec<PathBuf> {
    let mut files = Vec::new();
    let mut pending = vec![dir.to_path_buf()];
    while let Some(dir) = pending.pop() {
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            let name = path.file_name().unwrap().to_string_lossy().into_owned();
            if path.is_dir() {
                if !name.starts_with("target") && !name.starts_with('.') {
                    pending.push(path);
                }
            } else if name.ends_with(".rs") {
                files.push(path);
            }
        }
    }
    files.sort();
    files
}

/// The lines of `path` that contain `needle`, outside whole-line comments.
fn code_lines_with(path: &Path, needle: &str) -> Vec<String> {
    let text = std::fs::read_to_string(path).unwrap();
    text.lines()
        .enumerate()
        .filter(|(_, line)| !line.trim_start().starts_with("//"))
        .filter(|(_, line)| line.contains(needle))
        .map(|(number, line)| format!("{}:{}: {}", path.display(), number + 1, line.trim()))
        .collect()
}

/// The `key = value` entries of each `[table]` of a TOML file, whitespace removed.
/// Enough for the flat tables of our manifests; dotted keys are kept as written.
fn toml_tables(path: &Path) -> BTreeMap<String, BTreeMap<String, String>> {
    let text = std::fs::read_to_string(path).unwrap();
    let mut tables: BTreeMap<String, BTreeMap<String, String>> = BTreeMap::new();
    let mut current = String::new();
    for line in text.lines() {
        let line: String = line.split('#').next().unwrap().split_whitespace().collect();
        if let Some(header) = line
            .strip_prefix('[')
            .and_then(|rest| rest.strip_suffix(']'))
        {
            current = header.to_owned();
        } else if let Some((key, value)) = line.split_once('=') {
            let table = tables.entry(current.clone()).or_default();
            table.insert(key.to_owned(), value.to_owned());
        }
    }
    tables
}

#[test]
fn every_member_has_a_place_in_the_layer_table() {
    let placed: BTreeSet<&str> = LAYERS.iter().map(|(name, _)| *name).collect();
    let unplaced: Vec<&str> = workspace()
        .members
        .iter()
        .map(|member| member.name.as_str())
        .filter(|name| !placed.contains(name))
        .collect();
    assert!(
        unplaced.is_empty(),
        "add {unplaced:?} to LAYERS in xtask/tests/architecture.rs and to ARCHITECTURE.md"
    );
}

#[test]
fn dependency_arrows_point_down_the_layer_table() {
    let mut wrong = Vec::new();
    for member in &workspace().members {
        let Some((_, allowed)) = LAYERS.iter().find(|(name, _)| *name == member.name) else {
            continue;
        };
        for dep in &member.internal_deps {
            if !allowed.contains(&dep.as_str()) {
                wrong.push(format!("{} -> {dep}", member.name));
            }
        }
    }
    assert!(
        wrong.is_empty(),
        "dependencies against the layer table: {wrong:?}"
    );
}

#[test]
fn the_layer_table_keeps_backends_and_runtime_apart() {
    let backends = ["pool-sqlite", "pool-azure", "pool-s3"];
    let allowed = |crate_name: &str| {
        LAYERS
            .iter()
            .find(|(name, _)| *name == crate_name)
            .map(|(_, deps)| *deps)
            .unwrap()
    };
    for backend in backends {
        assert_eq!(allowed(backend), ["pool-core", "pool-storage"], "{backend}");
    }
    assert!(
        allowed("pool-runtime")
            .iter()
            .all(|dep| !backends.contains(dep))
    );
    assert!(!allowed("pool-storage").contains(&"pool-runtime"));
}

#[test]
fn pool_core_depends_on_no_async_runtime_and_no_storage_crate() {
    let deps = transitive_deps("pool-core");
    assert!(
        deps.contains("serde"),
        "the dependency walk found pool-core's serde: {deps:?}"
    );
    let forbidden: Vec<&String> = deps.iter().filter(|name| forbidden_in_core(name)).collect();
    assert!(forbidden.is_empty(), "pool-core pulls in {forbidden:?}");
}

#[test]
fn pool_core_reads_no_clock_and_does_no_io() {
    let files = rust_files(&member("pool-core").dir.join("src"));
    assert!(!files.is_empty());
    let found: Vec<String> = files
        .iter()
        .flat_map(|file| {
            FORBIDDEN_IN_CORE_SOURCE
                .iter()
                .flat_map(move |needle| code_lines_with(file, needle))
        })
        .collect();
    assert!(
        found.is_empty(),
        "pool-core source uses a clock, I/O or async:\n{found:#?}"
    );
}

#[test]
fn no_crate_contains_work_marks_or_debug_macros() {
    let needles: Vec<String> = ["todo", "unimplemented", "dbg"]
        .iter()
        .map(|mark| format!("{mark}!("))
        .collect();
    let found: Vec<String> = workspace()
        .members
        .iter()
        .flat_map(|member| rust_files(&member.dir))
        .flat_map(|file| {
            needles
                .iter()
                .flat_map(move |needle| code_lines_with(&file, needle))
        })
        .collect();
    assert!(
        found.is_empty(),
        "unfinished work or debug output:\n{found:#?}"
    );
}

#[test]
fn every_member_uses_the_workspace_lints() {
    let mut missing = Vec::new();
    for member in &workspace().members {
        let tables = toml_tables(&member.dir.join("Cargo.toml"));
        let in_table = tables.get("lints").and_then(|lints| lints.get("workspace"));
        let dotted = tables.get("").and_then(|top| top.get("lints.workspace"));
        if in_table.or(dotted).map(String::as_str) != Some("true") {
            missing.push(member.name.clone());
        }
    }
    assert!(
        missing.is_empty(),
        "add `[lints] workspace = true` to {missing:?}"
    );
}

#[test]
fn the_workspace_lint_baseline_is_in_place() {
    let tables = toml_tables(&workspace().root.join("Cargo.toml"));
    let rust = &tables["workspace.lints.rust"];
    assert_eq!(rust["unsafe_code"], "\"forbid\"");
    assert!(rust.contains_key("missing_docs"));
    assert!(rust.contains_key("unreachable_pub"));
    let clippy = &tables["workspace.lints.clippy"];
    for lint in ["unwrap_used", "dbg_macro", "todo"] {
        assert!(
            clippy.contains_key(lint),
            "clippy::{lint} is missing from the baseline"
        );
    }
}

#[test]
fn no_crate_allows_unwrap_for_the_whole_crate() {
    let found: Vec<String> = workspace()
        .members
        .iter()
        .flat_map(|member| {
            [
                member.dir.join("src/lib.rs"),
                member.dir.join("src/main.rs"),
            ]
        })
        .filter(|root| root.exists())
        .flat_map(|root| code_lines_with(&root, "#![allow(clippy::unwrap_used"))
        .collect();
    assert!(
        found.is_empty(),
        "unwrap is allowed crate-wide:\n{found:#?}"
    );
}

#[test]
fn the_architecture_document_maps_every_member() {
    let path = workspace().root.join("ARCHITECTURE.md");
    let text = std::fs::read_to_string(&path).unwrap();
    let missing: Vec<&str> = workspace()
        .members
        .iter()
        .map(|member| member.name.as_str())
        .filter(|name| !text.contains(&format!("### `{name}`")))
        .collect();
    assert!(
        missing.is_empty(),
        "ARCHITECTURE.md has no `### `name`` section for {missing:?}"
    );
}
