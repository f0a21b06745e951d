//! Tensor statistics, computed from a tensor's raw bytes and its [`Dtype`]:
//! the L2 norm, mean, population standard deviation, minimum, maximum and
//! the number of non-finite elements, plus the L2 norm of the difference
//! between two tensors ([`delta_l2`]).
//!
//! Elements are read little-endian and widened to `f64` (exactly, for
//! every supported dtype: `bool`, `u8`..`i64`, `f16`, `bf16`, `f32`,
//! `f64`; integers beyond 2^53 are rounded). NaN and ±infinity are
//! counted in `nonfinite` and left out of every other statistic.
//!
//! # Numerics
//!
//! Elements are processed in blocks of [`BLOCK`] elements. Within a block,
//! the mean and the sum of squared deviations (`m2`) come from two passes
//! over the block while it is in cache (no `Σx² − (Σx)²/n` cancellation),
//! and the sum of squares is kept as `scale² × ssq` when a plain sum would
//! overflow or underflow (as LAPACK's `dnrm2` does), so `f64` tensors of
//! very large or very small values still get a finite, accurate norm.
//! Blocks are merged pairwise in a fixed order (Chan et al.'s update for
//! mean and `m2`), so the result does not depend on how many threads
//! computed the blocks, and the rounding error grows with `log n`, not
//! `n`. Large tensors spread their blocks over threads (rayon).

use rayon::prelude::*;
use serde::{Deserialize, Serialize};

use crate::formats::Dtype;

/// Elements per block (a block's `f64`s stay in the L1 cache).
pub const BLOCK: usize = 2048;

/// Tensors at least this long (bytes) spread their blocks over threads.
const PARALLEL_BYTES: usize = 1 << 20;

/// Statistics of one tensor; see the module docs.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct TensorStats {
    /// Number of elements.
    pub elements: u64,
    /// The L2 norm of the finite elements (0 when there are none).
    pub l2: f64,
    /// Mean of the finite elements (`None` when there are none).
    pub mean: Option<f64>,
    /// Population standard deviation of the finite elements.
    pub std: Option<f64>,
    /// Smallest finite element.
    pub min: Option<f64>,
    /// Largest finite element.
    pub max: Option<f64>,
    /// Number of NaN and infinite elements.
    pub nonfinite: u64,
}

/// A sum of squares held as `scale² × ssq`.
#[derive(Debug, Clone, Copy, PartialEq)]
struct SumSq {
    scale: f64,
    ssq: f64,
}

impl SumSq {
    const ZERO: SumSq = SumSq { scale: 1.0, ssq: 0.0 };

    fn merge(self, other: SumSq) -> SumSq {
        if other.ssq == 0.0 {
            return self;
        }
        if self.ssq == 0.0 {
            return other;
        }
        if self.scale == other.scale {
            return SumSq { scale: self.scale, ssq: self.ssq + other.ssq };
        }
        let (big, small) = if self.scale > other.scale { (self, other) } else { (other, self) };
        let r = small.scale / big.scale;
        SumSq { scale: big.scale, ssq: big.ssq + small.ssq * r * r }
    }

    /// The square root of the sum: an L2 norm.
    fn norm(self) -> f64 {
        self.scale * self.ssq.sqrt()
    }

    /// The sum of squares of finite `x`, scaled by its largest magnitude
    /// (no overflow or underflow whatever the values).
    fn scaled(x: &[f64]) -> SumSq {
        let scale = x.iter().fold(0.0f64, |m, v| m.max(v.abs()));
        if scale == 0.0 {
            return SumSq::ZERO;
        }
        let inv = 1.0 / scale;
        if inv.is_finite() {
            SumSq { scale, ssq: x.iter().map(|v| (v * inv) * (v * inv)).sum() }
        } else {
            // `scale` is subnormal: divide instead of multiplying.
            SumSq { scale, ssq: x.iter().map(|v| (v / scale) * (v / scale)).sum() }
        }
    }
}

/// Statistics of part of a tensor, to be merged with the statistics of
/// the other parts ([`PartialStats::merge`], [`merge_all`]) and finished
/// ([`PartialStats::finish`]). Lets a caller compute a tensor it reads in
/// pieces (from a file, in parallel) with the same numerics as
/// [`tensor_stats`].
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct PartialStats {
    /// Finite elements.
    n: u64,
    mean: f64,
    m2: f64,
    sq: SumSq,
    min: f64,
    max: f64,
    nonfinite: u64,
}

impl Default for PartialStats {
    fn default() -> Self {
        PartialStats::EMPTY
    }
}

