//! Writing agreed results to the chain sinks: exactly once per sink, remembered across restarts,
//! and submitted again as more signatures arrive when a sink needs more.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use tracing::{debug, error, info_span, warn, Instrument};

use super::driver::{Driver, DriverInput};
use crate::chain::{ChainError, ChainSink};
use crate::events::NodeEvent;
use crate::misbehaviour::Misbehaviour;
use crate::protocol::ConsensusResultMsg;
use crate::store::{StoreOp, SubmissionState};
use crate::RequestId;

/// How long after a sink asked for more signatures the node submits again (it also does as
/// soon as another node's matching result arrives).
pub const SIGNATURE_RETRY: Duration = Duration::from_secs(1);
/// How many times a sink may ask for more signatures before the submission is given up.
pub const MAX_SIGNATURE_RETRIES: u32 = 300;

impl Driver {
    /// A sink answered a submission: wait for more signatures, or record the final state.
    pub(super) async fn on_submitted(
        &mut self,
        request_id: RequestId,
        sink: String,
        result: Result<String, ChainError>,
    ) {
        self.submitting.remove(&(request_id, sink.clone()));
        if let Err(ChainError::NotEnoughSignatures { have, need }) = &result {
            let refusals = self
                .awaiting_signatures
                .remove(&(request_id, sink.clone()))
                .unwrap_or(0)
                + 1;
            if refusals < MAX_SIGNATURE_RETRIES {
                // Still pending: submitted again when another matching result arrives,
                // or after a while (a sink may settle for fewer once it has waited).
                debug!(request = %request_id.short(), %sink, have, need, "waiting for more signatures");
                self.awaiting_signatures
                    .insert((request_id, sink), refusals);
                let tx = self.jobs_tx.clone();
                self.tasks.spawn(async move {
                    tokio::time::sleep(SIGNATURE_RETRY).await;
                    let _ = tx.send(DriverInput::RetrySubmission { request_id });
                });
                return;
            }
            warn!(request = %request_id.short(), %sink, have, need, "gave up waiting for signatures");
        }
        self.awaiting_signatures.remove(&(request_id, sink.clone()));
        let state = match &result {
            Ok(r) => SubmissionState::Submitted(r.clone()),
            Err(e) => SubmissionState::Failed(e.to_string()),
        };
        if let Err(e) = self
            .store
            .apply(StoreOp::Submission {
                request_id,
                sink: sink.clone(),
                state,
            })
            .await
        {
            error!(error = %e, "could not store submission state");
        }
        let ev = match result {
            Ok(reference) => NodeEvent::Submitted {
                request_id,
                sink,
                reference,
            },
            Err(error) => NodeEvent::SubmitFailed {
                request_id,
                sink,
                error: error.to_string(),
            },
        };
        let _ = self.events.send(ev);
    }

    /// Records the result of `id` as pending on every sink, before the result itself is stored.
    pub(super) async fn mark_pending(&mut self, id: RequestId) {
        let Some(request) = self.coordinator.request(&id) else {
            return;
        };
        let sinks: Vec<_> = self
            .sinks
            .iter()
            .filter(|s| s.accepts(request))
            .cloned()
            .collect();
        for sink in &sinks {
            let op = StoreOp::Submission {
                request_id: id,
                sink: sink.name(),
                state: SubmissionState::Pending,
            };
            if let Err(e) = self.store.apply(op).await {
                error!(request = %id.short(), sink = %sink.name(), error = %e, "could not store a pending submission");
            }
        }
    }

    /// Whether some sink waits for more signatures of `id`.
    pub(super) fn awaits_signatures(&self, id: &RequestId) -> bool {
        self.awaiting_signatures
            .range((*id, String::new())..)
            .next()
            .is_some_and(|((r, _), _)| r == id)
    }

