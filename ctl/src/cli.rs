//! Command-line syntax: etcdctl 3.4's global flags (also read from `ETCDCTL_*`
//! environment variables) and v3 commands.

// Doc comments double as `--help` text in etcdctl's usage syntax
// (`<key> [range_end]`), which rustdoc would take for links and HTML.
#![allow(rustdoc::broken_intra_doc_links, rustdoc::invalid_html_tags)]

use clap::{ArgAction, Args, Parser, Subcommand};
use std::ffi::OsString;

/// Go's `strconv.ParseBool`, which pflag uses for `--flag=value`.
pub fn go_bool(s: &str) -> Result<bool, String> {
    match s {
        "1" | "t" | "T" | "true" | "TRUE" | "True" => Ok(true),
        "0" | "f" | "F" | "false" | "FALSE" | "False" => Ok(false),
        _ => Err(format!(
            "strconv.ParseBool: parsing \"{s}\": invalid syntax"
        )),
    }
}

/// Go's `strconv.ParseInt(s, 10, 64)` for integer flags.
fn go_int(s: &str) -> Result<i64, String> {
    crate::kv::parse_decimal(s)
}

fn go_duration(s: &str) -> Result<std::time::Duration, String> {
    crate::gofmt::parse_duration(s)
}

/// A simple etcd v3 command line client (etcdctl-compatible).
#[derive(Debug, Parser)]
#[command(
    name = "concordctl",
    disable_version_flag = true,
    arg_required_else_help = true,
    // pflag: a flag given again takes the later value (lists add to theirs).
    args_override_self = true
)]
pub struct Cli {
    /// gRPC endpoints
    #[arg(
        long,
        global = true,
        env = "ETCDCTL_ENDPOINTS",
        value_delimiter = ',',
        default_value = "127.0.0.1:2379"
    )]
    pub endpoints: Vec<String>,

    /// dial timeout for client connections
    #[arg(long, global = true, env = "ETCDCTL_DIAL_TIMEOUT", default_value = "2s", value_parser = go_duration)]
    pub dial_timeout: std::time::Duration,

    /// timeout for short running command (excluding dial timeout)
    #[arg(long, global = true, env = "ETCDCTL_COMMAND_TIMEOUT", default_value = "5s", value_parser = go_duration)]
    pub command_timeout: std::time::Duration,

    /// keepalive time for client connections
    #[arg(long, global = true, env = "ETCDCTL_KEEPALIVE_TIME", default_value = "2s", value_parser = go_duration)]
    pub keepalive_time: std::time::Duration,

    /// keepalive timeout for client connections
    #[arg(long, global = true, env = "ETCDCTL_KEEPALIVE_TIMEOUT", default_value = "6s", value_parser = go_duration)]
    pub keepalive_timeout: std::time::Duration,

    /// set the output format (fields, json, protobuf, simple, table)
    #[arg(
        short = 'w',
        long = "write-out",
        global = true,
        env = "ETCDCTL_WRITE_OUT",
        default_value = "simple"
    )]
    pub write_out: String,

    /// print byte strings as hex encoded strings
    #[arg(long, global = true, env = "ETCDCTL_HEX", num_args = 0..=1, require_equals = true,
          default_value = "false", default_missing_value = "true", action = ArgAction::Set, value_parser = go_bool)]
    pub hex: bool,

    /// username[:password] for authentication (prompt if password is not supplied)
    #[arg(long, global = true, env = "ETCDCTL_USER")]
    pub user: Option<String>,

    /// password for authentication (if this option is used, --user option shouldn't include password)
    #[arg(long, global = true, env = "ETCDCTL_PASSWORD")]
    pub password: Option<String>,

    /// disable transport security for client connections
    #[arg(long, global = true, env = "ETCDCTL_INSECURE_TRANSPORT", num_args = 0..=1, require_equals = true,
          default_value = "true", default_missing_value = "true", action = ArgAction::Set, value_parser = go_bool)]
    pub insecure_transport: bool,

    /// skip server certificate verification (CAUTION: this option should be enabled only for testing purposes)
    #[arg(long, global = true, env = "ETCDCTL_INSECURE_SKIP_TLS_VERIFY", num_args = 0..=1, require_equals = true,
          default_value = "false", default_missing_value = "true", action = ArgAction::Set, value_parser = go_bool)]
    pub insecure_skip_tls_verify: bool,

    /// accept insecure SRV records describing cluster endpoints
    #[arg(long, global = true, env = "ETCDCTL_INSECURE_DISCOVERY", num_args = 0..=1, require_equals = true,
          default_value = "true", default_missing_value = "true", action = ArgAction::Set, value_parser = go_bool)]
    pub insecure_discovery: bool,

    /// enable client-side debug logging
    #[arg(long, global = true, env = "ETCDCTL_DEBUG", num_args = 0..=1, require_equals = true,
          default_value = "false", default_missing_value = "true", action = ArgAction::Set, value_parser = go_bool)]
    pub debug: bool,

    /// verify certificates of TLS-enabled secure servers using this CA bundle
    #[arg(long, global = true, env = "ETCDCTL_CACERT")]
    pub cacert: Option<String>,

    /// identify secure client using this TLS certificate file
    #[arg(long, global = true, env = "ETCDCTL_CERT")]
    pub cert: Option<String>,

    /// identify secure client using this TLS key file
    #[arg(long, global = true, env = "ETCDCTL_KEY")]
    pub key: Option<String>,

    /// domain name to query for SRV records describing cluster endpoints
    #[arg(short = 'd', long, global = true, env = "ETCDCTL_DISCOVERY_SRV")]
    pub discovery_srv: Option<String>,

    /// service name to query when using DNS discovery
    #[arg(long, global = true, env = "ETCDCTL_DISCOVERY_SRV_NAME")]
    pub discovery_srv_name: Option<String>,

    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Puts the given key into the store
    Put(PutArgs),
    /// Gets the key or a range of keys
    Get(GetArgs),
    /// Removes the specified key or range of keys [key, range_end)
    Del(DelArgs),
    /// Txn processes all the requests in one transaction
    Txn(TxnArgs),
    /// Compacts the event history in etcd
    Compaction(CompactionArgs),
    /// Endpoint related commands
    Endpoint(EndpointArgs),
    /// Membership related commands
    Member(MemberArgs),
    /// Lease related commands
    Lease(LeaseArgs),
    /// Watches events stream on keys or prefixes
    Watch(WatchArgs),
    /// Alarm related commands
    Alarm(AlarmArgs),
    /// Defragments the storage of the etcd members with given endpoints
    Defrag(DefragArgs),
    /// Transfers leadership to another etcd cluster member.
    MoveLeader { args: Vec<String> },
    /// Enable or disable authentication
    Auth(AuthArgs),
    /// User related commands
    User(UserArgs),
    /// Role related commands
    Role(RoleArgs),
    /// Manages etcd node snapshots
    Snapshot(SnapshotArgs),
    /// Makes a mirror at the destination etcd cluster
    MakeMirror(MakeMirrorArgs),
    /// Acquires a named lock
    Lock(LockArgs),
    /// Observes and participates in leader election
    Elect(ElectArgs),
    /// Migrates keys in a v2 store to a mvcc store
    Migrate(MigrateArgs),
    /// commands for checking properties of the etcd cluster
    Check(CheckArgs),
    /// Prints the version of etcdctl
    Version,
}

