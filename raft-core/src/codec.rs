//! raft messages as bytes (protobuf 2, raft-rs's own codec), so that transport protos
//! carry them as opaque `bytes` fields; and small [`ConfChangeV2`] builders.

use protobuf::Message as _;
use raft::eraftpb::{
    ConfChangeSingle, ConfChangeTransition, ConfChangeType, ConfChangeV2, Message,
};

use crate::error::Result;

/// Serialise a raft message for the wire.
pub fn encode_message(message: &Message) -> Result<Vec<u8>> {
    Ok(message.write_to_bytes()?)
}

/// Parse a raft message received from a peer.
pub fn decode_message(bytes: &[u8]) -> Result<Message> {
    Ok(Message::parse_from_bytes(bytes)?)
}

fn single(node_id: u64, change_type: ConfChangeType) -> ConfChangeSingle {
    let mut change = ConfChangeSingle {
        node_id,
        ..Default::default()
    };
    change.set_change_type(change_type);
    change
}

/// A conf change with explicit steps. With more than one step raft goes through a joint
/// configuration and leaves it automatically once the change is applied
/// (`ConfChangeTransition::Auto`).
pub fn conf_change(changes: &[(ConfChangeType, u64)]) -> ConfChangeV2 {
    let mut cc = ConfChangeV2::default();
    cc.set_transition(ConfChangeTransition::Auto);
    cc.set_changes(
        changes
            .iter()
            .map(|&(change_type, node_id)| single(node_id, change_type))
            .collect::<Vec<_>>()
            .into(),
    );
    cc
}

/// Add `node_id` as a voter (or promote it, if it is a learner).
pub fn add_voter(node_id: u64) -> ConfChangeV2 {
    conf_change(&[(ConfChangeType::AddNode, node_id)])
}

/// Promote learner `node_id` to voter (the same change as [`add_voter`]).
pub fn promote_learner(node_id: u64) -> ConfChangeV2 {
    add_voter(node_id)
}

/// Add `node_id` as a learner (non-voting member that receives the log).
pub fn add_learner(node_id: u64) -> ConfChangeV2 {
    conf_change(&[(ConfChangeType::AddLearnerNode, node_id)])
}

/// Remove `node_id` (voter or learner).
pub fn remove_node(node_id: u64) -> ConfChangeV2 {
    conf_change(&[(ConfChangeType::RemoveNode, node_id)])
}

#[cfg(test)]
mod tests {
    use super::*;
    use raft::eraftpb::{Entry, MessageType};

    #[test]
    fn message_round_trips_through_bytes() {
        let mut m = Message::default();
        m.set_msg_type(MessageType::MsgAppend);
        m.from = 1;
        m.to = 2;
        m.term = 7;
        let e = Entry {
            index: 5,
            data: b"payload".to_vec().into(),
            context: 42u64.to_be_bytes().to_vec().into(),
            ..Default::default()
        };
        m.set_entries(vec![e].into());
        let bytes = encode_message(&m).unwrap();
        assert_eq!(decode_message(&bytes).unwrap(), m);
        assert!(decode_message(&[0xff, 0xff, 0xff]).is_err());
    }

    #[test]
    fn builders_make_auto_transitions() {
        let cc = conf_change(&[
            (ConfChangeType::AddNode, 4),
            (ConfChangeType::RemoveNode, 1),
        ]);
        assert_eq!(cc.get_transition(), ConfChangeTransition::Auto);
        assert_eq!(cc.changes.len(), 2);
        assert_eq!(
            add_learner(3).changes[0].get_change_type(),
            ConfChangeType::AddLearnerNode
        );
    }
}
