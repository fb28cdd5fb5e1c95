//! The security frame a request carries, and the parameters consensus derives from it.

use serde::{Deserialize, Serialize};

use crate::{ConsensusError, Hash32, NodeId};

/// Default `sec_distance` (see [`SecurityFrame::default`] for the measurement behind it).
pub const DEFAULT_SEC_DISTANCE: f64 = 0.30;
/// Default `sec_percentage`.
pub const DEFAULT_SEC_PERCENTAGE: f64 = 0.6;
/// Default quorum.
pub const DEFAULT_QUORUM: u32 = 5;
/// Default deadline after a request's creation, in milliseconds.
pub const DEFAULT_MAX_TIME_MS: u64 = 60_000;
/// Default embedding model.
pub const DEFAULT_EMBEDDING_MODEL: &str = "sentence-transformers/all-MiniLM-L6-v2";

/// The security parameters of one request, chosen by its requester.
///
/// Fractions (`sec_distance`, `sec_percentage`) are read at a resolution of parts per million
/// and turned into integers before use (see [`ConsensusParams`]) so that every implementation
/// derives the same radius and threshold.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct SecurityFrame {
    /// Commits needed before the deadline.
    pub quorum: u32,
    /// Deadline, in milliseconds after the request's creation.
    pub max_time_ms: u64,
    /// Radius of the agreement ball, as a fraction of embedding bits (Hamming).
    pub sec_distance: f64,
    /// Share of the committed quorum that must sit inside the ball.
    pub sec_percentage: f64,
    /// The model every node must use to embed.
    pub embedding_model: String,
}

impl Default for SecurityFrame {
    /// Quorum 5, 60 s, `sec_distance` 0.30, `sec_percentage` 0.6, all-MiniLM-L6-v2.
    ///
    /// Chosen from a measurement with SmolLM2-135M-Instruct at temperature 0.7 and
    /// all-MiniLM-L6-v2 binary embeddings (384 bits), 30 prompts × 7 seeds, quorum 5:
    ///
    /// | sec_distance | sec_percentage | all-honest rounds that succeed | off-topic / garbage / refusal answers inside the ball |
    /// |---|---|---|---|
    /// | 0.30 | 0.6 | 94 % | none (closest at 0.359) |
    ///
    /// A smaller radius rejects more honest rounds (honest answers to one prompt at
    /// temperature 0.7 differ); a radius past 0.359 starts to admit off-topic answers.
    fn default() -> Self {
        SecurityFrame {
            quorum: DEFAULT_QUORUM,
            max_time_ms: DEFAULT_MAX_TIME_MS,
            sec_distance: DEFAULT_SEC_DISTANCE,
            sec_percentage: DEFAULT_SEC_PERCENTAGE,
            embedding_model: DEFAULT_EMBEDDING_MODEL.to_string(),
        }
    }
}

impl SecurityFrame {
    /// `sec_distance` in parts per million (clamped to `[0, 1]`, rounded): the integer the
    /// consensus computation and the oracle contract use.
    pub fn distance_ppm(&self) -> u32 {
        to_ppm(self.sec_distance)
    }

    /// `sec_percentage` in parts per million (clamped to `[0, 1]`, rounded).
    pub fn percentage_ppm(&self) -> u32 {
        to_ppm(self.sec_percentage)
    }

    /// Checks every field's range: quorum ≥ 1, deadline > 0, `sec_distance` in `[0, 1]`,
    /// `sec_percentage` in `(0, 1]`, a non-empty embedding model name.
    pub fn validate(&self) -> Result<(), ConsensusError> {
        if self.quorum == 0 {
            return Err(ConsensusError::InvalidFrame(
                "quorum must be at least 1".into(),
            ));
        }
        if self.max_time_ms == 0 {
            return Err(ConsensusError::InvalidFrame(
                "max_time_ms must be positive".into(),
            ));
        }
        if !(0.0..=1.0).contains(&self.sec_distance) {
            return Err(ConsensusError::InvalidFrame(format!(
                "sec_distance {} is outside [0, 1]",
                self.sec_distance
            )));
        }
        if !(self.sec_percentage > 0.0 && self.sec_percentage <= 1.0) {
            return Err(ConsensusError::InvalidFrame(format!(
                "sec_percentage {} is outside (0, 1]",
                self.sec_percentage
            )));
        }
        if self.embedding_model.trim().is_empty() {
            return Err(ConsensusError::InvalidFrame(
                "embedding_model is empty".into(),
            ));
        }
        Ok(())
    }
}

