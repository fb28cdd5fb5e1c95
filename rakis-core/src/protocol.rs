//! Protocol types: requests and every message nodes exchange.

use serde::{Deserialize, Serialize};

use crate::identity::{Address, Signature};
use crate::{
    AcceptedReveal, Commit, ConsensusError, Hash32, InferenceId, NodeId, RejectReason, RequestId,
    Reveal, SecurityFrame,
};

/// Longest accepted prompt (all chat messages together), in bytes.
pub const MAX_PROMPT_BYTES: usize = 64 * 1024;
/// Largest `max_tokens` a request may ask for.
pub const MAX_TOKENS_LIMIT: u32 = 8192;
/// Bytes of output allowed per requested token: an output longer than
/// `max_tokens × MAX_OUTPUT_BYTES_PER_TOKEN` cannot come from the request and is refused (a
/// bound on what a reveal or a result may make a node hold).
pub const MAX_OUTPUT_BYTES_PER_TOKEN: usize = 64;
/// Most accepted models a request may list.
pub const MAX_ACCEPTED_MODELS: usize = 16;

/// Who speaks in a chat message.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// System prompt.
    System,
    /// The user.
    User,
    /// The model.
    Assistant,
}

/// One message of a chat prompt.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct ChatMessage {
    /// The speaker.
    pub role: Role,
    /// The text.
    pub content: String,
}

impl ChatMessage {
    /// A user message.
    pub fn user(content: impl Into<String>) -> Self {
        ChatMessage {
            role: Role::User,
            content: content.into(),
        }
    }
    /// A system message.
    pub fn system(content: impl Into<String>) -> Self {
        ChatMessage {
            role: Role::System,
            content: content.into(),
        }
    }
}

/// Where a request came from.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Origin {
    /// Submitted by a peer of the network (the requester signs it).
    Peer,
    /// Emitted by a contract on a chain.
    Chain {
        /// EIP-155 chain id.
        chain_id: u64,
        /// The contract that emitted the request.
        contract: Address,
        /// Transaction hash of the emitting transaction.
        tx_hash: Hash32,
        /// Index of the log in the block.
        log_index: u64,
        /// Hash of the block that holds the event: randomness fixed after the request was made,
        /// which seeds its committee ([`InferenceRequest::committee_beacon`]). Like the
        /// transaction hash and log index it is not part of the request id, so a node takes it
        /// only from its own reading of the chain, never from a peer's copy.
        block_hash: Hash32,
    },
}

/// An inference request.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct InferenceRequest {
    /// The chat prompt.
    pub messages: Vec<ChatMessage>,
    /// Models whose output is acceptable (any one of them).
    pub accepted_models: Vec<String>,
    /// Sampling temperature; 0 = greedy.
    pub temperature: f32,
    /// Nucleus sampling mass.
    pub top_p: f32,
    /// Maximum number of generated tokens.
    pub max_tokens: u32,
    /// The security frame.
    pub frame: SecurityFrame,
    /// Where the request came from.
    pub origin: Origin,
    /// Creation time, milliseconds since the Unix epoch (block time for chain requests).
    pub created_at_ms: u64,
    /// The requesting node (`None` for chain-originated requests, identified by their origin).
    pub requester: Option<NodeId>,
    /// A number the requester makes unique per request.
    pub nonce: u64,
}

impl InferenceRequest {
    /// A request from a peer with default sampling and security frame: one user message,
    /// temperature 0.7, top-p 0.95, 256 tokens, a random nonce.
    pub fn new(
        prompt: impl Into<String>,
        accepted_models: Vec<String>,
        requester: NodeId,
        created_at_ms: u64,
    ) -> Self {
        InferenceRequest {
            messages: vec![ChatMessage::user(prompt)],
            accepted_models,
            temperature: 0.7,
            top_p: 0.95,
            max_tokens: 256,
            frame: SecurityFrame::default(),
            origin: Origin::Peer,
            created_at_ms,
            requester: Some(requester),
            nonce: rand::random(),
        }
    }

