//! Files written by the writer read back the same, and damaged files never panic the
//! reader.

use std::collections::BTreeMap;
use std::io::Cursor;

use concord_bolt::{Bucket, Db, Error, PAGE_SIZE, ReadAt, Value, Writer};
use proptest::prelude::*;

/// A bucket's expected contents: plain values and nested buckets.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
struct Tree(BTreeMap<Vec<u8>, Node>);

#[derive(Debug, Clone, PartialEq, Eq)]
enum Node {
    Data(Vec<u8>),
    Bucket(Tree),
}

fn write_tree<W: std::io::Write + std::io::Seek>(
    writer: &mut Writer<W>,
    tree: &Tree,
) -> Result<(), Error> {
    for (key, node) in &tree.0 {
        match node {
            Node::Data(value) => writer.put(key, value)?,
            Node::Bucket(child) => {
                writer.begin_bucket(key)?;
                write_tree(writer, child)?;
                writer.end_bucket()?;
            }
        }
    }
    Ok(())
}

fn read_tree<S: ReadAt>(bucket: &Bucket<'_, S>) -> Result<Tree, Error> {
    let mut tree = Tree::default();
    for entry in bucket.iter() {
        let entry = entry?;
        let node = match entry.value {
            Value::Data(value) => Node::Data(value),
            Value::Bucket(child) => Node::Bucket(read_tree(&child)?),
        };
        tree.0.insert(entry.key, node);
    }
    Ok(tree)
}

/// Writes `root` (whose entries must all be buckets) and returns the file's bytes.
fn build(root: &Tree) -> Vec<u8> {
    let mut writer = Writer::new(Cursor::new(Vec::new())).expect("writer");
    write_tree(&mut writer, root).expect("write");
    let (out, summary) = writer.finish().expect("finish");
    let bytes = out.into_inner();
    assert_eq!(bytes.len() as u64, summary.size);
    bytes
}

fn data(entries: impl IntoIterator<Item = (Vec<u8>, Vec<u8>)>) -> Tree {
    Tree(
        entries
            .into_iter()
            .map(|(k, v)| (k, Node::Data(v)))
            .collect(),
    )
}

fn etcd_like() -> Tree {
    let mut root = Tree::default();
    let key = data((1u64..=20_000).map(|rev| {
        let mut k = rev.to_be_bytes().to_vec();
        k.push(b'_');
        k.extend_from_slice(&0u64.to_be_bytes());
        // every 1000th value is larger than a page: overflow pages
        let len = if rev % 1000 == 0 { 10_000 } else { 40 };
        (k, vec![(rev % 251) as u8; len])
    }));
    root.0.insert(b"key".to_vec(), Node::Bucket(key));
    root.0.insert(
        b"meta".to_vec(),
        Node::Bucket(data([
            (b"consistent_index".to_vec(), 77u64.to_be_bytes().to_vec()),
            (b"finishedCompactRev".to_vec(), vec![0; 16]),
        ])),
    );
    for empty in [
        "alarm",
        "auth",
        "authRoles",
        "authUsers",
        "cluster",
        "lease",
    ] {
        root.0
            .insert(empty.as_bytes().to_vec(), Node::Bucket(Tree::default()));
    }
    root.0.insert(
        b"members".to_vec(),
        Node::Bucket(data([(
            b"8e9e05c52164694d".to_vec(),
            br#"{"id":10276657743932975437,"peerURLs":["http://localhost:2380"]}"#.to_vec(),
        )])),
    );
    root
}