impl PartialStats {
    /// The statistics of no elements.
    pub const EMPTY: PartialStats = PartialStats {
        n: 0,
        mean: 0.0,
        m2: 0.0,
        sq: SumSq::ZERO,
        min: f64::INFINITY,
        max: f64::NEG_INFINITY,
        nonfinite: 0,
    };

    /// The statistics of `bytes`, a whole number of `dtype` elements:
    /// `None` for a dtype without statistics (complex, 8-bit floats,
    /// [`Dtype::Other`]) or a length that is not a multiple of its size.
    pub fn of(dtype: &Dtype, bytes: &[u8]) -> Option<PartialStats> {
        let (size, decode) = decoder(dtype)?;
        if !bytes.len().is_multiple_of(size) {
            return None;
        }
        let block = |piece: &[u8]| {
            let mut buf = [0f64; BLOCK];
            let x = &mut buf[..piece.len() / size];
            decode(piece, x);
            block_stats(x)
        };
        let parts: Vec<PartialStats> = if bytes.len() >= PARALLEL_BYTES {
            bytes.par_chunks(BLOCK * size).map(block).collect()
        } else {
            bytes.chunks(BLOCK * size).map(block).collect()
        };
        Some(merge_all(parts))
    }

    /// The statistics of both parts' elements together.
    pub fn merge(self, other: PartialStats) -> PartialStats {
        let n = self.n + other.n;
        let (mean, m2) = if other.n == 0 {
            (self.mean, self.m2)
        } else if self.n == 0 {
            (other.mean, other.m2)
        } else {
            let (na, nb, nn) = (self.n as f64, other.n as f64, n as f64);
            let delta = other.mean - self.mean;
            (self.mean + delta * (nb / nn), self.m2 + other.m2 + delta * delta * (na * (nb / nn)))
        };
        PartialStats {
            n,
            mean,
            m2,
            sq: self.sq.merge(other.sq),
            min: self.min.min(other.min),
            max: self.max.max(other.max),
            nonfinite: self.nonfinite + other.nonfinite,
        }
    }

    /// The statistics of all the elements merged so far.
    pub fn finish(self) -> TensorStats {
        let finite = self.n > 0;
        TensorStats {
            elements: self.n + self.nonfinite,
            l2: self.sq.norm(),
            mean: finite.then_some(self.mean),
            std: finite.then(|| (self.m2.max(0.0) / self.n as f64).sqrt()),
            min: finite.then_some(self.min),
            max: finite.then_some(self.max),
            nonfinite: self.nonfinite,
        }
    }
}

/// Merges parts in order, pairwise (a balanced tree): the result depends
/// only on the parts, and rounding grows with the logarithm of their count.
pub fn merge_all(parts: impl IntoIterator<Item = PartialStats>) -> PartialStats {
    let mut level: Vec<PartialStats> = parts.into_iter().collect();
    while level.len() > 1 {
        level = level.chunks(2).map(|p| if p.len() == 2 { p[0].merge(p[1]) } else { p[0] }).collect();
    }
    level.pop().unwrap_or(PartialStats::EMPTY)
}

/// The statistics of a tensor's bytes (see [`PartialStats::of`] for when
/// there are none).
pub fn tensor_stats(dtype: &Dtype, bytes: &[u8]) -> Option<TensorStats> {
    PartialStats::of(dtype, bytes).map(PartialStats::finish)
}

/// Whether [`tensor_stats`] computes statistics for `dtype`.
pub fn has_stats(dtype: &Dtype) -> bool {
    decoder(dtype).is_some()
}

/// The L2 norm of `a − b`, element by element, for two tensors of the same
/// `dtype` and length; pairs where either element is not finite are left
/// out. `None` when `dtype` has no statistics or the lengths differ (or are
/// not a whole number of elements).
pub fn delta_l2(dtype: &Dtype, a: &[u8], b: &[u8]) -> Option<f64> {
    PartialDelta::of(dtype, a, b).map(PartialDelta::finish)
}

/// [`delta_l2`] of part of two tensors, to be merged with the other parts.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct PartialDelta {
    sq: SumSq,
}

impl PartialDelta {
    /// No elements.
    pub const EMPTY: PartialDelta = PartialDelta { sq: SumSq::ZERO };