    /// The request id.
    ///
    /// * A peer request: `SHA-256("rakis/request/v1" ‖ 0x00 ‖ postcard(request))`, covering the
    ///   content, the requester, the origin and the nonce.
    /// * A chain request ([`Origin::Chain`]): [`chain_request_id`], a digest the oracle contract
    ///   computes too, so that the signatures over a result name the contract's own request.
    pub fn id(&self) -> RequestId {
        if let Origin::Chain {
            chain_id, contract, ..
        } = &self.origin
        {
            return chain_request_id(
                *chain_id,
                contract,
                self.nonce,
                self.created_at_ms,
                &self.chain_params_digest(),
            );
        }
        let mut pre = b"rakis/request/v1\0".to_vec();
        pre.extend(postcard::to_allocvec(self).expect("requests always encode"));
        RequestId(rakis_consensus::sha256(&pre).0)
    }

    /// The prompt of a chain request: the text of its one user message (empty when the request
    /// has another shape, which [`validate`](Self::validate) rejects for chain requests).
    fn chain_prompt(&self) -> &str {
        match self.messages.as_slice() {
            [m] if m.role == Role::User => &m.content,
            _ => "",
        }
    }

    /// The sampling and frame fields as the integers a chain stores:
    /// `(temperature_milli, top_p_milli, sec_distance_ppm, sec_percentage_ppm)`.
    pub fn chain_integers(&self) -> (u32, u32, u32, u32) {
        let milli = |f: f32| (f64::from(f) * 1000.0).round().clamp(0.0, u32::MAX as f64) as u32;
        (
            milli(self.temperature),
            milli(self.top_p),
            self.frame.distance_ppm(),
            self.frame.percentage_ppm(),
        )
    }

    /// Digest of the parameters of a chain request, see [`chain_request_id`]:
    ///
    /// ```text
    /// SHA-256( SHA-256(prompt) ‖ SHA-256(SHA-256(model_1) ‖ … ‖ SHA-256(model_k))
    ///          ‖ max_tokens u32 ‖ temperature_milli u32 ‖ top_p_milli u32
    ///          ‖ quorum u32 ‖ max_time_ms u64 ‖ sec_distance_ppm u32 ‖ sec_percentage_ppm u32
    ///          ‖ SHA-256(embedding_model) )                        integers big-endian
    /// ```
    pub fn chain_params_digest(&self) -> Hash32 {
        use rakis_consensus::sha256;
        let (t, p, d, s) = self.chain_integers();
        let models: Vec<u8> = self
            .accepted_models
            .iter()
            .flat_map(|m| sha256(m.as_bytes()).0)
            .collect();
        let mut pre = Vec::with_capacity(32 * 3 + 36);
        pre.extend(sha256(self.chain_prompt().as_bytes()).0);
        pre.extend(sha256(&models).0);
        pre.extend(self.max_tokens.to_be_bytes());
        pre.extend(t.to_be_bytes());
        pre.extend(p.to_be_bytes());
        pre.extend(self.frame.quorum.to_be_bytes());
        pre.extend(self.frame.max_time_ms.to_be_bytes());
        pre.extend(d.to_be_bytes());
        pre.extend(s.to_be_bytes());
        pre.extend(sha256(self.frame.embedding_model.as_bytes()).0);
        sha256(&pre)
    }

    /// The longest output an answer to this request may have, in bytes:
    /// `max_tokens × MAX_OUTPUT_BYTES_PER_TOKEN`.
    pub fn max_output_bytes(&self) -> usize {
        self.max_tokens as usize * MAX_OUTPUT_BYTES_PER_TOKEN
    }

    /// Commit deadline: creation time + `max_time_ms`.
    pub fn deadline_ms(&self) -> u64 {
        self.created_at_ms.saturating_add(self.frame.max_time_ms)
    }

    /// Randomness fixed after the request was made, mixed into its committee's seed (see
    /// [`membership`](crate::membership)), when its origin provides one: for a chain request the
    /// hash of the block that holds it, which its requester cannot know when it picks the
    /// request's parameters. None for a peer request, whose id (chosen by the requester) is all
    /// the seed has.
    pub fn committee_beacon(&self) -> Option<Hash32> {
        match &self.origin {
            Origin::Chain { block_hash, .. } => Some(*block_hash),
            Origin::Peer => None,
        }
    }

