//! Records the compiler's version for `etcd_server_go_version`, the metric in which
//! etcd names its toolchain.

fn main() {
    let rustc = std::env::var("RUSTC").unwrap_or_else(|_| "rustc".into());
    let version = std::process::Command::new(rustc)
        .arg("--version")
        .output()
        .ok()
        .and_then(|out| String::from_utf8(out.stdout).ok())
        .and_then(|text| text.split_whitespace().nth(1).map(str::to_string))
        .unwrap_or_else(|| "unknown".into());
    // "go1.19.8" in etcd; "rustc1.88.0" here.
    println!("cargo:rustc-env=CONCORD_RUSTC_VERSION=rustc{version}");
    println!("cargo:rerun-if-env-changed=RUSTC");
}