#[derive(Debug, Args)]
pub struct MigrateArgs {
    /// Do not convert TTL keys
    #[arg(long)]
    pub no_ttl: bool,
    /// Path to the data directory
    #[arg(long, default_value = "")]
    pub data_dir: String,
    /// Path to the WAL directory
    #[arg(long, default_value = "")]
    pub wal_dir: String,
    /// Path to the user-provided transformer program
    #[arg(long, default_value = "")]
    pub transformer: String,
}

#[derive(Debug, Args)]
pub struct CheckArgs {
    #[command(subcommand)]
    pub command: CheckCommand,
}

#[derive(Debug, Subcommand)]
pub enum CheckCommand {
    /// Check the performance of the etcd cluster
    Perf {
        #[arg(
            long,
            default_value = "s",
            help = "The performance check's workload model. Accepted workloads: s(small), m(medium), l(large), xl(xLarge)"
        )]
        load: String,
        #[arg(
            long,
            default_value = "/etcdctl-check-perf/",
            help = "The prefix for writing the performance check's keys."
        )]
        prefix: String,
        #[arg(
            long,
            help = "Compact storage with last revision after test is finished."
        )]
        auto_compact: bool,
        #[arg(long, help = "Defragment storage after test is finished.")]
        auto_defrag: bool,
    },
    /// Check the memory usage of holding data for different workloads on a given server endpoint.
    Datascale {
        #[arg(
            long,
            default_value = "s",
            help = "The datascale check's workload model. Accepted workloads: s(small), m(medium), l(large), xl(xLarge)"
        )]
        load: String,
        #[arg(
            long,
            default_value = "/etcdctl-check-datascale/",
            help = "The prefix for writing the datascale check's keys."
        )]
        prefix: String,
        #[arg(
            long,
            help = "Compact storage with last revision after test is finished."
        )]
        auto_compact: bool,
        #[arg(long, help = "Defragment storage after test is finished.")]
        auto_defrag: bool,
    },
}

