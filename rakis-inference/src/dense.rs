//! f32 weight matrices packed for the CPU, their products with activation rows, and the
//! vectorised element-wise functions around them (`exp`, GELU): this crate's own kernels for
//! the BERT encoder of [`CandleEmbedder`](crate::CandleEmbedder).
//!
//! * A weight matrix `(n, k)` (PyTorch's `Linear` layout: one row an output) is repacked at load
//!   in panels of [`NR`] outputs, input by input (`[k][16]`, the last panel padded with zeros),
//!   so a product reads each panel as one stream.
//! * A tile of up to [`MR`] activation rows by one panel is kept in sixteen-lane registers
//!   (AVX2: twelve `ymm` accumulators), the panel's inputs taken in blocks that stay in the
//!   first-level cache while the task's rows stream past them.
//! * Every output is `Σ_k x·w`, one chain of fused multiply-adds in the order of `k` from 0,
//!   then `+ bias`, whatever the tile, the block, the rows beside it or the threads: a text gives the
//!   same bits alone or among others, and the AVX2 kernel and the portable one (any other CPU)
//!   give the same bits (`one_product_whatever_the_kernel_rows_or_threads`).
//! * The bias, and the activation or the residual, are applied to a tile as it is finished
//!   (one pass over the output instead of three).
//!
//! The element-wise functions ([`exp`], [`gelu`]) are written once in plain Rust, branch-free;
//! The AVX2 kernel runs them compiled with AVX2 and FMA (eight lanes at a time), the portable
//! kernel runs the same operations one value at a time: same bits. The language model's CPU
//! attention uses the same `exp`.

// The tile kernels index accumulators and rows by one row and column.
#![allow(clippy::needless_range_loop)]

/// Outputs a panel (two AVX2 vectors).
pub(crate) const NR: usize = 16;

/// Activation rows a tile (six rows × two vectors = twelve accumulators of the sixteen `ymm`).
pub(crate) const MR: usize = 6;

/// Inputs a block: a panel's block (`KC × 16` values, 24 KiB) stays in the first-level cache
/// while the task's rows stream past it; MiniLM's products of 384 inputs are one block (no
/// partial sums stored and reloaded).
const KC: usize = 384;

/// Most rows a task: a task's block of rows (`MC × KC` values, 72 KiB) and its outputs stay in
/// the second-level cache while the panels pass.
const MC: usize = 48;

/// Multiply-adds (rows × outputs × inputs) above which a product is spread over threads.
const PARALLEL_WORK: usize = 1 << 17;

/// Proof that the CPU has AVX2 and FMA: made only by [`Kernel::detect`] (its field is private
/// to this module), so that no other code can choose the AVX2 kernel on a CPU without it.
#[cfg(target_arch = "x86_64")]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Detected(());

/// Which code runs the products and the element-wise functions.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Kernel {
    /// AVX2 with FMA.
    #[cfg(target_arch = "x86_64")]
    Avx2(Detected),
    /// Plain Rust, the same arithmetic in the same order.
    Portable,
}

impl Kernel {
    /// The fastest kernel this CPU runs.
    pub(crate) fn detect() -> Kernel {
        #[cfg(target_arch = "x86_64")]
        {
            if std::arch::is_x86_feature_detected!("avx2")
                && std::arch::is_x86_feature_detected!("fma")
            {
                return Kernel::Avx2(Detected(()));
            }
        }
        Kernel::Portable
    }
}

/// What is done to an output after its bias is added.
#[derive(Clone, Copy, Debug)]
pub(crate) enum Epilogue<'a> {
    /// Nothing.
    None,
    /// The exact (erf) GELU, [`gelu`].
    Gelu,
    /// The tanh approximation of GELU, [`gelu_tanh`].
    GeluTanh,
    /// `max(x, 0)`.
    Relu,
    /// The same-shaped rows `(m, n)` added (a residual connection).
    Residual(&'a [f32]),
}

