//! Test-only: damages a stopped member's store on purpose, so the corruption checks
//! (`--experimental-initial-corrupt-check`, `--experimental-corrupt-check-time`) have
//! something to find. It rewrites the value stored at a key's newest revision in
//! place, keeping that revision, its version and every other revision: the member's
//! history stays well-formed, only its contents now differ from its peers'. No client
//! write can do this; nothing in the server calls it.
//!
//! ```text
//! cargo build -p concord-server --example corrupt_store
//! target/debug/examples/corrupt_store <data-dir> <key> <new-value>
//! ```
//!
//! Run it only on the data dir of a member that is not running.

use anyhow::Context;
use concord_mvcc::StoreOptions;
use concord_server::state::backend::Backend;

fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [data_dir, key, value] = args.as_slice() else {
        anyhow::bail!("usage: corrupt_store <data-dir> <key> <new-value>");
    };
    let base = std::path::Path::new(data_dir).join("member").join("db");
    let backend = Backend::open(base.clone(), StoreOptions::default())
        .with_context(|| format!("open the store under {}", base.display()))?;
    let store = backend.store();
    match store.overwrite_value_in_place_for_tests(key.as_bytes(), value.as_bytes())? {
        Some(revision) => {
            println!("rewrote the value of {key:?} at revision {revision} in place");
            Ok(())
        }
        None => anyhow::bail!("{key:?} has no live revision in {}", base.display()),
    }
}