#[derive(Debug, Args)]
pub struct MakeMirrorArgs {
    /// <destination>
    pub args: Vec<String>,
    /// Key-value prefix to mirror
    #[arg(long, default_value = "")]
    pub prefix: String,
    /// destination prefix to mirror a prefix to a different prefix in the destination cluster
    #[arg(long, default_value = "")]
    pub dest_prefix: String,
    /// mirror key-values to the root of the destination cluster
    #[arg(long, num_args = 0..=1, require_equals = true, default_value = "false",
          default_missing_value = "true", action = ArgAction::Set, value_parser = go_bool)]
    pub no_dest_prefix: bool,
    /// Identify secure client using this TLS certificate file for the destination cluster
    #[arg(long, default_value = "")]
    pub dest_cert: String,
    /// Identify secure client using this TLS key file
    #[arg(long, default_value = "")]
    pub dest_key: String,
    /// Verify certificates of TLS enabled secure servers using this CA bundle
    #[arg(long, default_value = "")]
    pub dest_cacert: String,
    /// Disable transport security for client connections
    #[arg(long, num_args = 0..=1, require_equals = true, default_value = "true",
          default_missing_value = "true", action = ArgAction::Set, value_parser = go_bool)]
    pub dest_insecure_transport: bool,
}

#[derive(Debug, Args)]
pub struct ElectArgs {
    /// <election-name> [proposal]
    pub args: Vec<OsString>,
    /// observation mode
    #[arg(short = 'l', long)]
    pub listen: bool,
}

#[derive(Debug, Args)]
pub struct LockArgs {
    /// <lockname> [exec-command arg1 arg2 ...]
    #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
    pub args: Vec<OsString>,
    /// timeout for session
    #[arg(long, default_value = "10", value_parser = go_int)]
    pub ttl: i64,
}

#[derive(Debug, Args)]
pub struct SnapshotArgs {
    #[command(subcommand)]
    pub command: SnapshotCommand,
}

#[derive(Debug, Subcommand)]
pub enum SnapshotCommand {
    /// Stores an etcd node backend snapshot to a given file
    Save { args: Vec<String> },
    /// Restores an etcd member snapshot to an etcd directory
    Restore {
        args: Vec<String>,
        /// Path to the data directory
        #[arg(long, default_value = "")]
        data_dir: String,
        /// Path to the WAL directory (use --data-dir if none given)
        #[arg(long, default_value = "")]
        wal_dir: String,
        /// Initial cluster configuration for restore bootstrap
        #[arg(long, default_value = "default=http://localhost:2380")]
        initial_cluster: String,
        /// Initial cluster token for the etcd cluster during restore bootstrap
        #[arg(long, default_value = "etcd-cluster")]
        initial_cluster_token: String,
        /// List of this member's peer URLs to advertise to the rest of the cluster
        #[arg(long, default_value = "http://localhost:2380")]
        initial_advertise_peer_urls: String,
        /// Human-readable name for this member
        #[arg(long, default_value = "default")]
        name: String,
        /// Ignore snapshot integrity hash value (required if copied from data directory)
        #[arg(long)]
        skip_hash_check: bool,
    },
    /// Gets backend snapshot status of a given file
    Status { args: Vec<String> },
}

#[derive(Debug, Args)]
pub struct AuthArgs {
    #[command(subcommand)]
    pub command: AuthCommand,
}

#[derive(Debug, Subcommand)]
pub enum AuthCommand {
    /// Disables authentication
    Disable,
    /// Enables authentication
    Enable,
}

#[derive(Debug, Args)]
pub struct UserArgs {
    #[command(subcommand)]
    pub command: UserCommand,
}