impl Epilogue<'_> {
    /// A finished tile row: `+ bias` (a whole panel's, zeros past the outputs), then the
    /// epilogue; a residual is read at `at`, its first `cols` values.
    #[inline(always)]
    fn finish(&self, row: &mut [f32; NR], bias: Option<&[f32]>, at: usize, cols: usize) {
        if let Some(bias) = bias {
            for (v, b) in row.iter_mut().zip(bias) {
                *v += b;
            }
        }
        match *self {
            Epilogue::None => {}
            Epilogue::Gelu => row.iter_mut().for_each(|v| *v = gelu(*v)),
            Epilogue::GeluTanh => row.iter_mut().for_each(|v| *v = gelu_tanh(*v)),
            Epilogue::Relu => row.iter_mut().for_each(|v| *v = v.max(0.0)),
            Epilogue::Residual(res) => {
                for (v, r) in row.iter_mut().zip(&res[at..][..cols]) {
                    *v += r;
                }
            }
        }
    }
}

/// A matrix `(n, k)` (one row an output) packed in panels of [`NR`] outputs.
#[derive(Clone)]
pub(crate) struct Packed {
    n: usize,
    k: usize,
    /// Panel `j`'s input `p` at `j * k + p`: the weights of outputs `16j..16j + 16` (zeros past
    /// `n`).
    panels: Vec<Lanes>,
}

impl std::fmt::Debug for Packed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Packed")
            .field("n", &self.n)
            .field("k", &self.k)
            .finish_non_exhaustive()
    }
}

/// Sixteen values on one cache line.
#[derive(Clone, Copy, Debug, Default)]
#[repr(C, align(64))]
struct Lanes([f32; NR]);

/// A tile of accumulators: [`MR`] rows of one panel.
type Tile = [[f32; NR]; MR];

impl Packed {
    /// The matrix whose output `c` is the row of `k` values at `w[c * stride..]`.
    ///
    /// # Panics
    /// If `w` is too short.
    pub(crate) fn from_rows(w: &[f32], stride: usize, n: usize, k: usize) -> Packed {
        let mut panels = vec![Lanes::default(); n.div_ceil(NR) * k];
        for c in 0..n {
            let row = &w[c * stride..][..k];
            let (j, cc) = (c / NR, c % NR);
            for (p, v) in row.iter().enumerate() {
                panels[j * k + p].0[cc] = *v;
            }
        }
        Packed { n, k, panels }
    }

    /// The matrix whose input `p` of output `c` is `x[p * stride + c]` (the transpose of `k`
    /// rows of `n` values: attention's values).
    ///
    /// # Panics
    /// If `x` is too short.
    pub(crate) fn from_columns(x: &[f32], stride: usize, n: usize, k: usize) -> Packed {
        let mut panels = vec![Lanes::default(); n.div_ceil(NR) * k];
        for p in 0..k {
            let row = &x[p * stride..][..n];
            for (j, chunk) in row.chunks(NR).enumerate() {
                panels[j * k + p].0[..chunk.len()].copy_from_slice(chunk);
            }
        }
        Packed { n, k, panels }
    }

    /// `out = x · Wᵀ` for the `m` rows of `x` (`k` values each, `ldx` apart) into rows of `n`
    /// values `ldo` apart, on the calling thread.
    ///
    /// # Panics
    /// If `x` or `out` is too short.
    pub(crate) fn product(
        &self,
        kernel: Kernel,
        x: &[f32],
        ldx: usize,
        m: usize,
        out: &mut [f32],
        ldo: usize,
    ) {
        assert!(
            ldx >= self.k && ldo >= self.n,
            "rows overlapping their neighbours"
        );
        let rows = Rows {
            x,
            ldx,
            out,
            ldo,
            m,
        };
        rows_for(kernel, self, None, Epilogue::None, rows);
    }
}

/// Activation rows in, output rows out, and their strides.
struct Rows<'x, 'o> {
    x: &'x [f32],
    ldx: usize,
    out: &'o mut [f32],
    ldo: usize,
    m: usize,
}

/// A weight matrix `(n, k)` and its bias, packed for products.
#[derive(Clone, Debug)]
pub(crate) struct Linear {
    w: Packed,
    /// `n` values, then zeros to a whole panel.
    bias: Vec<f32>,
}

