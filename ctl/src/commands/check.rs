//! `check perf` and `check datascale`, as etcdctl 3.4 runs them
//! (`ctlv3/command/check.go`): a put load from many clients, then PASS/FAIL
//! lines on stdout.
//!
//! - `perf`: puts of 256-byte keys and 1 KiB values under `--prefix`, at a
//!   fixed rate for 60 s, spread over the workload's clients; then the
//!   throughput (writes/s), the slowest request and the standard deviation of
//!   the latencies against etcdctl's thresholds (90% of the rate, 500 ms,
//!   100 ms).
//! - `datascale`: a fixed number of puts (512-byte keys and values), with the
//!   server's `process_resident_memory_bytes` read from `/metrics` of the
//!   first endpoint before and after; the difference is reported in MB.
//!
//! Both refuse a prefix that already holds keys, delete the prefix when done,
//! and compact (`--auto-compact`) and defragment (`--auto-defrag`) after.

use super::Context;
use crate::cli::CheckCommand;
use crate::client::{Client, MAX_RECV_MSG_SIZE, Retry};
use crate::error::{CtlError, ExitCode};
use crate::gofmt;
use crate::progress::ProgressBar;
use concord_proto::etcdserverpb as pb;
use pb::kv_client::KvClient;
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::Semaphore;

/// One workload of `check perf`: puts per second, clients, seconds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct PerfLoad {
    limit: u32,
    clients: usize,
    duration: u32,
}

/// One workload of `check datascale`: puts, bytes per key-value, clients.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct DatascaleLoad {
    limit: u64,
    kv_size: u32,
    clients: usize,
}

/// The workload names etcdctl accepts, and their short model names.
fn model(load: &str) -> Option<&'static str> {
    match load {
        "s" | "small" => Some("s"),
        "m" | "medium" => Some("m"),
        "l" | "large" => Some("l"),
        "xl" | "xLarge" => Some("xl"),
        _ => None,
    }
}

fn perf_load(model: &str) -> PerfLoad {
    let (limit, clients) = match model {
        "s" => (150, 50),
        "m" => (1000, 200),
        "l" => (8000, 500),
        _ => (15000, 1000),
    };
    PerfLoad {
        limit,
        clients,
        duration: 60,
    }
}

fn datascale_load(model: &str) -> DatascaleLoad {
    let (limit, clients) = match model {
        "s" => (10_000, 50),
        "m" => (100_000, 200),
        "l" => (1_000_000, 500),
        // Three versions of a million objects, as etcdctl's xl says.
        _ => (3_000_000, 1000),
    };
    DatascaleLoad {
        limit,
        kv_size: 1024,
        clients,
    }
}

pub(super) async fn check(command: CheckCommand, ctx: &mut Context<'_>) -> Result<(), CtlError> {
    match command {
        CheckCommand::Perf {
            load,
            prefix,
            auto_compact,
            auto_defrag,
        } => {
            let options = Finish {
                auto_compact,
                auto_defrag,
            };
            perf(&load, &prefix, options, ctx).await
        }
        CheckCommand::Datascale {
            load,
            prefix,
            auto_compact,
            auto_defrag,
        } => {
            let options = Finish {
                auto_compact,
                auto_defrag,
            };
            datascale(&load, &prefix, options, ctx).await
        }
    }
}

/// What to do after the load: `--auto-compact`, `--auto-defrag`.
#[derive(Debug, Clone, Copy)]
struct Finish {
    auto_compact: bool,
    auto_defrag: bool,
}

fn unknown_load(load: &str) -> CtlError {
    CtlError::bad_feature(format!("unknown load option {load}"))
}

/// One client per simulated etcdctl client, as etcdctl makes them.
async fn clients(ctx: &Context<'_>, count: usize) -> Result<Vec<Client>, CtlError> {
    let mut clients = Vec::with_capacity(count);
    for _ in 0..count {
        clients.push(ctx.client().await?);
    }
    Ok(clients)
}