#[derive(Debug, Subcommand)]
pub enum UserCommand {
    /// Adds a new user
    Add {
        args: Vec<String>,
        /// Read password from stdin instead of interactive terminal
        #[arg(long, num_args = 0..=1, require_equals = true, default_value = "true",
              default_missing_value = "true", action = ArgAction::Set, value_parser = go_bool)]
        interactive: bool,
        /// Create a user without password (CN based auth only)
        #[arg(long, num_args = 0..=1, require_equals = true, default_value = "false",
              default_missing_value = "true", action = ArgAction::Set, value_parser = go_bool)]
        no_password: bool,
        /// Supply password from the command line flag
        #[arg(long, default_value = "")]
        new_user_password: String,
    },
    /// Deletes a user
    Delete { args: Vec<String> },
    /// Gets detailed information of a user
    Get {
        args: Vec<String>,
        /// Show permissions of roles granted to the user
        #[arg(long, num_args = 0..=1, require_equals = true, default_value = "false",
              default_missing_value = "true", action = ArgAction::Set, value_parser = go_bool)]
        detail: bool,
    },
    /// Lists all users
    List,
    /// Changes password of user
    Passwd {
        args: Vec<String>,
        /// If true, read password from stdin instead of interactive terminal
        #[arg(long, num_args = 0..=1, require_equals = true, default_value = "true",
              default_missing_value = "true", action = ArgAction::Set, value_parser = go_bool)]
        interactive: bool,
    },
    /// Grants a role to a user
    GrantRole { args: Vec<String> },
    /// Revokes a role from a user
    RevokeRole { args: Vec<String> },
}

#[derive(Debug, Args)]
pub struct RoleArgs {
    #[command(subcommand)]
    pub command: RoleCommand,
}

#[derive(Debug, Subcommand)]
pub enum RoleCommand {
    /// Adds a new role
    Add { args: Vec<String> },
    /// Deletes a role
    Delete { args: Vec<String> },
    /// Gets detailed information of a role
    Get { args: Vec<String> },
    /// Lists all roles
    List,
    /// Grants a key to a role
    GrantPermission {
        args: Vec<String>,
        /// grant a prefix permission
        #[arg(long, num_args = 0..=1, require_equals = true, default_value = "false",
              default_missing_value = "true", action = ArgAction::Set, value_parser = go_bool)]
        prefix: bool,
        /// grant a permission of keys that are greater than or equal to the given key using byte compare
        #[arg(long, num_args = 0..=1, require_equals = true, default_value = "false",
              default_missing_value = "true", action = ArgAction::Set, value_parser = go_bool)]
        from_key: bool,
    },
    /// Revokes a key from a role
    RevokePermission {
        args: Vec<String>,
        /// revoke a prefix permission
        #[arg(long, num_args = 0..=1, require_equals = true, default_value = "false",
              default_missing_value = "true", action = ArgAction::Set, value_parser = go_bool)]
        prefix: bool,
        /// revoke a permission of keys that are greater than or equal to the given key using byte compare
        #[arg(long, num_args = 0..=1, require_equals = true, default_value = "false",
              default_missing_value = "true", action = ArgAction::Set, value_parser = go_bool)]
        from_key: bool,
    },
}

#[derive(Debug, Args)]
pub struct AlarmArgs {
    #[command(subcommand)]
    pub command: AlarmCommand,
}

#[derive(Debug, Subcommand)]
pub enum AlarmCommand {
    /// Disarms all alarms
    Disarm,
    /// Lists all alarms
    List,
}

#[derive(Debug, Args)]
pub struct DefragArgs {
    /// use all endpoints from the cluster member list
    #[arg(long)]
    pub cluster: bool,
    #[arg(
        long,
        default_value = "",
        help = "Optional. If present, defragments a data directory not in use by etcd."
    )]
    pub data_dir: String,
}

#[derive(Debug, Args)]
pub struct PutArgs {
    /// <key> <value> (<value> can also be given from stdin)
    pub args: Vec<OsString>,
    /// lease ID (in hexadecimal) to attach to the key
    #[arg(long, default_value = "0")]
    pub lease: String,
    /// return the previous key-value pair before modification
    #[arg(long)]
    pub prev_kv: bool,
    /// updates the key using its current value
    #[arg(long)]
    pub ignore_value: bool,
    /// updates the key using its current lease
    #[arg(long)]
    pub ignore_lease: bool,
}

#[derive(Debug, Args)]
pub struct GetArgs {
    /// <key> [range_end]
    pub args: Vec<OsString>,
    /// Linearizable(l) or Serializable(s)
    #[arg(long, default_value = "l")]
    pub consistency: String,
    /// Order of results; ASCEND or DESCEND (ASCEND by default)
    #[arg(long, default_value = "")]
    pub order: String,
    /// Sort target; CREATE, KEY, MODIFY, VALUE, or VERSION
    #[arg(long, default_value = "")]
    pub sort_by: String,
    /// Maximum number of results
    #[arg(long, default_value = "0", allow_negative_numbers = true, value_parser = go_int)]
    pub limit: i64,
    /// Get keys with matching prefix
    #[arg(long)]
    pub prefix: bool,
    /// Get keys that are greater than or equal to the given key using byte compare
    #[arg(long)]
    pub from_key: bool,
    /// Specify the kv revision
    #[arg(long, default_value = "0", allow_negative_numbers = true, value_parser = go_int)]
    pub rev: i64,
    /// Get only the keys
    #[arg(long)]
    pub keys_only: bool,
    /// Get only the count
    #[arg(long, hide = true)]
    pub count_only: bool,
    /// Only write values when using the "simple" output format
    #[arg(long)]
    pub print_value_only: bool,
}

