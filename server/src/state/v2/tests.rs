//! The v2 store's semantics, deterministic: time is only what the requests carry.

use std::sync::{Arc, Mutex};

use super::*;

const SECOND: i64 = 1_000_000_000;
/// 2026-01-01T00:00:00Z.
const T0: i64 = 1_767_225_600 * SECOND;

fn put(path: &str, value: &str) -> Request {
    Request {
        method: Method::Put,
        path: path.into(),
        value: value.into(),
        ..Request::default()
    }
}

fn apply(store: &mut V2Store, request: Request) -> Result<Event, V2Error> {
    store.apply(&request).map(|e| e.expect("an event"))
}

#[test]
fn set_get_and_indexes_move_on_every_change() {
    let mut s = V2Store::default();
    let e = apply(&mut s, put("/foo", "bar")).unwrap();
    assert_eq!(e.action, Action::Set);
    assert!(e.is_created());
    assert_eq!(
        (e.node.modified_index, e.node.created_index, e.etcd_index),
        (1, 1, 1)
    );
    let e = apply(&mut s, put("/foo", "baz")).unwrap();
    assert!(!e.is_created());
    assert_eq!(e.prev_node.as_ref().unwrap().value.as_deref(), Some("bar"));
    assert_eq!((e.node.modified_index, e.node.created_index), (2, 2));
    let got = s.get("/foo", false, false).unwrap();
    assert_eq!(got.node.value.as_deref(), Some("baz"));
    assert_eq!(got.etcd_index, 2);
    let missing = s.get("/nope", false, false).unwrap_err();
    assert_eq!(
        (missing.code, missing.cause.as_str(), missing.index),
        (100, "/nope", 2)
    );
}

#[test]
fn directories_implicit_explicit_listing_and_hidden() {
    let mut s = V2Store::default();
    apply(&mut s, put("/dir/a", "1")).unwrap();
    apply(&mut s, put("/dir/sub/b", "2")).unwrap();
    apply(&mut s, put("/dir/_hidden", "h")).unwrap();
    let mut mk = put("/empty", "");
    mk.dir = true;
    mk.prev_exist = Some(false);
    let e = apply(&mut s, mk).unwrap();
    assert_eq!(e.action, Action::Create);
    assert!(e.node.dir && e.node.value.is_none());

    let list = s.get("/dir", false, true).unwrap();
    let keys: Vec<_> = list
        .node
        .nodes
        .as_ref()
        .unwrap()
        .iter()
        .map(|n| n.key.clone())
        .collect();
    assert_eq!(keys, ["/dir/a", "/dir/sub"]);
    assert!(list.node.nodes.as_ref().unwrap()[1].nodes.is_none());
    let deep = s.get("/dir", true, true).unwrap();
    let sub = &deep.node.nodes.as_ref().unwrap()[1];
    assert_eq!(sub.nodes.as_ref().unwrap()[0].key, "/dir/sub/b");
    assert_eq!(
        s.get("/dir/_hidden", false, false)
            .unwrap()
            .node
            .value
            .as_deref(),
        Some("h")
    );
    // A file is not a directory.
    let err = apply(&mut s, put("/dir/a/x", "1")).unwrap_err();
    assert_eq!((err.code, err.cause.as_str()), (104, "/dir/a"));
    // Root listing has no key.
    let root = s.get("/", false, false).unwrap();
    assert_eq!(root.node.key, "");
    assert!(root.node.dir);
}

#[test]
fn delete_rules_for_files_and_directories() {
    let mut s = V2Store::default();
    apply(&mut s, put("/d/a", "1")).unwrap();
    let del = |path: &str, dir, recursive| Request {
        method: Method::Delete,
        path: path.into(),
        dir,
        recursive,
        ..Request::default()
    };
    assert_eq!(
        apply(&mut s, del("/d", false, false)).unwrap_err().code,
        102
    );
    assert_eq!(apply(&mut s, del("/d", true, false)).unwrap_err().code, 108);
    let e = apply(&mut s, del("/d", false, true)).unwrap();
    assert_eq!(e.action, Action::Delete);
    assert!(e.node.dir && e.prev_node.unwrap().dir);
    assert_eq!(s.get("/d/a", false, false).unwrap_err().code, 100);
    assert_eq!(apply(&mut s, del("/", true, true)).unwrap_err().code, 107);
}

#[test]
fn compare_and_swap_and_delete() {
    let mut s = V2Store::default();
    apply(&mut s, put("/k", "one")).unwrap();
    let mut cas = put("/k", "two");
    cas.prev_value = "zero".into();
    let err = apply(&mut s, cas.clone()).unwrap_err();
    assert_eq!(
        (err.code, err.cause.as_str(), err.index),
        (101, "[zero != one]", 1)
    );
    cas.prev_value = "one".into();
    let e = apply(&mut s, cas).unwrap();
    assert_eq!(e.action, Action::CompareAndSwap);
    let mut cas = put("/k", "three");
    cas.prev_index = 1;
    let err = apply(&mut s, cas).unwrap_err();
    assert_eq!(err.cause, "[1 != 2]");
    let mut update = put("/missing", "x");
    update.prev_exist = Some(true);
    assert_eq!(apply(&mut s, update).unwrap_err().code, 100);
    let mut create = put("/k", "x");
    create.prev_exist = Some(false);
    let err = apply(&mut s, create).unwrap_err();
    assert_eq!((err.code, err.cause.as_str()), (105, "/k"));
    let cad = Request {
        method: Method::Delete,
        path: "/k".into(),
        prev_index: 2,
        ..Request::default()
    };
    let e = apply(&mut s, cad).unwrap();
    assert_eq!(e.action, Action::CompareAndDelete);
    assert_eq!(e.etcd_index, 3);
}

