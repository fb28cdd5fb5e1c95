//! Broadcast throughput and latency among five local libp2p nodes (TCP on 127.0.0.1).
//!
//! * `broadcast/one_check` and `broadcast/two_checks`: one node broadcasts signed messages back
//!   to back (at most 1 000 in flight); each of the four others takes every message through a
//!   node's `Inbox`, as a node does; the time runs until all four have taken every one.
//!   Criterion reports it as messages per second. `one_check`: the inbox shares the
//!   transport's checked signatures (`Transport::verified_signatures`) and the sender seals
//!   with `seal_remembered`, as the node does now: one signature recovery per message and node.
//!   `two_checks`: the inbox checks every signature again, as before.
//! * CPU per message: process CPU time (user + system, all five nodes) over a burst of 3 000
//!   messages, divided by 3 000, for each variant.
//! * `envelope_open` / `envelope_open_checked`: one message's validation with a signature
//!   recovery, and with the signature found checked.
//! * Latency: 2 000 messages, one every 2 ms; for each message, the time from the `broadcast`
//!   call to its arrival at a receiver. Printed as p50/p99 over every arrival, and over the
//!   last arrival of each message (the time to reach all four).
//!
//! The per-peer rate limit is lifted (the default, 200 messages/s per peer, would cap the
//! throughput); everything else is `NetConfig::local_test`.
//!
//! Run: `cargo bench -p rakis-net --bench broadcast -- --warm-up-time 1 --measurement-time 5`
#![allow(clippy::print_stdout, missing_docs)]

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use criterion::{Criterion, Throughput};
use futures::StreamExt;
use rakis_core::envelope::{open_cached, seal, seal_remembered, Inbox, VerifiedSignatures};
use rakis_core::protocol::PeerStatus;
use rakis_core::{Message, NodeKey, Transport, TransportEvent};
use rakis_net::{Libp2pTransport, NetConfig, RateLimit};
use sha2::{Digest, Sha256};
use tokio::runtime::Runtime;
use tokio::sync::mpsc;

const NET: &str = "bench";
const NODES: usize = 5;
const WINDOW: usize = 1_000;

type Arrival = (usize, [u8; 32], Instant);

struct Bench {
    key: NodeKey,
    /// Whether receivers share the transport's checked signatures (and the sender remembers
    /// its own).
    shared: bool,
    sender: Arc<Libp2pTransport>,
    _others: Vec<Arc<Libp2pTransport>>,
    arrivals: mpsc::UnboundedReceiver<Arrival>,
    counter: u32,
}

fn config() -> NetConfig {
    NetConfig {
        rate_limit: RateLimit {
            per_second: 1e9,
            burst: u32::MAX,
        },
        event_buffer: 1 << 17,
        ..NetConfig::local_test(NET)
    }
}

async fn setup(shared: bool, seed: u64) -> Bench {
    let keys: Vec<NodeKey> = (0..NODES as u64)
        .map(|i| NodeKey::from_seed(seed + i))
        .collect();
    let mut nodes: Vec<Arc<Libp2pTransport>> = Vec::new();
    for k in &keys {
        let mut c = config();
        for n in &nodes {
            c.bootstrap_peers.extend(n.listen_addrs());
        }
        nodes.push(Arc::new(
            Libp2pTransport::start(k.clone(), c).await.unwrap(),
        ));
    }
    for n in &nodes {
        n.wait_for_topic_peers(NODES - 1, Duration::from_secs(30))
            .await
            .unwrap();
    }
    let (tx, rx) = mpsc::unbounded_channel();
    for (i, n) in nodes.iter().enumerate().skip(1) {
        let mut events = n.events();
        let tx = tx.clone();
        let mut inbox = Inbox::new(NET, 60_000);
        if shared {
            inbox = inbox.with_verified_signatures(n.verified_signatures().unwrap());
        }
        tokio::spawn(async move {
            while let Some(ev) = events.next().await {
                if let TransportEvent::Message { bytes, .. } = ev {
                    let now = std::time::SystemTime::now()
                        .duration_since(std::time::UNIX_EPOCH)
                        .unwrap()
                        .as_millis() as u64;
                    inbox.accept(&bytes, now).expect("a valid message");
                    let at = Instant::now();
                    let _ = tx.send((i, Sha256::digest(&bytes).into(), at));
                }
            }
        });
    }
    let sender = nodes.remove(0);
    Bench {
        key: keys[0].clone(),
        shared,
        sender,
        _others: nodes,
        arrivals: rx,
        counter: 0,
    }
}

impl Bench {
    fn messages(&mut self, n: usize) -> Vec<(Vec<u8>, [u8; 32])> {
        (0..n)
            .map(|_| {
                self.counter += 1;
                let ts = std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .unwrap()
                    .as_millis() as u64;
                let message = Message::PeerStatus(PeerStatus {
                    models: vec!["smollm2-135m".into()],
                    embedding_model: None,
                    workers: 1,
                    load: self.counter,
                });
                let bytes = if self.shared {
                    let verified = self.sender.verified_signatures().unwrap();
                    seal_remembered(&self.key, NET, ts, message, &verified).unwrap()
                } else {
                    seal(&self.key, NET, ts, message).unwrap()
                };
                let h = Sha256::digest(&bytes).into();
                (bytes, h)
            })
            .collect()
    }

