//! Starting and stopping a member: open the raft log and the store, bootstrap or resume
//! raft, start the driver, the peer transport and the listeners, publish this member's
//! attributes, and shut everything down in order.

use std::sync::Arc;
use std::time::Duration;

use concord_mvcc::StoreOptions;
use concord_proto::concordpb::{MemberAttrSetRequest, MemberInfoResponse, internal_request};
use concord_proto::etcdserverpb::lease_server::LeaseServer;
use concord_proto::etcdserverpb::{
    Member, cluster_server::ClusterServer, kv_server::KvServer,
    maintenance_server::MaintenanceServer,
};
use concord_proto::v3electionpb::election_server::ElectionServer;
use concord_proto::v3lockpb::lock_server::LockServer;
use concord_raft_core::{Node, NodeConfig, Role};
use concord_storage_wal::{WalOptions, WalStorage};
use parking_lot::RwLock;
use tokio::sync::watch;

use crate::config::{ClusterState, Config, url_text};
use crate::core::Core;
use crate::driver::{self, Command, DriverObserver, MessageSink, Removal};
use crate::error::Error;
use crate::grpc::{self, ETCD_VERSION};
use crate::state::alarms::{Alarms, Quota};
use crate::state::backend::{Backend, MEMBER_LOCAL_TABLE};
use crate::state::leases::LeaseKeeper;
use crate::state::membership::{Membership, cluster_id, member_id};
use crate::state::snapshots::SnapshotFiles;
use crate::state::{ApplyObserver, Machine};
use crate::transport::{Inbound, InboundSink, PeerTransport};

/// Largest gRPC message a client may send: the request limit plus etcd's 512 KiB of
/// slack for framing, so that an oversized request gets etcd's own error.
const GRPC_OVERHEAD_BYTES: usize = 512 * 1024;
/// No client message larger than this is even decoded.
const HARD_MESSAGE_CAP_BYTES: usize = 64 * 1024 * 1024;

/// The store's block cache.
const STORE_CACHE_BYTES: u64 = 1024 * 1024;
/// The store's memtable: flushed to a table past this size. Each flush costs more than
/// its table write: fjall then queues compactions that its idle worker re-queues in a spin
/// until the other worker is free. 200 clients' puts on 3 members, server CPU per 100,000
/// puts (sum of the members): 6.7-6.9 s at 1.5 MiB, 6.4-6.5 s at 4 MiB, 6.2-6.5 s at
/// 8 MiB, for 6 and 13 MiB more RSS per member (about 51 MiB after 200,000 puts, where
/// etcd's members held 175-190 MiB).
const STORE_MEMTABLE_BYTES: u64 = 8 * 1024 * 1024;
/// Recent raft entries the WAL keeps decoded in memory.
const WAL_CACHE_ENTRIES: usize = 512;
const WAL_CACHE_BYTES: usize = 4 * 1024 * 1024;

/// etcd's words when a member learns it was removed (tooling waits for them).
const REMOVED_LINE: &str = "the member has been permanently removed from the cluster";

