//! The canonical sampler: how a committer draws each token from its model's logits, so that
//! any verifier holding the same logits and the same random numbers replays every draw.
//!
//! ```text
//! greedy (T <= 0):  the token with the highest logit (ties: the lowest id)
//! otherwise:        w_i = exp((l_i - max_j l_j) / T)                (f64; temperature first)
//!                   nucleus = the fewest tokens, by w descending (ties: lower id first), whose
//!                             sum reaches p × Σ w  (p >= 1: every token)
//!                   token   = the first, in canonical order over the nucleus, at which
//!                             the running sum of w passes u × Σ_nucleus w
//! canonical order   = rank r holds token (r × 1000003) mod V   (V: vocabulary size; sums of
//!                     w run in this order too)
//! u_k               = (u64_be(SHA-256("rakis/sample/v1" ‖ 0x00 ‖ seed[32] ‖ k:u32)[0..8]) >> 11) / 2^53
//! ```
//!
//! Temperature comes before the nucleus cut (candle's order; llama.cpp cuts first — the same
//! request would otherwise mean two distributions). The inverse CDF runs over a fixed order of
//! the token ids ([`CanonicalOrder`]: a prime-step permutation, so that tokens a liar would swap,
//! adjacent in id order, are far apart), not over probabilities: a near-tie between two tokens then moves a boundary a little instead of
//! swapping the tokens' places, so a verifier whose logits differ slightly from the
//! generator's (another engine, weight format, thread count) finds `u` near the token's
//! interval rather than in another token's. [`check`] measures, in logits, how far the
//! verifier's logits would have to move for the claimed token to be drawn with `u` (the
//! smallest such tolerance, see [`Distribution::check`]); a tolerance of a few tenths of a
//! logit absorbs honest numerical differences, which is what another engine's rounding gives
//! on small quantized models (docs/consensus.md has the measurement).

use serde::{Deserialize, Serialize};

use crate::hashing::Hasher;
use crate::Hash32;

/// Domain tag of the per-position random numbers.
pub const SAMPLE_TAG: &str = "rakis/sample/v1";

/// What a request asks of sampling.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct SamplerSpec {
    /// Temperature; `<= 0` is greedy.
    pub temperature: f32,
    /// Nucleus mass; `>= 1` keeps every token.
    pub top_p: f32,
}

impl SamplerSpec {
    /// Greedy decoding.
    pub const GREEDY: SamplerSpec = SamplerSpec {
        temperature: 0.0,
        top_p: 1.0,
    };

    /// Whether this is greedy decoding.
    pub fn is_greedy(&self) -> bool {
        self.temperature <= 0.0 || self.temperature.is_nan()
    }
}

/// The random number of output position `k` under `seed` (a committer's VRF output for the
/// request), uniform in `[0, 1)` with 53 bits.
pub fn position_random(seed: &Hash32, k: u32) -> f64 {
    let h = Hasher::new(SAMPLE_TAG).bytes(&seed.0).u32(k).finish();
    let v = u64::from_be_bytes(h.0[..8].try_into().expect("8 bytes"));
    (v >> 11) as f64 / (1u64 << 53) as f64
}

/// The canonical order of a vocabulary of `V` tokens, in which the inverse CDF runs: rank `r`
/// holds token `r × 1_000_003 mod V` (a prime step, so every token once). Neighbours in this
/// order are unrelated tokens: in id order, tokens a liar would swap (the digits `4` and `5`,
/// `Paris` and `Pari`) sit side by side, and a claim of the neighbour needs only a small shift
/// of a boundary; here it lands anywhere.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CanonicalOrder {
    vocab: u64,
    /// The step modulo the vocabulary size.
    step: u64,
    /// The step's inverse modulo the vocabulary size.
    inverse: u64,
}

/// The step of [`CanonicalOrder`] (a prime larger than any vocabulary it serves).
pub const ORDER_STEP: u64 = 1_000_003;

