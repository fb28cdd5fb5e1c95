//! Binary (sign-quantized) embeddings and Hamming distance.

use serde::{Deserialize, Serialize};

use crate::ConsensusError;

/// Largest embedding dimension accepted anywhere (bits). Bounds memory use on network input.
pub const MAX_DIMENSION: usize = 1 << 16;

/// A sign-quantized embedding: bit `i` is 1 when value `i` of the float vector is `> 0`.
///
/// # Layout
/// Bit `i` is bit `i % 64` (least significant first) of word `i / 64`. Bits at positions
/// `>= dim` in the last word are always zero; every constructor enforces it, so two embeddings
/// are equal exactly when their words and dimensions are equal.
///
/// The *canonical bytes* ([`BinaryEmbedding::to_bytes`]) are the words in little-endian order,
/// cut to `ceil(dim / 8)` bytes; in them bit `i` is bit `i % 8` of byte `i / 8`.
#[derive(Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(try_from = "EmbeddingRepr", into = "EmbeddingRepr")]
pub struct BinaryEmbedding {
    dim: u32,
    words: Vec<u64>,
}

/// Serialized form: the dimension and the canonical bytes (hex in human-readable formats).
#[derive(Serialize, Deserialize)]
struct EmbeddingRepr {
    dim: u32,
    bits: crate::hashing::HexBytes,
}

impl TryFrom<EmbeddingRepr> for BinaryEmbedding {
    type Error = ConsensusError;
    fn try_from(repr: EmbeddingRepr) -> Result<Self, Self::Error> {
        BinaryEmbedding::from_bytes(repr.dim, &repr.bits.0)
    }
}

impl From<BinaryEmbedding> for EmbeddingRepr {
    fn from(e: BinaryEmbedding) -> Self {
        EmbeddingRepr {
            dim: e.dim,
            bits: crate::hashing::HexBytes(e.to_bytes()),
        }
    }
}

impl std::fmt::Debug for BinaryEmbedding {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "BinaryEmbedding({} bits, {})",
            self.dim,
            hex::encode(self.to_bytes())
        )
    }
}

fn words_for(dim: usize) -> usize {
    dim.div_ceil(64)
}

fn check_dim(dim: usize) -> Result<u32, ConsensusError> {
    if dim == 0 {
        return Err(ConsensusError::EmptyEmbedding);
    }
    if dim > MAX_DIMENSION {
        return Err(ConsensusError::DimensionTooLarge(dim));
    }
    Ok(dim as u32)
}

impl BinaryEmbedding {
    /// Quantizes a float embedding: bit `i` = `values[i] > 0.0`.
    ///
    /// Rejects empty vectors, vectors longer than [`MAX_DIMENSION`] and any NaN or infinite value.
    pub fn quantize(values: &[f32]) -> Result<Self, ConsensusError> {
        let dim = check_dim(values.len())?;
        let mut words = vec![0u64; words_for(values.len())];
        for (i, v) in values.iter().enumerate() {
            if !v.is_finite() {
                return Err(ConsensusError::NonFiniteValue { index: i });
            }
            if *v > 0.0 {
                words[i / 64] |= 1 << (i % 64);
            }
        }
        Ok(BinaryEmbedding { dim, words })
    }

    /// Matryoshka truncation, then quantization: keeps the first `k` dimensions.
    ///
    /// Only the kept values are checked for finiteness. `k` must be in `1..=values.len()`.
    pub fn quantize_truncated(values: &[f32], k: usize) -> Result<Self, ConsensusError> {
        if k == 0 || k > values.len() {
            return Err(ConsensusError::InvalidTruncation {
                dim: values.len(),
                requested: k,
            });
        }
        Self::quantize(&values[..k])
    }

    /// Builds an embedding from packed words (layout in the type docs).
    ///
    /// Fails when the word count does not match `dim` or bits past `dim` are set.
    pub fn from_words(dim: u32, words: Vec<u64>) -> Result<Self, ConsensusError> {
        let d = check_dim(dim as usize)?;
        if words.len() != words_for(dim as usize) {
            return Err(ConsensusError::MalformedPacked(
                "word count does not match dimension",
            ));
        }
        let tail = dim as usize % 64;
        if tail != 0 && words[words.len() - 1] >> tail != 0 {
            return Err(ConsensusError::MalformedPacked(
                "bits set past the dimension",
            ));
        }
        Ok(BinaryEmbedding { dim: d, words })
    }