/// Refuses a prefix that holds keys (etcdctl: ExitInvalidInput).
async fn require_empty_prefix(
    client: &Client,
    prefix: &str,
    timeout: Option<Duration>,
) -> Result<(), CtlError> {
    let req = pb::RangeRequest {
        key: prefix.as_bytes().to_vec(),
        range_end: crate::kv::prefix_range_end(prefix.as_bytes()),
        limit: 1,
        ..Default::default()
    };
    let get = client.call_no_deadline(Retry::Repeatable, req, |c, r| async move {
        KvClient::new(c)
            .max_decoding_message_size(MAX_RECV_MSG_SIZE)
            .range(r)
            .await
    });
    let resp = match timeout {
        Some(timeout) => tokio::time::timeout(timeout, get)
            .await
            .map_err(|_| CtlError::error("context deadline exceeded"))??,
        None => get.await?,
    };
    if !resp.kvs.is_empty() {
        let quoted = gofmt::quote(prefix.as_bytes());
        return Err(CtlError::invalid_input(format!(
            "prefix {quoted} has keys. Delete with etcdctl del --prefix {prefix} first"
        )));
    }
    Ok(())
}

/// Latencies of the requests that succeeded, and the errors of those that
/// failed (`pkg/report`'s Stats).
#[derive(Debug, Default)]
struct Report {
    latencies: Vec<f64>,
    errors: BTreeMap<String, u64>,
}

impl Report {
    fn record(&mut self, result: Result<Duration, String>) {
        match result {
            Ok(took) => self.latencies.push(took.as_secs_f64()),
            Err(e) => *self.errors.entry(e).or_default() += 1,
        }
    }

    /// Successful requests per second over `total`.
    fn rps(&self, total: Duration) -> f64 {
        self.latencies.len() as f64 / total.as_secs_f64()
    }

    fn slowest(&self) -> f64 {
        self.latencies.iter().copied().fold(0.0, f64::max)
    }

    /// The population standard deviation of the latencies.
    fn stddev(&self) -> f64 {
        let n = self.latencies.len() as f64;
        let mean = self.latencies.iter().sum::<f64>() / n;
        let variance = self
            .latencies
            .iter()
            .map(|l| (l - mean) * (l - mean))
            .sum::<f64>()
            / n;
        variance.sqrt()
    }

    /// etcdctl's `FAIL: too many errors` block.
    fn error_lines(&self) -> String {
        let mut text = String::new();
        if !self.errors.is_empty() {
            text.push_str("FAIL: too many errors\n");
            for (error, count) in &self.errors {
                text.push_str(&format!("FAIL: ERROR({error}) -> {count}\n"));
            }
        }
        text
    }
}

/// One of `check perf`'s criteria: its measured value, whether it passed, and the line
/// each outcome prints (etcdctl words them unevenly: only throughput says `FAIL:`).
struct Criterion {
    passed: bool,
    pass: String,
    fail: String,
}

/// The perf verdict lines and whether all passed.
fn perf_verdict(report: &Report, total: Duration, limit: u32) -> (String, bool) {
    let rps = report.rps(total);
    // Go's int(RPS)+1.
    let shown = rps.trunc() as i64 + 1;
    let (slowest, stddev) = (report.slowest(), report.stddev());
    let criteria = [
        Criterion {
            passed: rps / f64::from(limit) > 0.9,
            pass: format!("PASS: Throughput is {shown} writes/s"),
            fail: format!("FAIL: Throughput too low: {shown} writes/s"),
        },
        Criterion {
            passed: slowest <= 0.5,
            pass: format!("PASS: Slowest request took {slowest:.6}s"),
            fail: format!("Slowest request took too long: {slowest:.6}s"),
        },
        Criterion {
            passed: stddev <= 0.1,
            pass: format!("PASS: Stddev is {stddev:.6}s"),
            fail: format!("Stddev too high: {stddev:.6}s"),
        },
    ];
    let mut text = report.error_lines();
    let mut ok = report.errors.is_empty();
    for criterion in criteria {
        text.push_str(if criterion.passed {
            &criterion.pass
        } else {
            &criterion.fail
        });
        text.push('\n');
        ok &= criterion.passed;
    }
    text.push_str(if ok { "PASS\n" } else { "FAIL\n" });
    (text, ok)
}

/// Random keys as etcdctl makes them: a zig-zag varint of a random
/// non-negative 63-bit number at the start of a zeroed buffer.
struct KeyMaker {
    state: u64,
    buffer: Vec<u8>,
}

