//! Which member opened a TCP connection to a proxy, from Linux's /proc.
//!
//! Every member dials every peer through the same advertised port, so a proxy cannot tell the
//! dialer from the address it was dialed on. The source port can: /proc/net/tcp lists the
//! dialer's end of the connection (local port = the source port, remote port = the proxy's) with
//! its socket inode, and /proc/<pid>/fd of exactly one member links to `socket:[inode]`. The
//! connection is complete before `accept` returns, so both entries exist by then.

use std::path::Path;

use crate::procfs::socket_inode;

/// The inode of the socket whose local port is `local_port` and remote port `remote_port` in a
/// /proc/net/tcp or tcp6 table (0 for sockets no process holds any more, such as TIME_WAIT).
pub fn connection_inode(table: &str, local_port: u16, remote_port: u16) -> Option<u64> {
    table.lines().skip(1).find_map(|line| {
        let fields: Vec<&str> = line.split_whitespace().collect();
        // sl local_address rem_address st tx:rx tr:when retrnsmt uid timeout inode
        let local = port_of(fields.get(1)?)?;
        let remote = port_of(fields.get(2)?)?;
        let inode: u64 = fields.get(9)?.parse().ok()?;
        (local == local_port && remote == remote_port && inode != 0).then_some(inode)
    })
}

/// The port of an `ADDRESS:PORT` field (both in hex).
fn port_of(field: &str) -> Option<u16> {
    let (_, port_hex) = field.rsplit_once(':')?;
    u16::from_str_radix(port_hex, 16).ok()
}

/// Whether the process whose /proc directory is `process_dir` holds socket `inode`.
fn holds_socket(process_dir: &Path, inode: u64) -> bool {
    let Ok(fds) = std::fs::read_dir(process_dir.join("fd")) else {
        return false;
    };
    fds.flatten().any(|fd| {
        std::fs::read_link(fd.path())
            .ok()
            .and_then(|target| socket_inode(&target.to_string_lossy()))
            == Some(inode)
    })
}

/// The member (index into `members`, each `(index, pid)`) that dialed the connection from
/// `source_port` to `proxy_port` on this host; `None` if no listed process holds it.
/// Blocking file I/O: call it from a blocking thread.
pub fn dialer(source_port: u16, proxy_port: u16, members: &[(usize, u32)]) -> Option<usize> {
    let inode = ["/proc/net/tcp", "/proc/net/tcp6"]
        .iter()
        .find_map(|table| {
            let text = std::fs::read_to_string(table).ok()?;
            connection_inode(&text, source_port, proxy_port)
        })?;
    members
        .iter()
        .find(|(_, pid)| holds_socket(&Path::new("/proc").join(pid.to_string()), inode))
        .map(|(index, _)| *index)
}

#[cfg(test)]
mod tests {
    use super::*;

    // 0x9C40 = 40000 (the dialer's source port), 0x5DC0 = 24000 (the proxy).
    const TABLE: &str = "\
  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode
   0: 0100007F:5DC0 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 100 1 0000000000000000 100 0 0 10 0
   1: 0100007F:5DC0 0100007F:9C40 01 00000000:00000000 00:00000000 00000000     0        0 201 1 0000000000000000 20 4 30 10 -1
   2: 0100007F:9C40 0100007F:5DC0 01 00000000:00000000 00:00000000 00000000     0        0 202 1 0000000000000000 20 4 30 10 -1
   3: 0100007F:9C41 0100007F:5DC0 06 00000000:00000000 03:00000000 00000000     0        0 0 1 0000000000000000 20 4 30 10 -1
";

    #[test]
    fn the_dialers_end_is_found_by_source_and_destination_port() {
        // Row 1 is the proxy's accepted end (local 24000); row 2 is the dialer's.
        assert_eq!(connection_inode(TABLE, 40000, 24000), Some(202));
        assert_eq!(connection_inode(TABLE, 24000, 40000), Some(201));
        // A TIME_WAIT entry has no owner (inode 0).
        assert_eq!(connection_inode(TABLE, 40001, 24000), None);
        assert_eq!(connection_inode(TABLE, 40002, 24000), None);
    }

    #[test]
    fn ipv6_rows_parse_too() {
        let table = "header\n   0: 0000000000000000FFFF00000100007F:9C40 0000000000000000FFFF00000100007F:5DC0 01 00000000:00000000 00:00000000 00000000     0        0 303 1 0 20 4 30 10 -1\n";
        assert_eq!(connection_inode(table, 40000, 24000), Some(303));
    }

    #[test]
    fn finds_this_process_as_the_dialer() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let proxy_port = listener.local_addr().unwrap().port();
        let _dialed = std::net::TcpStream::connect(("127.0.0.1", proxy_port)).unwrap();
        let (_accepted, from) = listener.accept().unwrap();
        let me = std::process::id();
        assert_eq!(dialer(from.port(), proxy_port, &[(7, me)]), Some(7));
        // A process that does not hold the socket is not the dialer.
        assert_eq!(dialer(from.port(), proxy_port, &[(1, 1)]), None);
    }
}
