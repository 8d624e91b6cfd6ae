//! Interop with the real thing, Debian's etcd 3.4.23 (Go's bbolt 1.3):
//!
//! 1. a snapshot saved by `etcdctl snapshot save` from a live etcd reads with [`Db`]:
//!    every bucket is there and every revision of `key` decodes to what was put;
//! 2. that snapshot copied through [`Writer`] gives the same `etcdctl snapshot status`
//!    (hash, revision, key count) as the original;
//! 3. a snapshot built from scratch by [`Writer`] passes `snapshot status` and `snapshot
//!    restore`, and an etcd started on the restored data dir serves its keys.
//!
//! The tools are required: without them the test fails with the line that installs them.

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail, ensure};
use base64::Engine as _;
use concord_bolt::{Db, ReadAt, Value, Writer};
use concord_proto::mvccpb::KeyValue;
use prost::Message as _;

const INSTALL: &str = "apt-get install -y etcd-server etcd-client";

/// etcd's buckets, as etcd 3.4 creates them (`mvcc/backend`, `etcdserver`).
const ETCD_BUCKETS: [&str; 10] = [
    "alarm",
    "auth",
    "authRoles",
    "authUsers",
    "cluster",
    "key",
    "lease",
    "members",
    "members_removed",
    "meta",
];

fn etcd() -> PathBuf {
    let path = PathBuf::from("/usr/bin/etcd");
    assert!(
        path.exists(),
        "Debian's etcd 3.4.23 is needed at /usr/bin/etcd: {INSTALL}"
    );
    path
}

fn etcdctl() -> PathBuf {
    std::env::var_os("PATH")
        .and_then(|paths| {
            std::env::split_paths(&paths)
                .map(|dir| dir.join("etcdctl"))
                .find(|candidate| candidate.is_file())
        })
        .unwrap_or_else(|| panic!("etcdctl (etcd 3.4.23) is needed on PATH: {INSTALL}"))
}

