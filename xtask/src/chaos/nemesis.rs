//! The nemesis: a seeded schedule of faults, and the task that injects and heals them.
//!
//! [`plan`] is a pure function of the seed, the cluster size and the active time, so a run's
//! schedule can be repeated with `--seed`. Faults come one at a time, each held a few seconds
//! and then healed, with a quiet gap before the next; one fault touches at most a minority of
//! the members, so a majority is never lost for longer than a fault lasts. Who the "leader" is
//! can only be known when the fault starts: the plan says "the leader" and the injector asks
//! the members (Maintenance.Status).
//!
//! Membership faults change the cluster the way an operator does, while the load runs: a
//! member is replaced (`member remove`, its process gone and its data dir emptied, `member
//! add` of a fresh member on the same ports, started with `--initial-cluster-state
//! existing`), or replaced through a learner (added as a learner, started, and promoted once
//! the leader finds it in sync). The new member keeps its predecessor's slot (name, ports,
//! proxy), so clients and the network need not learn of it; only its raft id changes.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::Result;
use tokio::time::Instant;

use super::proxy::{LinkFault, Links, Network};
use crate::cluster::LocalCluster;
use crate::etcd::{Client, Options};
use crate::stats::SplitMix64;

/// Which members a fault hits: `members` (a minority, chosen by the plan), with the first one
/// replaced by the leader when `leader` is set and the leader is known.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Victims {
    pub leader: bool,
    pub members: Vec<usize>,
}

impl Victims {
    pub fn resolve(&self, leader: Option<usize>) -> Vec<usize> {
        let mut chosen = self.members.clone();
        if self.leader
            && let Some(leader) = leader
            && !chosen.contains(&leader)
            && let Some(first) = chosen.first_mut()
        {
            *first = leader;
        }
        chosen.sort_unstable();
        chosen
    }
}

/// One kind of fault.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Fault {
    /// SIGKILL, then restart with the same data dir when healed.
    Kill(Victims),
    /// SIGSTOP, then SIGCONT.
    Pause(Victims),
    /// Blackhole every link between the victims and the rest.
    Isolate(Victims),
    /// Latency on the victims' links to the rest, or on every link (`None`).
    Delay {
        victims: Option<Victims>,
        latency: Duration,
    },
    /// Cut and refuse connections on the victims' links to the rest.
    Drop(Victims),
    /// Cut and refuse connections on one link.
    DropLink(usize, usize),
    /// Remove a member and add a fresh one (empty data dir) in its place.
    Replace(usize),
    /// Remove a member, add a fresh one in its place as a learner, start it, and promote
    /// it once it is in sync.
    Learner(usize),
}

impl Fault {
    /// The name counted in the run's summary.
    pub fn kind(&self) -> &'static str {
        match self {
            Fault::Kill(_) => "kill",
            Fault::Pause(_) => "pause",
            Fault::Isolate(_) => "isolate",
            Fault::Delay { .. } => "delay",
            Fault::Drop(_) | Fault::DropLink(..) => "drop",
            Fault::Replace(_) => "replace",
            Fault::Learner(_) => "learner",
        }
    }

    fn aims_at_leader(&self) -> bool {
        match self {
            Fault::Kill(v) | Fault::Pause(v) | Fault::Isolate(v) | Fault::Drop(v) => v.leader,
            Fault::Delay {
                victims: Some(v), ..
            } => v.leader,
            Fault::Delay { victims: None, .. }
            | Fault::DropLink(..)
            | Fault::Replace(_)
            | Fault::Learner(_) => false,
        }
    }
}

/// A fault at `at` (since the start of the run), healed `hold` later.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Step {
    pub at: Duration,
    pub hold: Duration,
    pub fault: Fault,
}

/// How long a membership change may take: the call (retried through every member), and the
/// new member's catching up.
const MEMBERSHIP_LIMIT: Duration = Duration::from_secs(60);
/// Bound on one membership call.
const ADMIN_TIMEOUT: Duration = Duration::from_secs(5);

