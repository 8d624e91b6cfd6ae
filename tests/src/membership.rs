//! Runtime reconfiguration for black-box tests: add a member to a running [`Cluster`]
//! the way an operator does (`member add`, then start the new process with
//! `--initial-cluster-state existing` and the `--initial-cluster` the answer implies),
//! remove one, and wait for a removed member to exit.

use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use etcd_client::MemberAddOptions;

use crate::{Cluster, MemberSpec, free_port};

impl Cluster {
    /// `member add` (as a learner if asked) through any member, then starts the new
    /// member and waits until it serves. Returns its index and its member id.
    pub async fn add_member(&mut self, learner: bool) -> Result<(usize, u64)> {
        let (i, id, initial_cluster) = self.announce_member(learner).await?;
        self.spawn_member(i, &initial_cluster, "existing")?;
        self.wait_ready(i)?;
        let through = (0..self.members.len())
            .find(|&j| j != i && self.is_running(j))
            .context("no running member")?;
        let mut client = self.member_client(through).await?;
        // Started, as etcd's reconfiguration checks count it: its name is published.
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let list = client.member_list().await?;
            if list
                .members()
                .iter()
                .any(|m| m.id() == id && !m.name().is_empty())
            {
                return Ok((i, id));
            }
            if Instant::now() > deadline {
                bail!(
                    "member {id:x} never published its name; log:\n{}",
                    self.log(i)
                );
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// `member add` (as a learner if asked) through a running member, with a fresh data
    /// dir, without starting it: returns its index, its member id, and the
    /// `--initial-cluster` it must be started with (see [`Cluster::start_added`]).
    pub async fn announce_member(&mut self, learner: bool) -> Result<(usize, u64, String)> {
        let peer_port = free_port();
        self.announce_member_on(learner, peer_port, peer_port).await
    }

    /// [`Cluster::announce_member`] with the member's peer URL on `peer_port` (what the
    /// cluster dials) while the member will listen on `listen_peer_port`: a test relays
    /// the traffic between them (see [`crate::relay::Relay`]).
    pub async fn announce_member_on(
        &mut self,
        learner: bool,
        peer_port: u16,
        listen_peer_port: u16,
    ) -> Result<(usize, u64, String)> {
        let i = self.members.len();
        let spec = MemberSpec {
            name: format!("m{i}"),
            client_port: free_port(),
            peer_port,
            listen_peer_port,
            data_dir: self._dir.path().join(format!("m{i}.concord")),
        };
        let options = learner.then(|| MemberAddOptions::new().with_is_learner());
        let through = (0..self.members.len())
            .find(|&j| self.is_running(j))
            .context("no running member")?;
        let mut client = self.member_client(through).await?;
        // A leader change (the previous removal may have taken the leader) answers "no
        // leader" for an election's length; an operator tries again, and so does this.
        // An attempt whose answer was lost may still have been applied: the member list
        // then already holds the peer URL.
        let deadline = Instant::now() + Duration::from_secs(60);
        let (id, members) = loop {
            match client.member_add([spec.peer_url()], options.clone()).await {
                Ok(added) => {
                    let id = added
                        .member()
                        .context("member add answers the member")?
                        .id();
                    break (id, added.member_list().to_vec());
                }
                Err(error) if Instant::now() < deadline => {
                    if let Ok(list) = client.member_list().await
                        && let Some(listed) = list
                            .members()
                            .iter()
                            .find(|m| m.peer_urls().contains(&spec.peer_url()))
                    {
                        break (listed.id(), list.members().to_vec());
                    }
                    eprintln!("member add: {error}; trying again");
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
                Err(error) => return Err(error.into()),
            }
        };
        // What `etcdctl member add` prints as ETCD_INITIAL_CLUSTER: the named members,
        // and the new one.
        let initial_cluster = members
            .iter()
            .flat_map(|m| {
                let name = if m.id() == id {
                    spec.name.clone()
                } else {
                    m.name().to_string()
                };
                m.peer_urls()
                    .iter()
                    .map(move |url| format!("{name}={url}"))
                    .collect::<Vec<_>>()
            })
            .filter(|entry| !entry.starts_with('='))
            .collect::<Vec<_>>()
            .join(",");
        self.members.push(spec);
        self.processes.push(None);
        Ok((i, id, initial_cluster))
    }

    /// Starts (or starts again, with its data dir as it is) member `i` that
    /// [`Cluster::announce_member`] added, with the `initial_cluster` it returned.
    pub fn start_added(&mut self, i: usize, initial_cluster: &str) -> Result<()> {
        self.spawn_member(i, initial_cluster, "existing")
    }

    /// The member id of member `i`, as it reports itself.
    pub async fn member_id(&self, i: usize) -> Result<u64> {
        let mut client = self.member_client(i).await?;
        let status = client.status().await?;
        Ok(status.header().map(|h| h.member_id()).unwrap_or(0))
    }

    /// `member remove` of member `i` through another running member, tried again until
    /// the member list no longer holds it: the answer to a removal of the leader can be
    /// lost in the leader change it causes, and etcd's strict reconfiguration check
    /// refuses a removal while a member that just joined has not been connected for long.
    pub async fn remove_member(&mut self, i: usize) -> Result<()> {
        let id = self.member_id(i).await?;
        let deadline = Instant::now() + Duration::from_secs(60);
        let mut failures = Vec::new();
        while Instant::now() < deadline {
            for through in (0..self.members.len()).filter(|&j| j != i && self.is_running(j)) {
                let Ok(mut client) = self.member_client(through).await else {
                    continue;
                };
                match client.member_remove(id).await {
                    Ok(_) => return Ok(()),
                    Err(error) => failures.push(format!("through {through}: {error}")),
                }
                if let Ok(list) = client.member_list().await
                    && !list.members().iter().any(|m| m.id() == id)
                {
                    return Ok(());
                }
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        bail!("member {i} ({id:x}) was never removed: {failures:?}")
    }

    /// Waits until member `i`'s process ends by itself; returns its exit code.
    pub fn wait_exit(&mut self, i: usize, within: Duration) -> Result<Option<i32>> {
        let deadline = Instant::now() + within;
        while Instant::now() < deadline {
            if let Some(child) = self.processes[i].as_mut()
                && let Some(status) = child.try_wait()?
            {
                self.processes[i] = None;
                return Ok(status.code());
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        bail!(
            "member {} is still running; log:\n{}",
            self.members[i].name,
            self.log(i)
        )
    }

    /// The voters and learners every running member lists, by member id.
    pub async fn member_ids(&self, through: usize) -> Result<(Vec<u64>, Vec<u64>)> {
        let mut client = self.member_client(through).await?;
        let list = client.member_list().await?;
        let mut voters = Vec::new();
        let mut learners = Vec::new();
        for m in list.members() {
            if m.is_learner() {
                learners.push(m.id());
            } else {
                voters.push(m.id());
            }
        }
        voters.sort_unstable();
        learners.sort_unstable();
        Ok((voters, learners))
    }
}