    /// Broadcasts `n` messages back to back and returns the time until all arrived everywhere.
    async fn burst(&mut self, n: usize) -> Duration {
        let msgs = self.messages(n);
        let index: HashMap<[u8; 32], usize> =
            msgs.iter().enumerate().map(|(i, (_, h))| (*h, i)).collect();
        let mut counts = vec![0usize; n];
        let mut complete = 0usize;
        let start = Instant::now();
        for (k, (bytes, _)) in msgs.into_iter().enumerate() {
            while k >= complete + WINDOW {
                self.take_arrival(&index, &mut counts, &mut complete).await;
            }
            self.sender.broadcast(bytes).await.unwrap();
        }
        while complete < n {
            self.take_arrival(&index, &mut counts, &mut complete).await;
        }
        start.elapsed()
    }

    async fn take_arrival(
        &mut self,
        index: &HashMap<[u8; 32], usize>,
        counts: &mut [usize],
        complete: &mut usize,
    ) {
        let (_, h, _) = tokio::time::timeout(Duration::from_secs(30), self.arrivals.recv())
            .await
            .expect("a message was lost")
            .unwrap();
        if let Some(&i) = index.get(&h) {
            counts[i] += 1;
            if counts[i] == NODES - 1 {
                *complete += 1;
            }
        }
    }

    /// Paced broadcasts; returns (every arrival, last arrival per message) latencies.
    async fn latencies(&mut self, n: usize, gap: Duration) -> (Vec<Duration>, Vec<Duration>) {
        let msgs = self.messages(n);
        let index: HashMap<[u8; 32], usize> =
            msgs.iter().enumerate().map(|(i, (_, h))| (*h, i)).collect();
        let mut sent_at = vec![None; n];
        let mut arrivals: Vec<Vec<Instant>> = vec![Vec::new(); n];
        let mut ticker = tokio::time::interval(gap);
        for (k, (bytes, _)) in msgs.into_iter().enumerate() {
            ticker.tick().await;
            sent_at[k] = Some(Instant::now());
            self.sender.broadcast(bytes).await.unwrap();
            while let Ok((_, h, at)) = self.arrivals.try_recv() {
                if let Some(&i) = index.get(&h) {
                    arrivals[i].push(at);
                }
            }
        }
        while arrivals.iter().any(|a| a.len() < NODES - 1) {
            let (_, h, at) = tokio::time::timeout(Duration::from_secs(30), self.arrivals.recv())
                .await
                .expect("a message was lost")
                .unwrap();
            if let Some(&i) = index.get(&h) {
                arrivals[i].push(at);
            }
        }
        let mut each = Vec::new();
        let mut all = Vec::new();
        for (s, a) in sent_at.iter().zip(&arrivals) {
            let s = s.unwrap();
            each.extend(a.iter().map(|t| t.duration_since(s)));
            all.push(a.iter().max().unwrap().duration_since(s));
        }
        (each, all)
    }
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i]
}

fn report(label: &str, mut v: Vec<Duration>) {
    v.sort();
    println!(
        "{label}: n = {}, p50 = {:.3} ms, p99 = {:.3} ms, max = {:.3} ms",
        v.len(),
        percentile(&v, 0.50).as_secs_f64() * 1e3,
        percentile(&v, 0.99).as_secs_f64() * 1e3,
        v.last().unwrap().as_secs_f64() * 1e3,
    );
}

/// CPU time (user + system) of this process so far (Linux `/proc/self/stat`, clock ticks of
/// 10 ms).
fn cpu_time() -> Duration {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    let after = stat.rsplit_once(')').map(|(_, r)| r).unwrap_or("");
    let fields: Vec<&str> = after.split_whitespace().collect();
    let field = |i: usize| {
        fields
            .get(i)
            .and_then(|f| f.parse::<u64>().ok())
            .unwrap_or(0)
    };
    // After the name: state (0), ppid (1) … utime (11), stime (12).
    let ticks = field(11) + field(12);
    Duration::from_millis(ticks * 10)
}

fn main() {
    let rt = Runtime::new().unwrap();
    let mut one = rt.block_on(setup(true, 9_000));
    let mut two = rt.block_on(setup(false, 9_100));
    let mut c = Criterion::default().sample_size(10).configure_from_args();
    // The per-message CPU cost every receiver pays before forwarding (signature recovery), and
    // the cost when the signature was checked already.
    let sample = rt.block_on(async { two.messages(1).remove(0).0 });
    c.bench_function("envelope_open", |b| {
        b.iter(|| rakis_core::envelope::open(std::hint::black_box(&sample), NET).unwrap())
    });
    let checked = VerifiedSignatures::default();
    open_cached(&sample, NET, &checked).unwrap();
    c.bench_function("envelope_open_checked", |b| {
        b.iter(|| open_cached(std::hint::black_box(&sample), NET, &checked).unwrap())
    });
    let mut group = c.benchmark_group("broadcast");
    group.throughput(Throughput::Elements(1));
    group.bench_function("one_check", |b| {
        b.iter_custom(|iters| rt.block_on(one.burst(iters as usize)))
    });
    group.bench_function("two_checks", |b| {
        b.iter_custom(|iters| rt.block_on(two.burst(iters as usize)))
    });
    group.finish();

    for (label, bench) in [("one_check", &mut one), ("two_checks", &mut two)] {
        let n = 3_000;
        let cpu = cpu_time();
        let wall = rt.block_on(bench.burst(n));
        let used = cpu_time().saturating_sub(cpu);
        println!(
            "{label}: {n} messages in {:.2} s, CPU {:.2} s: {:.0} µs of CPU per message (5 nodes)",
            wall.as_secs_f64(),
            used.as_secs_f64(),
            used.as_secs_f64() * 1e6 / n as f64
        );
    }
    let (each, all) = rt.block_on(one.latencies(2_000, Duration::from_millis(2)));
    report(
        "broadcast latency (one_check), each arrival (4 receivers)",
        each,
    );
    report(
        "broadcast latency (one_check), reaching all 4 receivers",
        all,
    );
    c.final_summary();
}
