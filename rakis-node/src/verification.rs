//! The verification object every gateway answer carries, and its offline check
//! (`rakis verify`).
//!
//! A [`Verification`] holds what a third party needs to check an answer without trusting the
//! node that served it: the request as submitted (its id is its hash), and the certificate —
//! signed results of at least the committee's signature threshold of distinct members, all
//! over one result digest that binds the output. [`Verification::check`] recomputes the
//! committee from an epoch the *checker* trusts (its own configuration's members), never from
//! the file, so a file cannot vouch for its own signers.

use std::collections::BTreeSet;

use rakis_core::membership::Epoch;
use rakis_core::protocol::{Certificate, CertificateError};
use rakis_core::{ChatMessage, Hash32, InferenceRequest, NodeId, RequestId};
use serde::{Deserialize, Serialize};

/// How an answer was verified (the `rakis` field of gateway answers).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Verification {
    /// The request's id (the hash of `request`).
    pub request_id: RequestId,
    /// Whether a committee certificate backs the answer (`false` only in open networks).
    pub certified: bool,
    /// The digest the signers signed (request, output hash, accepted set, configuration).
    pub result_digest: Option<Hash32>,
    /// The request's committee, in draw order.
    pub committee: Vec<NodeId>,
    /// The nodes whose answers formed the agreed ball.
    pub accepted: Vec<NodeId>,
    /// The committee members that signed the result.
    pub signers: Vec<NodeId>,
    /// Signers that replayed the selected answer's sampling (or generated it).
    pub replayed_by: Vec<NodeId>,
    /// The node whose answer was selected.
    pub selected_node: Option<NodeId>,
    /// Tokens of the selected answer, and whether it stopped by itself (`stop`) or at the
    /// request's limit (`length`), from its reveal as this gateway's node received it (not
    /// part of the signed digest; `None` when the node did not hold the reveal).
    #[serde(default)]
    pub completion: Option<Completion>,
    /// The model of the selected answer: its name is one the request accepts; the weights are
    /// what the selected answer declared, as reported by the signers (not part of the signed
    /// digest).
    pub model: ModelInfo,
    /// The request as submitted.
    pub request: InferenceRequest,
    /// The committee's signed results (absent in open networks).
    pub certificate: Option<Certificate>,
}

/// The model that produced an answer.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ModelInfo {
    /// Its name in requests.
    pub name: String,
    /// SHA-256 of its weights file, as the selected answer declared it.
    pub weights_sha256: Option<Hash32>,
    /// The quantization it computed with.
    pub quantization: Option<String>,
}

/// The length of an answer and why it ended.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Completion {
    /// Answer tokens.
    pub tokens: u32,
    /// `stop` (end of turn drawn) or `length` (`max_tokens` reached).
    pub finish_reason: String,
}

/// What [`Verification::check`] establishes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Checked {
    /// The certified output.
    pub output: String,
    /// The certified digest.
    pub result_digest: Hash32,
    /// The distinct committee members that signed it.
    pub signers: BTreeSet<NodeId>,
    /// How many signatures the committee needs.
    pub needed: usize,
    /// The committee's size.
    pub committee: usize,
}

impl Verification {
    /// Checks the certificate against `epoch` (one the checker trusts): the request hashes to
    /// its id, the committee is the one `epoch` draws for it, every signature is valid and by a
    /// distinct member, over one digest, and enough of them; the summary fields agree with the
    /// certificate; `answer` (the text the client received), when given, is the certified
    /// output.
    pub fn check(&self, epoch: &Epoch, answer: Option<&str>) -> Result<Checked, VerifyError> {
        if self.request.id() != self.request_id {
            return Err(VerifyError::RequestId);
        }
        // Fields outside the id (a chain request's transaction, exact floats) must hold too.
        self.request
            .validate()
            .map_err(|e| VerifyError::InvalidRequest(e.to_string()))?;
        if !self.certified {
            return Err(VerifyError::NotCertified);
        }
        let certificate = self.certificate.as_ref().ok_or(VerifyError::NotCertified)?;
        if epoch.number() != certificate.committee.epoch
            || epoch.digest() != certificate.committee.epoch_digest
        {
            return Err(VerifyError::OtherEpoch {
                theirs: certificate.committee.epoch,
                ours: epoch.number(),
            });
        }
        let digest = certificate
            .verify(&self.request, epoch)
            .map_err(VerifyError::Certificate)?;
        let result = certificate.result().ok_or(VerifyError::NotCertified)?;
        if let Some(text) = answer {
            if text != result.output {
                return Err(VerifyError::AnswerDiffers);
            }
        }
        let signers: BTreeSet<NodeId> = certificate.signatures.iter().map(|r| r.signer).collect();
        let replayed: BTreeSet<NodeId> = certificate
            .signatures
            .iter()
            .filter(|r| r.replayed)
            .map(|r| r.signer)
            .collect();
        let accepted: Vec<NodeId> = result.accepted.iter().map(|a| a.node).collect();
        let listed = |v: &[NodeId]| {
            let set: BTreeSet<NodeId> = v.iter().copied().collect();
            (set.len() == v.len()).then_some(set)
        };
        if self.result_digest != Some(digest)
            || self.committee != certificate.committee.members
            || listed(&self.signers) != Some(signers.clone())
            || listed(&self.replayed_by) != Some(replayed)
            || self.accepted != accepted
            || self.selected_node != Some(result.selected_node)
            || !self.request.accepted_models.contains(&self.model.name)
        {
            return Err(VerifyError::SummaryDiffers);
        }
        Ok(Checked {
            output: result.output.clone(),
            result_digest: digest,
            signers,
            needed: certificate
                .committee
                .signature_threshold(self.request.frame.percentage_ppm()),
            committee: certificate.committee.len(),
        })
    }