    /// Checks every field's range.
    pub fn validate(&self) -> Result<(), RequestError> {
        self.frame.validate().map_err(RequestError::Frame)?;
        if self.messages.is_empty() || self.messages.iter().all(|m| m.content.trim().is_empty()) {
            return Err(RequestError::EmptyPrompt);
        }
        let bytes: usize = self.messages.iter().map(|m| m.content.len()).sum();
        if bytes > MAX_PROMPT_BYTES {
            return Err(RequestError::PromptTooLarge {
                bytes,
                max: MAX_PROMPT_BYTES,
            });
        }
        if self.accepted_models.is_empty() || self.accepted_models.len() > MAX_ACCEPTED_MODELS {
            return Err(RequestError::AcceptedModels {
                count: self.accepted_models.len(),
                max: MAX_ACCEPTED_MODELS,
            });
        }
        if !(self.temperature.is_finite() && (0.0..=2.0).contains(&self.temperature)) {
            return Err(RequestError::Temperature(self.temperature));
        }
        if !(self.top_p.is_finite() && self.top_p > 0.0 && self.top_p <= 1.0) {
            return Err(RequestError::TopP(self.top_p));
        }
        if self.max_tokens == 0 || self.max_tokens > MAX_TOKENS_LIMIT {
            return Err(RequestError::MaxTokens {
                got: self.max_tokens,
                max: MAX_TOKENS_LIMIT,
            });
        }
        match (&self.origin, &self.requester) {
            (Origin::Peer, None) => Err(RequestError::MissingRequester),
            (Origin::Chain { .. }, Some(_)) => Err(RequestError::ChainRequestWithRequester),
            (Origin::Chain { .. }, None) => self.validate_chain_shape(),
            _ => Ok(()),
        }
    }

    /// A chain request's id covers its fields as the integers the chain stores, so the fields
    /// must be exactly those integers: one user message, temperature and top-p in thousandths,
    /// distance and share in millionths. Otherwise two different requests would share an id.
    fn validate_chain_shape(&self) -> Result<(), RequestError> {
        if !matches!(self.messages.as_slice(), [m] if m.role == Role::User) {
            return Err(RequestError::ChainMessages);
        }
        let (t, p, d, s) = self.chain_integers();
        if self.temperature != t as f32 / 1000.0 || self.top_p != p as f32 / 1000.0 {
            return Err(RequestError::ChainSampling);
        }
        if self.frame.sec_distance != d as f64 / 1e6 || self.frame.sec_percentage != s as f64 / 1e6
        {
            return Err(RequestError::ChainFrame);
        }
        Ok(())
    }
}

/// Why a request is invalid ([`InferenceRequest::validate`]).
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[non_exhaustive]
pub enum RequestError {
    /// The security frame is out of range.
    #[error("security frame: {0}")]
    Frame(#[source] ConsensusError),
    /// No message, or only blank ones.
    #[error("empty prompt")]
    EmptyPrompt,
    /// The messages are too long.
    #[error("prompt of {bytes} bytes exceeds {max}")]
    PromptTooLarge {
        /// Bytes of all messages.
        bytes: usize,
        /// The limit.
        max: usize,
    },
    /// No accepted model, or too many.
    #[error("accepted_models lists {count} models; 1 to {max} are allowed")]
    AcceptedModels {
        /// Models listed.
        count: usize,
        /// The limit.
        max: usize,
    },
    /// The temperature is outside `[0, 2]`.
    #[error("temperature {0} outside [0, 2]")]
    Temperature(f32),
    /// Top-p is outside `(0, 1]`.
    #[error("top_p {0} outside (0, 1]")]
    TopP(f32),
    /// `max_tokens` is 0 or above the limit.
    #[error("max_tokens {got} must be in 1..={max}")]
    MaxTokens {
        /// The value.
        got: u32,
        /// The limit.
        max: u32,
    },
    /// A peer request names no requester.
    #[error("a peer request needs a requester")]
    MissingRequester,
    /// A chain request names a requester (it is identified by its origin).
    #[error("a chain request is identified by its origin, not a requester")]
    ChainRequestWithRequester,
    /// A chain request carries something else than exactly one user message.
    #[error("a chain request carries exactly one user message")]
    ChainMessages,
    /// A chain request's temperature or top-p is not a whole number of thousandths (the
    /// integers the chain stores).
    #[error("a chain request's temperature and top-p are whole thousandths")]
    ChainSampling,
    /// A chain request's distance or share is not a whole number of millionths.
    #[error("a chain request's distance and share are whole millionths")]
    ChainFrame,
    /// The request's deadline has passed already.
    #[error("the request's deadline has passed")]
    DeadlinePassed,
}

/// Id of a request made by an oracle contract, computed the same way by the contract:
///
/// ```text
/// SHA-256( "rakis/chain-request/v1" ‖ 0x00 ‖ chain_id u64 ‖ contract (20 bytes) ‖ nonce u64
///          ‖ created_at_ms u64 ‖ params_digest )                 integers big-endian
/// ```
///
/// `nonce` is the contract's request counter, `created_at_ms` the block time in milliseconds and
/// `params_digest` [`InferenceRequest::chain_params_digest`]. The transaction hash, log index and
/// block hash of [`Origin::Chain`] locate the event and are not covered.
pub fn chain_request_id(
    chain_id: u64,
    contract: &Address,
    nonce: u64,
    created_at_ms: u64,
    params_digest: &Hash32,
) -> RequestId {
    let mut pre = b"rakis/chain-request/v1\0".to_vec();
    pre.extend(chain_id.to_be_bytes());
    pre.extend(contract.0);
    pre.extend(nonce.to_be_bytes());
    pre.extend(created_at_ms.to_be_bytes());
    pre.extend(params_digest.0);
    RequestId(rakis_consensus::sha256(&pre).0)
}

/// A commit as broadcast: the consensus commit, the model that produced the output, and the
/// committer's signature over the commit's statement (what makes equivocation provable on a
/// chain: [`crate::misbehaviour`]).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct CommitMsg {
    /// The commitment.
    pub commit: Commit,
    /// The model that generated the committed output.
    pub model: String,
    /// The committer's signature over
    /// [`commit_statement`](rakis_consensus::commit_statement) for the network.
    pub statement: Signature,
}