/// A started member.
pub struct RunningMember {
    pub core: Arc<Core>,
    transport: PeerTransport,
    shutdown: watch::Sender<bool>,
    /// Set when this member learns it was removed from the cluster.
    removed: watch::Receiver<Option<Removal>>,
    driver_thread: Option<std::thread::JoinHandle<()>>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl RunningMember {
    /// Waits until this member learns it was removed from the cluster (never, if it is
    /// not); says how it learned it.
    pub async fn removed(&self) -> Removal {
        let mut removed = self.removed.clone();
        match removed.wait_for(Option::is_some).await.map(|how| *how) {
            Ok(Some(how)) => how,
            _ => std::future::pending().await,
        }
    }

    /// Stops serving, then stops raft. Everything acknowledged is already durable.
    pub async fn stop(mut self) {
        // Peers' open raft streams would otherwise hold the peer listener's drain, and a
        // running Defragment the client listener's.
        self.transport.stop();
        self.core.backend.store().stop_defragments();
        let _ = self.shutdown.send(true);
        for task in self.tasks.drain(..) {
            let _ = task.await;
        }
        let _ = self.core.raft.send(Command::Shutdown);
        if let Some(thread) = self.driver_thread.take() {
            let _ = tokio::task::spawn_blocking(move || thread.join()).await;
        }
    }
}

/// Keeps the shared membership and the transport's peer list in step with the store.
struct MembershipObserver {
    shared: Arc<RwLock<Membership>>,
    transport: PeerTransport,
    local_id: u64,
    cluster_id: u64,
    known_peers: Vec<u64>,
}

impl ApplyObserver for MembershipObserver {
    fn membership_changed(&mut self, membership: &Membership) {
        *self.shared.write() = membership.clone();
        let ids = membership.ids();
        // The transport may also talk to remotes, callers this member did not know (see
        // `PeerTransport::add_remote`): one is dropped once it is known to be removed;
        // one not listed yet is kept, as this membership may still lag the caller's.
        let mut linked = self.transport.peer_ids();
        linked.extend(&self.known_peers);
        linked.sort_unstable();
        linked.dedup();
        for id in linked {
            if membership.is_removed(id) {
                self.transport.mark_removed(id);
            } else if self.known_peers.contains(&id) && !ids.contains(&id) {
                self.transport.remove_peer(id);
            }
        }
        for &id in &ids {
            if id != self.local_id {
                self.transport.add_peer(id, membership.peer_urls(id));
            }
        }
        self.known_peers = ids;
    }

    fn published(&mut self, member: &Member) {
        // etcd logs this line, and tooling (etcd's own e2e suite) waits for it.
        tracing::info!(
            "published {{Name:{} ClientURLs:[{}]}} to cluster {:x}",
            member.name,
            member.client_ur_ls.join(" "),
            self.cluster_id
        );
    }
}

/// Hands what peers send straight to the raft driver's command channel.
struct DriverInbox(std::sync::mpsc::Sender<Command>);

impl InboundSink for DriverInbox {
    fn deliver(&self, event: Inbound) -> bool {
        let command = match event {
            Inbound::Message(message) => Command::Step(message),
            Inbound::SnapshotReport { to, delivered } => Command::SnapshotReport { to, delivered },
            Inbound::Unreachable(to) => Command::Unreachable(to),
        };
        self.0.send(command).is_ok()
    }

    fn removed_from_cluster(&self) {
        let _ = self.0.send(Command::Removed);
    }
}

/// The transport streams snapshots through the state machine's [`SnapshotFiles`].
struct SnapshotStreamsOf(Arc<SnapshotFiles>);

impl crate::transport::SnapshotStreams for SnapshotStreamsOf {
    fn outgoing(&self, data: &[u8]) -> Option<Box<dyn std::io::Read + Send>> {
        self.0.take(data)
    }

    fn incoming(&self) -> std::io::Result<(std::fs::File, Vec<u8>)> {
        self.0.incoming()
    }
}

struct TransportSink(PeerTransport);

impl MessageSink for TransportSink {
    fn send(&mut self, messages: Vec<raft::eraftpb::Message>) {
        self.0.send(messages);
    }
}

struct RoleLogger {
    member_id: u64,
    leases: Arc<LeaseKeeper>,
    removed: watch::Sender<Option<Removal>>,
}

impl DriverObserver for RoleLogger {
    fn role_changed(&mut self, role: Role, leader_id: u64, term: u64) {
        self.leases.role_changed(role == Role::Leader, term);
        match role {
            Role::Leader => tracing::info!("{:x} became leader at term {term}", self.member_id),
            _ if leader_id != 0 => {
                tracing::info!(
                    "{:x} elected leader {leader_id:x} at term {term}",
                    self.member_id
                )
            }
            _ => tracing::info!("{:x} lost leader at term {term} ({role:?})", self.member_id),
        }
    }

