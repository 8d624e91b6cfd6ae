//! Side by side: every script under `tests/scripts/` runs against a fresh Concord member
//! and a fresh member of Debian's etcd 3.4.23, once with the real etcdctl and once with
//! concordctl, and the transcripts must agree (see `concord_tests::side_by_side`).

use concord_tests::side_by_side::{Ctl, Script, Server, ServerKind, assert_same, check};

fn run(name: &str, ctl: Ctl) {
    let script = Script::load(name).unwrap_or_else(|e| panic!("{e:#}"));
    check(&script, ctl);
}

/// One module per script, with a test per ctl. A new script needs its name here (the
/// `every_script_has_a_test` test says so).
macro_rules! scripts {
    ($($name:ident),* $(,)?) => {
        mod side_by_side {
            $(
                mod $name {
                    use concord_tests::side_by_side::Ctl;

                    #[test]
                    fn etcdctl() {
                        crate::run(stringify!($name), Ctl::Etcdctl);
                    }

                    #[test]
                    fn concordctl() {
                        crate::run(stringify!($name), Ctl::Concordctl);
                    }
                }
            )*
        }

        const SCRIPTS: &[&str] = &[$(stringify!($name)),*];
    };
}

scripts!(
    kv,
    txn,
    compaction,
    lease,
    watch,
    cluster,
    member,
    formats,
    maintenance,
    errors,
    help,
    environment,
    tls,
    tls_client_auth,
    writes,
    reads,
    auth,
    rbac_guide,
    credentials,
    lease_keepalive,
    member_maintenance,
    snapshot,
    watch_history,
    v2_keys,
    v2_cli,
    large_range,
    lock_elect,
    mirror,
    check,
    v2_forever,
);

#[test]
fn side_by_side_has_a_test_for_every_script() {
    let names = Script::all_names().unwrap_or_else(|e| panic!("{e:#}"));
    let missing: Vec<&String> = names
        .iter()
        .filter(|name| !SCRIPTS.contains(&name.as_str()))
        .collect();
    assert!(
        missing.is_empty(),
        "scripts without a test: add them to `scripts!` in tests/tests/side_by_side.rs: {missing:?}"
    );
    for name in &names {
        Script::load(name).unwrap_or_else(|e| panic!("{e:#}"));
    }
}

/// The two ctls save the same snapshot of one member byte for byte, and report the same
/// `snapshot status` of each file in every format (a script cannot show this: its runs
/// have members of their own, whose files differ in their random ids).
#[test]
fn snapshot_files_match() {
    for kind in [ServerKind::Etcd, ServerKind::Concord] {
        let server = Server::start(kind, &[]).unwrap_or_else(|e| panic!("{e:#}"));
        for (key, value) in [("a", "1"), ("b", "2")] {
            let put = server
                .invoke(Ctl::Etcdctl, &["put", key, value], None)
                .unwrap_or_else(|e| panic!("{e:#}"));
            assert_eq!(put.status, "exit 0", "{put:?}");
        }
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let mut files = Vec::new();
        for ctl in [Ctl::Etcdctl, Ctl::Concordctl] {
            let path = dir.path().join(format!("{}.db", ctl.name()));
            let path = path.to_string_lossy().into_owned();
            let saved = server
                .invoke(ctl, &["snapshot", "save", &path], None)
                .unwrap_or_else(|e| panic!("{e:#}"));
            assert_eq!(
                (saved.stdout.as_str(), saved.status.as_str()),
                (format!("Snapshot saved at {path}\n").as_str(), "exit 0"),
                "{} against {}: {saved:?}",
                ctl.name(),
                kind.name()
            );
            files.push((
                path.clone(),
                std::fs::read(&path).unwrap_or_else(|e| panic!("{e}")),
            ));
        }
        assert!(!files[0].1.is_empty());
        assert!(
            files[0].1 == files[1].1,
            "{}: concordctl's snapshot differs from etcdctl's",
            kind.name()
        );
        let (path, _) = &files[0];
        for format in ["simple", "json", "fields", "table", "protobuf"] {
            let args = ["snapshot", "status", path, "-w", format];
            let [etcdctl, concordctl] = [Ctl::Etcdctl, Ctl::Concordctl].map(|ctl| {
                server
                    .invoke(ctl, &args, None)
                    .unwrap_or_else(|e| panic!("{e:#}"))
                    .render()
            });
            assert_same(
                &format!("snapshot status -w {format} of {}'s file", kind.name()),
                ("etcdctl", &etcdctl),
                ("concordctl", &concordctl),
            );
        }
    }
}
