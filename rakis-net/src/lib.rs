//! # rakis-net
//!
//! The P2P layer of Rakis: the default [`Transport`](rakis_core::Transport) on libp2p.
//! **Not implemented yet** (tracked in issue 5); until then use the in-memory hub of
//! `rakis-core` (`test-utils` feature).