#[test]
fn etcd_like_buckets_round_trip() {
    let root = etcd_like();
    let bytes = build(&root);
    let db = Db::open(&bytes).expect("open");
    assert_eq!(db.page_size(), PAGE_SIZE as u64);
    assert_eq!(db.txid(), 2);
    assert_eq!(db.free_pages().expect("freelist"), Vec::<u64>::new());
    assert_eq!(read_tree(&db.root()).expect("read"), root);

    let keys = db.bucket(b"key").expect("lookup").expect("key bucket");
    assert!(!keys.is_inline());
    for rev in [1u64, 2, 999, 1000, 1001, 12_345, 20_000] {
        let mut k = rev.to_be_bytes().to_vec();
        k.push(b'_');
        k.extend_from_slice(&0u64.to_be_bytes());
        let value = keys.get(&k).expect("get").expect("present");
        assert_eq!(value[0], (rev % 251) as u8);
        assert_eq!(value.len(), if rev % 1000 == 0 { 10_000 } else { 40 });
    }
    assert_eq!(keys.get(b"absent").expect("get"), None);
    assert_eq!(keys.get(&[0xff; 17]).expect("get"), None);
    assert!(
        db.bucket(b"alarm")
            .expect("lookup")
            .expect("alarm")
            .is_inline()
    );
    assert!(db.bucket(b"nope").expect("lookup").is_none());
    // a bucket is not a value and a value is not a bucket
    assert_eq!(db.root().get(b"key").expect("get"), None);
    let meta = db.bucket(b"meta").expect("lookup").expect("meta");
    assert!(meta.bucket(b"consistent_index").expect("lookup").is_none());
}

#[test]
fn deep_trees_nested_and_empty_buckets_round_trip() {
    // Large keys make few per page, so the key bucket gets three branch levels.
    let big_keys = data((0u32..3000).map(|i| {
        let mut k = format!("{i:08}").into_bytes();
        k.resize(600, b'k');
        (k, i.to_le_bytes().to_vec())
    }));
    let mut nested = Tree::default();
    nested
        .0
        .insert(b"a-empty".to_vec(), Node::Bucket(Tree::default()));
    nested.0.insert(b"b-value".to_vec(), Node::Data(vec![]));
    let mut deeper = Tree::default();
    deeper
        .0
        .insert(b"big".to_vec(), Node::Bucket(big_keys.clone()));
    deeper.0.insert(
        b"huge-value".to_vec(),
        Node::Data((0..100_000u32).map(|i| i as u8).collect()),
    );
    nested.0.insert(b"c-deeper".to_vec(), Node::Bucket(deeper));
    let mut root = Tree::default();
    root.0.insert(b"big".to_vec(), Node::Bucket(big_keys));
    root.0
        .insert(b"empty".to_vec(), Node::Bucket(Tree::default()));
    root.0.insert(b"nested".to_vec(), Node::Bucket(nested));
    let bytes = build(&root);
    let db = Db::open(&bytes).expect("open");
    assert_eq!(read_tree(&db.root()).expect("read"), root);
    let deep = db
        .bucket(b"nested")
        .and_then(|b| b.expect("nested").bucket(b"c-deeper"))
        .expect("lookup")
        .expect("c-deeper");
    assert_eq!(
        deep.get(b"huge-value").expect("get").map(|v| v.len()),
        Some(100_000)
    );
}

#[test]
fn an_empty_database_and_the_writers_rules() {
    let bytes = build(&Tree::default());
    assert_eq!(bytes.len(), 4 * PAGE_SIZE);
    let db = Db::open(&bytes).expect("open");
    assert_eq!(db.root().iter().count(), 0);

    let mut writer = Writer::new(Cursor::new(Vec::new())).expect("writer");
    assert!(matches!(writer.put(b"k", b"v"), Err(Error::Invalid(_))));
    writer.begin_bucket(b"b").expect("begin");
    writer.put(b"2", b"").expect("put");
    assert!(matches!(
        writer.put(b"1", b""),
        Err(Error::OutOfOrder { .. })
    ));
    assert!(matches!(
        writer.put(b"2", b""),
        Err(Error::OutOfOrder { .. })
    ));
    assert!(matches!(writer.put(b"", b""), Err(Error::Invalid(_))));
    assert!(matches!(
        writer.begin_bucket(b"0"),
        Err(Error::OutOfOrder { .. })
    ));
    writer.end_bucket().expect("end");
    assert!(matches!(writer.end_bucket(), Err(Error::Invalid(_))));
    assert!(matches!(
        writer.begin_bucket(b"a"),
        Err(Error::OutOfOrder { .. })
    ));
    writer.begin_bucket(b"c").expect("begin");
    assert!(writer.finish().is_err(), "an open bucket");
}

