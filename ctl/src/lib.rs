//! `concordctl`: an etcdctl-compatible command-line client.