    /// Checks that the certified request is the one the caller sent (`messages` to `model`)
    /// with at least `min_quorum`: a gateway could otherwise answer with a certificate of any
    /// request it had certified, for example one it made itself with a committee it ground
    /// (a peer request's committee depends on its nonce, which its requester chooses). Call it
    /// with [`Self::check`].
    pub fn is_answer_to(
        &self,
        messages: &[ChatMessage],
        model: &str,
        min_quorum: u32,
    ) -> Result<(), VerifyError> {
        if self.request.messages != messages || self.request.accepted_models != [model] {
            return Err(VerifyError::OtherRequest);
        }
        if self.request.frame.quorum < min_quorum {
            return Err(VerifyError::QuorumBelow {
                theirs: self.request.frame.quorum,
                ours: min_quorum,
            });
        }
        Ok(())
    }

    /// Reads a verification from JSON: a whole gateway answer (a chat completion, whose
    /// `rakis` field it takes, with the answer's text) or the bare object.
    pub fn from_json(text: &str) -> Result<(Verification, Option<String>), VerifyError> {
        let value: serde_json::Value =
            serde_json::from_str(text).map_err(|e| VerifyError::Format(e.to_string()))?;
        // A chat completion's text is what is checked: one without it is not accepted.
        let answer = match value.get("choices") {
            Some(choices) => Some(
                choices
                    .pointer("/0/message/content")
                    .and_then(|v| v.as_str())
                    .map(str::to_string)
                    .ok_or_else(|| {
                        VerifyError::Format("`choices[0].message.content` is not a text".into())
                    })?,
            ),
            None => None,
        };
        let object = value.get("rakis").cloned().unwrap_or(value);
        let verification =
            serde_json::from_value(object).map_err(|e| VerifyError::Format(e.to_string()))?;
        Ok((verification, answer))
    }
}

/// Why a verification does not hold.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum VerifyError {
    /// Not JSON of a verification.
    #[error("not a verification object: {0}")]
    Format(String),
    /// The request does not hash to the id.
    #[error("the request does not hash to its request id")]
    RequestId,
    /// The request is not a valid request.
    #[error("the request is invalid: {0}")]
    InvalidRequest(String),
    /// No certificate (an open network's answer).
    #[error("no committee certificate: the answer comes from an open network")]
    NotCertified,
    /// Certified under another epoch than the checker's.
    #[error("certified by a committee of epoch {theirs}; this configuration's members are epoch {ours} (or a different member list)")]
    OtherEpoch {
        /// The certificate's epoch.
        theirs: u64,
        /// The checker's.
        ours: u64,
    },
    /// The certificate does not hold.
    #[error("the certificate does not hold: {0}")]
    Certificate(#[source] CertificateError),
    /// The certificate is of another request than the one sent.
    #[error("the certificate is of another request than the one sent")]
    OtherRequest,
    /// The request was certified with a smaller quorum than the checker accepts.
    #[error("the request was certified with a quorum of {theirs}, below the {ours} accepted here")]
    QuorumBelow {
        /// The request's.
        theirs: u32,
        /// The checker's minimum.
        ours: u32,
    },
    /// The answer's text is not the certified output.
    #[error("the answer's text is not the certified output")]
    AnswerDiffers,
    /// The summary fields say something else than the certificate.
    #[error(
        "the summary fields (committee, signers, accepted, digest) differ from the certificate"
    )]
    SummaryDiffers,
}
