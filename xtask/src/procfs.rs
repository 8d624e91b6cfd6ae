//! Reading server processes' figures from Linux's /proc: resident memory (VmRSS), CPU time
//! (utime + stime), and which process listens on a TCP port (/proc/net/tcp + /proc/*/fd).
//! The parsers take text so they are unit-tested without a live process.

use std::path::Path;
use std::process::Command;

use anyhow::{Context, Result};

/// TCP state `0A` in /proc/net/tcp is LISTEN.
const TCP_LISTEN: &str = "0A";

/// Socket inodes of sockets listening on `port` in a /proc/net/tcp or tcp6 table.
pub fn listening_inodes(table: &str, port: u16) -> Vec<u64> {
    table
        .lines()
        .skip(1)
        .filter_map(|line| {
            let fields: Vec<&str> = line.split_whitespace().collect();
            // sl local_address rem_address st tx:rx tr:when retrnsmt uid timeout inode
            let local = fields.get(1)?;
            let state = fields.get(3)?;
            let inode = fields.get(9)?;
            let (_, port_hex) = local.rsplit_once(':')?;
            let local_port = u16::from_str_radix(port_hex, 16).ok()?;
            (local_port == port && *state == TCP_LISTEN).then(|| inode.parse().ok())?
        })
        .collect()
}

/// The inode of a `/proc/<pid>/fd/<n>` link target such as `socket:[12345]`.
pub fn socket_inode(link_target: &str) -> Option<u64> {
    link_target
        .strip_prefix("socket:[")?
        .strip_suffix(']')?
        .parse()
        .ok()
}

/// VmRSS in KiB from the text of /proc/<pid>/status.
pub fn vm_rss_kib(status: &str) -> Option<u64> {
    status_kib(status, "VmRSS:")
}

/// A `Name:   123 kB` field of /proc/<pid>/status, in KiB.
fn status_kib(status: &str, field: &str) -> Option<u64> {
    let line = status.lines().find(|l| l.starts_with(field))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

/// utime + stime in clock ticks from the text of /proc/<pid>/stat. The command name (field 2)
/// is in parentheses and may itself hold spaces or ')', so fields are counted after the last ')'.
pub fn cpu_ticks(stat: &str) -> Option<u64> {
    let (_, after_comm) = stat.rsplit_once(')')?;
    let fields: Vec<&str> = after_comm.split_whitespace().collect();
    // after_comm starts at field 3 (state); utime is field 14, stime field 15.
    let utime: u64 = fields.get(11)?.parse().ok()?;
    let stime: u64 = fields.get(12)?.parse().ok()?;
    Some(utime + stime)
}

/// Clock ticks per second (`getconf CLK_TCK`; 100 on every mainstream Linux if that fails).
pub fn clock_ticks_per_second() -> u64 {
    Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|out| String::from_utf8(out.stdout).ok())
        .and_then(|text| text.trim().parse().ok())
        .unwrap_or(100)
}

/// A process's resident memory in bytes.
pub fn rss_bytes(pid: u32) -> Result<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))
        .with_context(|| format!("read status of {pid}"))?;
    vm_rss_kib(&status)
        .map(|kib| kib * 1024)
        .with_context(|| format!("no VmRSS for {pid}"))
}

/// A process's peak resident memory (VmHWM) in bytes.
pub fn peak_rss_bytes(pid: u32) -> Result<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))
        .with_context(|| format!("read status of {pid}"))?;
    status_kib(&status, "VmHWM:")
        .map(|kib| kib * 1024)
        .with_context(|| format!("no VmHWM for {pid}"))
}

/// A process's CPU time so far, in seconds.
pub fn cpu_seconds(pid: u32, ticks_per_second: u64) -> Result<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .with_context(|| format!("read stat of {pid}"))?;
    let ticks = cpu_ticks(&stat).with_context(|| format!("unparsable /proc/{pid}/stat"))?;
    Ok(ticks as f64 / ticks_per_second as f64)
}

/// The pids of the processes holding a socket that listens on `port` (IPv4 or IPv6).
pub fn pids_listening_on(port: u16) -> Result<Vec<u32>> {
    let mut inodes = Vec::new();
    for table in ["/proc/net/tcp", "/proc/net/tcp6"] {
        if let Ok(text) = std::fs::read_to_string(table) {
            inodes.extend(listening_inodes(&text, port));
        }
    }
    if inodes.is_empty() {
        return Ok(Vec::new());
    }
    let mut pids = Vec::new();
    for entry in std::fs::read_dir("/proc").context("list /proc")? {
        let Ok(entry) = entry else { continue };
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|name| name.parse::<u32>().ok())
        else {
            continue;
        };
        if holds_any_socket(&entry.path(), &inodes) {
            pids.push(pid);
        }
    }
    Ok(pids)
}

