use super::*;

/// A small deterministic generator (xorshift64*), values in [-1, 1).
struct Gen(u64);

impl Gen {
    fn next(&mut self) -> f64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        let r = self.0.wrapping_mul(0x2545_f491_4f6c_dd1d);
        (r >> 11) as f64 / (1u64 << 52) as f64 - 1.0
    }
}

fn f32_bytes(v: &[f32]) -> Vec<u8> {
    v.iter().flat_map(|x| x.to_le_bytes()).collect()
}

fn f64_bytes(v: &[f64]) -> Vec<u8> {
    v.iter().flat_map(|x| x.to_le_bytes()).collect()
}

/// Reference statistics: exact-ish sums with a long accumulator (sorted
/// magnitudes, Neumaier summation), over the finite values only.
fn reference(values: &[f64]) -> (f64, f64, f64) {
    fn neumaier(it: impl Iterator<Item = f64>) -> f64 {
        let (mut sum, mut c) = (0.0f64, 0.0f64);
        for v in it {
            let t = sum + v;
            c += if sum.abs() >= v.abs() { (sum - t) + v } else { (v - t) + sum };
            sum = t;
        }
        sum + c
    }
    let finite: Vec<f64> = values.iter().copied().filter(|v| v.is_finite()).collect();
    let n = finite.len() as f64;
    let mean = neumaier(finite.iter().copied()) / n;
    let var = neumaier(finite.iter().map(|v| (v - mean) * (v - mean))) / n;
    let l2 = neumaier(finite.iter().map(|v| v * v)).sqrt();
    (l2, mean, var.sqrt())
}

fn close(a: f64, b: f64, rel: f64) -> bool {
    a == b || (a - b).abs() <= rel * a.abs().max(b.abs())
}

#[test]
fn f32_statistics_match_a_careful_reference() {
    let mut g = Gen(7);
    // Crosses the parallel threshold and leaves a partial last block.
    let values: Vec<f32> = (0..300_001).map(|_| (g.next() * 3.0 + 0.5) as f32).collect();
    let s = tensor_stats(&Dtype::F32, &f32_bytes(&values)).unwrap();
    let wide: Vec<f64> = values.iter().map(|&v| f64::from(v)).collect();
    let (l2, mean, std) = reference(&wide);
    assert_eq!(s.elements, 300_001);
    assert_eq!(s.nonfinite, 0);
    assert!(close(s.l2, l2, 1e-13), "{} vs {l2}", s.l2);
    assert!(close(s.mean.unwrap(), mean, 1e-12), "{:?} vs {mean}", s.mean);
    assert!(close(s.std.unwrap(), std, 1e-13), "{:?} vs {std}", s.std);
    // Min and max are exact: the widened extreme elements.
    let lo = values.iter().copied().fold(f32::INFINITY, f32::min);
    let hi = values.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    assert_eq!(s.min, Some(f64::from(lo)));
    assert_eq!(s.max, Some(f64::from(hi)));
}

#[test]
fn a_large_mean_does_not_swamp_a_small_spread() {
    // 1e9 + {0, 1}: Σx² − (Σx)²/n loses every digit of the variance here.
    let values: Vec<f64> = (0..10_000).map(|i| 1e9 + f64::from(i % 2)).collect();
    let s = tensor_stats(&Dtype::F64, &f64_bytes(&values)).unwrap();
    assert!(close(s.std.unwrap(), 0.5, 1e-12), "{:?}", s.std);
    assert!(close(s.mean.unwrap(), 1e9 + 0.5, 1e-15), "{:?}", s.mean);
}

#[test]
fn nan_and_infinity_are_counted_and_left_out() {
    let mut values = vec![1.0f32, -2.0, 4.0];
    values.insert(1, f32::NAN);
    values.push(f32::INFINITY);
    values.push(f32::NEG_INFINITY);
    let s = tensor_stats(&Dtype::F32, &f32_bytes(&values)).unwrap();
    assert_eq!(s.elements, 6);
    assert_eq!(s.nonfinite, 3);
    assert_eq!(s.min, Some(-2.0));
    assert_eq!(s.max, Some(4.0));
    assert!(close(s.mean.unwrap(), 1.0, 1e-15));
    assert!(close(s.l2, 21f64.sqrt(), 1e-15));
    assert!(close(s.std.unwrap(), 6f64.sqrt(), 1e-15), "{:?}", s.std);

    let all_nan = tensor_stats(&Dtype::F32, &f32_bytes(&[f32::NAN; 5])).unwrap();
    assert_eq!(
        all_nan,
        TensorStats { elements: 5, l2: 0.0, mean: None, std: None, min: None, max: None, nonfinite: 5 }
    );
}

