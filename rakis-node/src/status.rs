//! The status page a node serves (`/`, and `/status.json` for programs): its peers, its open
//! and recent requests, and for each decided request a picture of its embedding ball — every
//! reveal a point at its Hamming distance from the ball's centre, the radius drawn, accepted,
//! rejected and outside points coloured. People look rather than read.

use std::collections::{BTreeMap, VecDeque};
use std::fmt::Write as _;
use std::sync::Mutex;

use rakis_core::{BinaryEmbedding, ConsensusOutcome, Decision, NodeEvent, NodeId, RequestId};
use serde::{Deserialize, Serialize};

use crate::metrics::reject_label;

/// Decided requests kept on the page.
pub const RECENT: usize = 50;
/// Open requests kept on the page (the oldest are dropped first).
const MAX_OPEN: usize = 1_000;

/// Everything the page shows.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct Snapshot {
    /// This node.
    pub node: Option<NodeId>,
    /// Its peers.
    pub peers: Vec<PeerRow>,
    /// Requests not decided yet, newest first.
    pub open: Vec<OpenRow>,
    /// Decided requests, newest first.
    pub recent: Vec<Decided>,
}

/// A peer.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct PeerRow {
    /// Its node id.
    pub node: NodeId,
    /// The models it announced.
    pub models: Vec<String>,
    /// Its generation jobs running or queued.
    pub load: u32,
    /// Seconds since it was last heard.
    pub seen_s_ago: u64,
}

/// A request not decided yet.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct OpenRow {
    /// The request.
    pub request_id: RequestId,
    /// `received`, `committing`, `revealing`.
    pub phase: String,
    /// Distinct committers seen.
    pub committed: u32,
    /// Reveals seen.
    pub revealed: u32,
}

/// A decided request and its ball.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Decided {
    /// The request.
    pub request_id: RequestId,
    /// `agreed`, or why it failed.
    pub outcome: String,
    /// The selected answer (its first 200 characters).
    pub answer: Option<String>,
    /// The ball's radius in bits.
    pub radius_bits: u32,
    /// Points needed in the ball.
    pub threshold: u32,
    /// Committers.
    pub committed: u32,
    /// Every reveal this node saw.
    pub points: Vec<BallPoint>,
}

/// One reveal in the picture.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct BallPoint {
    /// The revealer.
    pub node: NodeId,
    /// Hamming distance of its embedding from the ball's centre (`None`: no centre, or a
    /// reveal whose embedding cannot be compared).
    pub distance: Option<u32>,
    /// `accepted`, `rejected` or `outside` (verified, not in the ball).
    pub status: String,
    /// Why it was rejected.
    pub reason: Option<String>,
    /// Whether its answer was selected.
    pub selected: bool,
}

#[derive(Default)]
struct Open {
    phase: &'static str,
    committed: u32,
    reveals: BTreeMap<NodeId, BinaryEmbedding>,
    seq: u64,
}

#[derive(Default)]
struct Board {
    node: Option<NodeId>,
    peers: Vec<PeerRow>,
    open: BTreeMap<RequestId, Open>,
    recent: VecDeque<Decided>,
    seq: u64,
}

/// The page's state, fed with the node's events.
#[derive(Default)]
pub struct StatusBoard {
    board: Mutex<Board>,
}

impl std::fmt::Debug for StatusBoard {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StatusBoard").finish_non_exhaustive()
    }
}