fn holds_any_socket(process_dir: &Path, inodes: &[u64]) -> bool {
    // Processes we may not inspect (other users) or that exit meanwhile are skipped.
    let Ok(fds) = std::fs::read_dir(process_dir.join("fd")) else {
        return false;
    };
    fds.flatten().any(|fd| {
        std::fs::read_link(fd.path())
            .ok()
            .and_then(|target| socket_inode(&target.to_string_lossy()))
            .is_some_and(|inode| inodes.contains(&inode))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const TCP_TABLE: &str = "\
  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode
   0: 0100007F:094B 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 31337 1 0000000000000000 100 0 0 10 0
   1: 0100007F:094C 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 31338 1 0000000000000000 100 0 0 10 0
   2: 0100007F:094B 0100007F:D2F0 01 00000000:00000000 00:00000000 00000000     0        0 40000 1 0000000000000000 20 4 30 10 -1
";

    #[test]
    fn listening_sockets_by_port() {
        // 0x094B = 2379: the LISTEN row counts, the established connection (state 01) does not.
        assert_eq!(listening_inodes(TCP_TABLE, 2379), vec![31337]);
        assert_eq!(listening_inodes(TCP_TABLE, 2380), vec![31338]);
        assert!(listening_inodes(TCP_TABLE, 2381).is_empty());
    }

    #[test]
    fn ipv6_rows_parse_too() {
        let table = "header\n   0: 00000000000000000000000001000000:094B 00000000000000000000000000000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 777 1 0 100 0 0 10 0\n";
        assert_eq!(listening_inodes(table, 2379), vec![777]);
    }

    #[test]
    fn socket_links() {
        assert_eq!(socket_inode("socket:[31337]"), Some(31337));
        assert_eq!(socket_inode("pipe:[31337]"), None);
        assert_eq!(socket_inode("/dev/null"), None);
    }

    #[test]
    fn rss_from_status() {
        let status = "Name:\tconcord\nVmPeak:\t  900000 kB\nVmHWM:\t   50000 kB\n\
                      VmRSS:\t   45312 kB\nRssAnon:\t 30000 kB\n";
        assert_eq!(vm_rss_kib(status), Some(45312));
        assert_eq!(status_kib(status, "VmHWM:"), Some(50000));
        assert_eq!(vm_rss_kib("Name:\tkthreadd\n"), None);
    }

    #[test]
    fn cpu_ticks_skip_a_tricky_command_name() {
        // comm "(my) proc" contains ") " – fields must be counted after the last ')'.
        let stat = "4242 ((my) proc) S 1 4242 4242 0 -1 4194560 1000 0 0 0 250 75 0 0 20 0 9 0 12345 1000000 2000 18446744073709551615";
        assert_eq!(cpu_ticks(stat), Some(325));
        assert_eq!(cpu_ticks("4242 (short) S 1"), None);
    }

    #[test]
    fn this_process_is_readable() {
        let me = std::process::id();
        assert!(rss_bytes(me).unwrap() > 0);
        assert!(peak_rss_bytes(me).unwrap() >= rss_bytes(me).unwrap() / 2);
    }

    #[test]
    fn cpu_time_grows_while_this_thread_computes() {
        let me = std::process::id();
        let ticks = clock_ticks_per_second();
        let before = cpu_seconds(me, ticks).unwrap();
        let started = std::time::Instant::now();
        // 0.2 s of CPU, which a busy machine may take a while to hand out; the count moves in
        // clock ticks (10 ms), so a field that stands still (another one than utime + stime)
        // fails here.
        let mut spent = 0.0;
        let mut state = 1u64;
        while spent < 0.2 && started.elapsed() < std::time::Duration::from_secs(30) {
            for _ in 0..1_000_000 {
                state =
                    std::hint::black_box(state.wrapping_mul(6364136223846793005).wrapping_add(1));
            }
            spent = cpu_seconds(me, ticks).unwrap() - before;
        }
        let wall = started.elapsed().as_secs_f64();
        assert!(
            spent >= 0.2,
            "{spent} s of CPU counted in {wall:.1} s of spinning"
        );
        // Nor can the process (other tests' threads too) have been counted more than every
        // core for the whole time, give or take the ticks not yet accounted to its threads.
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get()) as f64;
        assert!(
            spent <= wall * cores + 0.5,
            "{spent} s of CPU counted in {wall:.1} s"
        );
    }

    #[test]
    fn finds_the_pid_listening_on_a_port() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        assert_eq!(pids_listening_on(port).unwrap(), vec![std::process::id()]);
    }
}
