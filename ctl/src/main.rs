//! `concordctl`: an etcdctl-compatible command-line client.

fn main() {
    let code = concord_ctl::run(std::env::args_os().collect());
    std::process::exit(code);
}