impl StatusBoard {
    /// A board for `node`.
    pub fn new(node: NodeId) -> Self {
        StatusBoard {
            board: Mutex::new(Board {
                node: Some(node),
                ..Board::default()
            }),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Board> {
        self.board.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Sets the peers shown.
    pub fn set_peers(&self, peers: Vec<PeerRow>) {
        self.lock().peers = peers;
    }

    /// Takes a node event (call with every event, in order).
    pub fn observe(&self, event: &NodeEvent) {
        let mut b = self.lock();
        let b = &mut *b;
        match event {
            NodeEvent::RequestReceived { request_id, .. } => {
                b.seq += 1;
                if b.open.len() >= MAX_OPEN {
                    if let Some(oldest) =
                        b.open.iter().min_by_key(|(_, o)| o.seq).map(|(id, _)| *id)
                    {
                        b.open.remove(&oldest);
                    }
                }
                let seq = b.seq;
                b.open.entry(*request_id).or_insert_with(|| Open {
                    phase: "received",
                    seq,
                    ..Open::default()
                });
            }
            NodeEvent::CommitSeen {
                request_id,
                committed,
                ..
            } => {
                if let Some(o) = b.open.get_mut(request_id) {
                    o.phase = "committing";
                    o.committed = *committed;
                }
            }
            NodeEvent::RevealOpened {
                request_id,
                committed,
            } => {
                if let Some(o) = b.open.get_mut(request_id) {
                    o.phase = "revealing";
                    o.committed = *committed;
                }
            }
            NodeEvent::RevealSeen {
                request_id,
                node,
                embedding,
                ..
            } => {
                if let Some(o) = b.open.get_mut(request_id) {
                    o.reveals.insert(*node, embedding.clone());
                }
            }
            NodeEvent::Completed {
                request_id,
                outcome,
            } => {
                let open = b.open.remove(request_id).unwrap_or_default();
                b.push(decided(outcome, &open.reveals));
            }
            NodeEvent::Failed { request_id, reason } => {
                let open = b.open.remove(request_id).unwrap_or_default();
                b.push(Decided {
                    request_id: *request_id,
                    outcome: reason.to_string(),
                    answer: None,
                    radius_bits: 0,
                    threshold: 0,
                    committed: open.committed,
                    points: open
                        .reveals
                        .keys()
                        .map(|n| BallPoint {
                            node: *n,
                            distance: None,
                            status: "outside".into(),
                            reason: None,
                            selected: false,
                        })
                        .collect(),
                });
            }
            _ => {}
        }
    }

    /// What the page shows now.
    pub fn snapshot(&self) -> Snapshot {
        let b = self.lock();
        let mut open: Vec<(&RequestId, &Open)> = b.open.iter().collect();
        open.sort_by_key(|(_, o)| std::cmp::Reverse(o.seq));
        Snapshot {
            node: b.node,
            peers: b.peers.clone(),
            open: open
                .into_iter()
                .map(|(id, o)| OpenRow {
                    request_id: *id,
                    phase: o.phase.to_string(),
                    committed: o.committed,
                    revealed: o.reveals.len() as u32,
                })
                .collect(),
            recent: b.recent.iter().cloned().collect(),
        }
    }

    /// The page.
    pub fn render_html(&self) -> String {
        render(&self.snapshot())
    }
}

impl Board {
    fn push(&mut self, d: Decided) {
        self.recent.push_front(d);
        self.recent.truncate(RECENT);
    }
}

fn decided(outcome: &ConsensusOutcome, reveals: &BTreeMap<NodeId, BinaryEmbedding>) -> Decided {
    let (center_node, selected, result) = match &outcome.decision {
        Decision::Agreed {
            center, selected, ..
        } => (
            outcome
                .accepted
                .iter()
                .find(|a| a.commitment == *center)
                .map(|a| a.node),
            Some(selected.node),
            "agreed".to_string(),
        ),
        Decision::Failed(reason) => (None, None, reason.to_string()),
    };
    let center = center_node.and_then(|n| reveals.get(&n));
    let mut points: BTreeMap<NodeId, BallPoint> = BTreeMap::new();
    for (node, embedding) in reveals {
        points.insert(
            *node,
            BallPoint {
                node: *node,
                distance: center.and_then(|c| c.hamming(embedding).ok()),
                status: "outside".into(),
                reason: None,
                selected: selected == Some(*node),
            },
        );
    }
    for a in &outcome.accepted {
        let p = points.entry(a.node).or_insert_with(|| BallPoint {
            node: a.node,
            distance: None,
            status: String::new(),
            reason: None,
            selected: selected == Some(a.node),
        });
        p.status = "accepted".into();
        p.distance = Some(a.distance_to_center);
    }
    for r in &outcome.rejected {
        let p = points.entry(r.node).or_insert_with(|| BallPoint {
            node: r.node,
            distance: None,
            status: String::new(),
            reason: None,
            selected: false,
        });
        p.status = "rejected".into();
        p.reason = Some(reject_label(&r.reason).to_string());
    }
    Decided {
        request_id: outcome.request_id,
        outcome: result,
        answer: outcome
            .selected()
            .map(|s| s.output.chars().take(200).collect()),
        radius_bits: outcome.radius_bits,
        threshold: outcome.threshold,
        committed: outcome.committed,
        points: points.into_values().collect(),
    }
}

fn escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// The SVG of one ball: the centre in the middle, the radius as a dashed circle, each reveal at
/// its distance (scaled so that the farthest fits), spread around by its position in the list.
pub fn ball_svg(d: &Decided) -> String {
    const SIZE: f64 = 220.0;
    const C: f64 = SIZE / 2.0;
    const R_MAX: f64 = SIZE / 2.0 - 14.0;
    let far = d
        .points
        .iter()
        .filter_map(|p| p.distance)
        .max()
        .unwrap_or(0)
        .max(d.radius_bits.saturating_mul(3) / 2)
        .max(1);
    let scale = R_MAX / f64::from(far);
    let mut svg = String::new();
    let _ = write!(
        svg,
        r##"<svg class="ball" xmlns="http://www.w3.org/2000/svg" width="{SIZE}" height="{SIZE}" viewBox="0 0 {SIZE} {SIZE}" data-request="{}" data-radius="{}">"##,
        d.request_id, d.radius_bits
    );
    let _ = write!(
        svg,
        r##"<circle class="radius" cx="{C}" cy="{C}" r="{:.1}" fill="#eef6ee" stroke="#4a4" stroke-dasharray="4 3"/>"##,
        f64::from(d.radius_bits) * scale
    );
    let _ = write!(svg, r##"<circle cx="{C}" cy="{C}" r="2" fill="#333"/>"##);
    let n = d.points.len().max(1) as f64;
    for (i, p) in d.points.iter().enumerate() {
        let angle = std::f64::consts::TAU * (i as f64) / n - std::f64::consts::FRAC_PI_2;
        // Points without a distance sit on the outer ring; points at (or very near) the
        // centre on a small ring around it, so that several identical answers stay visible.
        let r = p
            .distance
            .map_or(R_MAX, |x| (f64::from(x) * scale).max(7.0));
        let (x, y) = (C + r * angle.cos(), C + r * angle.sin());
        let colour = match p.status.as_str() {
            "accepted" => "#2a2",
            "rejected" => "#d22",
            _ => "#e90",
        };
        let _ = write!(
            svg,
            r##"<circle class="point {status}" cx="{x:.1}" cy="{y:.1}" r="{size}" fill="{colour}" stroke="{stroke}" stroke-width="2" data-node="{node}" data-distance="{dist}" data-status="{status}"><title>{short} · {dist_text}{reason}</title></circle>"##,
            status = escape(&p.status),
            size = if p.selected { 8 } else { 6 },
            stroke = if p.selected { "#000" } else { "#fff" },
            node = p.node,
            dist = p.distance.map(|d| d.to_string()).unwrap_or_default(),
            short = p.node.short(),
            dist_text = p
                .distance
                .map(|d| format!("{d} bits from the centre"))
                .unwrap_or_else(|| "no distance".into()),
            reason = p
                .reason
                .as_ref()
                .map(|r| format!(" · rejected: {}", escape(r)))
                .unwrap_or_default(),
        );
    }
    svg.push_str("</svg>");
    svg
}

fn render(s: &Snapshot) -> String {
    let mut h = String::new();
    h.push_str(
        r##"<!doctype html><html lang="en"><head><meta charset="utf-8"><meta http-equiv="refresh" content="5"><title>Rakis node</title><style>
body{font:14px system-ui,sans-serif;margin:24px;color:#222;max-width:1100px}
h1{font-size:20px}h2{font-size:16px;margin-top:28px}
table{border-collapse:collapse}td,th{padding:3px 10px;border-bottom:1px solid #ddd;text-align:left}
code{font-size:12px}.requests{display:flex;flex-wrap:wrap;gap:16px}
.request{border:1px solid #ccc;border-radius:6px;padding:10px;width:240px}
.request p{margin:4px 0;font-size:12px;overflow-wrap:anywhere}
.legend span{margin-right:12px}
</style></head><body>"##,
    );
    let _ = write!(
        h,
        "<h1>Rakis node <code id=\"node-id\">{}</code></h1>",
        s.node.map(|n| n.to_string()).unwrap_or_default()
    );
    let _ = write!(h, "<h2>Peers ({})</h2><table id=\"peers\"><tr><th>node</th><th>models</th><th>load</th><th>last heard</th></tr>", s.peers.len());
    for p in &s.peers {
        let _ = write!(
            h,
            "<tr class=\"peer\"><td><code>{}</code></td><td>{}</td><td>{}</td><td>{} s ago</td></tr>",
            p.node.short(),
            escape(&p.models.join(", ")),
            p.load,
            p.seen_s_ago
        );
    }
    h.push_str("</table>");
    let _ = write!(h, "<h2>Open requests ({})</h2><table id=\"open\"><tr><th>request</th><th>phase</th><th>committed</th><th>revealed</th></tr>", s.open.len());
    for o in &s.open {
        let _ = write!(
            h,
            "<tr class=\"open-request\"><td><code>{}</code></td><td>{}</td><td>{}</td><td>{}</td></tr>",
            o.request_id.short(),
            escape(&o.phase),
            o.committed,
            o.revealed
        );
    }
    h.push_str("</table>");
    let _ = write!(
        h,
        "<h2>Recent requests ({})</h2><p class=\"legend\"><span style=\"color:#2a2\">● accepted</span><span style=\"color:#e90\">● verified, outside the ball</span><span style=\"color:#d22\">● rejected</span><span>◯ black ring: selected · dashed circle: the ball's radius</span></p><div class=\"requests\">",
        s.recent.len()
    );
    for d in &s.recent {
        let _ = write!(
            h,
            "<div class=\"request\" data-request=\"{}\" data-outcome=\"{}\"><p><code>{}</code> · <b>{}</b> · {} committed · radius {} bits</p>{}<p class=\"answer\">{}</p></div>",
            d.request_id,
            escape(&d.outcome),
            d.request_id.short(),
            escape(&d.outcome),
            d.committed,
            d.radius_bits,
            ball_svg(d),
            escape(d.answer.as_deref().unwrap_or(""))
        );
    }
    h.push_str("</div></body></html>");
    h
}
