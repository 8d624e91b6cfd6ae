//! `/v2/stats/self`, `/v2/stats/leader` and `/v2/stats/store`, in etcd 3.4's JSON
//! (field order, Go's number and time formats; shapes read off etcd 3.4.23). The raft
//! counters come from the peer transport ([`crate::transport::RaftStats`]), the store's
//! from the v2 store.

use std::fmt::Write as _;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use axum::extract::State;
use axum::http::{Method, StatusCode};
use axum::response::Response;

use super::json::{go_string, go_time};
use super::{V2State, http_error, json_response, method_not_allowed};

/// Go's zero `time.Time`, and `time.Since` of it (saturated), for a member that has
/// not seen a leader yet.
const GO_ZERO_TIME: &str = "0001-01-01T00:00:00Z";
const GO_MAX_DURATION: &str = "2562047h47m16.854775807s";

fn unix_nanos(t: SystemTime) -> i64 {
    t.duration_since(UNIX_EPOCH)
        .ok()
        .and_then(|d| i64::try_from(d.as_nanos()).ok())
        .unwrap_or_default()
}

/// Go's `time.Duration.String`.
pub fn go_duration(d: Duration) -> String {
    let nanos = d.as_nanos();
    if nanos == 0 {
        return "0s".to_owned();
    }
    let fraction = |value: u128, unit: u128, digits: usize| {
        let whole = value / unit;
        let rest = value % unit;
        if rest == 0 {
            whole.to_string()
        } else {
            let text = format!("{rest:0digits$}");
            format!("{whole}.{}", text.trim_end_matches('0'))
        }
    };
    if nanos < 1_000 {
        return format!("{nanos}ns");
    }
    if nanos < 1_000_000 {
        return format!("{}µs", fraction(nanos, 1_000, 3));
    }
    if nanos < 1_000_000_000 {
        return format!("{}ms", fraction(nanos, 1_000_000, 6));
    }
    let total_seconds = nanos / 1_000_000_000;
    let hours = total_seconds / 3600;
    let minutes = total_seconds % 3600 / 60;
    let seconds = fraction(nanos % 60_000_000_000, 1_000_000_000, 9);
    let mut text = String::new();
    if hours > 0 {
        let _ = write!(text, "{hours}h{minutes}m");
    } else if minutes > 0 {
        let _ = write!(text, "{minutes}m");
    }
    text.push_str(&seconds);
    text.push('s');
    text
}

/// A float as Go's `encoding/json` writes one (shortest form; these values never need
/// the exponent form).
fn go_float(value: f64) -> String {
    if value.is_finite() {
        format!("{value}")
    } else {
        "0".to_owned()
    }
}

/// `/v2/stats/self`.
pub async fn self_stats(State(state): State<V2State>, method: Method) -> Response {
    if method != Method::GET {
        return method_not_allowed("GET");
    }
    let core = &state.core;
    let stats = core.raft_stats.self_stats();
    let raft_state = if core.raft.status.is_leader() {
        "StateLeader"
    } else {
        "StateFollower"
    };
    let mut body = String::from("{\"name\":");
    go_string(&mut body, &core.config.name);
    let _ = write!(
        body,
        ",\"id\":\"{:x}\",\"state\":\"{raft_state}\",\"startTime\":\"{}\"",
        core.member_id,
        go_time(unix_nanos(stats.start_time))
    );
    // The leader this member heard from; before any append, the one raft names.
    let leader = stats.leader.or_else(|| {
        let id = core.raft.status.leader();
        (id != 0).then_some((id, stats.start_time))
    });
    match leader {
        Some((id, since)) => {
            let uptime = SystemTime::now().duration_since(since).unwrap_or_default();
            let _ = write!(
                body,
                ",\"leaderInfo\":{{\"leader\":\"{id:x}\",\"uptime\":\"{}\",\"startTime\":\"{}\"}}",
                go_duration(uptime),
                go_time(unix_nanos(since))
            );
        }
        None => {
            let _ = write!(
                body,
                ",\"leaderInfo\":{{\"leader\":\"\",\"uptime\":\"{GO_MAX_DURATION}\",\"startTime\":\"{GO_ZERO_TIME}\"}}"
            );
        }
    }
    append_traffic(
        &mut body,
        "recv",
        stats.recv_append_request_count,
        stats.recv_pkg_rate,
        stats.recv_bandwidth_rate,
    );
    append_traffic(
        &mut body,
        "send",
        stats.send_append_request_count,
        stats.send_pkg_rate,
        stats.send_bandwidth_rate,
    );
    body.push('}');
    json_response(StatusCode::OK, body)
}