impl CommitMsg {
    /// `commit` for `model`, its statement signed by `key` for `network` (a
    /// [`network_digest`](rakis_consensus::network_digest)).
    pub fn signed(
        key: &crate::identity::NodeKey,
        network: &Hash32,
        commit: Commit,
        model: impl Into<String>,
    ) -> Self {
        let statement = crate::misbehaviour::sign_statement(
            key,
            &rakis_consensus::commit_statement(network, &commit),
        );
        CommitMsg {
            commit,
            model: model.into(),
            statement,
        }
    }

    /// The commit with its statement signature (checked or not: see
    /// [`SignedCommit::verify`](crate::misbehaviour::SignedCommit::verify)).
    pub fn signed_commit(&self) -> crate::misbehaviour::SignedCommit {
        crate::misbehaviour::SignedCommit {
            commit: self.commit.clone(),
            signature: self.statement,
        }
    }
}

/// Extra verification material attached to a reveal (room for likelihood scores and other
/// per-request evidence; unknown kinds are ignored by older nodes).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Evidence {
    /// What the data is (registry of kinds in the protocol docs; 0 is reserved).
    pub kind: u16,
    /// The evidence itself.
    pub data: Vec<u8>,
}

/// A reveal as broadcast, with the revealer's signature over its statement (what makes a
/// reveal that does not open its commitment provable: [`crate::misbehaviour`]).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RevealMsg {
    /// The opening of the commit.
    pub reveal: Reveal,
    /// The model that generated the output.
    pub model: String,
    /// Optional verification evidence.
    pub evidence: Vec<Evidence>,
    /// The revealer's signature over the reveal's
    /// [`RevealStatement`](rakis_consensus::RevealStatement) digest for the network.
    pub statement: Signature,
    /// The generated token ids (without the stop token): the output is their decoding, and a
    /// verifier serving the model replays each draw (empty from engines without a tokenizer).
    pub token_ids: Vec<u32>,
    /// How the committer says the answer ended.
    pub ending: rakis_consensus::sampling::Ending,
    /// The committer's VRF proof of its sampling seed for the request
    /// ([`NodeKey::sampling_seed`](crate::NodeKey::sampling_seed)).
    pub seed_proof: crate::vrf::VrfProof,
    /// The weights the committer generated with (SHA-256 of the file and quantization);
    /// verifiers serving the model replay only reveals declaring their own.
    #[serde(default)]
    pub weights: Option<crate::engine::ModelWeights>,
}

