//! # rakis-sim
//!
//! A deterministic simulator of Rakis networks: the real [`Coordinator`](rakis_core::coordinator::Coordinator) state machines of
//! many nodes (1,000 and more) in one process, on a virtual clock, over a simulated network, with
//! pluggable adversaries. No runtime, no threads, no sleeps: one seeded RNG and one time-ordered
//! event queue, so a scenario and its seed give the same report on every run.
//!
//! ```
//! use rakis_sim::{Behaviour, Scenario};
//!
//! // Five answering nodes, two of them freeriders, quorum 5, distance 0.30, share 0.6.
//! let report = Scenario::new(5)
//!     .security(5, 0.30, 0.6)
//!     .behaviours([1, 3], Behaviour::Freerider)
//!     .requests(3, 500)
//!     .seed(7)
//!     .run();
//! assert_eq!(report.adversary_accepted, 0);
//! assert_eq!(report.wrong_results, 0);
//! ```
//!
//! # Model (what is real and what is simulated)
//!
//! * **Real:** every node's [`Coordinator`](rakis_core::coordinator::Coordinator) (commit-reveal, timing rules, verification,
//!   clustering and selection by `rakis-consensus`, sync of missed messages, signed results).
//! * **Signed envelopes and inboxes.** Every message a node sends is a real signed envelope
//!   ([`rakis_core::envelope`]), timestamped with the sender's clock; every receiver passes it
//!   through its own [`Inbox`](rakis_core::envelope::Inbox) (network id, clock skew, duplicates)
//!   and a sync response's envelopes through `accept_relayed`, as a node's driver does. Relayed
//!   copies (replayers, sync) are the same envelopes, so duplicates and late copies behave as
//!   in production. Each envelope's signature is checked once, when it is sealed, rather than
//!   once per receiver (the check is a pure function of the bytes). Bytes are the wire size of
//!   the envelope, per recipient.
//! * **Committees.** With [`Committee::All`] the network is open and every node gets every
//!   message (a broadcast to `n − 1` nodes; for small `n`). With [`Committee::Drawn`] every
//!   node but the outsiders ([`Scenario::outsiders`]: free keys) is a member of one epoch, each
//!   request is served by the committee every member's coordinator draws from it
//!   ([`Epoch::committee`](rakis_core::membership::Epoch::committee)), and only the committee
//!   and the requester receive the request's messages (outsiders hear the request and the
//!   members' commits and reveals). This models a gossip layer that scopes a request to the
//!   nodes that serve it, and keeps a 1,000-node run at `O(requests × committee²)` deliveries
//!   instead of `O(requests × nodes²)`. It does not model the relay cost of gossip inside the
//!   committee.
//! * **Network:** per delivery, latency `latency_ms + U(0..=jitter_ms)`, independent loss, and
//!   timed partitions. Each node may run its own clock offset ([`Scenario::clock_offset`]): it
//!   stamps its requests and messages and judges every deadline with it.
//! * **Generation** is synchronous and scripted: an honest node answers from a small corpus
//!   whose wording varies with the coordinator's sampling seed (like an LLM at temperature > 0);
//!   it takes `generation_ms + U(0..=jitter)` of virtual time. Embeddings come from the
//!   [`rakis_core::testing::HashEmbedder`] (a bag-of-words model, not MiniLM), cached per text,
//!   or from a real model ([`Scenario::embedder`]).
//! * **A real language model** ([`Scenario::model`], a [`SimModel`]) replaces the scripted
//!   wording: honest nodes answer with its generations under their coordinators' sampling
//!   seeds, adversaries rewrite those answers (with the lie's token ids), and nodes run the
//!   second check, replaying every reveal's sampling with it (cached per reveal). Without one,
//!   scripted answers carry no token ids and the second check cannot run.
//! * **Sync:** a node's `RequestSync` is answered by the peer with every message it logged for
//!   the request (as a driver answers with the original signed envelopes).
//! * **Honesty oracle:** an output is honest when the honest answer function produced it for
//!   that request. A request's result is judged over its honest committee members.

#![cfg_attr(docsrs, feature(doc_cfg))]
#![deny(
    missing_docs,
    missing_debug_implementations,
    unreachable_pub,
    rustdoc::broken_intra_doc_links
)]

mod answers;
mod engine;
mod report;
mod scenario;

pub use answers::{Corpus, Topic};
pub use engine::{MODEL, START_MS};
pub use report::{Latency, Report, RequestReport, RequestStatus};
pub use scenario::{
    AnswerCtx, AnswerFn, Behaviour, Committee, EmbedFn, Lie, NetworkConfig, Partition, Scenario,
    SimEmbedder, SimModel,
};