/// Before the first fault the clients and watchers get going.
const FIRST_FAULT_AT: Duration = Duration::from_secs(2);

fn millis_between(rng: &mut SplitMix64, low: u64, high: u64) -> Duration {
    Duration::from_millis(low + rng.below(high - low + 1))
}

fn pick_victims(rng: &mut SplitMix64, members: usize) -> Victims {
    let minority = (members - 1) / 2;
    let count = 1 + rng.below(minority.max(1) as u64) as usize;
    let mut pool: Vec<usize> = (0..members).collect();
    let mut chosen = Vec::new();
    for _ in 0..count {
        chosen.push(pool.swap_remove(rng.below(pool.len() as u64) as usize));
    }
    Victims {
        leader: rng.below(2) == 0,
        members: chosen,
    }
}

/// The faults of a run whose faults must all be healed `active` after its start.
#[cfg(test)]
pub fn plan(members: usize, active: Duration, seed: u64) -> Vec<Step> {
    plan_of(members, active, seed, &[])
}

/// Every fault kind [`Fault::kind`] names.
pub const KINDS: [&str; 7] = [
    "kill", "pause", "isolate", "delay", "drop", "replace", "learner",
];

/// [`plan`] with faults of the kinds in `only` alone (every kind if it is empty).
pub fn plan_of(members: usize, active: Duration, seed: u64, only: &[String]) -> Vec<Step> {
    let mut rng = SplitMix64::new(seed);
    let mut steps = Vec::new();
    if members < 3 {
        // With fewer than three members any fault is a lost majority; nothing to inject.
        return steps;
    }
    let mut at = FIRST_FAULT_AT;
    loop {
        let roll = rng.below(116);
        let (fault, hold) = match roll {
            // The hold of a membership fault starts once the new member has caught up.
            100..108 => (
                Fault::Replace(rng.below(members as u64) as usize),
                millis_between(&mut rng, 1000, 3000),
            ),
            108.. => (
                Fault::Learner(rng.below(members as u64) as usize),
                millis_between(&mut rng, 1000, 3000),
            ),
            0..25 => (
                Fault::Kill(pick_victims(&mut rng, members)),
                millis_between(&mut rng, 500, 4000),
            ),
            25..40 => (
                Fault::Pause(pick_victims(&mut rng, members)),
                millis_between(&mut rng, 500, 4000),
            ),
            40..60 => (
                Fault::Isolate(pick_victims(&mut rng, members)),
                millis_between(&mut rng, 1000, 5000),
            ),
            60..80 => {
                let victims = (rng.below(2) == 0).then(|| pick_victims(&mut rng, members));
                let latency = millis_between(&mut rng, 10, 250);
                (
                    Fault::Delay { victims, latency },
                    millis_between(&mut rng, 1000, 6000),
                )
            }
            80..100 => {
                let fault = if rng.below(2) == 0 {
                    Fault::Drop(pick_victims(&mut rng, members))
                } else {
                    let a = rng.below(members as u64) as usize;
                    let b = (a + 1 + rng.below(members as u64 - 1) as usize) % members;
                    Fault::DropLink(a.min(b), a.max(b))
                };
                (fault, millis_between(&mut rng, 500, 4000))
            }
        };
        if !only.is_empty() && !only.iter().any(|k| k == fault.kind()) {
            continue;
        }
        if at + hold > active {
            break;
        }
        steps.push(Step { at, hold, fault });
        at += hold + millis_between(&mut rng, 1000, 3000);
    }
    steps
}

/// What the nemesis did.
#[derive(Debug, Default)]
pub struct NemesisReport {
    /// Faults injected, by kind.
    pub injected: BTreeMap<&'static str, usize>,
    /// Of those, how many hit the leader (when the plan aimed at it and it was known).
    pub leader_hits: BTreeMap<&'static str, usize>,
    /// Members that exited on their own: (name, exit status, log tail).
    pub crashes: Vec<Crash>,
    /// Faults that could not be injected or healed (a failed `kill`, restart, ...).
    pub errors: Vec<String>,
}

