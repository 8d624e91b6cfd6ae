//! `cargo xtask tidy`: the house rules of `DESIGN.md` that a machine can check, run by
//! `cargo xtask test` before the suite and by the `tidy` integration test inside it.
//!
//! Each rule is a pure function over text (a dependency tree, a source file, a manifest)
//! so that its own tests can show it failing on a broken input; [`run`] only gathers the
//! inputs from the checkout and from cargo.

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, Result, bail};

/// The synchronous libraries: no async runtime anywhere in their normal dependency graph.
pub const PURE_CRATES: &[&str] = &[
    "concord-storage-wal",
    "concord-bolt",
    "concord-raft-core",
    "concord-mvcc",
    "concord-lease",
    "concord-watch",
];

/// Crates that mean "async runtime or network stack" and so must stay out of the pure crates.
pub const FORBIDDEN_IN_PURE: &[&str] = &["tokio", "hyper", "h2", "tonic"];

/// What a user builds (the workspace's binaries): nothing in their build may need a system
/// `protoc`.
pub const USER_BUILT_CRATES: &[&str] = &["concord-server", "concord-ctl", "xtask"];

/// Crates whose build script runs a system `protoc`.
pub const NEEDS_PROTOC: &[&str] = &["etcd-client"];

/// The one file allowed to reach into fjall's engine (lsm-tree), pinned to an exact version.
pub const LSM_TREE_GATEWAY: &str = "mvcc/src/table_read.rs";

/// This file: it names the patterns it looks for.
const TIDY_ITSELF: &str = "xtask/src/tidy.rs";

/// Folders whose code must not use tokio even though their crate does (the synchronous core
/// inside the server).
pub const TOKIO_FREE_FOLDERS: &[&str] = &["server/src/state"];

/// Checks every rule against the workspace at `root`; returns the violations, one line each.
pub fn run(root: &Path) -> Result<Vec<String>> {
    let members = workspace_members(root)?;
    let mut violations = Vec::new();

    for krate in PURE_CRATES {
        let tree = dependency_tree(root, krate, "normal")?;
        violations.extend(forbidden_dependencies(
            krate,
            &tree,
            FORBIDDEN_IN_PURE,
            "a pure crate",
        ));
    }
    for krate in USER_BUILT_CRATES {
        let tree = dependency_tree(root, krate, "normal,build")?;
        violations.extend(forbidden_dependencies(
            krate,
            &tree,
            NEEDS_PROTOC,
            "built by users with only the Rust toolchain",
        ));
    }

    for member in &members {
        for source in &member.root_sources {
            let text = read(source)?;
            if !starts_with_crate_doc(&text) {
                violations.push(format!(
                    "{}: {} does not start with a `//!` doc saying what the crate owns",
                    member.name,
                    relative(root, source).display()
                ));
            } else if source.ends_with("lib.rs") && !crate_doc_has_example(&text) {
                violations.push(format!(
                    "{}: the `//!` doc of {} shows no example",
                    member.name,
                    relative(root, source).display()
                ));
            }
        }
        let manifest_text = read(&member.manifest)?;
        let manifest = relative(root, &member.manifest);
        violations.extend(manifest_violations(&manifest, &manifest_text));
    }

    for file in rust_files(root)? {
        let relative_path = relative(root, &file);
        let text = read(&file)?;
        let path_text = relative_path.to_string_lossy().replace('\\', "/");
        if path_text == TIDY_ITSELF {
            continue;
        }
        if path_text != LSM_TREE_GATEWAY {
            violations.extend(lsm_tree_reaches(&path_text, &text));
        }
        if TOKIO_FREE_FOLDERS
            .iter()
            .any(|folder| path_text.starts_with(&format!("{folder}/")))
        {
            violations.extend(tokio_uses(&path_text, &text));
        }
    }
    Ok(violations)
}

/// One workspace member as `cargo metadata --no-deps` describes it.
struct Member {
    name: String,
    manifest: PathBuf,
    /// The crate roots (`lib.rs`, `main.rs`) of its library and binaries.
    root_sources: Vec<PathBuf>,
}