#[test]
fn a_meta_page_damaged_falls_back_to_the_other_and_both_is_an_error() {
    let bytes = build(&etcd_like());
    // meta 0 (txid 2) damaged: meta 1 (txid 1) describes the same tree
    let mut one = bytes.clone();
    one[16 + 20] ^= 0xff;
    let db = Db::open(&one).expect("open with meta 1");
    assert_eq!(db.txid(), 1);
    assert_eq!(db.root().iter().count(), 9);
    let mut both = one.clone();
    both[PAGE_SIZE + 16 + 20] ^= 0xff;
    assert!(matches!(Db::open(&both), Err(Error::NotBolt { .. })));
    // truncation below the meta's page count
    assert!(matches!(
        Db::open(&bytes[..bytes.len() - PAGE_SIZE]),
        Err(Error::Truncated { .. })
    ));
    assert!(matches!(
        Db::open(&bytes[..10]),
        Err(Error::Truncated { .. })
    ));
    assert!(Db::open(&Vec::new()).is_err());
}

#[test]
fn a_hundred_thousand_keys_stream_through_a_file() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("big.snap");
    let mut writer = Writer::create(&path).expect("create");
    writer.begin_bucket(b"key").expect("begin");
    for i in 0u64..100_000 {
        writer.put(&i.to_be_bytes(), &i.to_le_bytes()).expect("put");
    }
    writer.end_bucket().expect("end");
    let (_, summary) = writer.finish_snapshot().expect("finish");
    assert_eq!(summary.keys, 100_000);
    let db = Db::open_snapshot(&path).expect("open");
    let keys = db.bucket(b"key").expect("lookup").expect("key");
    let mut n = 0u64;
    for entry in keys.iter() {
        let entry = entry.expect("entry");
        assert_eq!(entry.key, n.to_be_bytes());
        n += 1;
    }
    assert_eq!(n, 100_000);
    assert_eq!(
        keys.get(&54_321u64.to_be_bytes()).expect("get"),
        Some(54_321u64.to_le_bytes().to_vec())
    );
}

/// Reads everything the reader can reach; errors are fine, panics are not.
fn read_all(bytes: &[u8]) -> Result<Tree, Error> {
    let db = Db::open(bytes)?;
    db.free_pages()?;
    let tree = read_tree(&db.root())?;
    // lookups of every key found must agree with the iteration
    for (name, node) in &tree.0 {
        if let Node::Bucket(child) = node {
            let bucket = db.root().bucket(name)?;
            for (key, node) in &child.0 {
                if let (Some(bucket), Node::Data(value)) = (&bucket, node) {
                    let got = bucket.get(key)?;
                    if got.as_ref() != Some(value) {
                        return Err(Error::Invalid(format!("get disagrees for {key:?}")));
                    }
                }
            }
        }
    }
    Ok(tree)
}

fn small_db() -> Vec<u8> {
    let mut root = Tree::default();
    root.0.insert(
        b"key".to_vec(),
        Node::Bucket(data((0u32..400).map(|i| {
            let len = if i == 200 { 5000 } else { 30 };
            (i.to_be_bytes().to_vec(), vec![i as u8; len])
        }))),
    );
    root.0.insert(
        b"meta".to_vec(),
        Node::Bucket(data([(b"consistent_index".to_vec(), vec![9; 8])])),
    );
    let mut nested = Tree::default();
    nested.0.insert(
        b"inner".to_vec(),
        Node::Bucket(data([(b"x".to_vec(), b"y".to_vec())])),
    );
    root.0.insert(b"nest".to_vec(), Node::Bucket(nested));
    build(&root)
}