impl NemesisReport {
    /// Faults injected, of every kind.
    pub fn total(&self) -> usize {
        self.injected.values().sum()
    }
}

#[derive(Debug)]
pub struct Crash {
    pub member: String,
    pub status: String,
    pub at: Duration,
    pub log_tail: String,
}

/// What the injector works with.
pub struct Nemesis {
    pub cluster: Arc<Mutex<LocalCluster>>,
    pub network: Arc<Network>,
    /// Status clients, one per member, and each member's raft id (from Status; a replaced
    /// member's slot takes its successor's id).
    pub status_clients: Vec<Client>,
    pub member_ids: Mutex<Vec<u64>>,
    pub started: Instant,
    pub members: usize,
    /// Prints the schedule as it happens.
    pub verbose: bool,
}

/// The member most members name as leader right now.
pub async fn find_leader(clients: &[Client], member_ids: &[u64]) -> Option<usize> {
    let mut tasks = tokio::task::JoinSet::new();
    for client in clients {
        let mut client = client.clone();
        tasks.spawn(async move {
            tokio::time::timeout(Duration::from_millis(500), client.status())
                .await
                .ok()
                .and_then(Result::ok)
                .map(|status| status.leader)
        });
    }
    let mut votes: BTreeMap<u64, usize> = BTreeMap::new();
    while let Some(answer) = tasks.join_next().await {
        if let Ok(Some(leader)) = answer
            && leader != 0
        {
            *votes.entry(leader).or_default() += 1;
        }
    }
    let (leader, _) = votes.into_iter().max_by_key(|(_, count)| *count)?;
    member_ids.iter().position(|id| *id == leader)
}

impl Nemesis {
    fn elapsed(&self) -> Duration {
        self.started.elapsed()
    }

    fn say(&self, text: &str) {
        if self.verbose {
            println!("[{:7.1}s] nemesis: {text}", self.elapsed().as_secs_f64());
        }
    }

    fn cluster(&self) -> std::sync::MutexGuard<'_, LocalCluster> {
        // A panic while holding the lock cannot leave the cluster half-changed in a way that
        // matters here: take it anyway.
        self.cluster
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Reports members that exited on their own and starts them again so the run goes on.
    fn collect_crashes(&self, report: &mut NemesisReport) {
        let mut cluster = self.cluster();
        let layout = cluster.layout();
        for (name, status) in cluster.exited() {
            let Some(index) = layout.iter().position(|m| m.name == name) else {
                continue;
            };
            let log = std::fs::read_to_string(&layout[index].log_path).unwrap_or_default();
            let tail: Vec<&str> = log.lines().rev().take(30).collect();
            let log_tail = tail.into_iter().rev().collect::<Vec<_>>().join("\n");
            if self.verbose {
                println!(
                    "[{:7.1}s] member {name} EXITED ON ITS OWN ({status}); restarting it",
                    self.elapsed().as_secs_f64()
                );
            }
            report.crashes.push(Crash {
                member: name,
                status,
                at: self.elapsed(),
                log_tail,
            });
            self.network.set_pid(index, None);
            match cluster.restart(index) {
                Ok(pid) => self.network.set_pid(index, Some(pid)),
                Err(e) => report.errors.push(format!("restart after crash: {e:#}")),
            }
        }
    }

    /// Sleeps until `until` (since the start), watching for crashes meanwhile.
    async fn wait_until(&self, until: Duration, report: &mut NemesisReport) {
        loop {
            self.collect_crashes(report);
            let now = self.elapsed();
            if now >= until {
                return;
            }
            tokio::time::sleep((until - now).min(Duration::from_millis(200))).await;
        }
    }