fn workspace_members(root: &Path) -> Result<Vec<Member>> {
    let output = cargo(root)
        .args(["metadata", "--no-deps", "--format-version", "1"])
        .output()
        .context("run cargo metadata")?;
    if !output.status.success() {
        bail!(
            "cargo metadata failed: {}",
            String::from_utf8_lossy(&output.stderr)
        );
    }
    let metadata: serde_json::Value =
        serde_json::from_slice(&output.stdout).context("parse cargo metadata")?;
    let packages = metadata["packages"]
        .as_array()
        .context("cargo metadata without packages")?;
    let mut members = Vec::new();
    for package in packages {
        let name = package["name"].as_str().unwrap_or_default().to_string();
        let manifest = PathBuf::from(package["manifest_path"].as_str().unwrap_or_default());
        let mut root_sources = Vec::new();
        for target in package["targets"].as_array().into_iter().flatten() {
            let kinds: Vec<&str> = target["kind"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(|kind| kind.as_str())
                .collect();
            let is_crate_root = kinds
                .iter()
                .any(|kind| matches!(*kind, "lib" | "rlib" | "bin" | "proc-macro"));
            if is_crate_root && let Some(path) = target["src_path"].as_str() {
                root_sources.push(PathBuf::from(path));
            }
        }
        members.push(Member {
            name,
            manifest,
            root_sources,
        });
    }
    Ok(members)
}

/// The package names in `krate`'s dependency graph along `edges` (`normal`, or
/// `normal,build`; never dev), one per line.
///
/// Read from `cargo tree -p` rather than from `cargo metadata`'s resolve graph: metadata
/// unifies features across the whole workspace, so the `grpc` feature that the server turns
/// on in `concord-proto` would show tonic under every pure crate although building that
/// crate alone never compiles it. `cargo tree -p` resolves features for that crate alone,
/// which is what a user of the library gets.
fn dependency_tree(root: &Path, krate: &str, edges: &str) -> Result<String> {
    let output = cargo(root)
        .args([
            "tree",
            "--quiet",
            "--package",
            krate,
            "--edges",
            edges,
            "--prefix",
            "none",
            "--format",
            "{p}",
        ])
        .output()
        .with_context(|| format!("run cargo tree -p {krate}"))?;
    if !output.status.success() {
        bail!(
            "cargo tree -p {krate} failed: {}",
            String::from_utf8_lossy(&output.stderr)
        );
    }
    Ok(String::from_utf8_lossy(&output.stdout).into_owned())
}

/// Violations for every `forbidden` crate in a `cargo tree --prefix none --format {p}`
/// listing of `krate`, which is `what` (the reason they are forbidden).
pub fn forbidden_dependencies(
    krate: &str,
    tree: &str,
    forbidden: &[&str],
    what: &str,
) -> Vec<String> {
    let mut found: Vec<&str> = tree
        .lines()
        .filter_map(|line| line.split_whitespace().next())
        .filter(|name| forbidden.contains(name))
        .collect();
    found.sort_unstable();
    found.dedup();
    found
        .into_iter()
        .map(|name| {
            format!(
                "{krate} is {what} but has {name} in its dependency graph \
                 (see `cargo tree -p {krate} -i {name}`)"
            )
        })
        .collect()
}

/// A crate root's first line that is not blank must be a `//!` doc comment.
pub fn starts_with_crate_doc(source: &str) -> bool {
    source
        .lines()
        .map(str::trim_start)
        .find(|line| !line.is_empty())
        .is_some_and(|line| line.starts_with("//!"))
}

/// A library's crate doc shows at least one example (a fenced code block).
pub fn crate_doc_has_example(source: &str) -> bool {
    source
        .lines()
        .map(str::trim_start)
        .skip_while(|line| line.is_empty())
        .take_while(|line| line.starts_with("//!"))
        .any(|line| {
            line.trim_start_matches("//!")
                .trim_start()
                .starts_with("```")
        })
}

/// Rules for a member's `Cargo.toml`: lints and dependency versions live once, in the root.
pub fn manifest_violations(manifest: &Path, text: &str) -> Vec<String> {
    let mut violations = Vec::new();
    let mut section = String::new();
    let mut inherits_lints = false;
    for line in text.lines() {
        let line = line.trim();
        if line.starts_with('[') {
            section = line.trim_matches(|c| c == '[' || c == ']').to_string();
            continue;
        }
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        if section == "lints" && line.replace(' ', "") == "workspace=true" {
            inherits_lints = true;
        }
        let is_dependency_table = matches!(
            section.as_str(),
            "dependencies" | "dev-dependencies" | "build-dependencies"
        );
        if is_dependency_table && let Some((name, spec)) = line.split_once('=') {
            let spec = spec.trim();
            let pins_version = spec.starts_with('"') || spec.contains("version");
            if pins_version {
                violations.push(format!(
                    "{}: [{section}] {} sets its own version; declare it once in the root \
                     Cargo.toml's [workspace.dependencies]",
                    manifest.display(),
                    name.trim()
                ));
            }
        }
    }
    if !inherits_lints {
        violations.push(format!(
            "{}: lacks `[lints] workspace = true` (lints live once, in the root Cargo.toml)",
            manifest.display()
        ));
    }
    violations
}

/// Uses of fjall's engine outside [`LSM_TREE_GATEWAY`]: the `lsm_tree` crate by name, or
/// fjall's `AnyTree`, the door to a keyspace's inner tree.
pub fn lsm_tree_reaches(path: &str, source: &str) -> Vec<String> {
    source
        .lines()
        .enumerate()
        .filter(|(_, line)| line.contains("lsm_tree") || line.contains("AnyTree"))
        .map(|(index, line)| {
            format!(
                "{path}:{}: reaches into lsm-tree outside {LSM_TREE_GATEWAY}: {}",
                index + 1,
                line.trim()
            )
        })
        .collect()
}

/// Lines naming tokio, in code that must stay synchronous.
pub fn tokio_uses(path: &str, source: &str) -> Vec<String> {
    source
        .lines()
        .enumerate()
        .filter(|(_, line)| line.contains("tokio"))
        .map(|(index, line)| {
            format!(
                "{path}:{}: uses tokio in the synchronous core: {}",
                index + 1,
                line.trim()
            )
        })
        .collect()
}

fn rust_files(root: &Path) -> Result<Vec<PathBuf>> {
    let mut files = Vec::new();
    let mut pending = vec![root.to_path_buf()];
    while let Some(dir) = pending.pop() {
        for entry in
            std::fs::read_dir(&dir).with_context(|| format!("read dir {}", dir.display()))?
        {
            let path = entry?.path();
            let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("");
            if path.is_dir() {
                if !name.starts_with('.') && name != "target" {
                    pending.push(path);
                }
            } else if name.ends_with(".rs") {
                files.push(path);
            }
        }
    }
    files.sort();
    Ok(files)
}

fn cargo(root: &Path) -> Command {
    let mut command = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()));
    command.current_dir(root);
    command
}

