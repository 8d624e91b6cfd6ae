//! `cargo xtask ...`: local clusters, chaos testing and benchmarks.
fn main() {
    eprintln!("xtask: no commands yet");
    std::process::exit(2);
}
