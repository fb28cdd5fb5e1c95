//! The clustering kernel: for every point, how many points lie within a Hamming radius.
//!
//! Points are stored column-major ("structure of arrays": word `k` of every point is contiguous)
//! so that one centre word is compared with many points in one vector instruction. Each unordered
//! pair is computed exactly once (the `i < j` triangle) and counted for both ends; no allocation
//! happens per pair. On x86-64 the kernel is compiled three times (AVX-512 VPOPCNTDQ, AVX2 +
//! POPCNT, baseline) and the best one the CPU supports is chosen at run time.

use crate::{BinaryEmbedding, ConsensusError};

/// Points packed for the kernel. All points have one dimension.
#[derive(Clone, Debug)]
pub struct PackedPoints {
    n: usize,
    words: usize,
    /// `columns[k * n + j]` = word `k` of point `j`.
    columns: Vec<u64>,
    dim: u32,
}

impl PackedPoints {
    /// Packs points; they must all have the same dimension. Point `j` keeps index `j`.
    pub fn new<'a, I>(points: I) -> Result<Self, ConsensusError>
    where
        I: IntoIterator<Item = &'a BinaryEmbedding>,
        I::IntoIter: ExactSizeIterator,
    {
        let iter = points.into_iter();
        let n = iter.len();
        let mut columns = Vec::new();
        let mut dim = 0;
        let mut words = 0;
        for (j, p) in iter.enumerate() {
            if j == 0 {
                dim = p.dim();
                words = p.words().len();
                columns = vec![0u64; words * n];
            } else if p.dim() != dim {
                return Err(ConsensusError::DimensionMismatch {
                    expected: dim,
                    actual: p.dim(),
                });
            }
            for (k, w) in p.words().iter().enumerate() {
                columns[k * n + j] = *w;
            }
        }
        Ok(PackedPoints {
            n,
            words,
            columns,
            dim,
        })
    }

    /// Number of points.
    pub fn len(&self) -> usize {
        self.n
    }

    /// Whether there are no points.
    pub fn is_empty(&self) -> bool {
        self.n == 0
    }

    /// Dimension of the points (0 when empty).
    pub fn dim(&self) -> u32 {
        self.dim
    }

    /// For each point `i`, the number of points `j` (itself included) with
    /// `hamming(i, j) <= radius`.
    pub fn ball_counts(&self, radius: u32) -> Vec<u32> {
        let mut counts = vec![1u32; self.n];
        #[cfg(target_arch = "x86_64")]
        {
            if std::arch::is_x86_feature_detected!("avx512vpopcntdq")
                && std::arch::is_x86_feature_detected!("avx512f")
            {
                // SAFETY: the required CPU features were detected just above.
                unsafe { counts_avx512(self, radius, &mut counts) };
                return counts;
            }
            if std::arch::is_x86_feature_detected!("avx2")
                && std::arch::is_x86_feature_detected!("popcnt")
            {
                // SAFETY: the required CPU features were detected just above.
                unsafe { counts_avx2(self, radius, &mut counts) };
                return counts;
            }
        }
        counts_generic(self, radius, &mut counts);
        counts
    }

    /// [`ball_counts`](Self::ball_counts) with the portable kernel only (no run-time CPU
    /// dispatch); for comparison in benchmarks and tests.
    pub fn ball_counts_portable(&self, radius: u32) -> Vec<u32> {
        let mut counts = vec![1u32; self.n];
        counts_generic(self, radius, &mut counts);
        counts
    }

    /// Hamming distances from point `center` to every point.
    pub fn distances_from(&self, center: usize) -> Vec<u32> {
        let mut out = vec![0u32; self.n];
        for k in 0..self.words {
            let col = &self.columns[k * self.n..(k + 1) * self.n];
            let c = col[center];
            for (d, x) in out.iter_mut().zip(col) {
                *d += (c ^ x).count_ones();
            }
        }
        out
    }

    /// Index of the point whose ball holds the most points, and that count. Ties go to the
    /// lowest index (callers order points so that index order is one nobody controls).
    pub fn largest_ball(&self, radius: u32) -> Option<(usize, u32)> {
        let counts = self.ball_counts(radius);
        let mut best: Option<(usize, u32)> = None;
        for (i, c) in counts.into_iter().enumerate() {
            if best.is_none_or(|(_, b)| c > b) {
                best = Some((i, c));
            }
        }
        best
    }
}

/// Number of points compared per block in the inner loop.
const BLOCK: usize = 16;