impl Linear {
    /// Packs `weight` (`(n, k)`, row-major: one row an output) and `bias` (`n`, zeros when
    /// `None`).
    ///
    /// # Panics
    /// If the lengths do not match `n` and `k` (the caller checked the shapes it read).
    pub(crate) fn new(weight: &[f32], bias: Option<&[f32]>, n: usize, k: usize) -> Linear {
        assert_eq!(weight.len(), n * k, "weight of another shape");
        let mut padded = vec![0.0; n.div_ceil(NR) * NR];
        if let Some(b) = bias {
            assert_eq!(b.len(), n, "bias of another length");
            padded[..n].copy_from_slice(b);
        }
        Linear {
            w: Packed::from_rows(weight, k, n, k),
            bias: padded,
        }
    }

    /// Outputs.
    pub(crate) fn outputs(&self) -> usize {
        self.w.n
    }

    /// `out = x · Wᵀ + bias`, then `epilogue`, for the `m` rows of `x` (`(m, k)`; `out` is
    /// `(m, n)`). Large products are spread over candle's thread pool, by blocks of rows.
    ///
    /// # Panics
    /// If the lengths do not match `m`, `n` and `k`.
    pub(crate) fn forward(
        &self,
        kernel: Kernel,
        x: &[f32],
        m: usize,
        epilogue: Epilogue<'_>,
        out: &mut [f32],
    ) {
        let (n, k) = (self.w.n, self.w.k);
        assert_eq!(x.len(), m * k, "activation rows of another width");
        assert_eq!(out.len(), m * n, "output of another shape");
        if let Epilogue::Residual(r) = epilogue {
            assert_eq!(r.len(), m * n, "residual of another shape");
        }
        if m == 0 || n == 0 {
            return;
        }
        let threads = crate::pool::threads();
        let parallel = threads > 1 && m * n * k >= PARALLEL_WORK;
        // Rows a task: a few tasks a thread (one slow thread does not hold the others), whole
        // tiles, at most what stays in the second-level cache.
        let rows = if parallel {
            m.div_ceil(2 * threads).next_multiple_of(MR).min(MC)
        } else {
            MC
        };
        let mut chunks: Vec<(usize, &mut [f32])> = out
            .chunks_mut(rows * n)
            .enumerate()
            .map(|(t, c)| (t * rows, c))
            .collect();
        crate::pool::for_each(parallel, &mut chunks, |(row0, out)| {
            let m = out.len() / n;
            let x = &x[*row0 * k..][..m * k];
            let epilogue = match epilogue {
                Epilogue::Residual(r) => Epilogue::Residual(&r[*row0 * n..][..m * n]),
                e => e,
            };
            let rows = Rows {
                x,
                ldx: k,
                out,
                ldo: n,
                m,
            };
            rows_for(kernel, &self.w, Some(&self.bias), epilogue, rows);
        });
    }
}

/// [`rows_with`] in `kernel`'s code.
fn rows_for(
    kernel: Kernel,
    w: &Packed,
    bias: Option<&[f32]>,
    epilogue: Epilogue<'_>,
    rows: Rows<'_, '_>,
) {
    match kernel {
        #[cfg(target_arch = "x86_64")]
        // SAFETY: `Kernel::Avx2` holds a `Detected`, made only where the CPU has AVX2 and FMA.
        Kernel::Avx2(_) => unsafe { avx2::rows(w, bias, epilogue, rows) },
        Kernel::Portable => rows_with::<Portable>(w, bias, epilogue, rows),
    }
}

/// A tile kernel: `acc[i][c] = fma(x[i][p], w[p][c], acc[i][c])` for `p` in order, for the
/// first `r` rows.
trait Tiles {
    fn tile(r: usize, x: &[f32], ldx: usize, w: &[Lanes], acc: &mut Tile);
}

/// Plain Rust tiles.
struct Portable;

impl Tiles for Portable {
    #[inline(always)]
    fn tile(r: usize, x: &[f32], ldx: usize, w: &[Lanes], acc: &mut Tile) {
        for (p, wp) in w.iter().enumerate() {
            for i in 0..r {
                let a = x[i * ldx + p];
                for c in 0..NR {
                    acc[i][c] = a.mul_add(wp.0[c], acc[i][c]);
                }
            }
        }
    }
}