    /// Submits the signed result of `id` to every sink that has not got it: sinks whose stored
    /// state is [`SubmissionState::Submitted`], and submissions already running, are skipped.
    pub(super) async fn submit_to_sinks(&mut self, id: RequestId) {
        let Some(signed) = self.coordinator.signed_result(&id).cloned() else {
            return;
        };
        let Some(request) = self.coordinator.request(&id).cloned() else {
            return;
        };
        if self.sinks.is_empty() {
            return;
        }
        let states = match self.store.quorum(&id).await {
            Ok(record) => record.map(|r| r.submissions).unwrap_or_default(),
            Err(e) => {
                // Sinks are idempotent: submitting again is safe, only wasteful.
                warn!(request = %id.short(), error = %e, "could not read submission states; submitting to every sink");
                BTreeMap::new()
            }
        };
        // With a committee, the certificate's signatures (only a certified result goes out,
        // and only by a node that computed it); in an open network, whatever matching results
        // other nodes sent.
        let attestations: Vec<ConsensusResultMsg> = match self.coordinator.certificate(&id) {
            Some(cert) => {
                if cert.result().map(|r| r.result_digest) != Some(signed.result_digest) {
                    debug!(request = %id.short(), "the committee certified another result than this node's: not submitting");
                    return;
                }
                cert.signatures
            }
            None if self
                .coordinator
                .status(&id)
                .is_some_and(|s| s.committee.is_some()) =>
            {
                debug!(request = %id.short(), "result not certified yet: not submitting");
                return;
            }
            None => self
                .peer_results
                .get(&id)
                .map(|v| {
                    v.iter()
                        .filter(|r| r.result_digest == signed.result_digest)
                        .cloned()
                        .collect()
                })
                .unwrap_or_default(),
        };
        let sinks: Vec<Arc<dyn ChainSink>> = self
            .sinks
            .iter()
            .filter(|sink| {
                if !sink.accepts(&request) {
                    return false;
                }
                let name = sink.name();
                if let Some(SubmissionState::Submitted(reference)) = states.get(&name) {
                    debug!(request = %id.short(), sink = %name, %reference, "result already submitted; skipped");
                    return false;
                }
                self.submitting.insert((id, name))
            })
            .cloned()
            .collect();
        for sink in sinks {
            let tx = self.jobs_tx.clone();
            let signed = signed.clone();
            let attestations = attestations.clone();
            let request = request.clone();
            let span = info_span!("submit", request = %id.short(), sink = %sink.name());
            self.tasks.spawn(
                async move {
                    let name = sink.name();
                    let result = match sink.is_submitted(&id).await {
                        Ok(true) => Ok("already submitted".to_string()),
                        _ => match sink.submit(&request, &signed, &attestations).await {
                            Ok(r) => Ok(r.reference),
                            Err(ChainError::AlreadySubmitted) => {
                                Ok("already submitted".to_string())
                            }
                            Err(e) => Err(e),
                        },
                    };
                    let _ = tx.send(DriverInput::Submitted {
                        request_id: id,
                        sink: name,
                        result,
                    });
                }
                .instrument(span),
            );
        }
    }

    /// Sends verified evidence to every sink, each in a task of its own (the loop never waits
    /// on a chain); the answers come back as [`NodeEvent::MisbehaviourReported`].
    pub(super) fn report_to_sinks(&mut self, evidence: Misbehaviour) {
        let evidence = Arc::new(evidence);
        let (request_id, node) = (evidence.request_id(), evidence.node());
        for sink in self.sinks.clone() {
            let tx = self.jobs_tx.clone();
            let evidence = evidence.clone();
            let span = info_span!("report", request = %request_id.short(), node = %node.short(), sink = %sink.name());
            self.tasks.spawn(
                async move {
                    let result = match sink.report(&evidence).await {
                        Ok(Some(receipt)) => Ok(receipt.reference),
                        Ok(None) => return,
                        Err(e) => {
                            warn!(error = %e, "the sink refused the evidence");
                            Err(e.to_string())
                        }
                    };
                    let _ = tx.send(DriverInput::Reported {
                        request_id,
                        node,
                        sink: sink.name(),
                        result,
                    });
                }
                .instrument(span),
            );
        }
    }
}