/// One direction's append counters (`recv` or `send`): the count always, each rate only
/// when not zero (etcd's `omitempty`).
fn append_traffic(
    body: &mut String,
    direction: &str,
    count: u64,
    pkg_rate: f64,
    bandwidth_rate: f64,
) {
    let _ = write!(body, ",\"{direction}AppendRequestCnt\":{count}");
    if pkg_rate != 0.0 {
        let _ = write!(body, ",\"{direction}PkgRate\":{}", go_float(pkg_rate));
    }
    if bandwidth_rate != 0.0 {
        let _ = write!(
            body,
            ",\"{direction}BandwidthRate\":{}",
            go_float(bandwidth_rate)
        );
    }
}

/// `/v2/stats/leader`: each follower's append latency and counts (the leader only).
pub async fn leader_stats(State(state): State<V2State>, method: Method) -> Response {
    if method != Method::GET {
        return method_not_allowed("GET");
    }
    let core = &state.core;
    if !core.raft.status.is_leader() {
        return http_error(StatusCode::FORBIDDEN, "not current leader");
    }
    let members: Vec<u64> = core.membership.read().members().map(|m| m.id).collect();
    let mut followers = core.raft_stats.followers(&members);
    // Go writes a map's keys in sorted order: the ids as hex strings.
    followers.sort_by_key(|(id, _)| format!("{id:x}"));
    let mut body = format!("{{\"leader\":\"{:x}\",\"followers\":{{", core.member_id);
    for (i, (id, f)) in followers.iter().enumerate() {
        if i > 0 {
            body.push(',');
        }
        let _ = write!(
            body,
            "\"{id:x}\":{{\"latency\":{{\"current\":{},\"average\":{},\"standardDeviation\":{},\"minimum\":{},\"maximum\":{}}},\"counts\":{{\"fail\":{},\"success\":{}}}}}",
            go_float(f.current),
            go_float(f.average),
            go_float(f.standard_deviation),
            go_float(f.minimum),
            go_float(f.maximum),
            f.fail,
            f.success
        );
    }
    body.push_str("}}");
    json_response(StatusCode::OK, body)
}

/// `/v2/stats/store`: the v2 store's operation counters and its watchers.
pub async fn store_stats(State(state): State<V2State>, method: Method) -> Response {
    if method != Method::GET {
        return method_not_allowed("GET");
    }
    let (stats, watchers) = {
        let store = state.store.lock();
        (store.stats.clone(), store.watcher_count())
    };
    let body = format!(
        "{{\"getsSuccess\":{},\"getsFail\":{},\"setsSuccess\":{},\"setsFail\":{},\"deleteSuccess\":{},\"deleteFail\":{},\"updateSuccess\":{},\"updateFail\":{},\"createSuccess\":{},\"createFail\":{},\"compareAndSwapSuccess\":{},\"compareAndSwapFail\":{},\"compareAndDeleteSuccess\":{},\"compareAndDeleteFail\":{},\"expireCount\":{},\"watchers\":{}}}",
        stats.get_success,
        stats.get_fail,
        stats.set_success,
        stats.set_fail,
        stats.delete_success,
        stats.delete_fail,
        stats.update_success,
        stats.update_fail,
        stats.create_success,
        stats.create_fail,
        stats.compare_and_swap_success,
        stats.compare_and_swap_fail,
        stats.compare_and_delete_success,
        stats.compare_and_delete_fail,
        stats.expire_count,
        watchers
    );
    json_response(StatusCode::OK, body)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_print_as_go() {
        assert_eq!(
            go_duration(Duration::from_nanos(1_579_055_790)),
            "1.57905579s"
        );
        assert_eq!(go_duration(Duration::from_millis(1500)), "1.5s");
        assert_eq!(go_duration(Duration::from_secs(62)), "1m2s");
        assert_eq!(go_duration(Duration::from_secs(3600)), "1h0m0s");
        assert_eq!(go_duration(Duration::from_micros(2500)), "2.5ms");
        assert_eq!(go_duration(Duration::from_nanos(1500)), "1.5µs");
        assert_eq!(go_float(0.00155), "0.00155");
        assert_eq!(go_float(1_048_576.0), "1048576");
    }
}