fn free_port() -> Result<u16> {
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

/// A running etcd, killed when dropped.
struct Etcd {
    child: Child,
    client: String,
}

impl Drop for Etcd {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Etcd {
    /// Starts a member called `name` on `data_dir`, peer URL `peer` (a free port if none).
    fn start(data_dir: &Path, name: &str, peer: Option<&str>) -> Result<Etcd> {
        let client = format!("127.0.0.1:{}", free_port()?);
        let peer = match peer {
            Some(peer) => peer.to_string(),
            None => format!("http://127.0.0.1:{}", free_port()?),
        };
        let log = std::fs::File::create(data_dir.with_extension("log"))?;
        let child = Command::new(etcd())
            .arg("--name")
            .arg(name)
            .arg("--data-dir")
            .arg(data_dir)
            .arg("--listen-client-urls")
            .arg(format!("http://{client}"))
            .arg("--advertise-client-urls")
            .arg(format!("http://{client}"))
            .arg("--listen-peer-urls")
            .arg(&peer)
            .arg("--initial-advertise-peer-urls")
            .arg(&peer)
            .arg("--initial-cluster")
            .arg(format!("{name}={peer}"))
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .context("starting etcd")?;
        let etcd = Etcd { child, client };
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if etcd.post("/v3/kv/range", r#"{"key":"AA=="}"#).is_ok() {
                return Ok(etcd);
            }
            ensure!(
                Instant::now() < deadline,
                "etcd did not answer within 30 s; see {}",
                data_dir.with_extension("log").display()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// One request to etcd's JSON gateway; the response body.
    fn post(&self, path: &str, body: &str) -> Result<String> {
        let mut stream = TcpStream::connect(&self.client)?;
        stream.set_read_timeout(Some(Duration::from_secs(10)))?;
        write!(
            stream,
            "POST {path} HTTP/1.1\r\nHost: {}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
            self.client,
            body.len()
        )?;
        let mut response = String::new();
        stream.read_to_string(&mut response)?;
        let (head, body) = response
            .split_once("\r\n\r\n")
            .context("no end of headers")?;
        ensure!(head.starts_with("HTTP/1.1 200"), "{path}: {head}\n{body}");
        Ok(body.to_string())
    }

    fn put(&self, key: &[u8], value: &[u8], lease: Option<i64>) -> Result<()> {
        let b64 = base64::engine::general_purpose::STANDARD;
        let lease = lease
            .map(|id| format!(r#","lease":"{id}""#))
            .unwrap_or_default();
        self.post(
            "/v3/kv/put",
            &format!(
                r#"{{"key":"{}","value":"{}"{lease}}}"#,
                b64.encode(key),
                b64.encode(value)
            ),
        )?;
        Ok(())
    }

    fn etcdctl(&self) -> Command {
        let mut command = Command::new(etcdctl());
        command
            .env("ETCDCTL_API", "3")
            .arg("--endpoints")
            .arg(format!("http://{}", self.client));
        command
    }
}

fn run(command: &mut Command) -> Result<String> {
    let output = command
        .output()
        .with_context(|| format!("running {command:?}"))?;
    ensure!(
        output.status.success(),
        "{command:?} failed: {}\n{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    Ok(String::from_utf8_lossy(&output.stdout).into_owned())
}

/// `etcdctl snapshot status FILE -w json`: (hash, revision, totalKey, totalSize).
fn snapshot_status(file: &Path) -> Result<(u64, i64, u64, u64)> {
    let out = run(Command::new(etcdctl())
        .env("ETCDCTL_API", "3")
        .args(["snapshot", "status", "-w", "json"])
        .arg(file))?;
    let json: serde_json::Value = serde_json::from_str(out.trim()).context("status json")?;
    let field = |name: &str| {
        json[name]
            .as_i64()
            .with_context(|| format!("{name} in {out}"))
    };
    Ok((
        field("hash")? as u64,
        field("revision")?,
        field("totalKey")? as u64,
        field("totalSize")? as u64,
    ))
}

/// What `snapshot status` computes (`clientv3/snapshot/v3_snapshot.go`): crc32c over each
/// top-level bucket's name, then its keys and values; the last `key` revision; the
/// number of entries in all buckets.
fn status_of<S: ReadAt>(db: &Db<S>) -> Result<(u64, i64, u64, u64)> {
    let mut hash = 0u32;
    let mut revision = 0i64;
    let mut total = 0u64;
    for bucket in db.root().iter() {
        let bucket = bucket?;
        let Value::Bucket(entries) = bucket.value else {
            bail!("top-level {:?} is not a bucket", bucket.key);
        };
        hash = crc32c::crc32c_append(hash, &bucket.key);
        for entry in entries.iter() {
            let entry = entry?;
            hash = crc32c::crc32c_append(hash, &entry.key);
            if let Value::Data(value) = &entry.value {
                hash = crc32c::crc32c_append(hash, value);
            }
            if bucket.key == b"key" {
                revision = i64::from_be_bytes(entry.key[..8].try_into()?);
            }
            total += 1;
        }
    }
    Ok((
        u64::from(hash),
        revision,
        total,
        db.page_count() * db.page_size(),
    ))
}

/// A `key` bucket key: `main: u64 BE | '_' | sub: u64 BE`, plus `t` for a tombstone.
fn rev_key(main: i64, sub: i64, tombstone: bool) -> Vec<u8> {
    let mut key = main.to_be_bytes().to_vec();
    key.push(b'_');
    key.extend_from_slice(&sub.to_be_bytes());
    if tombstone {
        key.push(b't');
    }
    key
}

/// Copies every bucket of `db` (flat, as etcd's are) through the writer.
fn copy_through_writer<S: ReadAt>(db: &Db<S>, path: &Path) -> Result<()> {
    let mut writer = Writer::create(path)?;
    for bucket in db.root().iter() {
        let bucket = bucket?;
        let Value::Bucket(entries) = bucket.value else {
            bail!("top-level value");
        };
        writer.begin_bucket(&bucket.key)?;
        for entry in entries.iter() {
            let entry = entry?;
            let Value::Data(value) = entry.value else {
                bail!("nested bucket in {:?}", bucket.key);
            };
            writer.put(&entry.key, &value)?;
        }
        writer.end_bucket()?;
    }
    let (file, _) = writer.finish_snapshot()?;
    file.sync_all()?;
    Ok(())
}

/// Flipped bytes and truncations of a file Go's bbolt wrote: an error or a read, never a
/// panic (the proptests in roundtrip.rs do the same on files of our writer).
fn damage_never_panics(snapshot: &[u8]) {
    let db_len = snapshot.len() - 32;
    let read_all = |bytes: &[u8]| -> Result<u64, concord_bolt::Error> {
        let db = Db::open(bytes)?;
        db.free_pages()?;
        let mut entries = 0;
        for bucket in db.root().iter() {
            if let Value::Bucket(bucket) = bucket?.value {
                bucket.depth()?;
                for entry in bucket.iter() {
                    let entry = entry?;
                    bucket.get(&entry.key)?;
                    entries += 1;
                }
            }
        }
        Ok(entries)
    };
    assert!(read_all(&snapshot[..db_len]).is_ok());
    let mut seed = 0x9E37_79B9_7F4A_7C15u64;
    let mut next = move || {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        seed
    };
    let (mut errors, mut reads) = (0, 0);
    for round in 0..1000 {
        let mut bytes = snapshot[..db_len].to_vec();
        for _ in 0..1 + round % 3 {
            let at = (next() % db_len as u64) as usize;
            bytes[at] ^= (next() % 255 + 1) as u8;
        }
        match read_all(&bytes) {
            Ok(_) => reads += 1,
            Err(_) => errors += 1,
        }
        let cut = (next() % db_len as u64) as usize;
        assert!(read_all(&snapshot[..cut]).is_err(), "a cut at {cut} read");
    }
    assert!(errors > 0 && reads > 0, "{errors} errors, {reads} reads");
}

#[test]
fn etcd_snapshots_read_and_ours_are_read_by_etcd() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let etcd = Etcd::start(&dir.path().join("source"), "source", None)?;

    // Writes: many keys (so `key` has branch pages), a value past a page (overflow
    // pages), overwrites, a delete (a tombstone), a key under a lease, a user.
    let mut expected: BTreeMap<Vec<u8>, Vec<u8>> = BTreeMap::new();
    for i in 0..1500 {
        let key = format!("/registry/item/{i:05}").into_bytes();
        let value = format!("value of item {i}").into_bytes();
        etcd.put(&key, &value, None)?;
        expected.insert(key, value);
    }
    let large: Vec<u8> = (0..20_000u32).map(|i| b'a' + (i % 26) as u8).collect();
    etcd.put(b"/large", &large, None)?;
    expected.insert(b"/large".to_vec(), large.clone());
    etcd.put(b"/registry/item/00007", b"overwritten", None)?;
    expected.insert(b"/registry/item/00007".to_vec(), b"overwritten".to_vec());
    etcd.post(
        "/v3/kv/deleterange",
        &format!(
            r#"{{"key":"{}"}}"#,
            base64::engine::general_purpose::STANDARD.encode("/registry/item/00008")
        ),
    )?;
    expected.remove(b"/registry/item/00008".as_slice());
    let grant: serde_json::Value =
        serde_json::from_str(&etcd.post("/v3/lease/grant", r#"{"TTL":3600}"#)?)?;
    let lease: i64 = grant["ID"]
        .as_str()
        .context("lease id")?
        .parse()
        .context("lease id")?;
    etcd.put(b"/leased", b"by a lease", Some(lease))?;
    expected.insert(b"/leased".to_vec(), b"by a lease".to_vec());
    etcd.post("/v3/auth/user/add", r#"{"name":"alice","password":"pw"}"#)?;

    let saved = dir.path().join("etcd.snap");
    run(etcd.etcdctl().args(["snapshot", "save"]).arg(&saved))?;
    drop(etcd);

    // 1. Read etcd's snapshot.
    let db = Db::open_snapshot(&saved)?;
    let names: Vec<String> = db
        .root()
        .iter()
        .map(|e| Ok(String::from_utf8(e?.key)?))
        .collect::<Result<_>>()?;
    assert_eq!(names, ETCD_BUCKETS);
    let keys = db.bucket(b"key")?.context("key bucket")?;
    assert!(
        keys.depth()? >= 2,
        "1500 revisions should need branch pages"
    );
    let mut latest: BTreeMap<Vec<u8>, Vec<u8>> = BTreeMap::new();
    let mut last_rev = 0;
    let mut revisions = 0;
    for entry in keys.iter() {
        let entry = entry?;
        let Value::Data(value) = entry.value else {
            bail!("a bucket inside key");
        };
        let main = i64::from_be_bytes(entry.key[..8].try_into()?);
        let tombstone = entry.key.len() == 18;
        assert_eq!(
            entry.key,
            rev_key(main, 0, tombstone),
            "revision key layout"
        );
        assert!(main > last_rev, "one change per revision, in order");
        last_rev = main;
        revisions += 1;
        let kv = KeyValue::decode(value.as_slice())?;
        // a tombstone's value is `KeyValue { key }` alone (mvcc/kvstore_txn.go)
        assert_eq!(kv.mod_revision, if tombstone { 0 } else { main });
        if tombstone {
            latest.remove(&kv.key);
        } else {
            if kv.key == b"/leased" {
                assert_eq!(kv.lease, lease);
            }
            latest.insert(kv.key, kv.value);
        }
    }
    assert_eq!(revisions, 1500 + 1 + 1 + 1 + 1);
    assert_eq!(latest, expected);
    // lookups agree with the iteration, the large value included
    let large_rev = rev_key(1501 + 1, 0, false); // revision 1 is the empty store
    let kv = KeyValue::decode(keys.get(&large_rev)?.context("large value")?.as_slice())?;
    assert_eq!(
        (kv.key.as_slice(), kv.value.len()),
        (b"/large".as_slice(), 20_000)
    );
    let meta = db.bucket(b"meta")?.context("meta bucket")?;
    assert_eq!(meta.get(b"consistent_index")?.map(|v| v.len()), Some(8));
    assert_eq!(db.bucket(b"lease")?.context("lease")?.iter().count(), 1);
    assert!(
        db.bucket(b"authUsers")?
            .context("authUsers")?
            .get(b"alice")?
            .is_some()
    );
    // the whole file agrees with what etcdctl itself reports
    let reported = snapshot_status(&saved)?;
    assert_eq!(status_of(&db)?, reported);
    assert_eq!(reported.1, last_rev);

    damage_never_panics(&std::fs::read(&saved)?);

    // 2. The same content through our writer: etcdctl reports the same.
    let copied = dir.path().join("copied.snap");
    copy_through_writer(&db, &copied)?;
    let (hash, revision, total, size) = snapshot_status(&copied)?;
    assert_eq!(
        (hash, revision, total),
        (reported.0, reported.1, reported.2)
    );
    assert!(
        size <= reported.3,
        "compact: {size} vs etcd's {}",
        reported.3
    );

    // 3. A snapshot made from scratch: status, restore, and an etcd serving it.
    let ours = dir.path().join("ours.snap");
    let mut writer = Writer::create(&ours)?;
    let n = 3000i64;
    for bucket in ETCD_BUCKETS {
        writer.begin_bucket(bucket.as_bytes())?;
        match bucket {
            "cluster" => writer.put(b"clusterVersion", b"3.4.0")?,
            "key" => {
                for rev in 2..2 + n {
                    let value = if rev == 100 {
                        large.clone()
                    } else {
                        format!("v{rev}").into_bytes()
                    };
                    let kv = KeyValue {
                        key: format!("/ours/{rev:06}").into_bytes(),
                        create_revision: rev,
                        mod_revision: rev,
                        version: 1,
                        value,
                        lease: 0,
                    };
                    writer.put(&rev_key(rev, 0, false), &kv.encode_to_vec())?;
                }
            }
            "meta" => writer.put(b"consistent_index", &(n as u64 + 10).to_be_bytes())?,
            _ => {}
        }
        writer.end_bucket()?;
    }
    let (file, summary) = writer.finish_snapshot()?;
    file.sync_all()?;
    drop(file);
    let (_, revision, total, size) = snapshot_status(&ours)?;
    assert_eq!((revision, total), (n + 1, n as u64 + 2));
    assert_eq!(size, summary.size);

    let restored = dir.path().join("restored");
    let peer = format!("http://127.0.0.1:{}", free_port()?);
    run(Command::new(etcdctl())
        .env("ETCDCTL_API", "3")
        .args(["snapshot", "restore"])
        .arg(&ours)
        .args(["--name", "restored", "--data-dir"])
        .arg(&restored)
        .args(["--initial-cluster", &format!("restored={peer}")])
        .args(["--initial-advertise-peer-urls", &peer]))?;
    ensure!(restored.join("member/snap/db").is_file(), "no restored db");
    let etcd = Etcd::start(&restored, "restored", Some(&peer))?;
    let got = run(etcd
        .etcdctl()
        .args(["get", "/ours/000100", "--print-value-only"]))?;
    assert_eq!(got.trim_end().as_bytes(), large.as_slice());
    let count = run(etcd
        .etcdctl()
        .args(["get", "/ours/", "--prefix", "--limit", "1", "-w", "json"]))?;
    let count: serde_json::Value = serde_json::from_str(count.trim())?;
    assert_eq!(count["count"].as_i64(), Some(n), "{count}");
    let status = run(etcd.etcdctl().args(["endpoint", "status", "-w", "json"]))?;
    let status: serde_json::Value = serde_json::from_str(status.trim())?;
    assert_eq!(
        status[0]["Status"]["header"]["revision"].as_i64(),
        Some(n + 1)
    );
    Ok(())
}