impl KeyMaker {
    fn new(size: usize) -> Self {
        let seed = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos() as u64)
            .unwrap_or(0x9e37_79b9_7f4a_7c15)
            ^ u64::from(std::process::id());
        Self {
            state: seed,
            buffer: vec![0; size],
        }
    }

    /// SplitMix64.
    fn next_random(&mut self) -> u64 {
        self.state = self.state.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.state;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    fn key(&mut self, prefix: &str) -> Vec<u8> {
        let n = self.next_random() >> 1;
        // binary.PutVarint: zig-zag, then base-128 (n >= 0, so zig-zag is n << 1).
        let mut v = n << 1;
        let mut at = 0;
        while v >= 0x80 {
            self.buffer[at] = (v as u8) | 0x80;
            v >>= 7;
            at += 1;
        }
        self.buffer[at] = v as u8;
        let mut key = prefix.as_bytes().to_vec();
        key.extend_from_slice(&self.buffer);
        key
    }
}

/// Sends `put` on a client with no deadline; its latency or error text.
async fn timed_put(client: Client, req: pb::PutRequest) -> Result<Duration, String> {
    let start = Instant::now();
    client
        .call_no_deadline(Retry::NonRepeatable, req, |c, r| async move {
            KvClient::new(c)
                .max_decoding_message_size(MAX_RECV_MSG_SIZE)
                .put(r)
                .await
        })
        .await
        .map(|_| start.elapsed())
        .map_err(|e| e.message)
}

async fn perf(
    load: &str,
    prefix: &str,
    finish: Finish,
    ctx: &mut Context<'_>,
) -> Result<(), CtlError> {
    let cfg = perf_load(model(load).ok_or_else(|| unknown_load(load))?);
    let clients = clients(ctx, cfg.clients).await?;
    let run_time = Duration::from_secs(u64::from(cfg.duration));
    require_empty_prefix(&clients[0], prefix, Some(run_time)).await?;

    let (bar, refresher) = ProgressBar::start(u64::from(cfg.duration));
    let ticker = {
        let bar = bar.clone();
        tokio::spawn(async move {
            for _ in 0..cfg.duration {
                tokio::time::sleep(Duration::from_secs(1)).await;
                bar.add(1);
            }
        })
    };

    let value = vec![0u8; 1024];
    let mut keys = KeyMaker::new(256);
    let in_flight = Arc::new(Semaphore::new(cfg.clients));
    let (results, mut received) = tokio::sync::mpsc::unbounded_channel();
    let start = Instant::now();
    let deadline = tokio::time::Instant::now() + run_time;
    // rate.NewLimiter(limit, 1): a put every 1/limit s on a fixed schedule
    // (timer lateness does not add up), and no more than one token banked
    // when the loop comes later than that.
    let period = Duration::from_secs(1).div_f64(f64::from(cfg.limit));
    let mut next = tokio::time::Instant::now();
    let mut sent = 0usize;
    loop {
        if next > deadline {
            break;
        }
        tokio::time::sleep_until(next).await;
        let now = tokio::time::Instant::now();
        if now > next + period {
            next = now;
        }
        next += period;
        let Ok(permit) = in_flight.clone().acquire_owned().await else {
            break;
        };
        let client = clients[sent % clients.len()].clone();
        let req = pb::PutRequest {
            key: keys.key(prefix),
            value: value.clone(),
            ..Default::default()
        };
        let results = results.clone();
        tokio::spawn(async move {
            let result = timed_put(client, req).await;
            drop(permit);
            let _ = results.send(result);
        });
        sent += 1;
    }
    drop(results);
    let mut report = Report::default();
    while let Some(result) = received.recv().await {
        report.record(result);
    }
    let total = start.elapsed();
    let _ = ticker.await;
    bar.finish(refresher);

    let deleted = delete_prefix(&clients[0], prefix).await?;
    after_load(&clients[0], deleted, finish, ctx).await?;
    let (text, ok) = perf_verdict(&report, total, cfg.limit);
    ctx.emit(text.as_bytes())?;
    if ok {
        Ok(())
    } else {
        Err(CtlError::silent(ExitCode::Error))
    }
}