impl RevealMsg {
    /// `reveal` for `model` with `evidence`, its statement signed by `key` for `network`.
    pub fn signed(
        key: &crate::identity::NodeKey,
        network: &Hash32,
        reveal: Reveal,
        model: impl Into<String>,
        evidence: Vec<Evidence>,
    ) -> Self {
        let statement = crate::misbehaviour::sign_statement(
            key,
            &rakis_consensus::RevealStatement::of(&reveal).digest(network),
        );
        let (seed_proof, _) = key.sampling_seed(&reveal.request_id);
        RevealMsg {
            weights: None,
            reveal,
            model: model.into(),
            evidence,
            statement,
            token_ids: Vec::new(),
            ending: rakis_consensus::sampling::Ending::Stop,
            seed_proof,
        }
    }

    /// The reveal declaring the weights its answer was generated with.
    pub fn with_weights(mut self, weights: Option<crate::engine::ModelWeights>) -> Self {
        self.weights = weights;
        self
    }

    /// The reveal with the generated token ids and how the answer ended.
    pub fn with_tokens(
        mut self,
        token_ids: Vec<u32>,
        ending: rakis_consensus::sampling::Ending,
    ) -> Self {
        self.token_ids = token_ids;
        self.ending = ending;
        self
    }

    /// The reveal's statement with its signature (checked or not: see
    /// [`SignedReveal::verify`](crate::misbehaviour::SignedReveal::verify)).
    pub fn signed_reveal(&self) -> crate::misbehaviour::SignedReveal {
        crate::misbehaviour::SignedReveal {
            statement: rakis_consensus::RevealStatement::of(&self.reveal),
            signature: self.statement,
        }
    }
}

/// A node's signed statement of the result it computed.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ConsensusResultMsg {
    /// The request.
    pub request_id: RequestId,
    /// The selected output.
    pub output: String,
    /// SHA-256 of the selected output.
    pub output_hash: Hash32,
    /// Node whose output was selected.
    pub selected_node: NodeId,
    /// Inference id of the selected output.
    pub selected_inference: InferenceId,
    /// The accepted set.
    pub accepted: Vec<AcceptedReveal>,
    /// Hash of the accepted set.
    pub joint_hash: Hash32,
    /// What the result is bound to: the chain, contract and epoch of the request's rules
    /// ([`config_digest`](crate::membership::config_digest)).
    pub config_digest: Hash32,
    /// `result_digest(request_id, output_hash, joint_hash, payees_digest(accepted),
    /// config_digest)` (see [`rakis_consensus::result_digest`]).
    pub result_digest: Hash32,
    /// The computing node.
    pub signer: NodeId,
    /// Signature over [`eth_signed_message_hash`](crate::identity::eth_signed_message_hash)
    /// of `result_digest` (checkable with `ecrecover` on EVM chains).
    pub signature: Signature,
    /// The weights the selected answer declares (SHA-256 of the file and quantization), which
    /// a signer that replayed it checked against its own. Not part of the signed digest.
    #[serde(default)]
    pub weights: Option<crate::engine::ModelWeights>,
    /// Whether this signer replayed the selected answer's sampling (the second check) and it
    /// held, or generated that answer itself; `false` from a node that verified by
    /// re-embedding only. Not part of the signed
    /// digest: a certificate's results say who scored the selected output.
    #[serde(default)]
    pub replayed: bool,
}

impl ConsensusResultMsg {
    /// The result of an agreed `outcome`, signed by `key`; `None` when consensus failed.
    pub fn sign(
        key: &crate::identity::NodeKey,
        outcome: &crate::ConsensusOutcome,
    ) -> Option<ConsensusResultMsg> {
        let crate::Decision::Agreed {
            selected,
            joint_hash,
            config_digest,
            result_digest,
            ..
        } = &outcome.decision
        else {
            return None;
        };
        Some(ConsensusResultMsg {
            request_id: outcome.request_id,
            output: selected.output.clone(),
            output_hash: selected.output_hash,
            selected_node: selected.node,
            selected_inference: selected.inference_id,
            accepted: outcome.accepted.clone(),
            joint_hash: *joint_hash,
            config_digest: *config_digest,
            result_digest: *result_digest,
            signer: key.node_id(),
            signature: key.sign_digest(&crate::identity::eth_signed_message_hash(&result_digest.0)),
            weights: None,
            replayed: false,
        })
    }

