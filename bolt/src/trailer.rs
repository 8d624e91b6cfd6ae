//! etcd's snapshot trailer: the sha256 of the database bytes, appended after them.
//!
//! etcd's server hashes exactly the bytes it streams (bbolt's `Tx.WriteTo`: the whole
//! database, `pgid * page_size` bytes) and sends the 32-byte digest last
//! (`etcdserver/api/v3rpc/maintenance.go`). etcdctl tells a file with a trailer from one
//! without by its length alone: `len % 512 == 32` (`hasChecksum` in
//! `clientv3/snapshot/v3_snapshot.go`); restore then truncates the 32 bytes and compares.

use std::fs::OpenOptions;
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::Path;

use sha2::{Digest, Sha256};

use crate::{Error, ReadAt};

/// Length of the trailer: one sha256 digest.
pub const TRAILER_SIZE: u64 = 32;

const CHUNK: usize = 64 * 1024;

/// Whether a file of `len` bytes carries a trailer, by etcd's rule (`len % 512 == 32`).
pub fn has_trailer(len: u64) -> bool {
    len % 512 == TRAILER_SIZE
}

/// Checks the sha256 trailer of a snapshot held by `source` and returns the length of
/// the database in front of it. Reads the file once, in 64 KiB pieces.
pub fn verify_trailer<S: ReadAt + ?Sized>(source: &S) -> Result<u64, Error> {
    verify_trailer_named(source, Path::new("<source>"))
}

pub(crate) fn verify_trailer_named<S: ReadAt + ?Sized>(
    source: &S,
    name: &Path,
) -> Result<u64, Error> {
    let len = source.size().map_err(|e| Error::io(name, e))?;
    if !has_trailer(len) {
        return Err(Error::MissingTrailer {
            path: name.to_path_buf(),
            len,
        });
    }
    let db_len = len - TRAILER_SIZE;
    let mut hasher = Sha256::new();
    let mut buf = vec![0; CHUNK];
    let mut offset = 0;
    while offset < db_len {
        let n = (db_len - offset).min(CHUNK as u64) as usize;
        source
            .read_exact_at(&mut buf[..n], offset)
            .map_err(|e| Error::io(name, e))?;
        hasher.update(&buf[..n]);
        offset += n as u64;
    }
    let mut expected = [0; TRAILER_SIZE as usize];
    source
        .read_exact_at(&mut expected, db_len)
        .map_err(|e| Error::io(name, e))?;
    let actual: [u8; 32] = hasher.finalize().into();
    if actual != expected {
        return Err(Error::TrailerMismatch {
            path: name.to_path_buf(),
            expected: hex(&expected),
            actual: hex(&actual),
        });
    }
    Ok(db_len)
}

/// Verifies the trailer of the snapshot file at `path` and truncates it away, leaving the
/// plain database (what etcdctl's restore does to its copy).
pub fn strip_trailer(path: impl AsRef<Path>) -> Result<(), Error> {
    let path = path.as_ref();
    let file = OpenOptions::new()
        .read(true)
        .write(true)
        .open(path)
        .map_err(|e| Error::io(path, e))?;
    let db_len = verify_trailer_named(&file, path)?;
    file.set_len(db_len).map_err(|e| Error::io(path, e))?;
    Ok(())
}

/// Hashes everything in `file` from its start to its end and appends the digest, turning
/// a database file into an etcd snapshot file. Returns the digest.
pub fn append_trailer<F: Read + Write + Seek>(file: &mut F) -> Result<[u8; 32], Error> {
    let name = Path::new("<snapshot>");
    file.seek(SeekFrom::Start(0))
        .map_err(|e| Error::io(name, e))?;
    let mut hasher = Sha256::new();
    let mut buf = vec![0; CHUNK];
    loop {
        let n = file.read(&mut buf).map_err(|e| Error::io(name, e))?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
    }
    let digest: [u8; 32] = hasher.finalize().into();
    file.seek(SeekFrom::End(0))
        .map_err(|e| Error::io(name, e))?;
    file.write_all(&digest).map_err(|e| Error::io(name, e))?;
    Ok(digest)
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use std::io::Cursor;

    use super::*;

    #[test]
    fn a_trailer_appended_verifies_and_any_change_is_caught() {
        let mut file = Cursor::new(vec![7u8; 8192]);
        let digest = append_trailer(&mut file).expect("append");
        let bytes = file.into_inner();
        assert_eq!(bytes.len(), 8192 + 32);
        assert_eq!(&bytes[8192..], &digest);
        assert_eq!(verify_trailer(&bytes).expect("verify"), 8192);

        let mut damaged = bytes.clone();
        damaged[100] ^= 1;
        assert!(matches!(
            verify_trailer(&damaged),
            Err(Error::TrailerMismatch { .. })
        ));
        assert!(matches!(
            verify_trailer(&bytes[..8192]),
            Err(Error::MissingTrailer { len: 8192, .. })
        ));
    }

    #[test]
    fn etcds_length_rule() {
        assert!(has_trailer(4096 * 5 + 32));
        assert!(!has_trailer(4096 * 5));
        assert!(!has_trailer(4096 * 5 + 31));
    }

    #[test]
    fn strip_leaves_the_database() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("snap.db");
        let mut file = Cursor::new(vec![1u8; 4096]);
        append_trailer(&mut file).expect("append");
        std::fs::write(&path, file.into_inner()).expect("write");
        strip_trailer(&path).expect("strip");
        assert_eq!(std::fs::read(&path).expect("read"), vec![1u8; 4096]);
        assert!(matches!(
            strip_trailer(&path),
            Err(Error::MissingTrailer { .. })
        ));
    }
}