    /// Builds an embedding from its canonical bytes (`ceil(dim / 8)` bytes, see type docs).
    pub fn from_bytes(dim: u32, bytes: &[u8]) -> Result<Self, ConsensusError> {
        check_dim(dim as usize)?;
        if bytes.len() != (dim as usize).div_ceil(8) {
            return Err(ConsensusError::MalformedPacked(
                "byte count does not match dimension",
            ));
        }
        let words = bytes
            .chunks(8)
            .map(|c| {
                let mut w = [0u8; 8];
                w[..c.len()].copy_from_slice(c);
                u64::from_le_bytes(w)
            })
            .collect();
        Self::from_words(dim, words)
    }

    /// Builds an embedding from explicit bits (`true` = 1).
    pub fn from_bits(bits: &[bool]) -> Result<Self, ConsensusError> {
        let dim = check_dim(bits.len())?;
        let mut words = vec![0u64; words_for(bits.len())];
        for (i, b) in bits.iter().enumerate() {
            if *b {
                words[i / 64] |= 1 << (i % 64);
            }
        }
        Ok(BinaryEmbedding { dim, words })
    }

    /// Number of bits (dimensions).
    pub fn dim(&self) -> u32 {
        self.dim
    }

    /// The packed words.
    pub fn words(&self) -> &[u64] {
        &self.words
    }

    /// Canonical bytes: little-endian words cut to `ceil(dim / 8)` bytes.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out: Vec<u8> = self.words.iter().flat_map(|w| w.to_le_bytes()).collect();
        out.truncate((self.dim as usize).div_ceil(8));
        out
    }

    /// Value of bit `index`.
    pub fn bit(&self, index: usize) -> Result<bool, ConsensusError> {
        if index >= self.dim as usize {
            return Err(ConsensusError::BitOutOfRange {
                index,
                dim: self.dim,
            });
        }
        Ok(self.words[index / 64] >> (index % 64) & 1 == 1)
    }

    /// Number of bits set to 1.
    pub fn count_ones(&self) -> u32 {
        self.words.iter().map(|w| w.count_ones()).sum()
    }

    /// Forces the given dimensions to 0 (used for dead dimensions whose sign is noise).
    pub fn mask_dims(&mut self, dims: &[usize]) -> Result<(), ConsensusError> {
        for &d in dims {
            if d >= self.dim as usize {
                return Err(ConsensusError::BitOutOfRange {
                    index: d,
                    dim: self.dim,
                });
            }
        }
        for &d in dims {
            self.words[d / 64] &= !(1u64 << (d % 64));
        }
        Ok(())
    }

    /// Hamming distance: the number of differing bits.
    pub fn hamming(&self, other: &BinaryEmbedding) -> Result<u32, ConsensusError> {
        if self.dim != other.dim {
            return Err(ConsensusError::DimensionMismatch {
                expected: self.dim,
                actual: other.dim,
            });
        }
        Ok(hamming_words(&self.words, &other.words))
    }

    /// Normalized Hamming distance: differing bits / dimension, in `[0, 1]`.
    pub fn normalized_distance(&self, other: &BinaryEmbedding) -> Result<f64, ConsensusError> {
        Ok(self.hamming(other)? as f64 / self.dim as f64)
    }
}

/// Hamming distance of two equally long word slices (popcount of XOR, word by word).
#[inline]
pub fn hamming_words(a: &[u64], b: &[u64]) -> u32 {
    a.iter().zip(b).map(|(x, y)| (x ^ y).count_ones()).sum()
}