    /// The result with what its signer checked of the selected answer.
    pub fn with_checks(
        mut self,
        weights: Option<crate::engine::ModelWeights>,
        replayed: bool,
    ) -> Self {
        self.weights = weights;
        self.replayed = replayed;
        self
    }

    /// The signatures that support this result, one per node: this result's own (taken as it
    /// is: verify it first when it came from elsewhere) and those of `attestations` for the
    /// same request and result digest that [`verify`](Self::verify); the first per signer.
    pub fn supporting_signatures(
        &self,
        attestations: &[ConsensusResultMsg],
    ) -> std::collections::BTreeMap<NodeId, Signature> {
        let mut out = std::collections::BTreeMap::new();
        out.insert(self.signer, self.signature);
        for r in attestations {
            if r.request_id == self.request_id
                && r.result_digest == self.result_digest
                && !out.contains_key(&r.signer)
                && r.verify().is_ok()
            {
                out.insert(r.signer, r.signature);
            }
        }
        out
    }

    /// Checks internal consistency and the signature.
    pub fn verify(&self) -> Result<(), ResultError> {
        if rakis_consensus::output_hash(&self.output) != self.output_hash {
            return Err(ResultError::OutputHash);
        }
        let digest = rakis_consensus::result_digest(
            &self.request_id,
            &self.output_hash,
            &self.joint_hash,
            &rakis_consensus::payees_digest(&self.accepted),
            &self.config_digest,
        );
        if digest != self.result_digest {
            return Err(ResultError::ResultDigest);
        }
        let commitments: Vec<_> = self.accepted.iter().map(|a| a.commitment).collect();
        let mut sorted = commitments.clone();
        sorted.sort();
        if sorted != commitments
            || rakis_consensus::joint_hash(&self.request_id, &commitments) != self.joint_hash
        {
            return Err(ResultError::JointHash);
        }
        crate::identity::verify_signature(
            &self.signer,
            &crate::identity::eth_signed_message_hash(&self.result_digest.0),
            &self.signature,
        )
        .map_err(ResultError::Signature)
    }
}

/// Why a signed result does not hold ([`ConsensusResultMsg::verify`]).
#[derive(Debug, Clone, thiserror::Error)]
#[non_exhaustive]
pub enum ResultError {
    /// The output hash is not the hash of the output.
    #[error("output hash does not match output")]
    OutputHash,
    /// The result digest is not the digest of the request, output hash and joint hash.
    #[error("result digest does not match")]
    ResultDigest,
    /// The joint hash is not the hash of the (sorted) accepted set.
    #[error("joint hash does not match the accepted set")]
    JointHash,
    /// The signature is not the signer's over the result digest.
    #[error("signature: {0}")]
    Signature(#[source] crate::identity::IdentityError),
}

/// A result certified by a request's committee: signed results of at least the committee's
/// signature threshold of distinct members, all over one result digest. What a light client
/// accepts, and what a sink writes.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Certificate {
    /// The request's committee.
    pub committee: crate::membership::Committee,
    /// The members' signed results.
    pub signatures: Vec<ConsensusResultMsg>,
}

impl Certificate {
    /// The certified result (the first signature's; they all carry the same digest).
    pub fn result(&self) -> Option<&ConsensusResultMsg> {
        self.signatures.first()
    }