impl CanonicalOrder {
    /// The order of a vocabulary of `vocab` tokens.
    pub fn new(vocab: usize) -> Self {
        let v = vocab.max(1) as u64;
        // Extended Euclid: the step's inverse modulo v (v < ORDER_STEP, so they are coprime;
        // a larger vocabulary that is a multiple of the step falls back to id order).
        let (mut r0, mut r1) = (i128::from(v), i128::from(ORDER_STEP % v));
        let (mut t0, mut t1) = (0i128, 1i128);
        while r1 != 0 {
            let q = r0 / r1;
            (r0, r1) = (r1, r0 - q * r1);
            (t0, t1) = (t1, t0 - q * t1);
        }
        let inverse = if r0 == 1 {
            t0.rem_euclid(i128::from(v)) as u64
        } else {
            0
        };
        CanonicalOrder {
            vocab: v,
            step: ORDER_STEP % v,
            inverse,
        }
    }

    /// The token at rank `r`.
    pub fn id(&self, r: usize) -> u32 {
        if self.inverse == 0 {
            return r as u32;
        }
        ((r as u64 * self.step) % self.vocab) as u32
    }

    /// Every token, rank by rank (`id(0), id(1), ..`; each the last plus the step, wrapped,
    /// without a division).
    pub fn ids(&self) -> impl Iterator<Item = u32> + '_ {
        let identity = self.inverse == 0;
        let mut next = 0u64;
        (0..self.vocab).map(move |r| {
            if identity {
                return r as u32;
            }
            let id = next;
            // `next < vocab` and `step < vocab`: one subtraction wraps it.
            next += self.step;
            if next >= self.vocab {
                next -= self.vocab;
            }
            id as u32
        })
    }

    /// The rank of token `id`.
    pub fn rank(&self, id: u32) -> u32 {
        if self.inverse == 0 {
            return id;
        }
        ((u64::from(id) * self.inverse) % self.vocab) as u32
    }
}

/// One position's distribution under a spec: the nucleus (in canonical order) and the weights.
#[derive(Clone, Debug)]
pub struct Distribution {
    /// The vocabulary's canonical order.
    order: CanonicalOrder,
    /// Ranks of the nucleus tokens, ascending.
    ranks: Vec<u32>,
    /// Nucleus token ids, in canonical order.
    ids: Vec<u32>,
    /// Their weights `w`, in the same order.
    weights: Vec<f64>,
    /// `Σ` of the nucleus weights.
    total: f64,
    /// For greedy specs: the highest logit and its token.
    greedy: Option<(u32, f32)>,
    /// The spec it was made with.
    spec: SamplerSpec,
    /// The highest finite logit.
    max: f32,
}

/// The nucleus order: heavier first, ties by token id (a total order: weights are finite).
fn heavier_first(a: &(f64, u32), b: &(f64, u32)) -> std::cmp::Ordering {
    b.0.total_cmp(&a.0).then(a.1.cmp(&b.1))
}

/// Puts the nucleus first in [`heavier_first`] order and returns its size: the shortest prefix
/// of that order whose weights, summed in that order, reach `need` (all of them if none does).
///
/// The same prefix and the same sums as sorting every weight, without sorting them all: the
/// heaviest `k` are selected (`k` = 64, then four times more while their sum falls short) and
/// only they are sorted. A nucleus is usually a few dozen tokens of a vocabulary of tens of
/// thousands.
fn nucleus_prefix(pairs: &mut [(f64, u32)], need: f64) -> usize {
    let n = pairs.len();
    let mut k = n.min(64);
    while k > 0 {
        if k < n {
            pairs.select_nth_unstable_by(k - 1, heavier_first);
        }
        pairs[..k].sort_unstable_by(heavier_first);
        let mut sum = 0.0;
        for (j, (w, _)) in pairs[..k].iter().enumerate() {
            sum += w;
            if sum >= need {
                return j + 1;
            }
        }
        if k == n {
            break;
        }
        k = n.min(k * 4);
    }
    n
}