#[derive(Debug, Args)]
pub struct DelArgs {
    /// <key> [range_end]
    pub args: Vec<OsString>,
    /// delete keys with matching prefix
    #[arg(long)]
    pub prefix: bool,
    /// return deleted key-value pairs
    #[arg(long)]
    pub prev_kv: bool,
    /// delete keys that are greater than or equal to the given key using byte compare
    #[arg(long)]
    pub from_key: bool,
}

#[derive(Debug, Args)]
pub struct TxnArgs {
    /// Input transaction in interactive mode
    #[arg(short, long)]
    pub interactive: bool,
    pub args: Vec<OsString>,
}

#[derive(Debug, Args)]
pub struct CompactionArgs {
    /// <revision>
    pub args: Vec<String>,
    /// 'true' to wait for compaction to physically remove all old revisions
    #[arg(long)]
    pub physical: bool,
}

#[derive(Debug, Args)]
pub struct EndpointArgs {
    /// use all endpoints from the cluster member list
    #[arg(long, global = true)]
    pub cluster: bool,
    #[command(subcommand)]
    pub command: EndpointCommand,
}

#[derive(Debug, Subcommand)]
pub enum EndpointCommand {
    /// Checks the healthiness of endpoints specified in `--endpoints` flag
    Health,
    /// Prints out the status of endpoints specified in `--endpoints` flag
    Status,
    /// Prints the KV history hash for each endpoint in --endpoints
    Hashkv {
        /// maximum revision to hash (default: all revisions)
        #[arg(long, default_value = "0", value_parser = go_int)]
        rev: i64,
    },
}

#[derive(Debug, Args)]
pub struct MemberArgs {
    #[command(subcommand)]
    pub command: MemberCommand,
}

#[derive(Debug, Subcommand)]
pub enum MemberCommand {
    /// Adds a member into the cluster
    Add {
        args: Vec<String>,
        #[arg(
            long,
            default_value = "",
            help = "comma separated peer URLs for the new member."
        )]
        peer_urls: String,
        /// indicates if the new member is raft learner
        #[arg(long)]
        learner: bool,
    },
    /// Removes a member from the cluster
    Remove { args: Vec<String> },
    /// Updates a member in the cluster
    Update {
        args: Vec<String>,
        #[arg(
            long,
            default_value = "",
            help = "comma separated peer URLs for the updated member."
        )]
        peer_urls: String,
    },
    /// Lists all members in the cluster
    List,
    /// Promotes a non-voting member in the cluster
    Promote { args: Vec<String> },
}

#[derive(Debug, Args)]
pub struct LeaseArgs {
    #[command(subcommand)]
    pub command: LeaseCommand,
}

#[derive(Debug, Subcommand)]
pub enum LeaseCommand {
    /// Creates leases
    Grant { args: Vec<String> },
    /// Revokes leases
    Revoke { args: Vec<String> },
    /// Get lease information
    Timetolive {
        args: Vec<String>,
        /// Get keys attached to this lease
        #[arg(long)]
        keys: bool,
    },
    /// List all active leases
    List,
    /// Keeps leases alive (renew)
    KeepAlive {
        args: Vec<String>,
        /// Resets the keep-alive time to its original value and exits immediately
        #[arg(long)]
        once: bool,
    },
}

#[derive(Debug, Args)]
pub struct WatchArgs {
    /// <key> [range_end]
    pub args: Vec<OsString>,
    /// [--] <exec-command> [arg ...]: run for every event
    #[arg(last = true)]
    pub exec: Vec<OsString>,
    /// Interactive mode
    #[arg(short = 'i', long)]
    pub interactive: bool,
    /// Revision to start watching
    #[arg(long, default_value = "0", allow_negative_numbers = true, value_parser = go_int)]
    pub rev: i64,
    /// Watch on a prefix if prefix is set
    #[arg(long)]
    pub prefix: bool,
    /// get the previous key-value pair before the event happens
    #[arg(long)]
    pub prev_kv: bool,
    /// get periodic watch progress notification from server (etcdctl 3.5)
    #[arg(long, hide = true)]
    pub progress_notify: bool,
}
