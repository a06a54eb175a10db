//! Small numeric kernels shared by the fused scan, the exporter and the runtime:
//! vectorizable exp, ln(1 + y), softplus, sine and cosine, a fixed-order dot product, and
//! AVX2 dispatch for loops that benefit from it.

/// exp(x) for x ≤ 88 to within two ulps: x = k ln2 + r with |r| ≤ ln2/2, a degree-6
/// polynomial for exp(r) and the exponent bits for 2^k. Branch-free so the loops that call
/// it vectorize; arguments below −87 give ~1e−38 instead of a subnormal, which no state
/// can tell apart from 0.
#[inline(always)]
pub fn exp(x: f32) -> f32 {
    const LOG2E: f32 = std::f32::consts::LOG2_E;
    const LN2_HI: f32 = 0.693_145_75;
    const LN2_LO: f32 = 1.428_606_8e-6;
    const ROUND: f32 = 12_582_912.0; // 1.5 · 2^23: adding it rounds to an integer
    let x = x.clamp(-87.0, 88.0);
    let shifted = x * LOG2E + ROUND;
    let k = shifted - ROUND;
    let r = x - k * LN2_HI - k * LN2_LO;
    let p = 1.0
        + r * (1.0
            + r * (0.5
                + r * (1.0 / 6.0 + r * (1.0 / 24.0 + r * (1.0 / 120.0 + r * (1.0 / 720.0))))));
    // Wrapping integer ops: no overflow checks, so the loops stay vectorized in any profile
    // (k is within [−126, 127] after the clamp, nothing wraps).
    let ki = (shifted.to_bits() as i32).wrapping_sub(ROUND.to_bits() as i32);
    p * f32::from_bits((ki.wrapping_add(127) << 23) as u32)
}

/// ln(1 + y) for y in [0, 1] to within a few ulps: 2 atanh(z) with z = y / (2 + y) in
/// [0, 1/3], its odd series to z¹⁵ (the first term left out is under 2·10⁻⁹ of the
/// sum). Branch-free, like [`exp`], and exact in relative terms as y → 0 (z is formed
/// from y itself, not from 1 + y).
#[inline(always)]
pub fn ln_1p_unit(y: f32) -> f32 {
    let z = y / (2.0 + y);
    let w = z * z;
    let p = 1.0
        + w * (1.0 / 3.0
            + w * (1.0 / 5.0
                + w * (1.0 / 7.0
                    + w * (1.0 / 9.0 + w * (1.0 / 11.0 + w * (1.0 / 13.0 + w * (1.0 / 15.0)))))));
    2.0 * z * p
}

/// softplus(x) = ln(1 + eˣ) = max(x, 0) + ln(1 + e^−|x|), branch-free (no overflow for
/// large x, no loss of the small values for very negative x).
#[inline(always)]
pub fn softplus(x: f32) -> f32 {
    x.max(0.0) + ln_1p_unit(exp(-x.abs()))
}

/// (sin x, cos x) for |x| up to 10⁴ to within 10⁻⁶: x reduced to half a turn around 0,
/// then the half angle's Taylor series (to degree 11 and 12, each under 10⁻⁷ on
/// [−π/2, π/2]) and the double-angle formulas. Branch-free, like [`exp`].
#[inline(always)]
pub fn sin_cos(x: f32) -> (f32, f32) {
    use std::f64::consts::TAU;
    const ROUND: f32 = 12_582_912.0; // 1.5 · 2^23: adding it rounds to an integer
    // 2π in two parts (Cody and Waite): k · TAU_HI is exact for the k that occur.
    const TAU_HI: f32 = 6.281_25;
    const TAU_LO: f32 = 0.001_935_307_2;
    let k = (x * (1.0 / TAU) as f32 + ROUND) - ROUND;
    let h = ((x - k * TAU_HI) - k * TAU_LO) * 0.5; // half the reduced angle, in [−π/2, π/2]
    let w = h * h;
    let s = h
        * (1.0
            - w / 6.0 * (1.0 - w / 20.0 * (1.0 - w / 42.0 * (1.0 - w / 72.0 * (1.0 - w / 110.0)))));
    let c = 1.0
        - w / 2.0
            * (1.0
                - w / 12.0
                    * (1.0 - w / 30.0 * (1.0 - w / 56.0 * (1.0 - w / 90.0 * (1.0 - w / 132.0)))));
    (2.0 * s * c, c * c - s * s)
}