    /// The squared differences of `a` and `b` (see [`delta_l2`]).
    pub fn of(dtype: &Dtype, a: &[u8], b: &[u8]) -> Option<PartialDelta> {
        let (size, decode) = decoder(dtype)?;
        if a.len() != b.len() || !a.len().is_multiple_of(size) {
            return None;
        }
        let block = |(pa, pb): (&[u8], &[u8])| {
            let (mut xa, mut xb) = ([0f64; BLOCK], [0f64; BLOCK]);
            let n = pa.len() / size;
            decode(pa, &mut xa[..n]);
            decode(pb, &mut xb[..n]);
            block_delta(&mut xa[..n], &xb[..n])
        };
        let step = BLOCK * size;
        let parts: Vec<SumSq> = if a.len() >= PARALLEL_BYTES {
            a.par_chunks(step).zip(b.par_chunks(step)).map(block).collect()
        } else {
            a.chunks(step).zip(b.chunks(step)).map(block).collect()
        };
        let mut level = parts;
        while level.len() > 1 {
            level = level.chunks(2).map(|p| if p.len() == 2 { p[0].merge(p[1]) } else { p[0] }).collect();
        }
        Some(PartialDelta { sq: level.pop().unwrap_or(SumSq::ZERO) })
    }

    /// Both parts together.
    pub fn merge(self, other: PartialDelta) -> PartialDelta {
        PartialDelta { sq: self.sq.merge(other.sq) }
    }

    /// The L2 norm of the differences merged so far.
    pub fn finish(self) -> f64 {
        self.sq.norm()
    }
}

/// Sum, sum of squares, min and max of `x` in four independent lanes (so
/// the compiler can keep them in vector registers).
fn lanes(x: &[f64]) -> (f64, f64, f64, f64) {
    let (mut s, mut q) = ([0f64; 4], [0f64; 4]);
    let (mut lo, mut hi) = ([f64::INFINITY; 4], [f64::NEG_INFINITY; 4]);
    let mut quads = x.chunks_exact(4);
    for c in &mut quads {
        for i in 0..4 {
            s[i] += c[i];
            q[i] += c[i] * c[i];
            lo[i] = if c[i] < lo[i] { c[i] } else { lo[i] };
            hi[i] = if c[i] > hi[i] { c[i] } else { hi[i] };
        }
    }
    for &v in quads.remainder() {
        s[0] += v;
        q[0] += v * v;
        lo[0] = lo[0].min(v);
        hi[0] = hi[0].max(v);
    }
    (
        (s[0] + s[1]) + (s[2] + s[3]),
        (q[0] + q[1]) + (q[2] + q[3]),
        lo[0].min(lo[1]).min(lo[2].min(lo[3])),
        hi[0].max(hi[1]).max(hi[2].max(hi[3])),
    )
}

/// Σ (x − mean)², in four lanes.
fn deviations(x: &[f64], mean: f64) -> f64 {
    let mut m = [0f64; 4];
    let mut quads = x.chunks_exact(4);
    for c in &mut quads {
        for i in 0..4 {
            let d = c[i] - mean;
            m[i] += d * d;
        }
    }
    for &v in quads.remainder() {
        m[0] += (v - mean) * (v - mean);
    }
    (m[0] + m[1]) + (m[2] + m[3])
}

/// The statistics of one block (`x` may be reordered).
fn block_stats(x: &mut [f64]) -> PartialStats {
    if x.is_empty() {
        return PartialStats::EMPTY;
    }
    let (s, q, lo, hi) = lanes(x);
    // The common case: every element finite, no overflow or underflow.
    if s.is_finite() && q.is_finite() && (q.is_normal() || (lo == 0.0 && hi == 0.0)) {
        let mean = s / x.len() as f64;
        return PartialStats {
            n: x.len() as u64,
            mean,
            m2: deviations(x, mean),
            sq: SumSq { scale: 1.0, ssq: q },
            min: lo,
            max: hi,
            nonfinite: 0,
        };
    }
    // Non-finite elements moved out, then the careful sums.
    let mut k = 0;
    for i in 0..x.len() {
        if x[i].is_finite() {
            x[k] = x[i];
            k += 1;
        }
    }
    let nonfinite = (x.len() - k) as u64;
    let x = &x[..k];
    if x.is_empty() {
        return PartialStats { nonfinite, ..PartialStats::EMPTY };
    }
    let inv = 1.0 / x.len() as f64;
    // Σ x/n cannot overflow (each term is at most max|x| / n).
    let mean = x.iter().map(|v| v * inv).sum::<f64>();
    let (lo, hi) = x.iter().fold((f64::INFINITY, f64::NEG_INFINITY), |(l, h), &v| (l.min(v), h.max(v)));
    PartialStats { n: x.len() as u64, mean, m2: deviations(x, mean), sq: SumSq::scaled(x), min: lo, max: hi, nonfinite }
}