impl Distribution {
    /// The distribution `spec` makes of `logits` (non-finite logits count as `-∞`).
    pub fn new(logits: &[f32], spec: SamplerSpec) -> Self {
        if spec.is_greedy() {
            let mut best: Option<(u32, f32)> = None;
            for (i, &l) in logits.iter().enumerate() {
                if l.is_finite() && best.is_none_or(|(_, b)| l > b) {
                    best = Some((i as u32, l));
                }
            }
            return Distribution {
                order: CanonicalOrder::new(logits.len()),
                ranks: Vec::new(),
                ids: Vec::new(),
                weights: Vec::new(),
                total: 0.0,
                greedy: best,
                spec,
                max: best.map_or(f32::NEG_INFINITY, |(_, l)| l),
            };
        }
        let t = f64::from(spec.temperature);
        let max = logits
            .iter()
            .copied()
            .filter(|l| l.is_finite())
            .fold(f32::NEG_INFINITY, f32::max);
        let order = CanonicalOrder::new(logits.len());
        let mut pairs: Vec<(f64, u32)> = order
            .ids()
            .take(logits.len())
            .filter_map(|i| {
                let l = logits[i as usize];
                l.is_finite()
                    .then(|| (((f64::from(l) - f64::from(max)) / t).exp(), i))
            })
            .filter(|(w, _)| *w > 0.0)
            .collect();
        let all: f64 = pairs.iter().map(|(w, _)| w).sum();
        if spec.top_p < 1.0 {
            let need = f64::from(spec.top_p.max(0.0)) * all;
            let keep = nucleus_prefix(&mut pairs, need);
            pairs.truncate(keep.max(1));
            pairs.sort_unstable_by_key(|&(_, i)| order.rank(i));
        }
        let total = pairs.iter().map(|(w, _)| w).sum();
        Distribution {
            ranks: pairs.iter().map(|&(_, i)| order.rank(i)).collect(),
            order,
            ids: pairs.iter().map(|&(_, i)| i).collect(),
            weights: pairs.iter().map(|&(w, _)| w).collect(),
            total,
            greedy: None,
            spec,
            max,
        }
    }

    /// The token drawn with random number `u` (`None`: no finite logit at all).
    pub fn sample(&self, u: f64) -> Option<u32> {
        if let Some((id, _)) = self.greedy {
            return Some(id);
        }
        let target = u * self.total;
        let mut sum = 0.0;
        for (&id, &w) in self.ids.iter().zip(&self.weights) {
            sum += w;
            if sum > target {
                return Some(id);
            }
        }
        self.ids.last().copied()
    }

    /// The interval `[lo, hi)` of `u` that draws `token`, as fractions of the nucleus mass
    /// (`None` when the token is outside the nucleus).
    pub fn interval(&self, token: u32) -> Option<(f64, f64)> {
        let at = self.ranks.binary_search(&self.order.rank(token)).ok()?;
        let below: f64 = self.weights[..at].iter().sum();
        Some((below / self.total, (below + self.weights[at]) / self.total))
    }

    /// Tokens in the nucleus (0 for greedy specs).
    pub fn nucleus_len(&self) -> usize {
        self.ids.len()
    }
}

/// How a claimed token stands against a verifier's own distribution and the position's
/// random number.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub enum Draw {
    /// The verifier draws the same token.
    Same,
    /// Another token, but logits within `distance` of the verifier's (each logit moved by at
    /// most that much, in the direction most favourable to the claim) draw the claimed one
    /// with the same random number.
    Near {
        /// The smallest logit tolerance that explains the claim.
        distance: f64,
    },
    /// No logits within [`MAX_TOLERANCE`] of the verifier's draw the claimed token.
    Outside,
}

impl Draw {
    /// Whether the draw is explained by logits within `tolerance` of the verifier's.
    pub fn within(&self, tolerance: f64) -> bool {
        match *self {
            Draw::Same => true,
            Draw::Near { distance } => distance <= tolerance,
            Draw::Outside => false,
        }
    }
}

/// The largest logit tolerance [`check`] measures; a claim needing more is [`Draw::Outside`].
pub const MAX_TOLERANCE: f64 = 4.0;

