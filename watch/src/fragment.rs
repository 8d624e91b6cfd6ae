//! Splitting one watch response whose events exceed the size limit into fragments, as
//! etcd's `sendFragments` does for watchers created with `fragment = true`.

use crate::wire::{Outgoing, WireEvent};

/// etcd's fragmenting: a response under `max_bytes`, or with fewer than two events,
/// goes whole; otherwise it is cut into pieces that each stay under `max_bytes` (but
/// hold at least one event), every piece but the last flagged `fragment`. The client
/// joins them back into one response. Sizes count the header as the registry knows it
/// (revision only), as etcd counts its response before the gRPC layer frames it.
pub fn fragment(response: Outgoing, max_bytes: usize) -> Vec<Outgoing> {
    if response.events.len() < 2 || response.encoded_len(&response.header()) < max_bytes {
        return vec![response];
    }
    let mut template = response;
    let events = std::mem::take(&mut template.events).into_vec();
    template.fragment = true;
    let base = template.encoded_len(&template.header());
    let mut pieces = Vec::new();
    let mut current = Vec::new();
    let mut size = base;
    for event in events {
        let len = event.field_len();
        if !current.is_empty() && size + len >= max_bytes {
            pieces.push(std::mem::take(&mut current));
            size = base;
        }
        size += len;
        current.push(event);
    }
    pieces.push(current);
    let count = pieces.len();
    pieces
        .into_iter()
        .enumerate()
        .map(|(n, events): (usize, Vec<WireEvent>)| Outgoing {
            events: events.into(),
            fragment: n + 1 < count,
            ..template.clone()
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use concord_proto::mvccpb::{Event, KeyValue};

    fn event(n: usize, value_len: usize) -> WireEvent {
        let event = Event {
            r#type: 0,
            kv: Some(KeyValue {
                key: format!("k{n}").into_bytes(),
                value: vec![b'v'; value_len],
                mod_revision: 5,
                ..Default::default()
            }),
            prev_kv: None,
        };
        WireEvent::encode(&event, false)
    }

    fn response(events: Vec<WireEvent>) -> Outgoing {
        Outgoing {
            revision: 5,
            watch_id: 3,
            events: events.into(),
            ..Default::default()
        }
    }

    #[test]
    fn small_or_single_event_responses_go_whole() {
        let small = response(vec![event(1, 10), event(2, 10)]);
        assert_eq!(fragment(small.clone(), 1000), vec![small]);
        let big_single = response(vec![event(1, 5000)]);
        assert_eq!(fragment(big_single.clone(), 1000), vec![big_single]);
    }

    #[test]
    fn large_responses_split_under_the_limit_and_rejoin_in_order() {
        let events: Vec<WireEvent> = (0..50).map(|n| event(n, 100)).collect();
        let pieces = fragment(response(events.clone()), 1000);
        assert!(pieces.len() > 5);
        for (n, piece) in pieces.iter().enumerate() {
            assert_eq!(piece.fragment, n + 1 < pieces.len());
            assert_eq!(piece.watch_id, 3);
            let len = piece.encoded_len(&piece.header());
            assert!(len < 1000, "piece {n} is {len}");
        }
        let joined: Vec<WireEvent> = pieces
            .into_iter()
            .flat_map(|p| p.events.into_vec())
            .collect();
        assert_eq!(joined, events);
    }

    #[test]
    fn an_event_larger_than_the_limit_gets_a_piece_of_its_own() {
        let events = vec![event(1, 10), event(2, 3000), event(3, 10)];
        let pieces = fragment(response(events), 1000);
        let sizes: Vec<usize> = pieces.iter().map(|p| p.events.len()).collect();
        assert_eq!(sizes, vec![1, 1, 1]);
        assert!(!pieces[2].fragment && pieces[1].fragment);
    }
}