#[test]
fn empty_tensors_have_counts_only() {
    for dtype in [Dtype::F32, Dtype::I64, Dtype::Bool, Dtype::BF16] {
        let s = tensor_stats(&dtype, &[]).unwrap();
        assert_eq!(s, TensorStats { elements: 0, l2: 0.0, mean: None, std: None, min: None, max: None, nonfinite: 0 });
    }
}

#[test]
fn half_precision_decodes_exactly() {
    let cases: [(u16, f32); 9] = [
        (0x3c00, 1.0),
        (0xc000, -2.0),
        (0x7bff, 65504.0),
        (0x0001, 1.0 / 16_777_216.0),    // smallest subnormal, 2^-24
        (0x03ff, 1023.0 / 16_777_216.0), // largest subnormal
        (0x0400, 1.0 / 16384.0),         // smallest normal, 2^-14
        (0x3555, 1365.0 / 4096.0),
        (0x8000, -0.0),
        (0x7c00, f32::INFINITY),
    ];
    for (bits, want) in cases {
        assert_eq!(f16_to_f32(bits), want, "{bits:#06x}");
    }
    assert!(f16_to_f32(0x7e00).is_nan());
    assert_eq!(f16_to_f32(0xfc00), f32::NEG_INFINITY);
    // Every finite positive half is below the next one: no gaps or
    // overlaps between the subnormal and normal ranges.
    for bits in 0..0x7bffu16 {
        assert!(f16_to_f32(bits) < f16_to_f32(bits + 1), "{bits:#06x}");
    }
    assert_eq!(bf16_to_f32(0x3f80), 1.0);
    assert_eq!(bf16_to_f32(0xc0a0), -5.0);
    assert_eq!(bf16_to_f32(0x7f80), f32::INFINITY);

    let halves: Vec<u8> = [0x3c00u16, 0xc000, 0x7e00, 0x7bff].iter().flat_map(|h| h.to_le_bytes()).collect();
    let s = tensor_stats(&Dtype::F16, &halves).unwrap();
    assert_eq!((s.min, s.max, s.nonfinite), (Some(-2.0), Some(65504.0), 1));
    let bf: Vec<u8> = [0x3f80u16, 0xc0a0].iter().flat_map(|h| h.to_le_bytes()).collect();
    let s = tensor_stats(&Dtype::BF16, &bf).unwrap();
    assert_eq!((s.min, s.max, s.mean), (Some(-5.0), Some(1.0), Some(-2.0)));
}

#[test]
fn integers_and_bools() {
    let i8s = [-128i8, 0, 127, -1];
    let bytes: Vec<u8> = i8s.iter().map(|&v| v as u8).collect();
    let s = tensor_stats(&Dtype::I8, &bytes).unwrap();
    assert_eq!((s.min, s.max, s.mean), (Some(-128.0), Some(127.0), Some(-0.5)));
    let s = tensor_stats(&Dtype::U8, &bytes).unwrap();
    assert_eq!((s.min, s.max), (Some(0.0), Some(255.0)));

    let big: Vec<u8> = [u64::MAX, 1].iter().flat_map(|v| v.to_le_bytes()).collect();
    let s = tensor_stats(&Dtype::U64, &big).unwrap();
    assert_eq!(s.max, Some(u64::MAX as f64));
    let neg: Vec<u8> = [i64::MIN, -3].iter().flat_map(|v| v.to_le_bytes()).collect();
    assert_eq!(tensor_stats(&Dtype::I64, &neg).unwrap().min, Some(i64::MIN as f64));
    let i16s: Vec<u8> = [-300i16, 300].iter().flat_map(|v| v.to_le_bytes()).collect();
    let s = tensor_stats(&Dtype::I16, &i16s).unwrap();
    assert_eq!((s.mean, s.std), (Some(0.0), Some(300.0)));
    let u32s: Vec<u8> = [4_000_000_000u32, 0].iter().flat_map(|v| v.to_le_bytes()).collect();
    assert_eq!(tensor_stats(&Dtype::U32, &u32s).unwrap().max, Some(4e9));

    // Any nonzero byte is true.
    let s = tensor_stats(&Dtype::Bool, &[0, 1, 2, 0]).unwrap();
    assert_eq!((s.mean, s.l2, s.max), (Some(0.5), 2f64.sqrt(), Some(1.0)));
}

