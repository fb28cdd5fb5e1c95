//! Gossip topics, namespaced by network id: `rakis/<network_id>/<kind>`.

use libp2p::gossipsub::{IdentTopic, TopicHash};

/// The five gossip topics of a network.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum TopicKind {
    /// Inference requests.
    Requests,
    /// Commitments.
    Commits,
    /// Reveals and reveal rejections.
    Reveals,
    /// Signed consensus results.
    Results,
    /// Peer status and known-peer announcements (and any kind not listed above).
    Presence,
}

impl TopicKind {
    /// Every topic.
    pub const ALL: [TopicKind; 5] = [
        TopicKind::Requests,
        TopicKind::Commits,
        TopicKind::Reveals,
        TopicKind::Results,
        TopicKind::Presence,
    ];

    /// The last segment of the topic name.
    pub fn name(self) -> &'static str {
        match self {
            TopicKind::Requests => "requests",
            TopicKind::Commits => "commits",
            TopicKind::Reveals => "reveals",
            TopicKind::Results => "results",
            TopicKind::Presence => "presence",
        }
    }

    /// The topic carrying a message of kind `kind` (as given by `Message::kind`). Kinds added
    /// to the protocol later travel on the presence topic until they get a topic of their own.
    pub fn for_message_kind(kind: &str) -> TopicKind {
        match kind {
            "request" => TopicKind::Requests,
            "commit" => TopicKind::Commits,
            "reveal" | "reveal_rejected" => TopicKind::Reveals,
            "consensus_result" | "inventory" => TopicKind::Results,
            _ => TopicKind::Presence,
        }
    }

    /// The full topic of this kind on `network_id`.
    pub fn topic(self, network_id: &str) -> IdentTopic {
        IdentTopic::new(format!("rakis/{network_id}/{}", self.name()))
    }
}

/// The topics of one network and their hashes.
#[derive(Clone, Debug)]
pub(crate) struct Topics {
    topics: Vec<(TopicKind, IdentTopic)>,
}

impl Topics {
    pub(crate) fn new(network_id: &str) -> Self {
        Topics {
            topics: TopicKind::ALL
                .iter()
                .map(|k| (*k, k.topic(network_id)))
                .collect(),
        }
    }

    pub(crate) fn all(&self) -> impl Iterator<Item = &(TopicKind, IdentTopic)> {
        self.topics.iter()
    }

    pub(crate) fn get(&self, kind: TopicKind) -> &IdentTopic {
        &self
            .topics
            .iter()
            .find(|(k, _)| *k == kind)
            .expect("every kind has a topic")
            .1
    }

    /// The kind of a topic of this network; `None` for any other topic.
    pub(crate) fn kind_of(&self, hash: &TopicHash) -> Option<TopicKind> {
        self.topics
            .iter()
            .find(|(_, t)| t.hash() == *hash)
            .map(|(k, _)| *k)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn topics_are_namespaced_by_network() {
        assert_eq!(
            TopicKind::Commits.topic("alpha").hash().as_str(),
            "rakis/alpha/commits"
        );
        let alpha = Topics::new("alpha");
        let beta = Topics::new("beta");
        for (kind, topic) in alpha.all() {
            assert_eq!(alpha.kind_of(&topic.hash()), Some(*kind));
            assert_eq!(beta.kind_of(&topic.hash()), None);
            assert_eq!(alpha.get(*kind).hash(), topic.hash());
        }
    }

    #[test]
    fn every_message_kind_has_a_topic() {
        assert_eq!(TopicKind::for_message_kind("request"), TopicKind::Requests);
        assert_eq!(TopicKind::for_message_kind("commit"), TopicKind::Commits);
        assert_eq!(TopicKind::for_message_kind("reveal"), TopicKind::Reveals);
        assert_eq!(
            TopicKind::for_message_kind("reveal_rejected"),
            TopicKind::Reveals
        );
        assert_eq!(
            TopicKind::for_message_kind("consensus_result"),
            TopicKind::Results
        );
        assert_eq!(
            TopicKind::for_message_kind("peer_status"),
            TopicKind::Presence
        );
        assert_eq!(
            TopicKind::for_message_kind("known_peers"),
            TopicKind::Presence
        );
        assert_eq!(
            TopicKind::for_message_kind("something_new"),
            TopicKind::Presence
        );
    }
}