/// Compares a claimed `token` with what `spec` draws from `logits` with random number `u`.
pub fn check(logits: &[f32], spec: SamplerSpec, u: f64, token: u32) -> Draw {
    Distribution::new(logits, spec).check(logits, u, token)
}

impl Distribution {
    /// [`check`] against this distribution (made of `logits`), for several claimed tokens at
    /// one position without building it again.
    ///
    /// The distance is the smallest `δ` such that some logits within `δ` of the verifier's
    /// (every logit moved by at most `δ`) draw the claimed token with `u`: another engine,
    /// weight format or thread count computes logits that differ by a few tenths on small
    /// quantized models, and a claim those differences explain is honest. Moving the tokens
    /// before the claimed one (in id order) down by `δ` and the others up scales the mass below
    /// the claimed token's interval by `e^{-2δ/T}` relative to the rest, so
    /// `δ = (T/2) · ln(B (1 − u) / (u (w + C)))` when `u` lies below the interval (`B`, `w`,
    /// `C`: the nucleus mass below, of and above the token) and
    /// `δ = (T/2) · ln(u C / ((1 − u)(B + w)))` above it. A token outside the nucleus is first
    /// brought in: the smallest `δ` (bisection) at which raising it and lowering the others
    /// would keep it in the nucleus. Greedy: half the logit gap to the best token.
    ///
    /// The masses beside the token are summed, never taken as the total minus the rest: a
    /// token whose weight is below the total's rounding would otherwise leave a negative or
    /// zero mass above it and a claim any tolerance explains would read as `Outside`.
    pub fn check(&self, logits: &[f32], u: f64, token: u32) -> Draw {
        let Some(&claimed) = logits.get(token as usize) else {
            return Draw::Outside;
        };
        if !claimed.is_finite() {
            return Draw::Outside;
        }
        if let Some((best, top)) = self.greedy {
            if best == token {
                return Draw::Same;
            }
            return Self::bounded((f64::from(top) - f64::from(claimed)) / 2.0);
        }
        let t = f64::from(self.spec.temperature);
        // Log weights `(l − max) / T`: at tiny temperatures the weights themselves underflow
        // to zero (a token a logit below the best at T 0.0004 weighs e^{-2600}), and a claim
        // that logits within a fraction of one explain would read as `Outside`.
        let z = |id: u32| (f64::from(logits[id as usize]) - f64::from(self.max)) / t;
        let zc = z(token);
        let (below, above, into) = match self.ranks.binary_search(&self.order.rank(token)) {
            Ok(at) => {
                let below: f64 = self.weights[..at].iter().sum();
                let lo = below / self.total;
                let hi = (below + self.weights[at]) / self.total;
                if u >= lo && u < hi {
                    return Draw::Same;
                }
                (
                    log_sum_exp(self.ids[..at].iter().map(|&i| z(i))),
                    log_sum_exp(self.ids[at + 1..].iter().map(|&i| z(i))),
                    0.0,
                )
            }
            Err(at) => {
                let Some(into) = self.inclusion_tolerance(logits, zc) else {
                    return Draw::Outside;
                };
                (
                    log_sum_exp(self.ids[..at].iter().map(|&i| z(i))),
                    log_sum_exp(self.ids[at..].iter().map(|&i| z(i))),
                    into,
                )
            }
        };
        // u below the interval: u < B / (B + w + C); above it: u ≥ (B + w) / (B + w + C).
        let (lu, l1u) = (u.ln(), (1.0 - u).ln());
        let total = log_sum_exp([below, zc, above]);
        let interval = if lu < below - total {
            (t / 2.0) * (below + l1u - lu - log_sum_exp([zc, above]))
        } else if lu >= log_sum_exp([below, zc]) - total {
            (t / 2.0) * (lu + above - l1u - log_sum_exp([below, zc]))
        } else {
            0.0
        };
        Self::bounded(interval.max(into).max(0.0))
    }