#[test]
fn in_order_keys_sort_by_creation() {
    let mut s = V2Store::default();
    let post = |value: &str| Request {
        method: Method::Post,
        path: "/queue".into(),
        value: value.into(),
        ..Request::default()
    };
    let a = apply(&mut s, post("a")).unwrap();
    let b = apply(&mut s, post("b")).unwrap();
    assert_eq!(a.node.key, "/queue/00000000000000000001");
    assert_eq!(b.node.key, "/queue/00000000000000000002");
    assert_eq!(a.action, Action::Create);
}

#[test]
fn ttl_expires_only_on_sync_with_expire_events() {
    let mut s = V2Store::default();
    let mut ttl = put("/t", "v");
    ttl.expiration = T0 + 5 * SECOND;
    let e = apply(&mut s, ttl).unwrap();
    assert_eq!(e.node.expire_at, Some(T0 + 5 * SECOND));
    let mut dir = put("/tdir", "");
    dir.dir = true;
    dir.expiration = T0 + 10 * SECOND;
    apply(&mut s, dir).unwrap();
    apply(&mut s, put("/tdir/child", "c")).unwrap();
    assert_eq!(s.next_expiration(), Some(T0 + 5 * SECOND));
    let sync = |time| Request {
        method: Method::Sync,
        time,
        ..Request::default()
    };
    assert_eq!(s.apply(&sync(T0 + 4 * SECOND)), Ok(None));
    assert!(s.get("/t", false, false).is_ok());
    s.apply(&sync(T0 + 5 * SECOND)).unwrap();
    assert_eq!(s.get("/t", false, false).unwrap_err().code, 100);
    assert_eq!(s.index(), 4);
    let last = s.hub.history().last().unwrap().clone();
    assert_eq!((last.action, last.node.modified_index), (Action::Expire, 4));
    s.apply(&sync(T0 + 11 * SECOND)).unwrap();
    assert_eq!(s.get("/tdir/child", false, false).unwrap_err().code, 100);
    assert_eq!(s.next_expiration(), None);
}

#[test]
fn setting_without_ttl_removes_it_and_refresh_keeps_value() {
    let mut s = V2Store::default();
    let mut ttl = put("/t", "v");
    ttl.expiration = T0;
    apply(&mut s, ttl.clone()).unwrap();
    apply(&mut s, put("/t", "w")).unwrap();
    assert_eq!(s.next_expiration(), None);
    apply(&mut s, ttl).unwrap();
    let mut refresh = put("/t", "");
    refresh.refresh = true;
    refresh.prev_exist = Some(true);
    refresh.expiration = T0 + 100 * SECOND;
    let e = apply(&mut s, refresh).unwrap();
    assert!(e.refresh);
    assert_eq!(e.node.value.as_deref(), Some("v"));
    assert_eq!(s.next_expiration(), Some(T0 + 100 * SECOND));
}

type Seen = Arc<Mutex<Vec<Event>>>;

fn sink(seen: &Seen) -> WatchSink {
    let seen = seen.clone();
    Box::new(move |e: &Event| {
        seen.lock().unwrap().push(e.clone());
        true
    })
}

#[test]
fn watchers_recursive_hidden_and_deleted_parents() {
    let mut s = V2Store::default();
    let exact: Seen = Seen::default();
    let recursive: Seen = Seen::default();
    let child: Seen = Seen::default();
    s.watch("/a", false, true, 0, sink(&exact)).unwrap();
    s.watch("/a", true, true, 0, sink(&recursive)).unwrap();
    apply(&mut s, put("/a/b/c", "1")).unwrap();
    s.watch("/a/b/c", false, false, 0, sink(&child)).unwrap();
    apply(&mut s, put("/a/_hidden", "1")).unwrap();
    let del = Request {
        method: Method::Delete,
        path: "/a".into(),
        recursive: true,
        ..Request::default()
    };
    apply(&mut s, del).unwrap();
    let actions = |seen: &Seen| -> Vec<(Action, String)> {
        seen.lock()
            .unwrap()
            .iter()
            .map(|e| (e.action, e.node.key.clone()))
            .collect()
    };
    assert_eq!(actions(&exact), [(Action::Delete, "/a".to_string())]);
    assert_eq!(
        actions(&recursive),
        [
            (Action::Set, "/a/b/c".to_string()),
            (Action::Delete, "/a".to_string())
        ]
    );
    assert_eq!(actions(&child), [(Action::Delete, "/a".to_string())]);
    // The one-shot watcher was removed, the two streams remain.
    assert_eq!(s.watcher_count(), 2);
}