/// The rows of one task (`m` rows of `k` inputs in, of `n` outputs out): blocks of [`KC`]
/// inputs, each panel's block against every tile of the rows, partial sums kept in `out`
/// between blocks; the bias and the epilogue (whose residual rows are `ldo` apart, as `out`'s)
/// applied to each tile as its last block is added.
#[inline(always)]
fn rows_with<T: Tiles>(
    w: &Packed,
    bias: Option<&[f32]>,
    epilogue: Epilogue<'_>,
    rows: Rows<'_, '_>,
) {
    let (n, k) = (w.n, w.k);
    let Rows {
        x,
        ldx,
        out,
        ldo,
        m,
    } = rows;
    // No inputs: one empty block, so that the bias and the epilogue are still applied.
    let blocks = k.div_ceil(KC).max(1);
    for b in 0..blocks {
        let k0 = b * KC;
        let kc = KC.min(k - k0);
        let last = b + 1 == blocks;
        for j in 0..n.div_ceil(NR) {
            let panel = &w.panels[j * k + k0..][..kc];
            let c0 = j * NR;
            let cols = NR.min(n - c0);
            let mut i0 = 0;
            while i0 < m {
                let r = MR.min(m - i0);
                let mut acc: Tile = [[0.0; NR]; MR];
                if b > 0 {
                    for i in 0..r {
                        load(&mut acc[i], &out[(i0 + i) * ldo + c0..], cols);
                    }
                }
                T::tile(r, &x[i0 * ldx + k0..], ldx, panel, &mut acc);
                if last {
                    for i in 0..r {
                        let at = (i0 + i) * ldo + c0;
                        epilogue.finish(&mut acc[i], bias.map(|b| &b[c0..][..NR]), at, cols);
                    }
                }
                for i in 0..r {
                    store(&acc[i], &mut out[(i0 + i) * ldo + c0..], cols);
                }
                i0 += r;
            }
        }
    }
}

/// The first `cols` values of `from` into a tile's row (a whole row without a call to `memcpy`).
#[inline(always)]
fn load(row: &mut [f32; NR], from: &[f32], cols: usize) {
    match from.first_chunk::<NR>() {
        Some(from) if cols == NR => *row = *from,
        _ => row[..cols].copy_from_slice(&from[..cols]),
    }
}

/// A tile's row into the first `cols` values of `to`.
#[inline(always)]
fn store(row: &[f32; NR], to: &mut [f32], cols: usize) {
    match to.first_chunk_mut::<NR>() {
        Some(to) if cols == NR => *to = *row,
        _ => to[..cols].copy_from_slice(&row[..cols]),
    }
}

/// The fixed sum of eight lanes: `((l0+l4) + (l2+l6)) + ((l1+l5) + (l3+l7))` (the order of the
/// AVX2 reductions of this crate's kernels).
#[inline(always)]
pub(crate) fn sum_lanes(l: [f32; 8]) -> f32 {
    let a = [l[0] + l[4], l[1] + l[5], l[2] + l[6], l[3] + l[7]];
    (a[0] + a[2]) + (a[1] + a[3])
}

/// `e^x`, within a relative error of two machine epsilons for `x` in `[-87.3, 88.3]` (Cephes' `expf`:
/// `x = n·ln 2 + r`, a degree-5 polynomial for `e^r`, `2^n` built from its exponent bits);
/// inputs outside are clamped (`e^-87.3 ≈ 1.2e-38` stands for 0). Branch-free, so that the
/// compiler vectorises a loop of it.
#[inline(always)]
pub(crate) fn exp(x: f32) -> f32 {
    const LOG2E: f32 = std::f32::consts::LOG2_E;
    // 1.5 · 2^23: adding and subtracting it rounds to the nearest integer.
    const ROUND: f32 = 12_582_912.0;
    const LN2_HI: f32 = 0.693_359_4;
    const LN2_LO: f32 = -2.121_944_4e-4;
    let x = x.clamp(-87.3, 88.3);
    let n = x.mul_add(LOG2E, ROUND) - ROUND;
    let r = (-n).mul_add(LN2_LO, (-n).mul_add(LN2_HI, x));
    let mut p = 1.987_569_1e-4f32;
    p = p.mul_add(r, 1.398_199_9e-3);
    p = p.mul_add(r, 8.333_452e-3);
    p = p.mul_add(r, 4.166_579_6e-2);
    p = p.mul_add(r, 1.666_666_5e-1);
    p = p.mul_add(r, 0.5);
    let e = p.mul_add(r * r, r) + 1.0;
    // `n` is in -126..=127 after the clamp: a normal power of two.
    e * f32::from_bits(((n as i32 + 127) as u32) << 23)
}

