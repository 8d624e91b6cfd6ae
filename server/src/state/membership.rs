//! Cluster membership: member and cluster ids (computed exactly as etcd computes them, so
//! a Concord cluster started with the same flags has the same ids), and the table of
//! members with their names and URLs, kept in the MVCC backend's `members` side table so
//! it travels with raft snapshots.

use std::collections::BTreeMap;

use concord_mvcc::{Store, WriteBatch};
use concord_proto::etcdserverpb::Member;
use prost::Message;
use sha1::{Digest, Sha1};
use url::Url;

use crate::config::url_text;

const MEMBERS_TABLE: &str = "members";

/// etcd's member id: the first 8 bytes (big-endian) of sha1(sorted peer URLs joined,
/// cluster token, and for members added at run time the Unix time of the addition).
pub fn member_id(peer_urls: &[Url], token: &str, added_at_unix: Option<i64>) -> u64 {
    let mut urls: Vec<String> = peer_urls.iter().map(url_text).collect();
    urls.sort();
    let mut bytes = urls.concat().into_bytes();
    bytes.extend_from_slice(token.as_bytes());
    if let Some(seconds) = added_at_unix {
        bytes.extend_from_slice(seconds.to_string().as_bytes());
    }
    first_u64(&Sha1::digest(&bytes))
}

/// etcd's cluster id: sha1 over the sorted member ids as 8-byte big-endian numbers.
pub fn cluster_id(member_ids: &[u64]) -> u64 {
    let mut ids = member_ids.to_vec();
    ids.sort_unstable();
    let bytes: Vec<u8> = ids.iter().flat_map(|id| id.to_be_bytes()).collect();
    first_u64(&Sha1::digest(&bytes))
}

fn first_u64(digest: &[u8]) -> u64 {
    let mut first = [0u8; 8];
    first.copy_from_slice(&digest[..8]);
    u64::from_be_bytes(first)
}

/// The members of the cluster by id.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Membership {
    members: BTreeMap<u64, Member>,
}

impl Membership {
    /// The founding members of a new cluster, from `--initial-cluster`.
    pub fn from_initial_cluster(initial: &[(String, Vec<Url>)], token: &str) -> Membership {
        let members = initial
            .iter()
            .map(|(name, urls)| {
                let id = member_id(urls, token, None);
                let member = Member {
                    id,
                    name: name.clone(),
                    peer_ur_ls: urls.iter().map(url_text).collect(),
                    client_ur_ls: Vec::new(),
                    is_learner: false,
                };
                (id, member)
            })
            .collect();
        Membership { members }
    }

    /// The table as stored in the backend.
    pub fn load(store: &Store) -> Result<Membership, concord_mvcc::Error> {
        let mut members = BTreeMap::new();
        for (_, value) in store.meta_scan(MEMBERS_TABLE)? {
            let member = Member::decode(value.as_slice())
                .map_err(|e| concord_mvcc::Error::Corrupt(format!("member record: {e}")))?;
            members.insert(member.id, member);
        }
        Ok(Membership { members })
    }

    /// Writes every member into `batch` (used when the table is first created).
    pub fn save_all(&self, batch: &mut WriteBatch<'_>) {
        for member in self.members.values() {
            batch.meta_put(
                MEMBERS_TABLE,
                &member.id.to_be_bytes(),
                &member.encode_to_vec(),
            );
        }
    }

    /// Adds or replaces one member, in memory and in `batch`.
    pub fn upsert(&mut self, member: Member, batch: &mut WriteBatch<'_>) {
        batch.meta_put(
            MEMBERS_TABLE,
            &member.id.to_be_bytes(),
            &member.encode_to_vec(),
        );
        self.members.insert(member.id, member);
    }

    /// Removes one member, in memory and in `batch`.
    pub fn remove(&mut self, id: u64, batch: &mut WriteBatch<'_>) -> Option<Member> {
        batch.meta_delete(MEMBERS_TABLE, &id.to_be_bytes());
        self.members.remove(&id)
    }

    pub fn get(&self, id: u64) -> Option<&Member> {
        self.members.get(&id)
    }

    pub fn ids(&self) -> Vec<u64> {
        self.members.keys().copied().collect()
    }

    pub fn members(&self) -> impl Iterator<Item = &Member> {
        self.members.values()
    }

    pub fn is_empty(&self) -> bool {
        self.members.is_empty()
    }

    pub fn len(&self) -> usize {
        self.members.len()
    }

    /// Parsed peer URLs of a member (skipping any that no longer parse).
    pub fn peer_urls(&self, id: u64) -> Vec<Url> {
        self.members
            .get(&id)
            .map(|m| {
                m.peer_ur_ls
                    .iter()
                    .filter_map(|u| Url::parse(u).ok())
                    .collect()
            })
            .unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_etcds() {
        // Read off etcd 3.4.23 started with --initial-advertise-peer-urls
        // http://127.0.0.1:23998 and the default token.
        let url = Url::parse("http://127.0.0.1:23998").unwrap();
        let id = member_id(&[url], "etcd-cluster", None);
        assert_eq!(id, 0xa2a5_92c8_6d0e_e294);
        assert_eq!(cluster_id(&[id]), 0x57d4_17fd_0496_2d21);
    }

    #[test]
    fn id_ignores_url_order_and_depends_on_token_and_time() {
        let a = Url::parse("http://10.0.0.1:2380").unwrap();
        let b = Url::parse("http://10.0.0.2:2380").unwrap();
        let ab = member_id(&[a.clone(), b.clone()], "t", None);
        assert_eq!(ab, member_id(&[b.clone(), a.clone()], "t", None));
        assert_ne!(ab, member_id(&[a.clone(), b.clone()], "u", None));
        assert_ne!(ab, member_id(&[a, b], "t", Some(1_700_000_000)));
    }

    #[test]
    fn initial_cluster_members_are_named_without_client_urls() {
        let initial = vec![
            (
                "a".to_string(),
                vec![Url::parse("http://127.0.0.1:1").unwrap()],
            ),
            (
                "b".to_string(),
                vec![Url::parse("http://127.0.0.1:2").unwrap()],
            ),
        ];
        let membership = Membership::from_initial_cluster(&initial, "tok");
        assert_eq!(membership.len(), 2);
        for member in membership.members() {
            assert!(!member.name.is_empty());
            assert!(member.client_ur_ls.is_empty());
            assert_eq!(member.peer_ur_ls.len(), 1);
        }
    }
}
