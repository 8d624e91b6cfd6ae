//! Side by side: every script under `tests/scripts/` runs against a fresh Concord member
//! and a fresh member of Debian's etcd 3.4.23, once with the real etcdctl and once with
//! concordctl, and the transcripts must agree (see `concord_tests::side_by_side`).

use concord_tests::side_by_side::{Ctl, Script, check};

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
    errors
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