/// The exact GELU, `x/2 · (1 + erf(x/√2))` (BERT's `gelu`), with `erfc` of Numerical Recipes'
/// Chebyshev fit (relative error below 1.2e-7): for `x < 0` the result is `x/2 · erfc(|x|/√2)`,
/// precise in the tail. Branch-free.
#[inline(always)]
pub(crate) fn gelu(x: f32) -> f32 {
    let z = x.abs() * std::f32::consts::FRAC_1_SQRT_2;
    let t = 1.0 / 0.5f32.mul_add(z, 1.0);
    let mut p = 0.170_872_77f32;
    p = p.mul_add(t, -0.822_152_23);
    p = p.mul_add(t, 1.488_515_9);
    p = p.mul_add(t, -1.135_204);
    p = p.mul_add(t, 0.278_868_07);
    p = p.mul_add(t, -0.186_288_06);
    p = p.mul_add(t, 0.096_784_18);
    p = p.mul_add(t, 0.374_091_96);
    p = p.mul_add(t, 1.000_023_7);
    p = p.mul_add(t, -1.265_512_2);
    let erfc = t * exp((-z).mul_add(z, p));
    let one_plus_erf = if x < 0.0 { erfc } else { 2.0 - erfc };
    0.5 * x * one_plus_erf
}

/// GELU's tanh approximation, `x/2 · (1 + tanh(√(2/π) · (x + 0.044715 x³)))`, with
/// `tanh(y) = 1 - 2 / (e^{2y} + 1)`. Branch-free.
#[inline(always)]
pub(crate) fn gelu_tanh(x: f32) -> f32 {
    const SQRT_2_OVER_PI: f32 = 0.797_884_6;
    let y = SQRT_2_OVER_PI * (0.044_715 * x * x).mul_add(x, x);
    let tanh = 1.0 - 2.0 / (exp(2.0 * y) + 1.0);
    0.5 * x * (1.0 + tanh)
}

#[cfg(target_arch = "x86_64")]
mod avx2 {
    //! The tile kernel in AVX2 + FMA, and the task compiled for it (the epilogue's GELU
    //! vectorised).
    use std::arch::x86_64::*;

    use super::{Epilogue, Lanes, Packed, Rows, Tile, Tiles, MR};

    pub(super) struct Avx2;

    impl Tiles for Avx2 {
        #[inline(always)]
        fn tile(r: usize, x: &[f32], ldx: usize, w: &[Lanes], acc: &mut Tile) {
            let need = (r - 1)
                .checked_mul(ldx)
                .and_then(|v| v.checked_add(w.len()));
            assert!((1..=MR).contains(&r) && need.is_some_and(|need| x.len() >= need));
            // SAFETY: only reached from `rows`, which runs where the CPU has AVX2 and FMA;
            // the loads stay within `x` (checked above) and `w`.
            unsafe {
                match r {
                    1 => tile::<1>(x.as_ptr(), ldx, w, acc),
                    2 => tile::<2>(x.as_ptr(), ldx, w, acc),
                    3 => tile::<3>(x.as_ptr(), ldx, w, acc),
                    4 => tile::<4>(x.as_ptr(), ldx, w, acc),
                    5 => tile::<5>(x.as_ptr(), ldx, w, acc),
                    _ => tile::<6>(x.as_ptr(), ldx, w, acc),
                }
            }
        }
    }