#[test]
fn extreme_magnitudes_keep_an_accurate_norm() {
    // Squares overflow f64 here...
    let big = [1e200f64, -1e200, 3e200];
    let s = tensor_stats(&Dtype::F64, &f64_bytes(&big)).unwrap();
    assert!(close(s.l2, 11f64.sqrt() * 1e200, 1e-15), "{}", s.l2);
    assert_eq!(s.nonfinite, 0);
    // ...and underflow to zero here.
    let tiny = [3e-200f64, 4e-200];
    let s = tensor_stats(&Dtype::F64, &f64_bytes(&tiny)).unwrap();
    assert!(close(s.l2, 5e-200, 1e-15), "{}", s.l2);
    // Mixed in one tensor with ordinary blocks.
    let mut mixed = vec![1.0f64; 5000];
    mixed[4500] = 1e200;
    let s = tensor_stats(&Dtype::F64, &f64_bytes(&mixed)).unwrap();
    assert!(close(s.l2, 1e200, 1e-15), "{}", s.l2);
}

#[test]
fn pieces_merged_agree_with_the_whole() {
    let mut g = Gen(99);
    let values: Vec<f32> = (0..50_000).map(|_| g.next() as f32 * 1e3).collect();
    let bytes = f32_bytes(&values);
    let whole = tensor_stats(&Dtype::F32, &bytes).unwrap();
    let parts = bytes.chunks(4 * 7001).map(|p| PartialStats::of(&Dtype::F32, p).unwrap());
    let merged = merge_all(parts).finish();
    assert_eq!(merged.min, whole.min);
    assert_eq!(merged.max, whole.max);
    assert!(close(merged.l2, whole.l2, 1e-14));
    assert!(close(merged.mean.unwrap(), whole.mean.unwrap(), 1e-12));
    assert!(close(merged.std.unwrap(), whole.std.unwrap(), 1e-13));
}

#[test]
fn delta_norms() {
    let mut g = Gen(3);
    let a: Vec<f32> = (0..400_000).map(|_| g.next() as f32).collect();
    let b: Vec<f32> = a.iter().map(|v| v + g.next() as f32 * 1e-3).collect();
    let d = delta_l2(&Dtype::F32, &f32_bytes(&a), &f32_bytes(&b)).unwrap();
    let diffs: Vec<f64> = a.iter().zip(&b).map(|(x, y)| f64::from(*x) - f64::from(*y)).collect();
    let (want, _, _) = reference(&diffs);
    assert!(close(d, want, 1e-13), "{d} vs {want}");
    assert_eq!(delta_l2(&Dtype::F32, &f32_bytes(&a), &f32_bytes(&a)), Some(0.0));

    // Non-finite pairs are left out.
    let x = f32_bytes(&[1.0, f32::NAN, 5.0, 2.0]);
    let y = f32_bytes(&[4.0, 0.0, f32::INFINITY, 2.0]);
    assert_eq!(delta_l2(&Dtype::F32, &x, &y), Some(3.0));
    // Differences that overflow f64 are halved first.
    let d = delta_l2(&Dtype::F64, &f64_bytes(&[1e300]), &f64_bytes(&[-1e300])).unwrap();
    assert!(close(d, 2e300, 1e-15), "{d}");
    // Lengths must agree.
    assert_eq!(delta_l2(&Dtype::F32, &x, &y[..8]), None);
}

#[test]
fn dtypes_without_statistics() {
    for d in [Dtype::C64, Dtype::F8E4M3, Dtype::Other(">f4".into())] {
        assert!(!has_stats(&d));
        assert_eq!(tensor_stats(&d, &[0; 8]), None);
    }
    // A length that is not a whole number of elements.
    assert_eq!(tensor_stats(&Dtype::F32, &[0; 6]), None);
}