/// Deletes the prefix (30 s, as etcdctl gives it); the revision after.
async fn delete_prefix(client: &Client, prefix: &str) -> Result<i64, CtlError> {
    let req = pb::DeleteRangeRequest {
        key: prefix.as_bytes().to_vec(),
        range_end: crate::kv::prefix_range_end(prefix.as_bytes()),
        ..Default::default()
    };
    let delete = client.call_no_deadline(Retry::NonRepeatable, req, |c, r| async move {
        KvClient::new(c)
            .max_decoding_message_size(MAX_RECV_MSG_SIZE)
            .delete_range(r)
            .await
    });
    let resp = tokio::time::timeout(Duration::from_secs(30), delete)
        .await
        .map_err(|_| CtlError::error("context deadline exceeded"))??;
    Ok(resp.header.map(|h| h.revision).unwrap_or_default())
}

/// `--auto-compact` at `revision` (physical) and `--auto-defrag` of every
/// endpoint, with etcdctl's lines; a failure ends the command.
async fn after_load(
    client: &Client,
    revision: i64,
    finish: Finish,
    ctx: &mut Context<'_>,
) -> Result<(), CtlError> {
    if finish.auto_compact {
        ctx.emit(format!("Compacting with revision {revision}\n").as_bytes())?;
        let req = pb::CompactionRequest {
            revision,
            physical: true,
        };
        let compact = client.call_no_deadline(Retry::Repeatable, req, |c, r| async move {
            KvClient::new(c)
                .max_decoding_message_size(MAX_RECV_MSG_SIZE)
                .compact(r)
                .await
        });
        tokio::time::timeout(Duration::from_secs(30), compact)
            .await
            .map_err(|_| CtlError::error("context deadline exceeded"))??;
        ctx.emit(format!("Compacted with revision {revision}\n").as_bytes())?;
    }
    if finish.auto_defrag {
        for ep in ctx.config.endpoints.clone() {
            let quoted = gofmt::quote(ep.as_bytes());
            ctx.emit(format!("Defragmenting {quoted}\n").as_bytes())?;
            let member = Client::connect_to(&ctx.config, std::slice::from_ref(&ep)).await?;
            let defrag = member.call_no_deadline(
                Retry::NonRepeatable,
                pb::DefragmentRequest::default(),
                |c, r| async move {
                    pb::maintenance_client::MaintenanceClient::new(c)
                        .max_decoding_message_size(MAX_RECV_MSG_SIZE)
                        .defragment(r)
                        .await
                },
            );
            tokio::time::timeout(Duration::from_secs(30), defrag)
                .await
                .map_err(|_| CtlError::error("context deadline exceeded"))??;
            ctx.emit(format!("Defragmented {quoted}\n").as_bytes())?;
        }
    }
    Ok(())
}

/// A resident-memory sample, or etcdctl's FAIL line for the one taken `when` (`before`,
/// `after`) the puts, and exit status 1.
fn memory_or_fail(sample: Option<f64>, when: &str, ctx: &mut Context<'_>) -> Result<f64, CtlError> {
    match sample {
        Some(bytes) => Ok(bytes),
        None => {
            ctx.emit(
                format!(
                    "FAIL: Could not read process_resident_memory_bytes {when} the put operations.\n"
                )
                .as_bytes(),
            )?;
            Err(CtlError::silent(ExitCode::Error))
        }
    }
}