    /// `R` rows by one panel: per input, two loads of the panel, `R` broadcasts, `2R` fused
    /// multiply-adds.
    #[target_feature(enable = "avx2,fma")]
    unsafe fn tile<const R: usize>(x: *const f32, ldx: usize, w: &[Lanes], acc: &mut Tile) {
        // SAFETY: the caller checked that `x` holds `R` rows of `w.len()` inputs `ldx` apart;
        // the accumulators and the panel are references.
        unsafe {
            let mut lo = [_mm256_setzero_ps(); R];
            let mut hi = [_mm256_setzero_ps(); R];
            for i in 0..R {
                lo[i] = _mm256_loadu_ps(acc[i].as_ptr());
                hi[i] = _mm256_loadu_ps(acc[i].as_ptr().add(8));
            }
            for (p, wp) in w.iter().enumerate() {
                // `Lanes` is 64-byte aligned.
                let w0 = _mm256_load_ps(wp.0.as_ptr());
                let w1 = _mm256_load_ps(wp.0.as_ptr().add(8));
                for i in 0..R {
                    let a = _mm256_broadcast_ss(&*x.add(i * ldx + p));
                    lo[i] = _mm256_fmadd_ps(a, w0, lo[i]);
                    hi[i] = _mm256_fmadd_ps(a, w1, hi[i]);
                }
            }
            for i in 0..R {
                _mm256_storeu_ps(acc[i].as_mut_ptr(), lo[i]);
                _mm256_storeu_ps(acc[i].as_mut_ptr().add(8), hi[i]);
            }
        }
    }

    /// [`super::rows_with`] compiled with AVX2 and FMA.
    #[target_feature(enable = "avx2,fma")]
    pub(super) unsafe fn rows(
        w: &Packed,
        bias: Option<&[f32]>,
        epilogue: Epilogue<'_>,
        rows: Rows<'_, '_>,
    ) {
        super::rows_with::<Avx2>(w, bias, epilogue, rows)
    }

    /// `f` compiled with AVX2 and FMA.
    #[target_feature(enable = "avx2,fma")]
    pub(super) unsafe fn with<R>(f: impl FnOnce() -> R) -> R {
        f()
    }
}