/// A damaged bucket value that names the root bucket's own page makes the root contain
/// itself: a walk down nested buckets must end in an error, not recurse until the stack
/// overflows (a proptest of flipped bytes once found such a file).
#[test]
fn a_bucket_inside_itself_is_an_error_not_an_endless_walk() {
    let mut root = Tree::default();
    // large enough that the writer gives "a" pages of its own (not inline)
    root.0.insert(
        b"a".to_vec(),
        Node::Bucket(data(
            (0u32..200).map(|i| (i.to_be_bytes().to_vec(), vec![7u8; 64])),
        )),
    );
    let mut bytes = build(&root);
    assert!(read_all(&bytes).is_ok());

    // meta 0: page header (16 bytes), magic, version, page size, flags, then the root bucket
    let root_page = u64::from_le_bytes(bytes[32..40].try_into().expect("8 bytes"));
    let page = &mut bytes[root_page as usize * PAGE_SIZE..(root_page as usize + 1) * PAGE_SIZE];
    // the root leaf holds key "a" and right after it a's bucket header: its root page id
    let at = (16..PAGE_SIZE - 9)
        .find(|&i| {
            page[i] == b'a' && {
                let id = u64::from_le_bytes(page[i + 1..i + 9].try_into().expect("8 bytes"));
                id > 2 && id < 1000
            }
        })
        .expect("a's bucket header in the root page");
    page[at + 1..at + 9].copy_from_slice(&root_page.to_le_bytes());

    let error = read_all(&bytes).expect_err("a bucket inside itself");
    assert!(
        error.to_string().contains("nested deeper than 64 levels"),
        "{error}"
    );
}

proptest! {
    // A fixed seed, so every run tries the same files, and no regression files written.
    #![proptest_config(ProptestConfig {
        cases: 2000,
        rng_algorithm: proptest::test_runner::RngAlgorithm::ChaCha,
        rng_seed: proptest::test_runner::RngSeed::Fixed(0xb017_5eed),
        failure_persistence: None,
        ..ProptestConfig::default()
    })]

    #[test]
    fn flipped_bytes_give_an_error_or_a_well_formed_read(
        flips in proptest::collection::vec((any::<prop::sample::Index>(), 1u8..=255), 1..8)
    ) {
        let mut bytes = small_db();
        for (at, mask) in flips {
            let i = at.index(bytes.len());
            bytes[i] ^= mask;
        }
        let _ = read_all(&bytes);
    }

    #[test]
    fn flipped_bytes_in_the_page_structures_give_an_error_or_a_read(
        flips in proptest::collection::vec((0usize..64, 0usize..40, 1u8..=255), 1..4)
    ) {
        // aim at headers and element arrays, where damage changes the structure
        let mut bytes = small_db();
        let pages = bytes.len() / PAGE_SIZE;
        for (page, offset, mask) in flips {
            let i = (page % pages) * PAGE_SIZE + offset;
            bytes[i] ^= mask;
        }
        let _ = read_all(&bytes);
    }

    #[test]
    fn truncations_give_an_error_or_a_read(cut in any::<prop::sample::Index>()) {
        let bytes = small_db();
        let len = cut.index(bytes.len());
        prop_assert!(read_all(&bytes[..len]).is_err());
    }

    #[test]
    fn random_trees_round_trip(
        buckets in proptest::collection::btree_map(
            proptest::collection::vec(any::<u8>(), 1..20),
            proptest::collection::btree_map(
                proptest::collection::vec(any::<u8>(), 1..300),
                proptest::collection::vec(any::<u8>(), 0..3000),
                0..60,
            ),
            0..6,
        )
    ) {
        let root = Tree(buckets.into_iter().map(|(name, entries)| (name, Node::Bucket(data(entries)))).collect());
        let bytes = build(&root);
        prop_assert_eq!(read_all(&bytes).expect("read"), root);
    }
}