/// Parameters of one consensus computation, in integers.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct ConsensusParams {
    /// Ball radius in parts per million of the embedding dimension.
    pub distance_ppm: u32,
    /// Share of committed nodes needed inside the ball, parts per million.
    pub percentage_ppm: u32,
    /// The embedding model every reveal must name.
    pub embedding_model: String,
    /// Re-embedding tolerance in bits; `None` = [`default_reembed_tolerance`](crate::default_reembed_tolerance) of the dimension.
    pub reembed_tolerance_bits: Option<u32>,
    /// The size of the request's committee, when it has one: the threshold is then computed
    /// over the committee (`ceil(percentage × committee_size)`), never over whoever committed.
    /// `None` (an open network): over the distinct committers.
    #[serde(default)]
    pub committee_size: Option<u32>,
    /// The committee in its draw order, when the request has one: the selected output is then
    /// the accepted reveal whose node comes first in it (see [`evaluate`](crate::evaluate)).
    /// The order is fixed before anyone commits, so nobody steers the selection by withholding
    /// a reveal or grinding a salt. `None`: the salt-seeded selection.
    #[serde(default)]
    pub selection_order: Option<Vec<NodeId>>,
    /// What the signed result is bound to: the chain, contract and member set (epoch) whose
    /// rules the request falls under (`rakis-core` computes it; all zero for none). It enters
    /// the [`result_digest`](crate::result_digest), so a signature counts only where it was
    /// meant to.
    #[serde(default = "zero_digest")]
    pub config_digest: Hash32,
}

fn zero_digest() -> Hash32 {
    Hash32([0; 32])
}

fn to_ppm(f: f64) -> u32 {
    (f.clamp(0.0, 1.0) * 1_000_000.0).round() as u32
}

impl ConsensusParams {
    /// Derives the parameters from a frame (validated first).
    pub fn from_frame(frame: &SecurityFrame) -> Result<Self, ConsensusError> {
        frame.validate()?;
        Ok(ConsensusParams {
            distance_ppm: frame.distance_ppm(),
            percentage_ppm: frame.percentage_ppm(),
            embedding_model: frame.embedding_model.clone(),
            reembed_tolerance_bits: None,
            committee_size: None,
            selection_order: None,
            config_digest: zero_digest(),
        })
    }

    /// Computes the threshold over a committee of `size` members.
    pub fn with_committee_size(mut self, size: u32) -> Self {
        self.committee_size = Some(size);
        self
    }

    /// Binds the result digest to `digest` (see [`config_digest`](Self::config_digest)).
    pub fn with_config_digest(mut self, digest: Hash32) -> Self {
        self.config_digest = digest;
        self
    }

    /// Selects by the committee's draw order `order` instead of the salt-seeded selection.
    pub fn with_selection_order(mut self, order: Vec<NodeId>) -> Self {
        self.selection_order = Some(order);
        self
    }

    /// Sets an explicit re-embedding tolerance in bits.
    pub fn with_reembed_tolerance(mut self, bits: u32) -> Self {
        self.reembed_tolerance_bits = Some(bits);
        self
    }

    /// Radius in bits for `dim`: `floor(distance_ppm * dim / 1e6)`.
    pub fn radius_bits(&self, dim: u32) -> u32 {
        (self.distance_ppm.min(1_000_000) as u64 * dim as u64 / 1_000_000) as u32
    }

    /// Points needed in the ball: `ceil(percentage_ppm * base / 1e6)`, at least 1, where `base`
    /// is the committee's size when there is a committee, else `committed`.
    pub fn threshold(&self, committed: u32) -> u32 {
        let base = self.committee_size.unwrap_or(committed);
        let num = self.percentage_ppm.min(1_000_000) as u64 * base as u64;
        (num.div_ceil(1_000_000) as u32).max(1)
    }

    /// The re-embedding tolerance for `dim`.
    pub fn tolerance_bits(&self, dim: u32) -> u32 {
        self.reembed_tolerance_bits
            .unwrap_or_else(|| crate::default_reembed_tolerance(dim))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_frame_is_valid_and_gives_integer_params() {
        let f = SecurityFrame::default();
        f.validate().unwrap();
        let p = ConsensusParams::from_frame(&f).unwrap();
        assert_eq!(p.distance_ppm, 300_000);
        assert_eq!(p.percentage_ppm, 600_000);
        assert_eq!(p.radius_bits(384), 115);
        assert_eq!(p.threshold(5), 3);
        assert_eq!(p.threshold(4), 3);
        assert_eq!(p.threshold(3), 2);
        assert_eq!(p.threshold(0), 1);
        assert_eq!(p.tolerance_bits(384), 8);
        assert_eq!(p.clone().with_reembed_tolerance(2).tolerance_bits(384), 2);
    }

    #[test]
    fn invalid_frames_are_rejected() {
        let ok = SecurityFrame::default();
        for bad in [
            SecurityFrame {
                quorum: 0,
                ..ok.clone()
            },
            SecurityFrame {
                max_time_ms: 0,
                ..ok.clone()
            },
            SecurityFrame {
                sec_distance: -0.1,
                ..ok.clone()
            },
            SecurityFrame {
                sec_distance: f64::NAN,
                ..ok.clone()
            },
            SecurityFrame {
                sec_percentage: 0.0,
                ..ok.clone()
            },
            SecurityFrame {
                sec_percentage: 1.5,
                ..ok.clone()
            },
            SecurityFrame {
                embedding_model: " ".into(),
                ..ok.clone()
            },
        ] {
            assert!(matches!(
                ConsensusParams::from_frame(&bad),
                Err(ConsensusError::InvalidFrame(_))
            ));
        }
    }
}
