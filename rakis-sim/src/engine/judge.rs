//! Judging a run: each request's result over its honest committee members, and the report.

use std::collections::{BTreeMap, BTreeSet};

use super::*;
use crate::report::{Latency, Report, RequestReport, RequestStatus};
use rakis_core::{NodeId, QuorumFailure};

impl Simulation {
    pub(super) fn report(self) -> Report {
        let mut requests = Vec::new();
        let mut failures: BTreeMap<String, usize> = BTreeMap::new();
        let (mut completed, mut failed, mut inconsistent, mut wrong, mut adv_acc) = (0, 0, 0, 0, 0);
        let mut split_digests = 0;
        let mut latencies = Vec::new();
        let mut honest_left_out = (0, 0);
        let adversarial: BTreeSet<NodeId> = self
            .nodes
            .iter()
            .filter(|n| !n.behaviour.answers_honestly())
            .map(|n| n.id)
            .collect();
        for (k, r) in self.reqs.iter().enumerate() {
            let honest: Vec<usize> = r
                .committee
                .iter()
                .copied()
                .filter(|&i| self.nodes[i].behaviour.is_honest())
                .collect();
            let adversaries: Vec<usize> = r
                .committee
                .iter()
                .copied()
                .filter(|&i| !self.nodes[i].behaviour.is_honest())
                .collect();
            let mut digests = BTreeSet::new();
            let mut done = 0;
            let mut last = None;
            let mut wrong_result = false;
            let mut adversary_accepted = false;
            let mut selected = None;
            let mut outputs = BTreeSet::new();
            let mut reasons: BTreeMap<String, usize> = BTreeMap::new();
            let mut agreed_accepted = None;
            for i in &honest {
                match r.results.get(i) {
                    Some(NodeResult::Completed {
                        at,
                        digest,
                        selected: s,
                        output,
                        accepted,
                    }) => {
                        done += 1;
                        digests.insert(*digest);
                        last = last.max(Some(*at));
                        selected = Some((*s, output.clone()));
                        outputs.insert(output.clone());
                        if !self.honest_texts.contains(&(k, output.clone())) {
                            wrong_result = true;
                        }
                        if accepted.iter().any(|n| adversarial.contains(n)) {
                            adversary_accepted = true;
                        }
                        agreed_accepted = Some(accepted);
                    }
                    Some(NodeResult::Failed(f)) => *reasons.entry(failure_key(f)).or_default() += 1,
                    None => *reasons.entry("no result".into()).or_default() += 1,
                }
            }
            let status = if done == honest.len() && digests.len() == 1 {
                let (s, output) = selected.expect("completed");
                let accepted = agreed_accepted.expect("completed");
                for &i in &r.committee {
                    let n = &self.nodes[i];
                    if n.behaviour.answers_honestly() && self.sc.answers(i) {
                        honest_left_out.1 += 1;
                        honest_left_out.0 += usize::from(!accepted.contains(&n.id));
                    }
                }
                latencies.push(last.expect("completed").saturating_sub(r.deadline));
                completed += 1;
                RequestStatus::Completed {
                    honest: self.honest_texts.contains(&(k, output)),
                    selected: self.index[&s],
                }
            } else if done == 0 {
                failed += 1;
                let reason = reasons
                    .iter()
                    .max_by_key(|(_, c)| **c)
                    .map(|(r, _)| r.clone())
                    .unwrap_or_else(|| "no honest member".into());
                *failures.entry(reason.clone()).or_default() += 1;
                RequestStatus::Failed(reason)
            } else {
                inconsistent += 1;
                split_digests += usize::from(digests.len() > 1);
                RequestStatus::Inconsistent {
                    results: digests.len(),
                    outputs: outputs.len(),
                    not_completed: honest.len() - done,
                }
            };
            wrong += usize::from(wrong_result);
            adv_acc += usize::from(adversary_accepted);
            requests.push(RequestReport {
                index: k,
                request_id: r.id,
                committee: r.committee.clone(),
                adversaries,
                result_after_deadline_ms: matches!(status, RequestStatus::Completed { .. })
                    .then(|| last.unwrap_or(r.deadline).saturating_sub(r.deadline)),
                status,
                adversary_accepted,
                wrong_result,
                lie_unchanged: self.unchanged_lies.contains(&k),
            });
        }
        Report {
            requests,
            completed,
            failed,
            failures,
            inconsistent,
            split_digests,
            wrong_results: wrong,
            adversary_accepted: adv_acc,
            honest_left_out,
            messages: self.messages,
            sends: self.sends,
            bytes: self.bytes,
            lost: self.lost,
            inbox_dropped: self.dropped,
            sync_requests: self.sync_requests,
            result_latency: Latency::of(latencies),
            max_tracked_requests: self
                .nodes
                .iter()
                .map(|n| n.coord.request_ids().len())
                .max()
                .unwrap_or(0),
            flood_requests: self.flood_ids.len(),
            events: self.events,
            virtual_ms: self.now - START_MS,
        }
    }
}

fn failure_key(f: &QuorumFailure) -> String {
    match f {
        QuorumFailure::QuorumNotReached { .. } => "quorum not reached".into(),
        QuorumFailure::Consensus(r) => {
            let d = format!("{r:?}");
            let name = d.split([' ', '{', '(']).next().unwrap_or("").to_string();
            format!("consensus: {name}")
        }
        QuorumFailure::Invalid(_) => "invalid".into(),
        other => format!("{other:?}"),
    }
}
