//! `concord`: start one member of a Concord cluster, with etcd's flags.

use concord_server::config::{self, Invocation};

fn main() {
    let invocation = match config::from_process() {
        Ok(invocation) => invocation,
        Err(error) => {
            eprintln!("{error}");
            eprintln!("See 'concord --help'.");
            std::process::exit(2);
        }
    };
    let config = match invocation {
        Invocation::PrintHelp => {
            print!("{}", config::flags::usage());
            return;
        }
        Invocation::PrintVersion => {
            println!("concord Version: {}", env!("CARGO_PKG_VERSION"));
            println!("etcd API Version: {}", concord_server::api::ETCD_VERSION);
            return;
        }
        Invocation::Run(config) => config,
    };
    init_logging(&config.log_level);
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("concord: cannot start the async runtime: {error}");
            std::process::exit(1);
        }
    };
    if let Err(error) = runtime.block_on(concord_server::member::run_until_signal(*config)) {
        tracing::error!("{error}");
        std::process::exit(1);
    }
}

fn init_logging(level: &str) {
    let level = match level {
        "debug" => "debug",
        "warn" => "warn",
        "error" | "panic" | "fatal" => "error",
        _ => "info",
    };
    let filter = tracing_subscriber::EnvFilter::try_from_env("CONCORD_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(level));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(false)
        .init();
}