    /// Checks the certificate against `request` and the epoch it names, independently of
    /// whoever assembled it: the committee is the one `epoch` draws for `request`; every
    /// signature is valid, by a distinct committee member, for this request, over one digest
    /// bound to this request's configuration and epoch; and there are at least the committee's
    /// signature threshold of them. Returns the certified digest.
    pub fn verify(
        &self,
        request: &InferenceRequest,
        epoch: &crate::membership::Epoch,
    ) -> Result<Hash32, CertificateError> {
        if epoch.committee(request) != self.committee {
            return Err(CertificateError::WrongCommittee);
        }
        let id = request.id();
        let Some(first) = self.signatures.first() else {
            return Err(CertificateError::TooFewSignatures { have: 0, need: 1 });
        };
        let digest = first.result_digest;
        let mut signers = std::collections::BTreeSet::new();
        for r in &self.signatures {
            if r.request_id != id {
                return Err(CertificateError::WrongRequest);
            }
            if r.result_digest != digest {
                return Err(CertificateError::MixedDigests);
            }
            if !self.committee.contains(&r.signer) {
                return Err(CertificateError::NotInCommittee(r.signer));
            }
            if !signers.insert(r.signer) {
                return Err(CertificateError::Duplicate(r.signer));
            }
            r.verify().map_err(|e| CertificateError::BadSignature {
                signer: r.signer,
                source: e,
            })?;
        }
        let need = self
            .committee
            .signature_threshold(request.frame.percentage_ppm());
        if signers.len() < need {
            return Err(CertificateError::TooFewSignatures {
                have: signers.len(),
                need,
            });
        }
        // One digest for all, so one configuration: this request's and this epoch's.
        if first.config_digest != crate::membership::config_digest(request, Some(&self.committee)) {
            return Err(CertificateError::WrongConfig);
        }
        Ok(digest)
    }
}

/// Why a [`Certificate`] does not certify a result.
#[derive(Debug, Clone, thiserror::Error)]
#[non_exhaustive]
pub enum CertificateError {
    /// The committee is not the one the epoch draws for the request.
    #[error("not the request's committee")]
    WrongCommittee,
    /// A signed result of another request.
    #[error("a signature of another request")]
    WrongRequest,
    /// Signatures bound to another chain, contract or epoch.
    #[error("signatures bound to another configuration")]
    WrongConfig,
    /// Signatures over different result digests.
    #[error("signatures over different results")]
    MixedDigests,
    /// A signer outside the committee.
    #[error("signer {0} is not in the committee")]
    NotInCommittee(NodeId),
    /// A signer listed twice.
    #[error("signer {0} is listed twice")]
    Duplicate(NodeId),
    /// An invalid signed result.
    #[error("the result signed by {signer} is invalid: {source}")]
    BadSignature {
        /// The signer.
        signer: NodeId,
        /// What is wrong.
        #[source]
        source: ResultError,
    },
    /// Fewer signatures than the committee's threshold.
    #[error("{have} signatures of the {need} the committee requires")]
    TooFewSignatures {
        /// Distinct valid signers.
        have: usize,
        /// The committee's signature threshold.
        need: usize,
    },
}

/// What a node serves.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PeerStatus {
    /// Models it can generate with.
    pub models: Vec<String>,
    /// Its embedding model, if it verifies.
    pub embedding_model: Option<String>,
    /// Generation workers.
    pub workers: u32,
    /// Jobs running or queued.
    pub load: u32,
}

/// A peer known to the sender.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PeerInfo {
    /// The peer's node id.
    pub node: NodeId,
    /// Transport addresses (transport-specific strings, e.g. multiaddrs).
    pub addresses: Vec<String>,
    /// When the sender last heard from it (ms since epoch).
    pub last_seen_ms: u64,
}

/// Every protocol message.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[non_exhaustive]
pub enum Message {
    /// A new inference request.
    Request(InferenceRequest),
    /// A commitment to an answer.
    Commit(CommitMsg),
    /// The opening of a commitment.
    Reveal(RevealMsg),
    /// A node rejected a reveal.
    RevealRejected {
        /// The request.
        request_id: RequestId,
        /// The node whose reveal was rejected.
        node: NodeId,
        /// Its inference id.
        inference_id: InferenceId,
        /// Why.
        reason: RejectReason,
    },
    /// A node's computed result.
    ConsensusResult(ConsensusResultMsg),
    /// The sender's capabilities and load.
    PeerStatus(PeerStatus),
    /// Peers the sender knows.
    KnownPeers(Vec<PeerInfo>),
    /// Asks a peer (directly) for what it saw of one request: for nodes that joined late or
    /// were cut off.
    SyncRequest {
        /// The request.
        request_id: RequestId,
    },
    /// The answer to [`Message::SyncRequest`]: the original signed wire messages (request,
    /// commits, reveals, results) the sender saw for the request. Each one is verified on its
    /// own signature by the receiver.
    SyncResponse {
        /// The request.
        request_id: RequestId,
        /// Wire bytes of the original messages.
        envelopes: Vec<Vec<u8>>,
    },
    /// What the sender holds of a request when it is ready to decide: every committer's
    /// commitments and whether it holds a valid reveal. Receivers fetch what they miss (a sync
    /// with the sender) before deciding, so that honest nodes decide over the same inputs.
    Inventory {
        /// The request.
        request_id: RequestId,
        /// One entry per committer, sorted by node.
        items: Vec<InventoryItem>,
    },
}