    fn bounded(distance: f64) -> Draw {
        if distance.is_finite() && distance <= MAX_TOLERANCE {
            Draw::Near { distance }
        } else {
            Draw::Outside
        }
    }

    /// The smallest `δ` at which a token of log weight `zc` outside the nucleus would be in it
    /// (raised by `δ`, every other logit lowered by `δ`); `None` beyond [`MAX_TOLERANCE`].
    fn inclusion_tolerance(&self, logits: &[f32], zc: f64) -> Option<f64> {
        let p = f64::from(self.spec.top_p.max(0.0));
        if p >= 1.0 {
            // Every finite logit is in a full nucleus; only its weight underflowed.
            return Some(0.0);
        }
        let t = f64::from(self.spec.temperature);
        let zs: Vec<f64> = logits
            .iter()
            .filter(|l| l.is_finite())
            .map(|&l| (f64::from(l) - f64::from(self.max)) / t)
            .collect();
        // The other tokens' mass (the claimed one once, at its own log weight, left out).
        let all = log_sum_exp(zs.iter().copied());
        let others = log_diff_exp(all, zc);
        // In the nucleus under δ: the mass strictly heavier than the raised token (scaled down)
        // stays below p × the perturbed total.
        let included = |d: f64| {
            let raised = zc + 2.0 * d / t;
            let heavier = log_sum_exp(zs.iter().copied().filter(|&x| x > raised));
            heavier < p.ln() + log_sum_exp([others, raised])
        };
        if !included(MAX_TOLERANCE) {
            return None;
        }
        let (mut lo, mut hi) = (0.0, MAX_TOLERANCE);
        for _ in 0..30 {
            let mid = (lo + hi) / 2.0;
            if included(mid) {
                hi = mid;
            } else {
                lo = mid;
            }
        }
        Some(hi)
    }
}

/// `ln Σ e^x` without overflow or underflow (`−∞` for no terms).
fn log_sum_exp(xs: impl IntoIterator<Item = f64>) -> f64 {
    let xs: Vec<f64> = xs.into_iter().filter(|x| !x.is_nan()).collect();
    let max = xs.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    if max == f64::NEG_INFINITY {
        return max;
    }
    max + xs.iter().map(|x| (x - max).exp()).sum::<f64>().ln()
}

/// `ln(e^a − e^b)` for `a ≥ b` (`−∞` when they are equal).
fn log_diff_exp(a: f64, b: f64) -> f64 {
    if b >= a {
        return f64::NEG_INFINITY;
    }
    a + (-(b - a).exp()).ln_1p()
}

/// [`Distribution::new`] then [`Distribution::sample`].
pub fn sample(logits: &[f32], spec: SamplerSpec, u: f64) -> Option<u32> {
    Distribution::new(logits, spec).sample(u)
}

/// How an answer ended, as its committer claims.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Ending {
    /// The sampler drew a stop (end-of-turn) token after the last answer token.
    Stop,
    /// The answer reached the request's token limit.
    Limit,
}

/// A verifier's replay of one answer's sampling: how each position's claimed token stands
/// against the verifier's own logits and the committer's random numbers.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Replay {
    /// Answer tokens replayed.
    pub tokens: u32,
    /// Positions the verifier draws identically.
    pub same: u32,
    /// Positions drawn otherwise, with how far `u` lay outside the claimed token's interval
    /// (a fraction of the nucleus mass; a logit gap for greedy).
    pub near: Vec<(u32, f64)>,
    /// Positions whose claimed token lies outside the verifier's nucleus.
    pub outside: Vec<u32>,
    /// The end: for [`Ending::Stop`], how the best stop token's draw stands after the last
    /// token; `None` for [`Ending::Limit`].
    pub end: Option<Draw>,
    /// The revealed text is not the decoding of the revealed token ids.
    #[serde(default)]
    pub text_mismatch: bool,
}

impl Replay {
    /// Records position `k`'s draw.
    pub fn record(&mut self, k: u32, draw: Draw) {
        self.tokens += 1;
        match draw {
            Draw::Same => self.same += 1,
            Draw::Near { distance } => self.near.push((k, distance)),
            Draw::Outside => self.outside.push(k),
        }
    }