    fn removed(&mut self, how: Removal) {
        // etcd's two lines (etcdserver's run loop, as it stops).
        tracing::warn!("{REMOVED_LINE}");
        tracing::info!("the data-dir used by this member must be removed.");
        self.leases.role_changed(false, 0);
        self.removed.send_replace(Some(how));
    }
}

/// Identity that must survive restarts even if flags change.
fn load_or_store_identity(
    backend: &Backend,
    member: u64,
    cluster: u64,
) -> Result<(u64, u64), Error> {
    let store = backend.store();
    if let (Some(m), Some(c)) = (
        store.meta_get(MEMBER_LOCAL_TABLE, b"member_id")?,
        store.meta_get(MEMBER_LOCAL_TABLE, b"cluster_id")?,
    ) {
        let decode = |bytes: Vec<u8>| -> Result<u64, Error> {
            let array: [u8; 8] = bytes
                .try_into()
                .map_err(|_| Error::Corrupt("stored member identity".into()))?;
            Ok(u64::from_be_bytes(array))
        };
        return Ok((decode(m)?, decode(c)?));
    }
    let mut batch = store.write_batch();
    batch.meta_put(MEMBER_LOCAL_TABLE, b"member_id", &member.to_be_bytes());
    batch.meta_put(MEMBER_LOCAL_TABLE, b"cluster_id", &cluster.to_be_bytes());
    batch.commit()?;
    Ok((member, cluster))
}

/// Opens storage, starts raft and every listener. Returns once the member serves.
pub async fn start(config: Config) -> Result<RunningMember, Error> {
    let config = Arc::new(config);
    for line in &config.inert_flags_set {
        tracing::warn!(
            "flag --{line} is accepted for etcd compatibility but has no effect in concord"
        );
    }
    for var in &config.unknown_env_vars {
        tracing::warn!("unrecognized environment variable {var}");
    }
    std::fs::create_dir_all(config.data_dir.join("member")).map_err(Error::Io)?;
    // Before storage opens: the handles it registers record only once this is in place.
    crate::http::metrics::install();

    let initial =
        Membership::from_initial_cluster(&config.initial_cluster, &config.initial_cluster_token);
    let flagged_member = member_id(
        &config.initial_advertise_peer_urls,
        &config.initial_cluster_token,
        None,
    );
    let flagged_cluster = cluster_id(&initial.ids());

    let store_options = StoreOptions {
        max_txn_ops: config.max_txn_ops as usize,
        // Resident memory is a budget (issue 4: under a third of etcd's): the memtable
        // is kept to a few MiB, and reads of values past it go through the OS page
        // cache, which a member's RSS does not count.
        cache_size_bytes: STORE_CACHE_BYTES,
        memtable_size_bytes: STORE_MEMTABLE_BYTES,
        ..StoreOptions::default()
    };
    let backend = Arc::new(Backend::open(config.backend_path(), store_options)?);
    let joining = config.initial_cluster_state == ClusterState::Existing
        && backend
            .store()
            .meta_get(MEMBER_LOCAL_TABLE, b"member_id")?
            .is_none();
    let mut join_view = None;
    let (flagged_member, flagged_cluster) = if joining {
        let view = discover_cluster(&config).await?;
        let identity = (view.member_id, view.cluster_id);
        join_view = Some(view.members);
        identity
    } else {
        (flagged_member, flagged_cluster)
    };
    // etcd checks a member for corruption only once it has data (not when it is new).
    let initialized = backend
        .store()
        .meta_get(MEMBER_LOCAL_TABLE, b"member_id")?
        .is_some();
    let (local_id, cluster) = load_or_store_identity(&backend, flagged_member, flagged_cluster)?;
    tracing::info!(
        "starting member {local_id:x} in cluster {cluster:x} (name {}, data dir {})",
        config.name,
        config.data_dir.display()
    );

    let wal_options = WalOptions {
        // Enough for the entries in flight to followers; a follower further behind is
        // served from the segment files.
        cache_entries: WAL_CACHE_ENTRIES,
        cache_bytes: WAL_CACHE_BYTES,
        ..WalOptions::default()
    };
    let mut wal = WalStorage::open(&config.wal_path(), wal_options)?;
    // A backup's copy keeps the new identity `backup` gave it, which no flag names: forced
    // to start as a new cluster, it founds one of itself at its advertised peer URLs.
    let initial = if config.force_new_cluster && !initial.ids().contains(&local_id) {
        Membership::from_members([Member {
            id: local_id,
            name: config.name.clone(),
            peer_ur_ls: config
                .initial_advertise_peer_urls
                .iter()
                .map(url_text)
                .collect(),
            ..Member::default()
        }])
    } else {
        initial
    };
    if config.initial_cluster_state == ClusterState::New {
        let voters = initial.ids();
        if Node::bootstrap(&mut wal, &voters)? {
            tracing::info!("bootstrapped a new cluster of {} members", voters.len());
        }
    }

    if config.force_new_cluster {
        force_new_cluster(&mut wal, &backend, local_id)?;
    }

    let mut stored_membership = Membership::load(&backend.store())?;
    if stored_membership.is_empty()
        && let Some(view) = &join_view
    {
        stored_membership = Membership::from_members(view.clone());
    }
    let shared_membership = Arc::new(RwLock::new(stored_membership));
    let commands = std::sync::mpsc::channel::<Command>();
    let peer_client_tls = crate::tls::peer_client_config(&config)?;
    let transport = PeerTransport::new(
        local_id,
        cluster,
        peer_client_tls.clone(),
        DriverInbox(commands.0.clone()),
    );
    transport.set_advertised_peer_urls(&config.initial_advertise_peer_urls);
    for member in shared_membership.read().members() {
        if member.id != local_id {
            transport.add_peer(member.id, shared_membership.read().peer_urls(member.id));
        }
    }

    let observer = MembershipObserver {
        shared: shared_membership.clone(),
        transport: transport.clone(),
        local_id,
        cluster_id: cluster,
        known_peers: shared_membership.read().ids(),
    };
    let leases = Arc::new(LeaseKeeper::new(&config, local_id));
    let auth_store = Arc::new(crate::state::auth::AuthStore::new(config.auth_token_ttl));
    let authenticator = Arc::new(
        crate::auth::Authenticator::new(&config, auth_store.clone()).map_err(Error::AuthToken)?,
    );
    let snapshots = Arc::new(
        SnapshotFiles::new(config.data_dir.join("member").join("snap-stream"))
            .map_err(Error::Io)?,
    );
    transport.set_snapshot_streams(Arc::new(SnapshotStreamsOf(snapshots.clone())));
    let received_snapshots = snapshots.clone();
    let alarms = Arc::new(Alarms::new(Quota::new(config.quota_backend_bytes)));
    match config.quota_backend_bytes {
        None => tracing::info!("disabled backend quota"),
        Some(quota) if quota > crate::config::MAX_QUOTA_BYTES => tracing::warn!(
            "quota exceeds the maximum value: quota-size-bytes {quota}, quota-maximum-size-bytes {}",
            crate::config::MAX_QUOTA_BYTES
        ),
        Some(quota) => tracing::info!("enabled backend quota: quota-size-bytes {quota}"),
    }
    let mut machine = Machine::new(
        backend.clone(),
        local_id,
        initial.clone(),
        leases.clone(),
        auth_store,
        alarms.clone(),
        snapshots,
        Box::new(observer),
    )?;
    let watch_hub = crate::watch_hub::WatchHub::start(
        backend.clone(),
        config.max_request_bytes,
        config.watch_progress_notify_interval,
    )
    .map_err(Error::Io)?;
    machine.set_event_sink(watch_hub.event_sink());
    let v2_store = machine.v2_store();

    let mut node_config = NodeConfig::new(local_id);
    node_config.election_tick = config.election_ticks();
    node_config.heartbeat_tick = 1;
    node_config.pre_vote = config.pre_vote;
    node_config.snapshot_interval = config.snapshot_count.max(1);
    node_config.snapshot_catchup_entries = (config.snapshot_count / 2).clamp(1, 5_000);
    // Followers hand their clients' writes to the leader through raft; one that is
    // neither applied nor ruled out is given up a little after the request timed out.
    node_config.forward_proposals = true;
    node_config.forward_timeout_ticks =
        ticks_in(crate::core::request_timeout(&config), &config) + config.election_ticks() as u64;
    node_config.incarnation = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(1);
    let mut node = Node::new(node_config, wal, &mut machine)?;
    received_snapshots.clear_received().map_err(Error::Io)?;
    if node.is_removed() || machine.membership().is_removed(local_id) {
        // etcd refuses to start a removed member with its old data dir too.
        tracing::error!("{REMOVED_LINE}");
        return Err(Error::Removed(local_id));
    }
    let corruption_asker = crate::corruption::PeerAsker {
        local_id,
        cluster_id: cluster,
        tls: peer_client_tls.clone(),
        timeout: crate::core::request_timeout(&config),
    };
    if config.initial_corrupt_check && initialized {
        // Before raft runs and before anyone is served, as etcd's embed does it.
        let membership = shared_membership.read().clone();
        crate::corruption::initial_check(backend.clone(), &membership, &corruption_asker).await?;
    }
    if node.voters() == vec![local_id] {
        // A single voter need not wait an election timeout to lead.
        node.campaign()?;
    }

    let (removed_tx, removed_rx) = watch::channel(None);
    let (raft, driver_thread) = driver::spawn(
        node,
        machine,
        Box::new(TransportSink(transport.clone())),
        Box::new(RoleLogger {
            member_id: local_id,
            leases: leases.clone(),
            removed: removed_tx,
        }),
        config.heartbeat_interval,
        commands,
    );

    let core = Arc::new(Core::new(
        config.clone(),
        local_id,
        cluster,
        raft.clone(),
        backend.clone(),
        shared_membership.clone(),
        authenticator,
        v2_store,
        alarms,
        transport.stats(),
    ));

    let (shutdown_tx, shutdown_rx) = watch::channel(false);
    let mut tasks = Vec::new();
    transport.set_hash_kv_source(Arc::new(crate::corruption::PeerHashKv(core.clone())));
    transport.set_member_changes(Arc::new(crate::grpc::cluster::LeaderChanges(core.clone())));
    if !config.corrupt_check_time.is_zero() {
        tasks.push(tokio::spawn(crate::corruption::run_periodic(
            core.clone(),
            corruption_asker,
            config.corrupt_check_time,
            shutdown_rx.clone(),
        )));
    }

    // Peers.
    let info_core = core.clone();
    let member_info = move || MemberInfoResponse {
        members: info_core.membership.read().members().cloned().collect(),
        cluster_id: info_core.cluster_id,
        member_id: info_core.member_id,
        name: info_core.config.name.clone(),
        client_urls: info_core
            .config
            .advertise_client_urls
            .iter()
            .map(url_text)
            .collect(),
        peer_urls: info_core
            .config
            .initial_advertise_peer_urls
            .iter()
            .map(url_text)
            .collect(),
        version: ETCD_VERSION.to_string(),
    };
    let peer_tls = crate::tls::peer_server_config(&config)?;
    for url in &config.listen_peer_urls {
        let routes = tonic::service::Routes::new(transport.service(member_info.clone()));
        let listener = crate::listener::bind(url).await?;
        tracing::info!("listening for peers on {}", url_text(url));
        tasks.push(tokio::spawn(crate::listener::serve(
            listener,
            peer_tls.clone(),
            routes,
            None,
            wait_for_shutdown(shutdown_rx.clone()),
        )));
    }

    // Clients.
    let client_tls = crate::tls::client_server_config(&config)?;
    // Requests up to the hard cap reach the handlers, which refuse anything over
    // --max-request-bytes with etcd's own error.
    let max_message =
        (config.max_request_bytes as usize + GRPC_OVERHEAD_BYTES).max(HARD_MESSAGE_CAP_BYTES);
    let mut bound_addresses = Vec::new();
    for url in &config.listen_client_urls {
        // An http and an https URL of one address share one listener, as in etcd.
        let address = (url.host_str(), url.port_or_known_default());
        if bound_addresses.contains(&address) {
            continue;
        }
        bound_addresses.push(address);
        let same_address = || {
            config
                .listen_client_urls
                .iter()
                .filter(move |u| (u.host_str(), u.port_or_known_default()) == address)
        };
        let secure = same_address().any(|u| u.scheme() == "https" || u.scheme() == "unixs");
        let insecure = same_address().any(|u| u.scheme() != "https" && u.scheme() != "unixs");
        // The JSON gateway, Lock and Election call this listener's own services, as
        // etcd's do: the gateway over one connection with the client's stream limit,
        // through the gRPC metrics (etcd's dials its own gRPC server); Lock and Election
        // around them (etcd's call its servers' functions).
        let own_services = crate::listener::InProcessTarget::default();
        let uncounted_services = crate::listener::InProcessTarget::default();
        let services_channel =
            crate::listener::in_process_channel(uncounted_services.clone(), None);
        let gateway_channel = crate::listener::in_process_channel(
            own_services.clone(),
            Some(config.max_concurrent_streams),
        );
        let routes = tonic::service::Routes::new(
            KvServer::new(grpc::kv::KvService::new(core.clone()))
                .max_decoding_message_size(max_message),
        )
        .add_service(MaintenanceServer::new(
            grpc::maintenance::MaintenanceService::new(core.clone()),
        ))
        .add_service(ClusterServer::new(grpc::cluster::ClusterService::new(
            core.clone(),
        )))
        .add_service(grpc::watch::WatchServer::new(
            core.clone(),
            watch_hub.clone(),
        ))
        .add_service(LeaseServer::new(grpc::lease::LeaseService::new(
            core.clone(),
            leases.clone(),
        )))
        .add_service(concord_proto::etcdserverpb::auth_server::AuthServer::new(
            grpc::auth::AuthService::new(core.clone()),
        ))
        .add_service(LockServer::new(grpc::lock::LockService::new(
            services_channel.clone(),
        )))
        .add_service(ElectionServer::new(grpc::election::ElectionService::new(
            services_channel,
        )));
        let _ = uncounted_services.set(grpc::front(routes.clone(), core.raft.status.clone(), None));
        let metrics = grpc::metrics_layer::GrpcMetrics::new(config.metrics_extensive);
        let routes = grpc::front(routes, core.raft.status.clone(), Some(metrics));
        let _ = own_services.set(routes.clone());
        let listener = crate::listener::bind(url).await?;
        tracing::info!("ready to serve client requests on {}", url_text(url));
        let tls = if secure { client_tls.clone() } else { None };
        let options = crate::listener::HttpOptions {
            max_concurrent_streams: Some(config.max_concurrent_streams),
            plain_too: secure && insecure,
            ..Default::default()
        };
        tasks.push(tokio::spawn(crate::listener::serve_with(
            listener,
            tls,
            routes,
            Some(crate::http::router(core.clone(), gateway_channel)),
            options,
            wait_for_shutdown(shutdown_rx.clone()),
        )));
    }

    // etcd's --listen-metrics-urls: /metrics and /health only, over TLS for https.
    for url in &config.listen_metrics_urls {
        let listener = crate::listener::bind(url).await?;
        tracing::info!("serving metrics on {}", url_text(url));
        let tls = if url.scheme() == "https" || url.scheme() == "unixs" {
            client_tls.clone()
        } else {
            None
        };
        tasks.push(tokio::spawn(crate::listener::serve(
            listener,
            tls,
            tonic::service::Routes::default(),
            Some(crate::http::metrics_and_health(core.clone())),
            wait_for_shutdown(shutdown_rx.clone()),
        )));
    }

    tasks.push(tokio::spawn(publish(core.clone(), shutdown_rx.clone())));
    tasks.push(tokio::spawn(crate::lease_expiry::run_expiry(
        core.clone(),
        leases.clone(),
        shutdown_rx.clone(),
    )));
    // The v2 store is kept (and its TTLs expired) whether or not its routes are on,
    // as etcd keeps it.
    tasks.push(tokio::spawn(crate::http::v2::run_expiry(
        core.clone(),
        core.v2.clone(),
        shutdown_rx.clone(),
    )));

    Ok(RunningMember {
        core,
        transport,
        shutdown: shutdown_tx,
        removed: removed_rx,
        driver_thread: Some(driver_thread),
        tasks,
    })
}

/// What a member joining an existing cluster learns from it.
struct ClusterView {
    member_id: u64,
    cluster_id: u64,
    members: Vec<Member>,
}

/// Asks the other members named in `--initial-cluster` for the cluster's members, and
/// finds this member among them by its advertised peer URLs (the id `member add` gave
/// it), as etcd's `GetClusterFromRemotePeers` does.
async fn discover_cluster(config: &Config) -> Result<ClusterView, Error> {
    let own: Vec<String> = config
        .initial_advertise_peer_urls
        .iter()
        .map(url_text)
        .collect();
    let tls = crate::tls::peer_client_config(config)?;
    let others = config
        .initial_cluster
        .iter()
        .filter(|(name, _)| *name != config.name)
        .flat_map(|(_, urls)| urls.clone());
    for url in others {
        let info = match crate::transport::fetch_member_info(&url, tls.clone()).await {
            Ok(info) => info,
            Err(error) => {
                tracing::warn!("cannot get the cluster from {}: {error}", url_text(&url));
                continue;
            }
        };
        let me = info
            .members
            .iter()
            .find(|m| m.peer_ur_ls.iter().any(|u| own.contains(u)));
        match me {
            Some(me) => {
                return Ok(ClusterView {
                    member_id: me.id,
                    cluster_id: info.cluster_id,
                    members: info.members.clone(),
                });
            }
            None => {
                return Err(Error::Join(format!(
                    "member with peer URLs {} not found in the cluster of {} (was it added with `member add`?)",
                    own.join(","),
                    url_text(&url)
                )));
            }
        }
    }
    Err(Error::Join(
        "cannot fetch cluster info from peer urls: could not retrieve cluster information from the given URLs"
            .into(),
    ))
}

/// `--force-new-cluster`: this member becomes the one voter of its configuration and
/// of its member table, keeping its data, as etcd restores a backup.
fn force_new_cluster(wal: &mut WalStorage, backend: &Backend, local_id: u64) -> Result<(), Error> {
    let conf = raft::eraftpb::ConfState {
        voters: vec![local_id],
        ..Default::default()
    };
    wal.set_conf_state(&conf)?;
    let store = backend.store();
    let mut membership = Membership::load(&store)?;
    let mut batch = store.write_batch();
    membership.keep_only(local_id, &mut batch);
    batch.commit()?;
    store.persist()?;
    tracing::warn!("forcing restart of member {local_id:x} as a one-member cluster");
    Ok(())
}

/// How many heartbeat ticks `duration` spans.
fn ticks_in(duration: Duration, config: &Config) -> u64 {
    let tick = config.heartbeat_interval.as_millis().max(1);
    (duration.as_millis() / tick) as u64
}

async fn wait_for_shutdown(mut shutdown: watch::Receiver<bool>) {
    let _ = shutdown.wait_for(|stop| *stop).await;
}

/// Publishes this member's name and client URLs through raft (retrying until it is
/// applied), then reports the member ready, as etcd does.
async fn publish(core: Arc<Core>, mut shutdown: watch::Receiver<bool>) {
    let request = MemberAttrSetRequest {
        member_id: core.member_id,
        name: core.config.name.clone(),
        client_urls: core
            .config
            .advertise_client_urls
            .iter()
            .map(url_text)
            .collect(),
    };
    loop {
        let already = core
            .membership
            .read()
            .get(core.member_id)
            .is_some_and(|m| m.name == request.name && m.client_ur_ls == request.client_urls);
        let outcome = if already {
            tracing::info!(
                "published {{Name:{} ClientURLs:[{}]}} to cluster {:x}",
                request.name,
                request.client_urls.join(" "),
                core.cluster_id
            );
            Ok(())
        } else {
            core.propose(internal_request::Request::MemberAttrSet(request.clone()))
                .await
                .map(|_| ())
        };
        match outcome {
            Ok(()) => {
                tracing::info!(
                    "enabled capabilities for version {}",
                    &grpc::CLUSTER_VERSION[..3]
                );
                return;
            }
            Err(error) => tracing::debug!("publishing member attributes: {error}"),
        }
        tokio::select! {
            _ = tokio::time::sleep(Duration::from_millis(200)) => {}
            _ = shutdown.wait_for(|stop| *stop) => return,
        }
    }
}

/// Runs a member until SIGINT or SIGTERM.
pub async fn run_until_signal(config: Config) -> Result<(), Error> {
    let member = start(config).await?;
    tokio::select! {
        _ = wait_for_signal() => tracing::info!("received a stop signal, shutting down"),
        how = member.removed() => {
            // A member that applied its own removal stops a second later, as etcd's
            // (`stopWithDelay`), so that its answer to the removal and the commit
            // notices to the others get out first; one a peer refused stops at once,
            // as etcd's does. What waited on it was answered when it learned.
            if how == Removal::Applied {
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
        }
    }
    member.stop().await;
    Ok(())
}

async fn wait_for_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    match (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) {
        (Ok(mut term), Ok(mut int)) => {
            tokio::select! {
                _ = term.recv() => {}
                _ = int.recv() => {}
            }
        }
        _ => {
            let _ = tokio::signal::ctrl_c().await;
        }
    }
}