/// One committer in an [`Message::Inventory`].
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct InventoryItem {
    /// The committer.
    pub node: NodeId,
    /// Its commitments the sender holds (two: an equivocation).
    pub commitments: Vec<crate::consensus::Commitment>,
    /// Whether the sender holds a reveal of it that opens one of them.
    pub revealed: bool,
    /// What the sender's replay of that reveal's sampling found (the second check), when the
    /// sender serves its model and has judged it; `None` otherwise. Nodes that do not serve
    /// the model decide the second check by these verdicts (see the coordinator's docs).
    pub sampling: Option<SamplingVerdict>,
}

/// A committee member's verdict on one reveal's sampling, replayed by its engine.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub enum SamplingVerdict {
    /// Every sampling decision replayed within the tolerance.
    Passed,
    /// The replay failed: why.
    Failed(crate::consensus::sampling::SamplingFault),
}

impl Message {
    /// A short name of the message kind, for logs and metrics.
    pub fn kind(&self) -> &'static str {
        match self {
            Message::Request(_) => "request",
            Message::Commit(_) => "commit",
            Message::Reveal(_) => "reveal",
            Message::RevealRejected { .. } => "reveal_rejected",
            Message::ConsensusResult(_) => "consensus_result",
            Message::PeerStatus(_) => "peer_status",
            Message::KnownPeers(_) => "known_peers",
            Message::SyncRequest { .. } => "sync_request",
            Message::SyncResponse { .. } => "sync_response",
            Message::Inventory { .. } => "inventory",
        }
    }

    /// Whether nodes log this message to relay it in sync answers (the request, commits,
    /// reveals and signed results: what another node needs to reach the same decision).
    pub fn is_syncable(&self) -> bool {
        matches!(
            self,
            Message::Request(_)
                | Message::Commit(_)
                | Message::Reveal(_)
                | Message::ConsensusResult(_)
        )
    }

    /// The request this message is about, if any.
    pub fn request_id(&self) -> Option<RequestId> {
        match self {
            Message::Request(r) => Some(r.id()),
            Message::Commit(c) => Some(c.commit.request_id),
            Message::Reveal(r) => Some(r.reveal.request_id),
            Message::RevealRejected { request_id, .. } => Some(*request_id),
            Message::ConsensusResult(r) => Some(r.request_id),
            Message::SyncRequest { request_id }
            | Message::SyncResponse { request_id, .. }
            | Message::Inventory { request_id, .. } => Some(*request_id),
            Message::PeerStatus(_) | Message::KnownPeers(_) => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::identity::NodeKey;

    fn req() -> InferenceRequest {
        let mut r = InferenceRequest::new(
            "What is the capital of France?",
            vec!["m".into()],
            NodeKey::from_seed(1).node_id(),
            1_000,
        );
        r.nonce = 42;
        r
    }

    #[test]
    fn request_id_covers_content_requester_and_nonce() {
        let a = req();
        assert_eq!(a.id(), req().id());
        let mut b = req();
        b.nonce = 43;
        assert_ne!(a.id(), b.id());
        let mut c = req();
        c.requester = Some(NodeKey::from_seed(2).node_id());
        assert_ne!(a.id(), c.id());
        let mut d = req();
        d.messages[0].content.push('!');
        assert_ne!(a.id(), d.id());
        assert_eq!(a.deadline_ms(), 61_000);
    }

    #[test]
    fn validation() {
        assert!(req().validate().is_ok());
        let mut r = req();
        r.messages[0].content = "  ".into();
        assert!(r.validate().is_err());
        let mut r = req();
        r.accepted_models.clear();
        assert!(r.validate().is_err());
        let mut r = req();
        r.temperature = f32::NAN;
        assert!(r.validate().is_err());
        let mut r = req();
        r.max_tokens = 0;
        assert!(r.validate().is_err());
        let mut r = req();
        r.frame.quorum = 0;
        assert!(r.validate().is_err());
        let mut r = req();
        r.requester = None;
        assert!(r.validate().is_err());
    }
}