/// Σ a·b with eight independent lanes (a fixed order, so the result is reproducible).
#[inline(always)]
pub fn dot(a: &[f32], b: &[f32]) -> f32 {
    let mut lanes = [0.0f32; 8];
    let (ac, bc) = (a.chunks_exact(8), b.chunks_exact(8));
    let (ar, br) = (ac.remainder(), bc.remainder());
    for (x, y) in ac.zip(bc) {
        for i in 0..8 {
            lanes[i] += x[i] * y[i];
        }
    }
    let mut tail = 0.0;
    for (x, y) in ar.iter().zip(br) {
        tail += x * y;
    }
    ((lanes[0] + lanes[4]) + (lanes[1] + lanes[5]))
        + ((lanes[2] + lanes[6]) + (lanes[3] + lanes[7]))
        + tail
}

/// A row-major `[rows, cols]` matrix transposed to `[cols, rows]`.
pub fn transpose(a: &[f32], rows: usize, cols: usize) -> Vec<f32> {
    let mut out = vec![0.0; a.len()];
    for r in 0..rows {
        for c in 0..cols {
            out[c * rows + r] = a[r * cols + c];
        }
    }
    out
}

/// Defines `fn $name` that runs its body compiled for AVX2 when the CPU has it, else for
/// the baseline target.
#[macro_export]
macro_rules! multiversion {
    ($name:ident($($arg:ident: $ty:ty),*) $body:block) => {
        #[allow(clippy::too_many_arguments)]
        fn $name($($arg: $ty),*) {
            #[inline(always)]
            #[allow(clippy::too_many_arguments)]
            fn generic($($arg: $ty),*) $body
            #[cfg(target_arch = "x86_64")]
            {
                #[target_feature(enable = "avx2")]
                #[allow(clippy::too_many_arguments)]
                unsafe fn avx2($($arg: $ty),*) { generic($($arg),*) }
                if std::arch::is_x86_feature_detected!("avx2") {
                    // SAFETY: the CPU supports AVX2, checked just above.
                    return unsafe { avx2($($arg),*) };
                }
            }
            generic($($arg),*)
        }
    };
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fast_exp_matches_std_exp() {
        let mut worst = 0.0f32;
        for i in -87_000..=88_000 {
            let x = i as f32 / 1000.0;
            let (got, want) = (exp(x), x.exp());
            worst = worst.max(((got - want) / want).abs());
        }
        assert!(worst < 3e-7, "relative error {worst}");
        assert!(exp(-1000.0) < 1e-37);
    }

    #[test]
    fn fast_softplus_matches_the_f64_formula() {
        let mut worst = 0.0f64;
        // Down to −80: below −87, exp's floor (~1e−38) stands in for eˣ.
        for i in -80_000..=100_000 {
            let x = i as f32 / 1000.0;
            let want = (x as f64).exp().ln_1p();
            let got = softplus(x) as f64;
            worst = worst.max(((got - want) / want).abs());
        }
        assert!(worst < 1e-6, "relative error {worst}");
        assert!(softplus(-1000.0) < 1e-37);
        // ln(1 + y) itself, from 0 (where it is y) to 1.
        for i in 0..=10_000 {
            let y = i as f32 / 10_000.0;
            let want = (y as f64).ln_1p();
            let got = ln_1p_unit(y) as f64;
            assert!(
                (got - want).abs() <= 3e-7 * want.max(1e-30),
                "{y}: {got} vs {want}"
            );
        }
        assert_eq!(ln_1p_unit(1e-30), 1e-30);
    }

    #[test]
    fn fast_sin_cos_matches_std() {
        let mut worst = 0.0f32;
        for i in -2_000_000..=2_000_000 {
            let x = i as f32 / 200.0;
            let (s, c) = sin_cos(x);
            let (ws, wc) = ((x as f64).sin() as f32, (x as f64).cos() as f32);
            worst = worst.max((s - ws).abs()).max((c - wc).abs());
        }
        assert!(worst < 1e-6, "absolute error {worst}");
    }

    #[test]
    fn dot_matches_a_plain_sum() {
        let a: Vec<f32> = (0..19).map(|i| i as f32 * 0.5).collect();
        let b: Vec<f32> = (0..19).map(|i| 1.0 - i as f32 * 0.1).collect();
        let want: f32 = a.iter().zip(&b).map(|(x, y)| x * y).sum();
        assert!((dot(&a, &b) - want).abs() < 1e-4);
    }
}