    /// Runs the plan, then heals everything; returns at `end` (since the start) at the latest
    /// after the last heal.
    pub async fn run(&self, steps: &[Step], end: Duration) -> NemesisReport {
        let mut report = NemesisReport::default();
        for step in steps {
            self.wait_until(step.at, &mut report).await;
            let leader = if step.fault.aims_at_leader() {
                find_leader(&self.status_clients, &self.ids()).await
            } else {
                None
            };
            let kind = step.fault.kind();
            let injected = match step.fault {
                Fault::Replace(member) => self.replace(member, false, &mut report).await,
                Fault::Learner(member) => self.replace(member, true, &mut report).await,
                _ => self.inject(&step.fault, leader),
            };
            match injected {
                Ok(description) => {
                    *report.injected.entry(kind).or_default() += 1;
                    if step.fault.aims_at_leader() && leader.is_some() {
                        *report.leader_hits.entry(kind).or_default() += 1;
                    }
                    self.say(&format!(
                        "{description} for {:.1}s",
                        step.hold.as_secs_f64()
                    ));
                }
                Err(e) => report.errors.push(format!("inject {kind}: {e:#}")),
            }
            let heal_at = self.elapsed() + step.hold;
            self.wait_until(heal_at, &mut report).await;
            self.heal(&mut report).await;
        }
        self.wait_until(end, &mut report).await;
        self.heal(&mut report).await;
        report
    }

    fn name(&self, member: usize) -> String {
        format!("m{member}")
    }

    fn names(&self, members: &[usize]) -> String {
        members
            .iter()
            .map(|m| self.name(*m))
            .collect::<Vec<_>>()
            .join(",")
    }

    fn ids(&self) -> Vec<u64> {
        self.member_ids
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }

    /// A client of member `through` for membership calls, which wait for a raft round (and
    /// on etcd, for the new member's first contact) longer than the run's request timeout.
    fn admin_client(&self, through: usize) -> Result<Client> {
        let endpoint = self.cluster().layout()[through].client_url();
        Client::connect(&endpoint, &Options::under_faults(ADMIN_TIMEOUT))
    }

    /// Repeats a membership call through the other members until one accepts it: right
    /// after a fault etcd refuses removals ("unhealthy cluster") until every member has
    /// been connected for a while, and a member may be down or not the leader's peer yet.
    async fn retry<T, F, Fut>(&self, what: &str, except: usize, mut call: F) -> Result<T>
    where
        F: FnMut(Client) -> Fut,
        Fut: std::future::Future<Output = Result<T>>,
    {
        let deadline = Instant::now() + MEMBERSHIP_LIMIT;
        let mut last = None;
        while Instant::now() < deadline {
            for through in (0..self.members).filter(|&m| m != except) {
                match call(self.admin_client(through)?).await {
                    Ok(answer) => return Ok(answer),
                    Err(e) => last = Some(e),
                }
                tokio::time::sleep(Duration::from_millis(250)).await;
            }
        }
        Err(last
            .unwrap_or_else(|| anyhow::anyhow!("no member to ask"))
            .context(format!("{what} within {MEMBERSHIP_LIMIT:?}")))
    }