/// Radius in bits of a ball of normalized radius `fraction` over `dim` bits: `floor(fraction * dim)`.
///
/// A point is inside the ball when its Hamming distance is `<=` this value. Computed in integer
/// arithmetic on parts per million so every implementation gets the same value:
/// `floor(round(fraction * 1e6) * dim / 1e6)`.
pub fn radius_bits(fraction: f64, dim: u32) -> u32 {
    let ppm = (fraction.clamp(0.0, 1.0) * 1_000_000.0).round() as u64;
    (ppm * dim as u64 / 1_000_000) as u32
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quantize_known_bits() {
        let e = BinaryEmbedding::quantize(&[0.5, -0.1, 0.0, 2.0, -0.0, 1e-30]).unwrap();
        assert_eq!(e.dim(), 6);
        // bits: 1,0,0,1,0,1 -> 0b101001
        assert_eq!(e.words(), &[0b10_1001]);
        assert_eq!(e.to_bytes(), vec![0b10_1001]);
        assert!(e.bit(0).unwrap());
        assert!(!e.bit(2).unwrap());
        assert!(e.bit(6).is_err());
        assert_eq!(e.count_ones(), 3);
    }

    #[test]
    fn quantize_crosses_word_boundary() {
        let mut v = vec![-1.0f32; 130];
        v[0] = 1.0;
        v[63] = 1.0;
        v[64] = 1.0;
        v[129] = 1.0;
        let e = BinaryEmbedding::quantize(&v).unwrap();
        assert_eq!(e.words(), &[1 | 1 << 63, 1, 1 << 1]);
        let bytes = e.to_bytes();
        assert_eq!(bytes.len(), 17);
        assert_eq!(bytes[0], 1);
        assert_eq!(bytes[7], 0x80);
        assert_eq!(bytes[8], 1);
        assert_eq!(bytes[16], 0b10);
        assert_eq!(BinaryEmbedding::from_bytes(130, &bytes).unwrap(), e);
    }

    #[test]
    fn known_distances() {
        let a = BinaryEmbedding::from_words(128, vec![u64::MAX, 0]).unwrap();
        let b = BinaryEmbedding::from_words(128, vec![0, 0]).unwrap();
        let c = BinaryEmbedding::from_words(128, vec![0xF0, 1 << 63]).unwrap();
        assert_eq!(a.hamming(&b).unwrap(), 64);
        assert_eq!(b.hamming(&c).unwrap(), 5);
        assert_eq!(a.hamming(&c).unwrap(), 60 + 1);
        assert_eq!(a.normalized_distance(&b).unwrap(), 0.5);
        assert_eq!(a.hamming(&a).unwrap(), 0);
    }

    #[test]
    fn rejects_bad_input() {
        assert_eq!(
            BinaryEmbedding::quantize(&[]),
            Err(ConsensusError::EmptyEmbedding)
        );
        assert_eq!(
            BinaryEmbedding::quantize(&[1.0, f32::NAN]),
            Err(ConsensusError::NonFiniteValue { index: 1 })
        );
        assert_eq!(
            BinaryEmbedding::quantize(&[f32::NEG_INFINITY]),
            Err(ConsensusError::NonFiniteValue { index: 0 })
        );
        let a = BinaryEmbedding::quantize(&[1.0; 8]).unwrap();
        let b = BinaryEmbedding::quantize(&[1.0; 9]).unwrap();
        assert_eq!(
            a.hamming(&b),
            Err(ConsensusError::DimensionMismatch {
                expected: 8,
                actual: 9
            })
        );
        assert!(BinaryEmbedding::from_words(3, vec![0b1000]).is_err());
        assert!(BinaryEmbedding::from_words(65, vec![0]).is_err());
        assert!(BinaryEmbedding::from_bytes(9, &[0]).is_err());
        assert!(BinaryEmbedding::quantize(&vec![0.0; MAX_DIMENSION + 1]).is_err());
        assert!(BinaryEmbedding::quantize_truncated(&[1.0, 2.0], 3).is_err());
        assert!(BinaryEmbedding::quantize_truncated(&[1.0, 2.0], 0).is_err());
    }

    #[test]
    fn matryoshka_truncation_keeps_prefix() {
        let v = [1.0, -1.0, 1.0, f32::NAN];
        let e = BinaryEmbedding::quantize_truncated(&v, 3).unwrap();
        assert_eq!(e.dim(), 3);
        assert_eq!(e.words(), &[0b101]);
    }

    #[test]
    fn mask_dims_clears_bits() {
        let mut e = BinaryEmbedding::quantize(&[1.0; 384]).unwrap();
        e.mask_dims(&[127, 223, 319]).unwrap();
        assert_eq!(e.count_ones(), 381);
        assert!(!e.bit(223).unwrap());
        assert!(e.mask_dims(&[384]).is_err());
        assert_eq!(e.count_ones(), 381);
    }

    #[test]
    fn radius_is_floor_of_fraction() {
        assert_eq!(radius_bits(0.30, 384), 115);
        assert_eq!(radius_bits(0.30, 768), 230);
        assert_eq!(radius_bits(0.5, 3), 1);
        assert_eq!(radius_bits(1.0, 384), 384);
        assert_eq!(radius_bits(0.0, 384), 0);
    }

    #[test]
    fn serde_roundtrip_and_validation() {
        let e =
            BinaryEmbedding::quantize(&[1.0, -1.0, 1.0, 1.0, -1.0, -1.0, 1.0, -1.0, 1.0]).unwrap();
        let json = serde_json::to_string(&e).unwrap();
        assert_eq!(json, r#"{"dim":9,"bits":"4d01"}"#);
        assert_eq!(serde_json::from_str::<BinaryEmbedding>(&json).unwrap(), e);
        let bin = postcard::to_allocvec(&e).unwrap();
        assert_eq!(postcard::from_bytes::<BinaryEmbedding>(&bin).unwrap(), e);
        assert!(serde_json::from_str::<BinaryEmbedding>(r#"{"dim":9,"bits":"4d03"}"#).is_err());
        assert!(serde_json::from_str::<BinaryEmbedding>(r#"{"dim":0,"bits":""}"#).is_err());
    }
}