fn read(path: &Path) -> Result<String> {
    std::fs::read_to_string(path).with_context(|| format!("read {}", path.display()))
}

fn relative(root: &Path, path: &Path) -> PathBuf {
    path.strip_prefix(root).unwrap_or(path).to_path_buf()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_runtime_under_a_pure_crate_is_reported_once() {
        let tree = "concord-mvcc v0.1.0\nconcord-proto v0.1.0\ntonic v0.14.9\n\
                    tokio v1.54.1\ntokio v1.54.1 (*)\nfjall v3.0.0\n";
        let violations = forbidden_dependencies("concord-mvcc", tree, FORBIDDEN_IN_PURE, "pure");
        assert_eq!(violations.len(), 2, "{violations:?}");
        assert!(violations[0].contains("has tokio"));
        assert!(violations[1].contains("has tonic"));
    }

    #[test]
    fn similar_names_are_not_the_forbidden_crates() {
        let tree = "tokio-util-free v1.0.0\nh2o v1.0.0\nhyperloglog v1.0.0\n";
        assert!(
            forbidden_dependencies("concord-watch", tree, FORBIDDEN_IN_PURE, "pure").is_empty()
        );
    }

    #[test]
    fn crate_doc_must_come_first() {
        assert!(starts_with_crate_doc("\n//! Owns the log.\nuse std::fs;\n"));
        assert!(!starts_with_crate_doc("use std::fs;\n//! late\n"));
        assert!(!starts_with_crate_doc("/// an item doc\nfn f() {}\n"));
        assert!(!starts_with_crate_doc(""));
    }

    #[test]
    fn a_protoc_build_under_a_binary_is_reported() {
        let tree = "xtask v0.1.0\netcd-client v0.21.0\ntonic v0.14.9\n";
        let violations = forbidden_dependencies("xtask", tree, NEEDS_PROTOC, "user-built");
        assert_eq!(violations.len(), 1, "{violations:?}");
        assert!(violations[0].contains("has etcd-client"));
    }

    #[test]
    fn crate_doc_needs_an_example() {
        assert!(crate_doc_has_example(
            "//! Owns x.\n//!\n//! ```\n//! x();\n//! ```\nuse y;\n"
        ));
        assert!(!crate_doc_has_example("//! Owns x.\nuse y;\n//! ```\n"));
    }

    #[test]
    fn manifests_inherit_lints_and_versions() {
        let good = "[package]\nname = \"x\"\n\n[lints]\nworkspace = true\n\n\
                    [dependencies]\nprost.workspace = true\nlocal = { path = \"../local\" }\n\
                    tokio = { workspace = true, features = [\"rt\"] }\n";
        assert!(manifest_violations(Path::new("x/Cargo.toml"), good).is_empty());

        let bad = "[package]\nname = \"x\"\n\n[dependencies]\nserde = \"1\"\n\
                   [dev-dependencies]\nrand = { version = \"0.9\" }\n";
        let violations = manifest_violations(Path::new("x/Cargo.toml"), bad);
        assert_eq!(violations.len(), 3, "{violations:?}");
        assert!(violations[0].contains("serde sets its own version"));
        assert!(violations[1].contains("rand sets its own version"));
        assert!(violations[2].contains("lacks `[lints] workspace = true`"));
    }

    #[test]
    fn lsm_tree_is_reported_with_its_line() {
        let source = "use fjall::Keyspace;\nlet fjall::AnyTree::Standard(t) = &ks.tree;\n";
        let violations = lsm_tree_reaches("mvcc/src/store.rs", source);
        assert_eq!(violations.len(), 1);
        assert!(violations[0].starts_with("mvcc/src/store.rs:2:"));
    }

    #[test]
    fn tokio_in_the_core_is_reported() {
        let violations = tokio_uses("server/src/state/apply.rs", "use tokio::sync::mpsc;\n");
        assert_eq!(violations.len(), 1);
        assert!(tokio_uses("server/src/state/apply.rs", "use std::sync::mpsc;\n").is_empty());
    }
}
