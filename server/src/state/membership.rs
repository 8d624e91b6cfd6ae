//! Cluster membership: member and cluster ids (computed exactly as etcd computes them, so
//! a Concord cluster started with the same flags has the same ids), and the table of
//! members with their names and URLs, kept in the MVCC backend's `members` side table so
//! it travels with raft snapshots; also the ids of removed members, which may never
//! come back, and the rules a membership change must obey (etcd 3.4's
//! `ValidateConfigurationChange`: one learner at most, peer URLs unique, only a learner
//! promoted).

use std::collections::BTreeMap;

use concord_mvcc::{Store, WriteBatch};
use concord_proto::etcdserverpb::Member;
use prost::Message;
use sha1::{Digest, Sha1};
use url::Url;

use crate::config::url_text;
use crate::etcd_error::EtcdError;

pub(crate) const MEMBERS_TABLE: &str = "members";
/// Ids of removed members (etcd keeps them too: a removed id can never rejoin).
pub(crate) const REMOVED_TABLE: &str = "members_removed";

/// Learners a cluster may have at once (etcd 3.4's `maxLearners`).
pub const MAX_LEARNERS: usize = 1;

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
    removed: std::collections::BTreeSet<u64>,
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
        Membership {
            members,
            removed: Default::default(),
        }
    }

    /// A table of `members` as another member described them (a joining member's view
    /// until the leader's snapshot brings the stored one).
    pub fn from_members(members: impl IntoIterator<Item = Member>) -> Membership {
        Membership {
            members: members.into_iter().map(|m| (m.id, m)).collect(),
            removed: Default::default(),
        }
    }

    /// The table as stored in the backend.
    pub fn load(store: &Store) -> Result<Membership, concord_mvcc::Error> {
        let mut members = BTreeMap::new();
        for (_, value) in store.meta_scan(MEMBERS_TABLE)? {
            let member = Member::decode(value.as_slice())
                .map_err(|e| concord_mvcc::Error::Corrupt(format!("member record: {e}")))?;
            members.insert(member.id, member);
        }
        let mut removed = std::collections::BTreeSet::new();
        for (key, _) in store.meta_scan(REMOVED_TABLE)? {
            let id: [u8; 8] = key
                .as_slice()
                .try_into()
                .map_err(|_| concord_mvcc::Error::Corrupt("removed member record".into()))?;
            removed.insert(u64::from_be_bytes(id));
        }
        Ok(Membership { members, removed })
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

    /// Removes one member for good, in memory and in `batch`.
    pub fn remove(&mut self, id: u64, batch: &mut WriteBatch<'_>) -> Option<Member> {
        batch.meta_delete(MEMBERS_TABLE, &id.to_be_bytes());
        batch.meta_put(REMOVED_TABLE, &id.to_be_bytes(), b"");
        self.removed.insert(id);
        self.members.remove(&id)
    }

    /// Keeps `id` alone (`--force-new-cluster`): every other member goes, in memory and
    /// in `batch`, without being marked removed (they may be added again).
    pub fn keep_only(&mut self, id: u64, batch: &mut WriteBatch<'_>) {
        let others: Vec<u64> = self.ids().into_iter().filter(|&m| m != id).collect();
        for other in others {
            batch.meta_delete(MEMBERS_TABLE, &other.to_be_bytes());
            self.members.remove(&other);
        }
    }

    /// Whether `id` was a member and was removed.
    pub fn is_removed(&self, id: u64) -> bool {
        self.removed.contains(&id)
    }

    /// Whether a new member may join with these peer URLs (as a learner or not).
    pub fn check_add(
        &self,
        id: u64,
        peer_urls: &[String],
        is_learner: bool,
    ) -> Result<(), EtcdError> {
        if self.removed.contains(&id) {
            return Err(EtcdError::member_not_found());
        }
        if self.members.contains_key(&id) {
            return Err(EtcdError::member_exist());
        }
        if self.any_uses(peer_urls, None) {
            return Err(EtcdError::peer_url_exist());
        }
        if is_learner && self.learners() + 1 > MAX_LEARNERS {
            return Err(EtcdError::too_many_learners());
        }
        Ok(())
    }

    /// Whether member `id` may take these peer URLs.
    pub fn check_update(&self, id: u64, peer_urls: &[String]) -> Result<(), EtcdError> {
        if !self.members.contains_key(&id) {
            return Err(EtcdError::member_not_found());
        }
        if self.any_uses(peer_urls, Some(id)) {
            return Err(EtcdError::peer_url_exist());
        }
        Ok(())
    }

    /// Whether member `id` is a learner that may be promoted.
    pub fn check_promote(&self, id: u64) -> Result<(), EtcdError> {
        match self.members.get(&id) {
            None => Err(EtcdError::member_not_found()),
            Some(member) if !member.is_learner => Err(EtcdError::member_not_learner()),
            Some(_) => Ok(()),
        }
    }

    /// Whether member `id` exists to be removed.
    pub fn check_remove(&self, id: u64) -> Result<(), EtcdError> {
        if self.members.contains_key(&id) {
            Ok(())
        } else {
            Err(EtcdError::member_not_found())
        }
    }

    fn any_uses(&self, peer_urls: &[String], except: Option<u64>) -> bool {
        self.members
            .values()
            .filter(|m| Some(m.id) != except)
            .any(|m| m.peer_ur_ls.iter().any(|u| peer_urls.contains(u)))
    }

    /// How many members are learners.
    pub fn learners(&self) -> usize {
        self.members.values().filter(|m| m.is_learner).count()
    }

    /// The voting members.
    pub fn voters(&self) -> impl Iterator<Item = &Member> {
        self.members.values().filter(|m| !m.is_learner)
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