    /// The largest distance among the positions drawn otherwise (0 when none).
    pub fn worst(&self) -> f64 {
        self.near.iter().map(|&(_, d)| d).fold(0.0, f64::max)
    }

    /// Judges the replay under `policy`.
    pub fn judge(&self, policy: &ReplayPolicy, greedy: bool) -> Result<(), SamplingFault> {
        let band = if greedy {
            policy.greedy_band
        } else {
            policy.band
        };
        if self.text_mismatch {
            return Err(SamplingFault::TextMismatch);
        }
        if let Some(&position) = self.outside.first() {
            return Err(SamplingFault::OutsideNucleus { position });
        }
        let beyond: Vec<&(u32, f64)> = self.near.iter().filter(|(_, d)| *d > band).collect();
        let allowed = policy.allowed_beyond(self.tokens);
        if beyond.len() as u32 > allowed {
            let &&(position, distance) = beyond
                .iter()
                .max_by(|a, b| a.1.total_cmp(&b.1))
                .expect("non-empty");
            return Err(SamplingFault::Unfaithful {
                position,
                distance_ppm: ppm(distance),
                beyond_band: beyond.len() as u32,
                allowed,
            });
        }
        match self.end {
            Some(d) if !d.within(band) => Err(SamplingFault::Truncated {
                distance_ppm: match d {
                    Draw::Near { distance } => ppm(distance),
                    _ => u32::MAX,
                },
            }),
            _ => Ok(()),
        }
    }
}

/// How much honest numerical difference a verifier tolerates, in logits (defaults measured:
/// see docs/consensus.md).
///
/// The default band, 0.02 logit, is some 200 times the largest difference measured between two
/// engines computing the same weights in f32 (candle and llama.cpp: 9e-5), and small enough
/// that a one-fact swap passes only where the swapped token's interval lies within a hair of
/// the position's random number. Weights computed with 8-bit activations (the block formats)
/// replay exactly only on the same kernels: across engines their logits differ by ~0.8, which
/// no band separates from lies.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct ReplayPolicy {
    /// Largest logit tolerance ([`Draw::Near`]'s distance) that counts as agreement.
    pub band: f64,
    /// The same for greedy decoding (half the logit gap between the claimed token and the
    /// verifier's best).
    pub greedy_band: f64,
    /// Positions beyond the band tolerated per 100 answer tokens (rounded down; at least
    /// `min_beyond`).
    pub beyond_per_100: u32,
    /// Positions beyond the band always tolerated.
    pub min_beyond: u32,
}

impl Default for ReplayPolicy {
    fn default() -> Self {
        ReplayPolicy {
            band: 0.02,
            greedy_band: 0.02,
            beyond_per_100: 0,
            min_beyond: 0,
        }
    }
}

impl ReplayPolicy {
    /// Positions beyond the band allowed in an answer of `tokens` tokens.
    pub fn allowed_beyond(&self, tokens: u32) -> u32 {
        (tokens * self.beyond_per_100 / 100).max(self.min_beyond)
    }
}

/// A distance in millionths, saturating (`u32::MAX`: outside the nucleus or unbounded).
fn ppm(distance: f64) -> u32 {
    let v = (distance * 1e6).round();
    if v.is_finite() && v >= 0.0 && v < f64::from(u32::MAX) {
        v as u32
    } else {
        u32::MAX
    }
}

