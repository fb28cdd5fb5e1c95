//! What a run reports.

use std::collections::BTreeMap;

use rakis_core::RequestId;

/// How one request ended, seen from its honest committee members.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RequestStatus {
    /// Every honest member completed with one identical result.
    Completed {
        /// Whether the selected output is an honest node's answer.
        honest: bool,
        /// Index of the node whose output was selected.
        selected: usize,
    },
    /// No honest member completed; the reason most of them failed with.
    Failed(String),
    /// Honest members ended differently: different results, or some completed while others
    /// failed or have no result.
    Inconsistent {
        /// Distinct result digests among those that completed (the digest covers the accepted
        /// set: two nodes that accepted different reveals differ even on the same output).
        results: usize,
        /// Distinct selected output texts among those that completed.
        outputs: usize,
        /// Honest members that failed or have no result.
        not_completed: usize,
    },
}

/// One request's report.
#[derive(Clone, Debug)]
pub struct RequestReport {
    /// Index in the scenario.
    pub index: usize,
    /// The request id.
    pub request_id: RequestId,
    /// Committee (node indices).
    pub committee: Vec<usize>,
    /// Adversarial members of the committee.
    pub adversaries: Vec<usize>,
    /// The outcome.
    pub status: RequestStatus,
    /// Whether an adversary's reveal sat in the accepted set of some honest member.
    pub adversary_accepted: bool,
    /// Whether some honest member selected an output that no honest node generated.
    pub wrong_result: bool,
    /// Time from the deadline to the last honest member's result (completed requests).
    pub result_after_deadline_ms: Option<u64>,
    /// Whether an adversary meant to lie but its rewrite of the model's answer changed nothing
    /// (it answered honestly; its answer counts as honest).
    pub lie_unchanged: bool,
}

/// Summary statistics of a latency sample.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Latency {
    /// Samples.
    pub count: usize,
    /// Mean (ms).
    pub mean_ms: f64,
    /// Median (ms).
    pub p50_ms: u64,
    /// 99th percentile (ms).
    pub p99_ms: u64,
    /// Maximum (ms).
    pub max_ms: u64,
}

impl Latency {
    pub(crate) fn of(mut v: Vec<u64>) -> Latency {
        if v.is_empty() {
            return Latency::default();
        }
        v.sort_unstable();
        let at = |q: f64| v[((v.len() - 1) as f64 * q).round() as usize];
        Latency {
            count: v.len(),
            mean_ms: v.iter().sum::<u64>() as f64 / v.len() as f64,
            p50_ms: at(0.5),
            p99_ms: at(0.99),
            max_ms: *v.last().expect("not empty"),
        }
    }
}

/// The report of one run.
#[derive(Clone, Debug)]
pub struct Report {
    /// Per request.
    pub requests: Vec<RequestReport>,
    /// Requests every honest member completed with one result.
    pub completed: usize,
    /// Requests no honest member completed.
    pub failed: usize,
    /// Failure reasons → count.
    pub failures: BTreeMap<String, usize>,
    /// Requests whose honest members ended differently.
    pub inconsistent: usize,
    /// Of those, the requests where honest members that completed signed different result
    /// digests (the rest: some completed, others did not).
    pub split_digests: usize,
    /// Requests where some honest member selected an output no honest node generated.
    pub wrong_results: usize,
    /// Requests where an adversary's reveal was in some honest member's accepted set.
    pub adversary_accepted: usize,
    /// Over completed requests: honest members' answers left out of the agreed accepted set
    /// (rejected by a check, or outside the ball), and the honest answers there were.
    pub honest_left_out: (usize, usize),
    /// Messages delivered (one per recipient; a broadcast to k nodes counts k).
    pub messages: u64,
    /// Broadcasts and direct sends.
    pub sends: u64,
    /// Bytes delivered: postcard size of the message, per recipient (unsigned: a signed envelope
    /// adds a fixed overhead per message).
    pub bytes: u64,
    /// Deliveries lost (loss or partition).
    pub lost: u64,
    /// Deliveries a receiver's inbox dropped (duplicates of envelopes it had, replays, skew).
    pub inbox_dropped: u64,
    /// Sync requests asked.
    pub sync_requests: u64,
    /// Deadline → last honest result, over completed requests.
    pub result_latency: Latency,
    /// Most requests one node's coordinator tracked at the end of the run (it never forgets a
    /// request, so this is its peak).
    pub max_tracked_requests: usize,
    /// Requests sent by flooders (not in [`Report::requests`]).
    pub flood_requests: usize,
    /// Events processed by the simulator.
    pub events: u64,
    /// Virtual time simulated (ms).
    pub virtual_ms: u64,
}

impl Report {
    /// Messages delivered per request.
    pub fn messages_per_request(&self) -> f64 {
        self.messages as f64 / self.requests.len().max(1) as f64
    }

    /// Bytes delivered per request.
    pub fn bytes_per_request(&self) -> f64 {
        self.bytes as f64 / self.requests.len().max(1) as f64
    }

    /// Honest answers left out of agreed results ([`Report::honest_left_out`]), in percent.
    pub fn honest_left_out_percent(&self) -> f64 {
        100.0 * self.honest_left_out.0 as f64 / self.honest_left_out.1.max(1) as f64
    }

    /// The rates of the security tables, in percent of the requests: an adversary entered an
    /// honest node's accepted set; the selected output was not an honest answer; honest nodes
    /// did not all complete with one result (failed or inconsistent).
    pub fn rates_percent(&self) -> (f64, f64, f64) {
        let pct = |k: usize| 100.0 * k as f64 / self.requests.len().max(1) as f64;
        (
            pct(self.adversary_accepted),
            pct(self.wrong_results),
            pct(self.failed + self.inconsistent),
        )
    }

    /// A short human-readable summary.
    pub fn summary(&self) -> String {
        format!(
            "requests {} completed {} failed {} {:?} inconsistent {} (split digests {}) wrong {} adversary-accepted {} | \
             msgs/req {:.1} bytes/req {:.0} lost {} inbox-dropped {} syncs {} | deadline→result mean {:.0} ms p99 {} ms | \
             events {} virtual {} ms",
            self.requests.len(),
            self.completed,
            self.failed,
            self.failures,
            self.inconsistent,
            self.split_digests,
            self.wrong_results,
            self.adversary_accepted,
            self.messages_per_request(),
            self.bytes_per_request(),
            self.lost,
            self.inbox_dropped,
            self.sync_requests,
            self.result_latency.mean_ms,
            self.result_latency.p99_ms,
            self.events,
            self.virtual_ms,
        )
    }
}