/// The squared differences of one block (`a` is overwritten).
fn block_delta(a: &mut [f64], b: &[f64]) -> SumSq {
    let mut q = [0f64; 4];
    for (ca, cb) in a.chunks(4).zip(b.chunks(4)) {
        for i in 0..ca.len() {
            let d = ca[i] - cb[i];
            q[i] += d * d;
        }
    }
    let q = (q[0] + q[1]) + (q[2] + q[3]);
    if q.is_finite() && (q.is_normal() || (q == 0.0 && a.iter().zip(b).all(|(x, y)| x == y))) {
        return SumSq { scale: 1.0, ssq: q };
    }
    // Halved differences cannot overflow; non-finite pairs left out.
    let mut k = 0;
    for i in 0..a.len() {
        if a[i].is_finite() && b[i].is_finite() {
            a[k] = a[i] * 0.5 - b[i] * 0.5;
            k += 1;
        }
    }
    let half = SumSq::scaled(&a[..k]);
    SumSq { scale: half.scale * 2.0, ssq: half.ssq }
}

/// Widens a whole number of elements into one `f64` each.
type Decoder = fn(&[u8], &mut [f64]);

/// How to widen `dtype`'s elements: their size and a decoder that fills
/// one `f64` per element of its input.
fn decoder(dtype: &Dtype) -> Option<(usize, Decoder)> {
    Some(match dtype {
        Dtype::Bool => (1, |s, o| o.iter_mut().zip(s).for_each(|(o, &b)| *o = f64::from(u8::from(b != 0)))),
        Dtype::U8 => (1, |s, o| o.iter_mut().zip(s).for_each(|(o, &b)| *o = f64::from(b))),
        Dtype::I8 => (1, |s, o| o.iter_mut().zip(s).for_each(|(o, &b)| *o = f64::from(b as i8))),
        Dtype::U16 => (2, |s, o| decode::<2>(s, o, |b| f64::from(u16::from_le_bytes(b)))),
        Dtype::I16 => (2, |s, o| decode::<2>(s, o, |b| f64::from(i16::from_le_bytes(b)))),
        Dtype::U32 => (4, |s, o| decode::<4>(s, o, |b| f64::from(u32::from_le_bytes(b)))),
        Dtype::I32 => (4, |s, o| decode::<4>(s, o, |b| f64::from(i32::from_le_bytes(b)))),
        Dtype::U64 => (8, |s, o| decode::<8>(s, o, |b| u64::from_le_bytes(b) as f64)),
        Dtype::I64 => (8, |s, o| decode::<8>(s, o, |b| i64::from_le_bytes(b) as f64)),
        Dtype::F16 => (2, |s, o| decode::<2>(s, o, |b| f64::from(f16_to_f32(u16::from_le_bytes(b))))),
        Dtype::BF16 => (2, |s, o| decode::<2>(s, o, |b| f64::from(bf16_to_f32(u16::from_le_bytes(b))))),
        Dtype::F32 => (4, |s, o| decode::<4>(s, o, |b| f64::from(f32::from_le_bytes(b)))),
        Dtype::F64 => (8, |s, o| decode::<8>(s, o, f64::from_le_bytes)),
        _ => return None,
    })
}

#[inline(always)]
fn decode<const N: usize>(src: &[u8], out: &mut [f64], f: impl Fn([u8; N]) -> f64) {
    for (o, c) in out.iter_mut().zip(src.chunks_exact(N)) {
        let mut b = [0u8; N];
        b.copy_from_slice(c);
        *o = f(b);
    }
}

/// An IEEE half-precision value, widened exactly.
pub fn f16_to_f32(h: u16) -> f32 {
    let h = u32::from(h);
    let sign = (h & 0x8000) << 16;
    let exp = (h >> 10) & 0x1f;
    let man = h & 0x3ff;
    match exp {
        // Zero or subnormal: man × 2^-24, exact in f32.
        0 => {
            let v = man as f32 * (1.0 / 16_777_216.0);
            if sign != 0 {
                -v
            } else {
                v
            }
        }
        0x1f => f32::from_bits(sign | 0x7f80_0000 | (man << 13)),
        _ => f32::from_bits(sign | ((exp + 112) << 23) | (man << 13)),
    }
}

/// A bfloat16 value, widened exactly.
pub fn bf16_to_f32(h: u16) -> f32 {
    f32::from_bits(u32::from(h) << 16)
}

#[cfg(test)]
mod tests;