#[test]
fn wait_index_replays_history_and_clears_past_the_window() {
    let mut s = V2Store::default();
    for i in 0..1005 {
        apply(&mut s, put("/k", &i.to_string())).unwrap();
    }
    let seen = Seen::default();
    match s.watch("/k", false, false, 1000, sink(&seen)).unwrap() {
        WatchStart::Immediate(e) => {
            assert_eq!(e.node.modified_index, 1000);
            assert_eq!(e.etcd_index, 1005);
        }
        WatchStart::Registered(_) => panic!("history holds index 1000"),
    }
    let err = match s.watch("/k", false, false, 5, sink(&seen)) {
        Err(err) => err,
        Ok(_) => panic!("index 5 left the history"),
    };
    assert_eq!(err.code, 401);
    assert_eq!(err.cause, "the requested history has been cleared [6/5]");
    assert_eq!(err.index, 1005);
}

#[test]
fn persisted_state_loads_back_identically() {
    let dir = tempfile::tempdir().unwrap();
    let store = concord_mvcc::Store::open(dir.path(), Default::default()).unwrap();
    let mut s = V2Store::default();
    for (i, request) in [put("/a/b", "1"), put("/c", "2"), {
        let mut r = put("/t", "x");
        r.expiration = T0;
        r
    }]
    .into_iter()
    .enumerate()
    {
        let mut batch = store.write_batch();
        apply(&mut s, request).unwrap();
        s.write_changes(&mut batch);
        batch.set_applied_index(i as u64 + 1);
        batch.commit().unwrap();
    }
    let mut batch = store.write_batch();
    s.apply(&Request {
        method: Method::Delete,
        path: "/c".into(),
        ..Request::default()
    })
    .unwrap();
    s.write_changes(&mut batch);
    batch.commit().unwrap();
    let mut loaded = V2Store::load(&store).unwrap();
    assert_eq!(loaded.index(), 4);
    assert_eq!(loaded.nodes, s.nodes);
    assert_eq!(loaded.next_expiration(), Some(T0));
    assert_eq!(loaded.hub.history().count(), 4);
    assert_eq!(loaded.get("/c", false, false).unwrap_err().code, 100);
}

#[test]
fn membership_writes_take_indexes_no_watcher_sees() {
    let mut s = V2Store::default();
    // A one-member bootstrap, as etcd 3.4.23 numbers it: added, published, version.
    s.member_added(0x628170c800dbcee);
    s.member_attributes_set(0x628170c800dbcee);
    s.cluster_version_set();
    assert_eq!(s.index(), 3);
    assert_eq!((s.stats.create_success, s.stats.set_success), (1, 2));
    let root = s.get("/", true, false).unwrap();
    assert_eq!(root.node.nodes, Some(Vec::new()));
    // A watcher of everything from index 1 waits for the first key's write.
    let seen = Arc::new(Mutex::new(Vec::new()));
    let sink_seen = seen.clone();
    let start = s
        .watch(
            "/",
            true,
            false,
            1,
            Box::new(move |e: &Event| {
                sink_seen.lock().unwrap().push(e.index());
                true
            }),
        )
        .unwrap();
    assert!(matches!(start, WatchStart::Registered(_)));
    s.member_removed(7);
    assert_eq!(s.index(), 5, "a removal is a delete and a create");
    apply(&mut s, put("/k", "v")).unwrap();
    assert_eq!(*seen.lock().unwrap(), vec![6]);
}

#[test]
fn auth_tree_writes_follow_etcds_prev_exist_rules() {
    let mut s = V2Store::default();
    let write = |method: Method, path: &str, value: &str, prev_exist: Option<bool>| Request {
        method,
        path: path.into(),
        value: value.into(),
        prev_exist,
        internal: true,
        ..Request::default()
    };
    let created = apply(&mut s, write(Method::Put, "/2/users/a", "{}", Some(false))).unwrap();
    assert!(created.internal);
    assert_eq!(s.index(), 1);
    let exists = apply(&mut s, write(Method::Put, "/2/users/a", "{}", Some(false))).unwrap_err();
    assert_eq!((exists.code, exists.index), (ECODE_NODE_EXIST, 1));
    let missing = apply(&mut s, write(Method::Put, "/2/users/b", "{}", Some(true))).unwrap_err();
    assert_eq!(missing.code, ECODE_KEY_NOT_FOUND);
    apply(
        &mut s,
        write(Method::Put, "/2/users/a", "{\"x\":1}", Some(true)),
    )
    .unwrap();
    assert_eq!(s.auth_node("/2/users/a"), Some(Some("{\"x\":1}")));
    assert_eq!(s.auth_children("/2/users"), vec!["a".to_string()]);
    // The user keys never see the auth tree.
    assert_eq!(
        s.get("/2", false, false).unwrap_err().code,
        ECODE_KEY_NOT_FOUND
    );
    apply(&mut s, write(Method::Delete, "/2/users/a", "", Some(true))).unwrap();
    assert_eq!(s.auth_node("/2/users/a"), None);
    assert_eq!(s.index(), 3);
}