/// Runs `f` compiled for `kernel` (AVX2 and FMA: the element-wise loops in it are vectorised
/// eight lanes at a time) — where the compiler inlines `f` into the AVX2 function, as it does a
/// closure called once; the functions it calls should be `#[inline(always)]`. Either way the
/// operations, and so the bits, are the same.
#[inline(always)]
pub(crate) fn with_kernel<R>(kernel: Kernel, f: impl FnOnce() -> R) -> R {
    match kernel {
        #[cfg(target_arch = "x86_64")]
        // SAFETY: `Kernel::Avx2` holds a `Detected`, made only where the CPU has AVX2 and FMA.
        Kernel::Avx2(_) => unsafe { avx2::with(f) },
        Kernel::Portable => f(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::{Device, Tensor};
    use proptest::prelude::*;

    fn values(len: usize, seed: u64) -> Vec<f32> {
        use rand::{Rng, SeedableRng};
        let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
        (0..len).map(|_| rng.gen_range(-2f32..2f32)).collect()
    }

    fn bits(x: &[f32]) -> Vec<u32> {
        x.iter().map(|v| v.to_bits()).collect()
    }

    /// `x · Wᵀ + b` in f64, row by row.
    fn reference(x: &[f32], w: &[f32], b: &[f32], m: usize, n: usize, k: usize) -> Vec<f64> {
        let mut out = vec![0f64; m * n];
        for i in 0..m {
            for c in 0..n {
                let dot: f64 = (0..k)
                    .map(|p| f64::from(x[i * k + p]) * f64::from(w[c * k + p]))
                    .sum();
                out[i * n + c] = dot + f64::from(b[c]);
            }
        }
        out
    }

    fn forward(l: &Linear, kernel: Kernel, x: &[f32], m: usize, e: Epilogue<'_>) -> Vec<f32> {
        let mut out = vec![f32::NAN; m * l.outputs()];
        l.forward(kernel, x, m, e, &mut out);
        out
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(40))]

        /// The portable kernel and the AVX2 one give the same bits; a row gives the same bits
        /// alone or among others (whatever its tile, block of rows or thread); and the product
        /// is the product (f64 reference), with each epilogue.
        #[test]
        fn one_product_whatever_the_kernel_rows_or_threads(
            m in 1usize..40,
            n in 1usize..70,
            k in 1usize..600,
            epilogue in 0usize..5,
            seed in any::<u64>(),
        ) {
            let w = values(n * k, seed);
            let b = values(n, seed ^ 1);
            let x = values(m * k, seed ^ 2);
            let residual = values(m * n, seed ^ 3);
            let e = [
                Epilogue::None,
                Epilogue::Gelu,
                Epilogue::GeluTanh,
                Epilogue::Relu,
                Epilogue::Residual(&residual),
            ][epilogue];
            let l = Linear::new(&w, Some(&b), n, k);
            let got = forward(&l, Kernel::Portable, &x, m, e);
            #[cfg(target_arch = "x86_64")]
            if Kernel::detect() != Kernel::Portable {
                prop_assert_eq!(bits(&forward(&l, Kernel::detect(), &x, m, e)), bits(&got));
            }
            for i in [0, m / 2, m - 1] {
                let e1 = match e {
                    Epilogue::Residual(r) => Epilogue::Residual(&r[i * n..][..n]),
                    e => e,
                };
                let alone = forward(&l, Kernel::detect(), &x[i * k..][..k], 1, e1);
                prop_assert_eq!(bits(&alone), bits(&got[i * n..][..n]));
            }
            let exact = reference(&x, &w, &b, m, n, k);
            let bound = 1e-5 * (k as f64).sqrt() * 4.0 + 1e-5;
            for (i, (g, r)) in got.iter().zip(&exact).enumerate() {
                let want = match e {
                    Epilogue::None => *r,
                    Epilogue::Gelu => {
                        let t = Tensor::new(&[*r as f32], &Device::Cpu).unwrap();
                        f64::from(t.gelu_erf().unwrap().to_vec1::<f32>().unwrap()[0])
                    }
                    Epilogue::GeluTanh => {
                        let t = Tensor::new(&[*r as f32], &Device::Cpu).unwrap();
                        f64::from(t.gelu().unwrap().to_vec1::<f32>().unwrap()[0])
                    }
                    Epilogue::Relu => r.max(0.0),
                    Epilogue::Residual(res) => r + f64::from(res[i]),
                };
                prop_assert!((f64::from(*g) - want).abs() <= bound, "{g} vs {want}");
            }
        }
    }

    /// Large enough to be spread over threads, and several blocks of inputs: the same bits as
    /// row by row, on the calling thread.
    #[test]
    fn threads_change_no_bit() {
        let (m, n, k) = (70, 48, 700);
        assert!(m * n * k >= PARALLEL_WORK);
        let l = Linear::new(&values(n * k, 1), Some(&values(n, 2)), n, k);
        let x = values(m * k, 3);
        let all = forward(&l, Kernel::detect(), &x, m, Epilogue::Gelu);
        for i in 0..m {
            let alone = forward(&l, Kernel::detect(), &x[i * k..][..k], 1, Epilogue::Gelu);
            assert_eq!(bits(&alone), bits(&all[i * n..][..n]), "row {i}");
        }
    }

    /// A product of no inputs is its bias, with the epilogue.
    #[test]
    fn no_inputs_give_the_bias() {
        let l = Linear::new(&[], Some(&[1.0, -2.0, 3.0]), 3, 0);
        let out = forward(&l, Kernel::detect(), &[], 2, Epilogue::Relu);
        assert_eq!(out, [1.0, 0.0, 3.0, 1.0, 0.0, 3.0]);
    }

    /// Strided rows in and out, and a matrix packed from columns: attention's two products.
    #[test]
    fn packed_from_rows_and_columns_with_strides() {
        let (m, n, k, ldx, ldo) = (7, 19, 23, 40, 30);
        let x = values(m * ldx, 4);
        let rows = values(n * 50, 5);
        let a = Packed::from_rows(&rows, 50, n, k);
        // The same matrix as columns: `t[p * 20 + c] = rows[c * 50 + p]`.
        let mut t = vec![0f32; k * 20];
        for c in 0..n {
            for p in 0..k {
                t[p * 20 + c] = rows[c * 50 + p];
            }
        }
        let b = Packed::from_columns(&t, 20, n, k);
        let mut out_a = vec![0f32; m * ldo];
        let mut out_b = vec![0f32; m * ldo];
        a.product(Kernel::detect(), &x, ldx, m, &mut out_a, ldo);
        b.product(Kernel::Portable, &x, ldx, m, &mut out_b, ldo);
        assert_eq!(bits(&out_a), bits(&out_b));
        for i in 0..m {
            for c in 0..n {
                let want: f64 = (0..k)
                    .map(|p| f64::from(x[i * ldx + p]) * f64::from(rows[c * 50 + p]))
                    .sum();
                assert!((f64::from(out_a[i * ldo + c]) - want).abs() < 1e-4);
            }
            // Past `n`, the output rows are untouched.
            assert!(out_a[i * ldo + n..(i + 1) * ldo].iter().all(|v| *v == 0.0));
        }
    }

    /// `exp` within a relative error of 2ε of the exact value over its range, 0 and
    /// infinity clamped to the range's ends, the same bits in both kernels.
    #[test]
    fn exp_within_two_epsilons() {
        let xs: Vec<f32> = (-87_000..=88_000)
            .map(|i| i as f32 * 1e-3 + 1.7e-4)
            .collect();
        let portable: Vec<f32> = xs.iter().map(|&x| exp(x)).collect();
        let vector = with_kernel(Kernel::detect(), || {
            xs.iter().map(|&x| exp(x)).collect::<Vec<_>>()
        });
        assert_eq!(bits(&portable), bits(&vector));
        for (x, e) in xs.iter().zip(&portable) {
            let want = f64::from(*x).exp();
            let ulp = f64::from(f32::EPSILON) * want;
            assert!(
                (f64::from(*e) - want).abs() <= 2.0 * ulp,
                "exp({x}) = {e}, want {want}"
            );
        }
        assert!(exp(-1000.0) < 1.3e-38 && exp(-1000.0) > 0.0);
        assert!(exp(1000.0).is_finite());
        assert_eq!(exp(0.0), 1.0);
    }

    /// `erfc` in f64: the series of `erf` below 2.5, the continued fraction above.
    fn erfc64(z: f64) -> f64 {
        let sqrt_pi = std::f64::consts::PI.sqrt();
        if z < 2.5 {
            let (mut term, mut sum) = (z, z);
            for n in 1..200 {
                term *= -z * z / n as f64;
                sum += term / (2 * n + 1) as f64;
            }
            1.0 - sum * 2.0 / sqrt_pi
        } else {
            let mut f = z;
            for n in (1..200).rev() {
                f = z + (n as f64 / 2.0) / f;
            }
            (-z * z).exp() / (sqrt_pi * f)
        }
    }

    /// GELU against an f64 one: within 2e-6 relative down to -3 (a few units in the last
    /// place), 2e-5 relative in the tail (values below 1e-30 at -11.7), the same bits in both
    /// kernels. (candle's and PyTorch's f32 GELU compute `1 + erf`, which loses the tail to
    /// cancellation: 50 % off at -5.5.)
    #[test]
    fn gelu_matches_the_exact_one() {
        let xs: Vec<f32> = (-12_000..=12_000)
            .map(|i| i as f32 * 1e-3 + 3.1e-5)
            .collect();
        let got = with_kernel(Kernel::detect(), || {
            xs.iter().map(|&x| gelu(x)).collect::<Vec<_>>()
        });
        let portable: Vec<f32> = xs.iter().map(|&x| gelu(x)).collect();
        assert_eq!(bits(&got), bits(&portable));
        for (x, g) in xs.iter().zip(&got) {
            let x64 = f64::from(*x);
            let e = erfc64(x64.abs() / std::f64::consts::SQRT_2);
            let want = 0.5 * x64 * if x64 < 0.0 { e } else { 2.0 - e };
            let relative = (f64::from(*g) - want).abs() / want.abs();
            let bound = if *x > -3.0 { 2e-6 } else { 2e-5 };
            assert!(relative <= bound, "gelu({x}) = {g}, want {want}");
        }
    }
}