    /// [`Fault::Replace`] or [`Fault::Learner`] of `member`: done when the new member has
    /// caught up with the leader (and, as a learner, was promoted).
    async fn replace(
        &self,
        member: usize,
        learner: bool,
        report: &mut NemesisReport,
    ) -> Result<String> {
        // A member that a previous fault left stopped or paused is healed first.
        self.heal(report).await;
        let old_id = self.ids()[member];
        self.retry("member remove", member, |mut client| async move {
            client.member_remove(old_id).await
        })
        .await?;
        // Gone for good (a removed member may exit by itself first; kill reaps it then).
        self.cluster().kill(member)?;
        self.network.set_pid(member, None);
        let layout = self.cluster().layout();
        let peer_url = layout[member].advertised_peer_url();
        let added = self
            .retry("member add", member, |mut client| {
                let peer_url = peer_url.clone();
                async move { client.member_add(vec![peer_url], learner).await }
            })
            .await?;
        let new_id = added.member.as_ref().map_or(0, |m| m.id);
        // What `member add` prints as ETCD_INITIAL_CLUSTER: the named members and the new one.
        let initial_cluster = added
            .members
            .iter()
            .flat_map(|m| {
                let name = if m.id == new_id {
                    layout[member].name.clone()
                } else {
                    m.name.clone()
                };
                m.peer_ur_ls
                    .iter()
                    .map(move |url| format!("{name}={url}"))
                    .collect::<Vec<_>>()
            })
            .filter(|entry| !entry.starts_with('='))
            .collect::<Vec<_>>()
            .join(",");
        // A joining member asks a peer for the cluster and gives up if that peer has not
        // applied the addition yet (etcd does the same): start it once every peer lists it.
        self.wait_listed(member, new_id).await?;
        let pid = self.cluster().start_fresh(member, &initial_cluster)?;
        self.network.set_pid(member, Some(pid));
        self.member_ids
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)[member] = new_id;
        self.say(&format!(
            "{} {:x} removed; {:x} added{} in its place and started",
            self.name(member),
            old_id,
            new_id,
            if learner { " as a learner" } else { "" }
        ));
        self.wait_caught_up(member).await?;
        if learner {
            // Refused ("not in sync") until the leader has seen it match the log.
            self.retry("member promote", member, |mut client| async move {
                client.member_promote(new_id).await
            })
            .await?;
        }
        Ok(format!(
            "{} replaced by {new_id:x}{}, caught up",
            self.name(member),
            if learner {
                " (a learner, promoted)"
            } else {
                ""
            }
        ))
    }

    /// Waits until every member but `except` lists `id` in its member list.
    async fn wait_listed(&self, except: usize, id: u64) -> Result<()> {
        let deadline = Instant::now() + MEMBERSHIP_LIMIT;
        for (i, client) in self.status_clients.iter().enumerate() {
            if i == except {
                continue;
            }
            loop {
                let mut client = client.clone();
                if let Ok(Ok(list)) =
                    tokio::time::timeout(Duration::from_secs(1), client.member_list()).await
                    && list.members.iter().any(|m| m.id == id)
                {
                    break;
                }
                if Instant::now() > deadline {
                    anyhow::bail!("{} does not list {id:x}", self.name(i));
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
        Ok(())
    }

    /// Waits until `member` has applied what the leader had committed when the wait began.
    async fn wait_caught_up(&self, member: usize) -> Result<()> {
        let deadline = Instant::now() + MEMBERSHIP_LIMIT;
        let mut target = None;
        loop {
            if target.is_none() {
                for (i, client) in self.status_clients.iter().enumerate() {
                    if i == member {
                        continue;
                    }
                    let mut client = client.clone();
                    if let Ok(Ok(status)) =
                        tokio::time::timeout(Duration::from_secs(1), client.status()).await
                        && status.leader != 0
                        && status
                            .header
                            .as_ref()
                            .is_some_and(|h| h.member_id == status.leader)
                    {
                        target = Some(status.raft_index);
                        break;
                    }
                }
            }
            let mut client = self.status_clients[member].clone();
            if let (Some(target), Ok(Ok(status))) = (
                target,
                tokio::time::timeout(Duration::from_secs(1), client.status()).await,
            ) && status.raft_applied_index >= target
            {
                return Ok(());
            }
            if Instant::now() > deadline {
                anyhow::bail!(
                    "{} did not catch up within {MEMBERSHIP_LIMIT:?}",
                    self.name(member)
                );
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    fn inject(&self, fault: &Fault, leader: Option<usize>) -> Result<String> {
        let leader_note = |victims: &[usize]| match leader {
            Some(l) if victims.contains(&l) => " (leader)".to_string(),
            _ => String::new(),
        };
        Ok(match fault {
            Fault::Kill(victims) => {
                let chosen = victims.resolve(leader);
                let mut cluster = self.cluster();
                for &member in &chosen {
                    cluster.kill(member)?;
                    self.network.set_pid(member, None);
                }
                format!("kill -9 {}{}", self.names(&chosen), leader_note(&chosen))
            }
            Fault::Pause(victims) => {
                let chosen = victims.resolve(leader);
                let mut cluster = self.cluster();
                for &member in &chosen {
                    cluster.pause(member)?;
                }
                format!("SIGSTOP {}{}", self.names(&chosen), leader_note(&chosen))
            }
            Fault::Isolate(victims) => {
                let chosen = victims.resolve(leader);
                self.network
                    .set_links(Links::around(&chosen, self.members, LinkFault::Blackhole));
                format!("blackhole {}{}", self.names(&chosen), leader_note(&chosen))
            }
            Fault::Delay { victims, latency } => match victims {
                Some(victims) => {
                    let chosen = victims.resolve(leader);
                    self.network.set_links(Links::around(
                        &chosen,
                        self.members,
                        LinkFault::Delay(*latency),
                    ));
                    format!(
                        "delay {latency:?} on the links of {}{}",
                        self.names(&chosen),
                        leader_note(&chosen)
                    )
                }
                None => {
                    self.network
                        .set_links(Links::all(self.members, LinkFault::Delay(*latency)));
                    format!("delay {latency:?} on every link")
                }
            },
            Fault::Drop(victims) => {
                let chosen = victims.resolve(leader);
                self.network
                    .set_links(Links::around(&chosen, self.members, LinkFault::Drop));
                format!(
                    "drop connections of {}{}",
                    self.names(&chosen),
                    leader_note(&chosen)
                )
            }
            Fault::Replace(_) | Fault::Learner(_) => {
                anyhow::bail!("membership faults are injected by Nemesis::replace")
            }
            Fault::DropLink(a, b) => {
                let mut links = Links::default();
                links.set(*a, *b, LinkFault::Drop);
                self.network.set_links(links);
                format!(
                    "drop connections between {} and {}",
                    self.name(*a),
                    self.name(*b)
                )
            }
        })
    }

    /// Undoes whatever is broken: links healed, paused members resumed, killed members
    /// restarted (and waited for until they accept clients again).
    pub async fn heal(&self, report: &mut NemesisReport) {
        self.network.heal();
        let mut restarted = Vec::new();
        {
            let mut cluster = self.cluster();
            for member in 0..self.members {
                if cluster.is_paused(member) {
                    if let Err(e) = cluster.resume(member) {
                        report.errors.push(format!("resume: {e:#}"));
                    }
                } else if cluster.pid(member).is_none() {
                    match cluster.restart(member) {
                        Ok(pid) => {
                            self.network.set_pid(member, Some(pid));
                            restarted.push(member);
                        }
                        Err(e) => report.errors.push(format!("restart: {e:#}")),
                    }
                }
            }
        }
        if !restarted.is_empty() {
            self.say(&format!("restarted {}", self.names(&restarted)));
        }
        let layout = self.cluster().layout();
        for member in restarted {
            let port = layout[member].client_port;
            let deadline = Instant::now() + Duration::from_secs(30);
            while tokio::net::TcpStream::connect(("127.0.0.1", port))
                .await
                .is_err()
            {
                if Instant::now() > deadline {
                    report.errors.push(format!(
                        "{} did not accept clients within 30s of its restart",
                        self.name(member)
                    ));
                    break;
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            self.check_identity(member, report).await;
        }
    }

    /// A member must come back as itself: the raft id it reports in Status is the one it had
    /// when the cluster started (a member that takes another's id splits the cluster's brain).
    pub async fn check_identity(&self, member: usize, report: &mut NemesisReport) {
        let mut client = self.status_clients[member].clone();
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let answer = tokio::time::timeout(Duration::from_secs(1), client.status()).await;
            if let Ok(Ok(status)) = answer
                && let Some(header) = status.header
            {
                let expected = self.ids()[member];
                if header.member_id != expected {
                    let problem = format!(
                        "{} came back as member {:x}, not as itself ({expected:x})",
                        self.name(member),
                        header.member_id
                    );
                    self.say(&problem);
                    report.errors.push(problem);
                }
                return;
            }
            if Instant::now() > deadline {
                report.errors.push(format!(
                    "{} did not answer Maintenance.Status within 10s of its restart",
                    self.name(member)
                ));
                return;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn victims_of(fault: &Fault) -> Option<&Victims> {
        match fault {
            Fault::Kill(v) | Fault::Pause(v) | Fault::Isolate(v) | Fault::Drop(v) => Some(v),
            Fault::Delay { victims, .. } => victims.as_ref(),
            Fault::DropLink(..) | Fault::Replace(_) | Fault::Learner(_) => None,
        }
    }

    #[test]
    fn the_same_seed_gives_the_same_plan() {
        let active = Duration::from_secs(100);
        assert_eq!(plan(3, active, 7), plan(3, active, 7));
        assert_ne!(plan(3, active, 7), plan(3, active, 8));
    }

    #[test]
    fn faults_come_one_at_a_time_and_end_before_the_quiet_period() {
        for seed in 0..200 {
            for members in [3, 5] {
                let active = Duration::from_secs(60);
                let steps = plan(members, active, seed);
                assert!(steps.len() >= 5, "seed {seed}: only {} faults", steps.len());
                let mut free_from = Duration::ZERO;
                for step in &steps {
                    assert!(step.at >= free_from, "seed {seed}: overlapping faults");
                    assert!(step.at + step.hold <= active);
                    free_from = step.at + step.hold + Duration::from_secs(1);
                }
            }
        }
    }

    #[test]
    fn a_fault_hits_a_minority_of_distinct_members() {
        for seed in 0..200 {
            for members in [3, 5] {
                for step in plan(members, Duration::from_secs(60), seed) {
                    if let Fault::DropLink(a, b) = step.fault {
                        assert!(a < b && b < members);
                    }
                    if let Fault::Replace(m) | Fault::Learner(m) = step.fault {
                        assert!(m < members);
                    }
                    let Some(victims) = victims_of(&step.fault) else {
                        continue;
                    };
                    for leader in [None, Some(0), Some(members - 1)] {
                        let chosen = victims.resolve(leader);
                        let mut distinct = chosen.clone();
                        distinct.dedup();
                        assert_eq!(distinct, chosen, "seed {seed}");
                        assert!(!chosen.is_empty() && chosen.len() <= (members - 1) / 2);
                        assert!(chosen.iter().all(|m| *m < members));
                    }
                }
            }
        }
    }

    #[test]
    fn every_kind_of_fault_is_planned() {
        let steps = plan(5, Duration::from_secs(600), 1);
        for kind in KINDS {
            assert!(steps.iter().any(|s| s.fault.kind() == kind), "no {kind}");
        }
        assert!(steps.iter().any(|s| s.fault.aims_at_leader()));
        // Five members lose two at once sometimes.
        assert!(
            steps
                .iter()
                .filter_map(|s| victims_of(&s.fault))
                .any(|v| v.members.len() == 2)
        );
    }

    #[test]
    fn the_leader_replaces_a_planned_victim() {
        let victims = Victims {
            leader: true,
            members: vec![1, 4],
        };
        assert_eq!(victims.resolve(Some(2)), vec![2, 4]);
        assert_eq!(victims.resolve(Some(4)), vec![1, 4], "already chosen");
        assert_eq!(victims.resolve(None), vec![1, 4], "leader unknown");
        let not_leader = Victims {
            leader: false,
            members: vec![1],
        };
        assert_eq!(not_leader.resolve(Some(2)), vec![1]);
    }

    #[test]
    fn a_plan_can_hold_chosen_kinds_only() {
        let only = ["replace".to_string(), "learner".to_string()];
        let steps = plan_of(3, Duration::from_secs(120), 5, &only);
        assert!(steps.len() >= 5);
        assert!(
            steps
                .iter()
                .all(|s| only.iter().any(|k| k == s.fault.kind()))
        );
    }

    #[test]
    fn small_clusters_get_no_faults() {
        assert!(plan(1, Duration::from_secs(60), 1).is_empty());
    }
}
