//! Snapshot files: `magic | origin: u32 | meta_len: u32 | data_len: u64 | crc32c: u32 |
//! metadata | data`, named `<index:016x>-<term:016x>.snap`. The checksum covers origin,
//! both lengths, the metadata (a protobuf `SnapshotMetadata`, conf state included) and the
//! data. The origin tells recovery whether the snapshot replaces the log (received from
//! the leader) or merely lets it be compacted (taken locally).
//!
//! A snapshot is written to `<name>.tmp`, fsynced, renamed into place and the directory is
//! fsynced, so a snapshot file with its final name is always complete.

use std::fs::{self, File};
use std::io::Write;
use std::path::{Path, PathBuf};

use protobuf::Message as _;
use raft::prelude::{Snapshot, SnapshotMetadata};

use crate::record::Reader;
use crate::{Error, fsync_dir};

const MAGIC: &[u8; 8] = b"CNCDSNP\x01";
const FIXED_LEN: usize = 8 + 4 + 4 + 8 + 4;

/// Where a snapshot came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Origin {
    /// Taken by the local state machine; the log still holds everything after it.
    Local = 1,
    /// Received from the leader; the log must restart right after it.
    Leader = 2,
}
pub(crate) const SNAPSHOT_SUFFIX: &str = ".snap";
pub(crate) const TEMP_SUFFIX: &str = ".tmp";

pub(crate) fn file_name(index: u64, term: u64) -> String {
    format!("{index:016x}-{term:016x}{SNAPSHOT_SUFFIX}")
}

/// Parses `<index>-<term>.snap` into `(index, term)`.
pub(crate) fn parse_file_name(name: &str) -> Option<(u64, u64)> {
    let stem = name.strip_suffix(SNAPSHOT_SUFFIX)?;
    let (index, term) = stem.split_once('-')?;
    if index.len() != 16 || term.len() != 16 {
        return None;
    }
    Some((
        u64::from_str_radix(index, 16).ok()?,
        u64::from_str_radix(term, 16).ok()?,
    ))
}

fn encode(snapshot: &Snapshot, origin: Origin) -> Result<Vec<u8>, Error> {
    let meta = snapshot
        .get_metadata()
        .write_to_bytes()
        .map_err(Error::encode)?;
    let meta_len =
        u32::try_from(meta.len()).map_err(|_| Error::RecordTooLarge { len: meta.len() })?;
    let data = &snapshot.data;
    let mut out = Vec::with_capacity(FIXED_LEN + meta.len() + data.len());
    out.extend_from_slice(MAGIC);
    out.extend_from_slice(&(origin as u32).to_le_bytes());
    out.extend_from_slice(&meta_len.to_le_bytes());
    out.extend_from_slice(&(data.len() as u64).to_le_bytes());
    let crc = crc32c::crc32c_append(
        crc32c::crc32c_append(crc32c::crc32c(&out[8..24]), &meta),
        data,
    );
    out.extend_from_slice(&crc.to_le_bytes());
    out.extend_from_slice(&meta);
    out.extend_from_slice(data);
    Ok(out)
}

fn decode(bytes: &[u8]) -> Result<(Snapshot, Origin), &'static str> {
    let mut reader = Reader::new(bytes);
    if reader.bytes(8) != Some(MAGIC.as_slice()) {
        return Err("bad magic");
    }
    let lengths = bytes.get(8..24).ok_or("file is cut short")?;
    let origin = reader.u32().ok_or("file is cut short")?;
    let meta_len = reader.u32().ok_or("file is cut short")? as usize;
    let data_len = usize::try_from(reader.u64().ok_or("file is cut short")?)
        .map_err(|_| "data length does not fit in memory")?;
    let stored_crc = reader.u32().ok_or("file is cut short")?;
    let meta = reader.bytes(meta_len).ok_or("metadata is cut short")?;
    let data = reader.bytes(data_len).ok_or("data is cut short")?;
    if !reader.rest().is_empty() {
        return Err("trailing bytes after the data");
    }
    let crc = crc32c::crc32c_append(crc32c::crc32c_append(crc32c::crc32c(lengths), meta), data);
    if crc != stored_crc {
        return Err("checksum mismatch");
    }
    let metadata =
        SnapshotMetadata::parse_from_bytes(meta).map_err(|_| "metadata does not decode")?;
    let mut snapshot = Snapshot::default();
    snapshot.set_metadata(metadata);
    snapshot.data = data.to_vec().into();
    let origin = match origin {
        1 => Origin::Local,
        2 => Origin::Leader,
        _ => return Err("unknown origin"),
    };
    Ok((snapshot, origin))
}