#[inline(always)]
fn counts_body(p: &PackedPoints, radius: u32, counts: &mut [u32]) {
    let n = p.n;
    let cols = &p.columns;
    for i in 0..n {
        let mut ci = 0u32;
        let mut j = i + 1;
        while j + BLOCK <= n {
            let mut d = [0u32; BLOCK];
            for k in 0..p.words {
                let col = &cols[k * n..(k + 1) * n];
                let c = col[i];
                let xs: &[u64; BLOCK] = col[j..j + BLOCK].try_into().unwrap();
                for t in 0..BLOCK {
                    d[t] += (c ^ xs[t]).count_ones();
                }
            }
            let cs: &mut [u32; BLOCK] = (&mut counts[j..j + BLOCK]).try_into().unwrap();
            for t in 0..BLOCK {
                let inside = (d[t] <= radius) as u32;
                cs[t] += inside;
                ci += inside;
            }
            j += BLOCK;
        }
        while j < n {
            let mut d = 0u32;
            for k in 0..p.words {
                d += (cols[k * n + i] ^ cols[k * n + j]).count_ones();
            }
            let inside = (d <= radius) as u32;
            counts[j] += inside;
            ci += inside;
            j += 1;
        }
        counts[i] += ci;
    }
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx512vpopcntdq,avx512bw,avx512vl,popcnt")]
fn counts_avx512(p: &PackedPoints, radius: u32, counts: &mut [u32]) {
    counts_body(p, radius, counts)
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,popcnt")]
fn counts_avx2(p: &PackedPoints, radius: u32, counts: &mut [u32]) {
    counts_body(p, radius, counts)
}

fn counts_generic(p: &PackedPoints, radius: u32, counts: &mut [u32]) {
    counts_body(p, radius, counts)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn naive_counts(points: &[BinaryEmbedding], r: u32) -> Vec<u32> {
        points
            .iter()
            .map(|a| points.iter().filter(|b| a.hamming(b).unwrap() <= r).count() as u32)
            .collect()
    }

    fn pseudo_random_points(n: usize, dim: usize, seed: u64) -> Vec<BinaryEmbedding> {
        let mut s = seed;
        (0..n)
            .map(|_| {
                let v: Vec<f32> = (0..dim)
                    .map(|_| {
                        s = s
                            .wrapping_mul(6364136223846793005)
                            .wrapping_add(1442695040888963407);
                        if (s >> 33).is_multiple_of(3) {
                            1.0
                        } else {
                            -1.0
                        }
                    })
                    .collect();
                BinaryEmbedding::quantize(&v).unwrap()
            })
            .collect()
    }

    #[test]
    fn kernels_match_naive_counts() {
        for (n, dim) in [(1, 64), (5, 10), (17, 384), (40, 768), (33, 130)] {
            let pts = pseudo_random_points(n, dim, n as u64 * 31 + dim as u64);
            let packed = PackedPoints::new(&pts).unwrap();
            for r in [0, dim as u32 / 4, dim as u32 * 45 / 100, dim as u32] {
                let expected = naive_counts(&pts, r);
                assert_eq!(packed.ball_counts(r), expected, "n={n} dim={dim} r={r}");
                let mut generic = vec![1; n];
                counts_generic(&packed, r, &mut generic);
                assert_eq!(generic, expected);
            }
            for c in 0..n {
                let d = packed.distances_from(c);
                for j in 0..n {
                    assert_eq!(d[j], pts[c].hamming(&pts[j]).unwrap());
                }
            }
        }
    }

    #[test]
    fn largest_ball_ties_go_to_lowest_index() {
        let a = BinaryEmbedding::from_words(64, vec![0]).unwrap();
        let b = BinaryEmbedding::from_words(64, vec![u64::MAX]).unwrap();
        let packed = PackedPoints::new([&b, &a, &b, &a]).unwrap();
        assert_eq!(packed.largest_ball(3), Some((0, 2)));
        let packed = PackedPoints::new([&a, &b, &b]).unwrap();
        assert_eq!(packed.largest_ball(3), Some((1, 2)));
        assert_eq!(PackedPoints::new([]).unwrap().largest_ball(3), None);
    }

    #[test]
    fn rejects_mixed_dimensions() {
        let a = BinaryEmbedding::from_words(64, vec![0]).unwrap();
        let b = BinaryEmbedding::from_words(65, vec![0, 0]).unwrap();
        assert!(PackedPoints::new([&a, &b]).is_err());
    }
}
