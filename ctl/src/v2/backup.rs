//! `backup --data-dir D --backup-dir B`: etcdctl v2 copies an etcd data dir
//! (WAL and snap files) under new member and cluster ids. Concord's data dir
//! holds a fjall store and its own WAL, which this command does not yet copy:
//! it says so and fails, rather than pretend.

use super::flags::Parsed;
use super::{Exit, Outcome};

pub fn run(local: &Parsed) -> Outcome {
    let data_dir = local.string("data-dir");
    eprintln!(
        "concordctl: backup of a Concord data dir ({data_dir:?}) is not supported yet; use 'ETCDCTL_API=3 concordctl snapshot save' and 'snapshot restore'"
    );
    Err(Exit(1))
}