async fn datascale(
    load: &str,
    prefix: &str,
    finish: Finish,
    ctx: &mut Context<'_>,
) -> Result<(), CtlError> {
    let cfg = datascale_load(model(load).ok_or_else(|| unknown_load(load))?);
    let clients = clients(ctx, cfg.clients).await?;
    let first = ctx.config.endpoints.first().cloned().unwrap_or_default();
    require_empty_prefix(&clients[0], prefix, None).await?;

    let tls = ctx.config.tls.clone();
    let before = resident_memory(&first, tls.as_ref(), ctx).await?;
    let before = memory_or_fail(before, "before", ctx)?;
    ctx.emit(
        format!(
            "Start data scale check for work load [{} key-value pairs, {} bytes per key-value, {} concurrent clients].\n",
            cfg.limit, cfg.kv_size, cfg.clients
        )
        .as_bytes(),
    )?;
    let (bar, refresher) = ProgressBar::start(cfg.limit);
    let value = vec![0u8; 512];
    let mut keys = KeyMaker::new(512);
    let in_flight = Arc::new(Semaphore::new(cfg.clients));
    let (results, mut received) = tokio::sync::mpsc::unbounded_channel();
    for i in 0..cfg.limit {
        let Ok(permit) = in_flight.clone().acquire_owned().await else {
            break;
        };
        let client = clients[usize::try_from(i).unwrap_or_default() % clients.len()].clone();
        let req = pb::PutRequest {
            key: keys.key(prefix),
            value: value.clone(),
            ..Default::default()
        };
        let results = results.clone();
        let bar = bar.clone();
        tokio::spawn(async move {
            let result = timed_put(client, req).await;
            drop(permit);
            bar.add(1);
            let _ = results.send(result);
        });
    }
    drop(results);
    let mut report = Report::default();
    while let Some(result) = received.recv().await {
        report.record(result);
    }
    bar.finish(refresher);

    let after = resident_memory(&first, tls.as_ref(), ctx).await?;
    let after = memory_or_fail(after, "after", ctx)?;
    let deleted = delete_prefix(&clients[0], prefix).await?;
    after_load(&clients[0], deleted, finish, ctx).await?;
    if !report.errors.is_empty() {
        ctx.emit(report.error_lines().as_bytes())?;
        return Err(CtlError::silent(ExitCode::Error));
    }
    let used_mb = (after - before) / (1024.0 * 1024.0);
    ctx.emit(format!("PASS: Approximate system memory used : {used_mb:.2} MB.\n").as_bytes())
}

/// `process_resident_memory_bytes` from the endpoint's `/metrics`, as etcdctl
/// reads it (`endpointMemoryMetrics`): what went wrong is printed on stdout
/// and gives `None`.
async fn resident_memory(
    endpoint: &str,
    tls: Option<&crate::tls::TlsSettings>,
    ctx: &mut Context<'_>,
) -> Result<Option<f64>, CtlError> {
    let base = crate::client::endpoint_url(endpoint);
    let url = format!("{base}/metrics");
    let body = match fetch(&url, tls).await {
        Ok(body) => body,
        Err(line) => {
            ctx.emit(format!("{line}\n").as_bytes())?;
            return Ok(None);
        }
    };
    match parse_resident_memory(&body) {
        Ok(bytes) => Ok(Some(bytes)),
        Err(line) => {
            ctx.emit(format!("{line}\n").as_bytes())?;
            Ok(None)
        }
    }
}

const RESIDENT_MEMORY: &str = "process_resident_memory_bytes";

/// The first line that starts with the metric's name (the `# HELP` and
/// `# TYPE` lines do not), its value parsed as a float.
fn parse_resident_memory(body: &str) -> Result<f64, String> {
    let value = body
        .split('\n')
        .find_map(|line| line.strip_prefix(RESIDENT_MEMORY))
        .map(str::trim)
        .filter(|v| !v.is_empty())
        .ok_or_else(|| format!("could not find: {RESIDENT_MEMORY}"))?;
    value.parse::<f64>().map_err(|_| {
        format!(
            "parse error: strconv.ParseFloat: parsing {}: invalid syntax",
            gofmt::quote(value.as_bytes())
        )
    })
}

