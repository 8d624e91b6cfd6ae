//! etcdctl 3.4.23's v2 help pages, as `ETCDCTL_API=2 etcdctl [command] --help` prints
//! them (urfave/cli's templates filled in); facts read off the binary.

/// The help page of the command at `path` (empty: the whole program).
pub fn page(path: &[&str]) -> Option<&'static str> {
    Some(match path {
        [] => {
            r#"NAME:
   etcdctl - A simple command line client for etcd.

USAGE:
   etcdctl [global options] command [command options] [arguments...]

VERSION:
   3.4.23

COMMANDS:
   backup          backup an etcd directory
   cluster-health  check the health of the etcd cluster
   mk              make a new key with a given value
   mkdir           make a new directory
   rm              remove a key or a directory
   rmdir           removes the key if it is an empty directory or a key-value pair
   get             retrieve the value of a key
   ls              retrieve a directory
   set             set the value of a key
   setdir          create a new directory or update an existing directory TTL
   update          update an existing key with a given value
   updatedir       update an existing directory
   watch           watch a key for changes
   exec-watch      watch a key for changes and exec an executable
   member          member add, remove and list subcommands
   user            user add, grant and revoke subcommands
   role            role add, grant and revoke subcommands
   auth            overall auth controls
   help, h         Shows a list of commands or help for one command

GLOBAL OPTIONS:
   --debug                          output cURL commands which can be used to reproduce the request
   --no-sync                        don't synchronize cluster information before sending request
   --output simple, -o simple       output response in the given format (simple, `extended` or `json`) (default: "simple")
   --discovery-srv value, -D value  domain name to query for SRV records describing cluster endpoints
   --insecure-discovery             accept insecure SRV records describing cluster endpoints
   --peers value, -C value          DEPRECATED - "--endpoints" should be used instead
   --endpoint value                 DEPRECATED - "--endpoints" should be used instead
   --endpoints value                a comma-delimited list of machine addresses in the cluster (default: "http://127.0.0.1:2379,http://127.0.0.1:4001")
   --cert-file value                identify HTTPS client using this SSL certificate file
   --key-file value                 identify HTTPS client using this SSL key file
   --ca-file value                  verify certificates of HTTPS-enabled servers using this CA bundle
   --username value, -u value       provide username[:password] and prompt if password is not supplied.
   --timeout value                  connection timeout per request (default: 2s)
   --total-timeout value            timeout for the command execution (except watch) (default: 5s)
   --help, -h                       show help
   --version, -v                    print the version
"#
        }
        ["backup"] => {
            r#"NAME:
   etcdctl backup - backup an etcd directory

USAGE:
   etcdctl backup [command options]  

OPTIONS:
   --data-dir value        Path to the etcd data dir
   --wal-dir value         Path to the etcd wal dir
   --backup-dir value      Path to the backup dir
   --backup-wal-dir value  Path to the backup wal dir
   --with-v3               Backup v3 backend data
   
"#
        }
        ["cluster-health"] => {
            r#"NAME:
   etcdctl cluster-health - check the health of the etcd cluster

USAGE:
   etcdctl cluster-health [command options]  

OPTIONS:
   --forever, -f  forever check the health every 10 second until CTRL+C
   
"#
        }
        ["mk"] => {
            r#"NAME:
   etcdctl mk - make a new key with a given value

USAGE:
   etcdctl mk [command options] <key> <value>

OPTIONS:
   --in-order   create in-order key under directory <key>
   --ttl value  key time-to-live in seconds (default: 0)
   
"#
        }
        ["mkdir"] => {
            r#"NAME:
   etcdctl mkdir - make a new directory

USAGE:
   etcdctl mkdir [command options] <key>

OPTIONS:
   --ttl value  key time-to-live in seconds (default: 0)
   
"#
        }
        ["rm"] => {
            r#"NAME:
   etcdctl rm - remove a key or a directory

USAGE:
   etcdctl rm [command options] <key>

OPTIONS:
   --dir               removes the key if it is an empty directory or a key-value pair
   --recursive, -r     removes the key and all child keys(if it is a directory)
   --with-value value  previous value
   --with-index value  previous index (default: 0)
   
"#
        }
        ["rmdir"] => {
            r#"NAME:
   etcdctl rmdir - removes the key if it is an empty directory or a key-value pair

USAGE:
   etcdctl rmdir <key>
"#
        }
        ["get"] => {
            r#"NAME:
   etcdctl get - retrieve the value of a key

USAGE:
   etcdctl get [command options] <key>

OPTIONS:
   --sort        returns result in sorted order
   --quorum, -q  require quorum for get request
   
"#
        }
        ["ls"] => {
            r#"NAME:
   etcdctl ls - retrieve a directory

USAGE:
   etcdctl ls [command options] [key]

OPTIONS:
   --sort           returns result in sorted order
   --recursive, -r  returns all key names recursively for the given path
   -p               append slash (/) to directories
   --quorum, -q     require quorum for get request
   
"#
        }
        ["set"] => {
            r#"NAME:
   etcdctl set - set the value of a key

USAGE:
   etcdctl set [command options] <key> <value>

DESCRIPTION:
   Set sets the value of a key.

   When <value> begins with '-', <value> is interpreted as a flag.
   Insert '--' for workaround:

   $ set -- <key> <value>

OPTIONS:
   --ttl value              key time-to-live in seconds (default: 0)
   --swap-with-value value  previous value
   --swap-with-index value  previous index (default: 0)
   
"#
        }
        ["setdir"] => {
            r#"NAME:
   etcdctl setdir - create a new directory or update an existing directory TTL

USAGE:
   etcdctl setdir [command options] <key>

OPTIONS:
   --ttl value  key time-to-live in seconds (default: 0)
   
"#
        }
        ["update"] => {
            r#"NAME:
   etcdctl update - update an existing key with a given value

USAGE:
   etcdctl update [command options] <key> <value>

OPTIONS:
   --ttl value  key time-to-live in seconds (default: 0)
   
"#
        }
        ["updatedir"] => {
            r#"NAME:
   etcdctl updatedir - update an existing directory

USAGE:
   etcdctl updatedir [command options] <key> <value>

OPTIONS:
   --ttl value  key time-to-live in seconds (default: 0)
   
"#
        }
        ["watch"] => {
            r#"NAME:
   etcdctl watch - watch a key for changes

USAGE:
   etcdctl watch [command options] <key>

OPTIONS:
   --forever, -f        forever watch a key until CTRL+C
   --after-index value  watch after the given index (default: 0)
   --recursive, -r      returns all values for key and child keys
   
"#
        }
        ["exec-watch"] => {
            r#"NAME:
   etcdctl exec-watch - watch a key for changes and exec an executable

USAGE:
   etcdctl exec-watch [command options] <key> <command> [args...]

OPTIONS:
   --after-index value  watch after the given index (default: 0)
   --recursive, -r      watch all values for key and child keys
   
"#
        }
        ["member"] => {
            r#"NAME:
   etcdctl member - member add, remove and list subcommands

USAGE:
   etcdctl member command [command options] [arguments...]

COMMANDS:
   list    enumerate existing cluster members
   add     add a new member to the etcd cluster
   remove  remove an existing member from the etcd cluster
   update  update an existing member in the etcd cluster

OPTIONS:
   --help, -h  show help
   
"#
        }
        ["user"] => {
            r#"NAME:
   etcdctl user - user add, grant and revoke subcommands

USAGE:
   etcdctl user command [command options] [arguments...]

COMMANDS:
   add     add a new user for the etcd cluster
   get     get details for a user
   list    list all current users
   remove  remove a user for the etcd cluster
   grant   grant roles to an etcd user
   revoke  revoke roles for an etcd user
   passwd  change password for a user

OPTIONS:
   --help, -h  show help
   
"#
        }
        ["role"] => {
            r#"NAME:
   etcdctl role - role add, grant and revoke subcommands

USAGE:
   etcdctl role command [command options] [arguments...]

COMMANDS:
   add     add a new role for the etcd cluster
   get     get details for a role
   list    list all roles
   remove  remove a role from the etcd cluster
   grant   grant path matches to an etcd role
   revoke  revoke path matches for an etcd role

OPTIONS:
   --help, -h  show help
   
"#
        }
        ["auth"] => {
            r#"NAME:
   etcdctl auth - overall auth controls

USAGE:
   etcdctl auth command [command options] [arguments...]

COMMANDS:
   enable   enable auth access controls
   disable  disable auth access controls

OPTIONS:
   --help, -h  show help
   
"#
        }
        ["member", "list"] => {
            r#"NAME:
   etcdctl member list - enumerate existing cluster members

USAGE:
   etcdctl member list  
"#
        }
        ["member", "add"] => {
            r#"NAME:
   etcdctl member add - add a new member to the etcd cluster

USAGE:
   etcdctl member add <name> <peerURL>
"#
        }
        ["member", "remove"] => {
            r#"NAME:
   etcdctl member remove - remove an existing member from the etcd cluster

USAGE:
   etcdctl member remove <memberID>
"#
        }
        ["member", "update"] => {
            r#"NAME:
   etcdctl member update - update an existing member in the etcd cluster

USAGE:
   etcdctl member update <memberID> <peerURLs>
"#
        }
        ["user", "add"] => {
            r#"NAME:
   etcdctl user add - add a new user for the etcd cluster

USAGE:
   etcdctl user add <user>
"#
        }
        ["user", "get"] => {
            r#"NAME:
   etcdctl user get - get details for a user

USAGE:
   etcdctl user get <user>
"#
        }
        ["user", "list"] => {
            r#"NAME:
   etcdctl user list - list all current users

USAGE:
   etcdctl user list <user>
"#
        }
        ["user", "remove"] => {
            r#"NAME:
   etcdctl user remove - remove a user for the etcd cluster

USAGE:
   etcdctl user remove <user>
"#
        }
        ["user", "grant"] => {
            r#"NAME:
   etcdctl user grant - grant roles to an etcd user

USAGE:
   etcdctl user grant [command options] <user>

OPTIONS:
   --roles value  List of roles to grant or revoke
   
"#
        }
        ["user", "revoke"] => {
            r#"NAME:
   etcdctl user revoke - revoke roles for an etcd user

USAGE:
   etcdctl user revoke [command options] <user>

OPTIONS:
   --roles value  List of roles to grant or revoke
   
"#
        }
        ["user", "passwd"] => {
            r#"NAME:
   etcdctl user passwd - change password for a user

USAGE:
   etcdctl user passwd <user>
"#
        }
        ["role", "add"] => {
            r#"NAME:
   etcdctl role add - add a new role for the etcd cluster

USAGE:
   etcdctl role add <role> 
"#
        }
        ["role", "get"] => {
            r#"NAME:
   etcdctl role get - get details for a role

USAGE:
   etcdctl role get <role>
"#
        }
        ["role", "list"] => {
            r#"NAME:
   etcdctl role list - list all roles

USAGE:
   etcdctl role list  
"#
        }
        ["role", "remove"] => {
            r#"NAME:
   etcdctl role remove - remove a role from the etcd cluster

USAGE:
   etcdctl role remove <role>
"#
        }
        ["role", "grant"] => {
            r#"NAME:
   etcdctl role grant - grant path matches to an etcd role

USAGE:
   etcdctl role grant [command options] <role>

OPTIONS:
   --path value       Path granted for the role to access
   --read             Grant read-only access
   --write            Grant write-only access
   --readwrite, --rw  Grant read-write access
   
"#
        }
        ["role", "revoke"] => {
            r#"NAME:
   etcdctl role revoke - revoke path matches for an etcd role

USAGE:
   etcdctl role revoke [command options] <role>

OPTIONS:
   --path value       Path revoked for the role to access
   --read             Revoke read access
   --write            Revoke write access
   --readwrite, --rw  Revoke read-write access
   
"#
        }
        ["auth", "enable"] => {
            r#"NAME:
   etcdctl auth enable - enable auth access controls

USAGE:
   etcdctl auth enable  
"#
        }
        ["auth", "disable"] => {
            r#"NAME:
   etcdctl auth disable - disable auth access controls

USAGE:
   etcdctl auth disable  
"#
        }
        _ => return None,
    })
}