/// Why a replay fails (distances: logit tolerances, in millionths of a logit).
#[derive(
    Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize, thiserror::Error,
)]
#[non_exhaustive]
pub enum SamplingFault {
    /// A claimed token lies outside the verifier's nucleus.
    #[error("token {position} lies outside the sampling nucleus")]
    OutsideNucleus {
        /// The position.
        position: u32,
    },
    /// More positions than tolerated were drawn otherwise beyond the band.
    #[error("{beyond_band} positions drawn otherwise beyond the band (allowed {allowed}); worst at {position}: {distance_ppm} ppm")]
    Unfaithful {
        /// The worst position.
        position: u32,
        /// Its distance, in millionths.
        distance_ppm: u32,
        /// Positions beyond the band.
        beyond_band: u32,
        /// Positions allowed.
        allowed: u32,
    },
    /// The answer claims to end where the sampler would not stop (or claims the token limit
    /// short of it).
    #[error("the sampler would not stop where the answer ends ({distance_ppm} ppm)")]
    Truncated {
        /// How far the best stop token's draw lies, in millionths (`u32::MAX`: outside).
        distance_ppm: u32,
    },
    /// The revealed text is not the decoding of the revealed token ids.
    #[error("the text is not the decoding of the token ids")]
    TextMismatch,
    /// The reveal declares other weights (file or quantization) than the verifier's for the
    /// model it names: a model name stands for one set of weights.
    #[error("the reveal declares other weights than the model's")]
    OtherWeights,
    /// The reveal's sampling seed proof is not the committer's VRF proof for the request.
    #[error("the sampling seed's proof does not hold")]
    BadSeedProof,
}

#[cfg(test)]
mod tests {

    /// The nucleus found by selection is the one a full sort finds: the same tokens in the
    /// same order, the same size, for any weights (ties included) and any mass.
    #[test]
    fn the_nucleus_by_selection_is_the_nucleus_by_sorting() {
        use proptest::prelude::*;
        let weights = proptest::collection::vec((0u8..40, 0u32..5000), 0..700);
        proptest!(ProptestConfig::with_cases(300), |(ws in weights, p in 0.0f64..1.2)| {
            // Few distinct weights: many ties, broken by id.
            let mut pairs: Vec<(f64, u32)> =
                ws.iter().map(|&(w, i)| ((f64::from(w) + 1.0).powi(3), i)).collect();
            let all: f64 = pairs.iter().map(|(w, _)| w).sum();
            let need = p * all;
            let mut sorted = pairs.clone();
            sorted.sort_unstable_by(heavier_first);
            let mut sum = 0.0;
            let mut keep = 0;
            for (w, _) in &sorted {
                sum += w;
                keep += 1;
                if sum >= need {
                    break;
                }
            }
            let got = nucleus_prefix(&mut pairs, need);
            prop_assert_eq!(got, keep);
            prop_assert_eq!(&pairs[..got], &sorted[..keep]);
        });
    }
    use super::*;

    const HOT: SamplerSpec = SamplerSpec {
        temperature: 1.0,
        top_p: 1.0,
    };

    #[test]
    fn greedy_takes_the_highest_logit_and_the_lowest_id_on_ties() {
        assert_eq!(
            sample(&[0.0, 3.0, 3.0, 1.0], SamplerSpec::GREEDY, 0.9),
            Some(1)
        );
        assert_eq!(
            check(&[0.0, 3.0, 2.5], SamplerSpec::GREEDY, 0.1, 2),
            Draw::Near { distance: 0.25 }
        );
    }