/// Durably writes `snapshot` into `dir` (temp file, fsync, rename, directory fsync) and
/// returns the final path.
pub(crate) fn write(dir: &Path, snapshot: &Snapshot, origin: Origin) -> Result<PathBuf, Error> {
    let meta = snapshot.get_metadata();
    let path = dir.join(file_name(meta.index, meta.term));
    let temp = dir.join(format!("{}{TEMP_SUFFIX}", file_name(meta.index, meta.term)));
    let bytes = encode(snapshot, origin)?;
    // etcd's `etcd_snap_fsync_duration_seconds` times writing and syncing the file.
    let writing = std::time::Instant::now();
    let mut file = File::create(&temp).map_err(|e| Error::io(&temp, e))?;
    file.write_all(&bytes).map_err(|e| Error::io(&temp, e))?;
    file.sync_all().map_err(|e| Error::sync(&temp, e))?;
    metrics::histogram!("etcd_snap_fsync_duration_seconds").record(writing.elapsed());
    drop(file);
    fs::rename(&temp, &path).map_err(|e| Error::io(&path, e))?;
    fsync_dir(dir)?;
    Ok(path)
}

pub(crate) fn read(path: &Path) -> Result<(Snapshot, Origin), Error> {
    let bytes = fs::read(path).map_err(|e| Error::io(path, e))?;
    let (snapshot, origin) = decode(&bytes).map_err(|reason| Error::CorruptSnapshot {
        path: path.to_path_buf(),
        reason: reason.to_string(),
    })?;
    let name = path
        .file_name()
        .and_then(|n| n.to_str())
        .unwrap_or_default();
    let meta = snapshot.get_metadata();
    if parse_file_name(name) != Some((meta.index, meta.term)) {
        return Err(Error::CorruptSnapshot {
            path: path.to_path_buf(),
            reason: format!(
                "file name does not match its metadata (index {}, term {})",
                meta.index, meta.term
            ),
        });
    }
    Ok((snapshot, origin))
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn sample() -> Snapshot {
        let mut snapshot = Snapshot::default();
        let meta = snapshot.mut_metadata();
        meta.index = 42;
        meta.term = 7;
        meta.mut_conf_state().voters = vec![1, 2, 3];
        snapshot.data = b"state machine bytes".to_vec().into();
        snapshot
    }

    #[test]
    fn round_trip_and_every_bit_flip_is_detected() {
        let encoded = encode(&sample(), Origin::Leader).unwrap();
        assert_eq!(decode(&encoded).unwrap(), (sample(), Origin::Leader));
        for bit in 0..encoded.len() * 8 {
            let mut damaged = encoded.clone();
            damaged[bit / 8] ^= 1 << (bit % 8);
            assert!(
                decode(&damaged).is_err(),
                "flip of bit {bit} went unnoticed"
            );
        }
        for cut in 0..encoded.len() {
            assert!(decode(&encoded[..cut]).is_err());
        }
    }

    #[test]
    fn file_names_round_trip() {
        assert_eq!(parse_file_name(&file_name(42, 7)), Some((42, 7)));
        assert_eq!(parse_file_name("42-7.snap"), None);
        assert_eq!(parse_file_name(&format!("{}.tmp", file_name(1, 1))), None);
    }
}