/// An HTTP/1.0 GET (the server answers and closes; no chunking); the body,
/// or etcdctl's line for the failure.
async fn fetch(url: &str, tls: Option<&crate::tls::TlsSettings>) -> Result<String, String> {
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    let (secure, rest) = match url.split_once("://") {
        Some(("https", rest)) => (true, rest),
        Some((_, rest)) => (false, rest),
        None => (false, url),
    };
    let (authority, path) = match rest.find('/') {
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest, "/"),
    };
    let go_error = |e: &str| format!("fetch error: Get \"{url}\": {e}");
    let (host, port) = crate::tls::host_port(authority).map_err(|e| go_error(&e.message))?;
    let tcp = tokio::net::TcpStream::connect((host.as_str(), port))
        .await
        .map_err(|e| go_error(&format!("dial tcp {authority}: {}", dial_error(&e))))?;
    let request = format!(
        "GET {path} HTTP/1.0\r\nHost: {authority}\r\nUser-Agent: Go-http-client/1.1\r\n\r\n"
    );
    let mut raw = Vec::new();
    if secure {
        // etcdctl loads the client certificate pair (it must be given) and
        // verifies with the system's roots, or not at all with
        // --insecure-skip-tls-verify.
        let settings = tls.cloned().unwrap_or_default();
        let (Some(_), Some(_)) = (&settings.cert, &settings.key) else {
            return Err("client certificate error: open : no such file or directory".to_owned());
        };
        let settings = crate::tls::TlsSettings {
            cacert: None,
            ..settings
        };
        let mut config = crate::tls::client_config(&settings)
            .map_err(|e| format!("client certificate error: {}", e.message))?
            .as_ref()
            .clone();
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        let name = crate::tls::verified_name(None, &host).map_err(|e| go_error(&e.to_string()))?;
        let mut stream = tokio_rustls::TlsConnector::from(Arc::new(config))
            .connect(name, tcp)
            .await
            .map_err(|e| go_error(&e.to_string()))?;
        stream
            .write_all(request.as_bytes())
            .await
            .map_err(|e| go_error(&e.to_string()))?;
        // A peer closing without close_notify still gave the whole body.
        let _ = stream.read_to_end(&mut raw).await;
    } else {
        let mut stream = tcp;
        stream
            .write_all(request.as_bytes())
            .await
            .map_err(|e| go_error(&e.to_string()))?;
        stream
            .read_to_end(&mut raw)
            .await
            .map_err(|e| format!("fetch error: reading {url}: {e}"))?;
    }
    let text = String::from_utf8_lossy(&raw);
    let body = text
        .split_once("\r\n\r\n")
        .map(|(_, body)| body)
        .ok_or_else(|| go_error("malformed HTTP response"))?;
    Ok(body.to_owned())
}

/// Go's text for a failed dial.
fn dial_error(e: &std::io::Error) -> String {
    match e.kind() {
        std::io::ErrorKind::ConnectionRefused => "connect: connection refused".to_owned(),
        _ => e.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn workloads_are_etcdctls() {
        assert_eq!(model("xLarge"), Some("xl"));
        assert_eq!(model("XL"), None);
        assert_eq!(
            perf_load("m"),
            PerfLoad {
                limit: 1000,
                clients: 200,
                duration: 60
            }
        );
        assert_eq!(datascale_load("s").limit, 10_000);
    }

    #[test]
    fn perf_verdict_lines() {
        let report = Report {
            latencies: vec![0.010, 0.020, 0.030],
            errors: BTreeMap::new(),
        };
        let (text, ok) = perf_verdict(&report, Duration::from_millis(20), 150);
        assert!(ok);
        assert_eq!(
            text,
            "PASS: Throughput is 151 writes/s\nPASS: Slowest request took 0.030000s\n\
             PASS: Stddev is 0.008165s\nPASS\n"
        );
        let report = Report {
            latencies: vec![0.1, 0.9],
            errors: BTreeMap::from([("etcdserver: request timed out".to_owned(), 2)]),
        };
        let (text, ok) = perf_verdict(&report, Duration::from_secs(1), 150);
        assert!(!ok);
        assert_eq!(
            text,
            "FAIL: too many errors\nFAIL: ERROR(etcdserver: request timed out) -> 2\n\
             FAIL: Throughput too low: 3 writes/s\nSlowest request took too long: 0.900000s\n\
             Stddev too high: 0.400000s\nFAIL\n"
        );
    }

    #[test]
    fn resident_memory_comes_from_the_sample_line() {
        let body = "# HELP process_resident_memory_bytes Resident memory size in bytes.\n\
                    # TYPE process_resident_memory_bytes gauge\n\
                    process_resident_memory_bytes 2.4576e+07\nprocess_start_time_seconds 1\n";
        assert_eq!(parse_resident_memory(body), Ok(24_576_000.0));
        assert_eq!(
            parse_resident_memory("go_goroutines 7\n"),
            Err("could not find: process_resident_memory_bytes".to_owned())
        );
    }

    #[test]
    fn keys_are_a_varint_at_the_start_of_a_zeroed_buffer() {
        let mut keys = KeyMaker::new(256);
        let key = keys.key("/p/");
        assert_eq!(key.len(), 3 + 256);
        assert!(key.starts_with(b"/p/"));
        // A 63-bit number takes at most 9 varint bytes (zig-zag of n >= 0 is 2n).
        assert!(key[3 + 10..].iter().all(|b| *b == 0));
        assert_ne!(keys.key("/p/"), key);
    }
}