    #[test]
    fn the_inverse_cdf_runs_over_ids() {
        // Equal weights: u in [0, 1/3) draws 0, [1/3, 2/3) draws 1, the rest 2.
        let l = [0.0f32; 3];
        assert_eq!(sample(&l, HOT, 0.0), Some(0));
        assert_eq!(sample(&l, HOT, 0.34), Some(1));
        assert_eq!(sample(&l, HOT, 0.99), Some(2));
        assert_eq!(check(&l, HOT, 0.34, 1), Draw::Same);
        // Token 2 needs tokens 0 and 1 lowered by δ and itself raised by δ until its interval
        // starts at 0.34: 2 / (2 + e^{2δ}) = 0.34.
        match check(&l, HOT, 0.34, 2) {
            Draw::Near { distance } => {
                assert!((distance - 0.5 * (2.0f64 / 0.34 - 2.0).ln()).abs() < 1e-12)
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn the_nucleus_keeps_the_fewest_heaviest_tokens() {
        // Probabilities ~ 0.64, 0.24, 0.09, 0.03: p = 0.8 keeps the first two.
        let l = [3.0f32, 2.0, 1.0, 0.0];
        let spec = SamplerSpec {
            temperature: 1.0,
            top_p: 0.8,
        };
        let d = Distribution::new(&l, spec);
        assert_eq!(d.nucleus_len(), 2);
        // Token 2 enters the nucleus only when raised ~0.38 and the others lowered as much;
        // token 3 never enters.
        match check(&l, spec, 0.5, 2) {
            Draw::Near { distance } => assert!((distance - 0.3848).abs() < 1e-3, "{distance}"),
            other => panic!("{other:?}"),
        }
        let far = [12.0f32, 2.0, 1.0, 0.0];
        assert_eq!(check(&far, spec, 0.5, 3), Draw::Outside);
        assert_eq!(sample(&l, spec, 0.99), Some(1));
    }

    #[test]
    fn a_token_below_the_totals_rounding_is_near_not_outside() {
        // At T 0.0007 token 3 weighs ~4e-18 of token 22 (ranked before it): the total rounds
        // to 1 and the mass above token 3, taken as a difference, was negative (→ Outside).
        let mut l = vec![0.0f32; 45];
        l[3] = 19.4831;
        l[22] = 19.511_415;
        let spec = SamplerSpec {
            temperature: 0.000_704_577_9,
            top_p: 1.0,
        };
        match check(&l, spec, 0.228, 3) {
            Draw::Near { distance } => assert!(distance < 0.02, "{distance}"),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn a_token_whose_weight_underflows_is_near_not_outside() {
        // At T 0.00038 token 1, a logit below token 0, weighs e^{-2616}: zero in f64. Logits
        // within half the gap (~0.497) draw it; the check read it as Outside (found by
        // logit_noise_within_the_tolerance_is_explained).
        let l = [18.401_299f32, 17.407];
        let spec = SamplerSpec {
            temperature: 0.000_380_021_46,
            top_p: 1.0,
        };
        match check(&l, spec, 0.497_380_723_267_909_3, 1) {
            Draw::Near { distance } => assert!((distance - 0.4972).abs() < 1e-3, "{distance}"),
            other => panic!("{other:?}"),
        }
        // Under a nucleus cut the same token must first enter the nucleus.
        let cut = SamplerSpec { top_p: 0.9, ..spec };
        match check(&l, cut, 0.497_380_723_267_909_3, 1) {
            Draw::Near { distance } => assert!((distance - 0.4972).abs() < 1e-3, "{distance}"),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn the_canonical_order_is_a_permutation_that_scatters_neighbours() {
        // 1_000_003: a multiple of the step, whose order falls back to id order.
        for v in [1usize, 2, 3, 4, 7, 1000, 49_152, 262_144, 1_000_003] {
            let o = CanonicalOrder::new(v);
            let mut seen = vec![false; v];
            let mut ids = o.ids();
            for r in 0..v {
                let id = o.id(r);
                assert_eq!(ids.next(), Some(id), "{v}: rank {r}");
                assert!(!seen[id as usize], "{v}: {id} twice");
                seen[id as usize] = true;
                assert_eq!(o.rank(id) as usize, r);
            }
            assert_eq!(ids.next(), None);
        }
        // SmolLM2's vocabulary: the digits (ids 32..=41 there) are far apart.
        let o = CanonicalOrder::new(49_152);
        let (a, b) = (o.rank(36), o.rank(37));
        assert!(a.abs_diff(b) > 1000, "{a} {b}");
    }

    #[test]
    fn position_randoms_are_uniform_looking_and_seeded() {
        let s = Hash32([7; 32]);
        let us: Vec<f64> = (0..1000).map(|k| position_random(&s, k)).collect();
        assert!(us.iter().all(|u| (0.0..1.0).contains(u)));
        let mean = us.iter().sum::<f64>() / us.len() as f64;
        assert!((mean - 0.5).abs() < 0.05, "{mean}");
        assert_ne!(position_random(&s, 0), position_random(&Hash32([8; 32]), 0));
    }
}
