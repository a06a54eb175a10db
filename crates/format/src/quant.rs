//! Quantization of the exported projections and embeddings: symmetric int8 and ternary
//! (BitNet b1.58) codes with one F16 scale per output channel. The exporter packs with
//! these functions and the runtime unpacks with them.

use serde::{Deserialize, Serialize};

use crate::simd::transpose;

/// How an export stores its projections and embedding tables.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Quant {
    F32,
    Int8,
    Ternary,
}

impl Quant {
    pub const ALL: [Quant; 3] = [Quant::F32, Quant::Int8, Quant::Ternary];

    pub fn name(self) -> &'static str {
        match self {
            Quant::F32 => "f32",
            Quant::Int8 => "int8",
            Quant::Ternary => "ternary",
        }
    }
}

/// One quantization scale per output row of a projection (`[out, in]`), or per column
/// (output channel) of an embedding table (`[rows, dim]`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ScaleAxis {
    Row,
    Column,
}

/// A scale as stored (F16), so that codes are computed against the value a loader reads.
fn f16_round(x: f32) -> f32 {
    half::f16::from_f32(x).to_f32()
}

/// Codes and scales for each row of `w` `[rows, cols]`: `scale(row)` gives the row's
/// scale, `code(x / scale)` its codes.
fn per_row(
    w: &[f32],
    rows: usize,
    cols: usize,
    scale: impl Fn(&[f32]) -> f32,
    code: impl Fn(f32) -> i8,
) -> (Vec<i8>, Vec<f32>) {
    let mut q = vec![0i8; w.len()];
    let mut scales = vec![0f32; rows];
    for r in 0..rows {
        let row = &w[r * cols..(r + 1) * cols];
        let s = f16_round(scale(row));
        let s = if s > 0.0 { s } else { 1.0 };
        scales[r] = s;
        for (o, x) in q[r * cols..(r + 1) * cols].iter_mut().zip(row) {
            *o = code(x / s);
        }
    }
    (q, scales)
}

/// [`per_row`] along `axis`, codes returned in `w`'s layout.
fn per_axis(
    w: &[f32],
    rows: usize,
    cols: usize,
    axis: ScaleAxis,
    scale: impl Fn(&[f32]) -> f32,
    code: impl Fn(f32) -> i8,
) -> (Vec<i8>, Vec<f32>) {
    match axis {
        ScaleAxis::Row => per_row(w, rows, cols, scale, code),
        ScaleAxis::Column => {
            let (q, s) = per_row(&transpose(w, rows, cols), cols, rows, scale, code);
            let q = transpose(&q.iter().map(|&v| v as f32).collect::<Vec<_>>(), cols, rows);
            (q.iter().map(|&v| v as i8).collect(), s)
        }
    }
}

/// Symmetric int8: scale = max|w| / 127 (stored F16), q = round(w / scale).
pub fn quantize_int8(w: &[f32], rows: usize, cols: usize, axis: ScaleAxis) -> (Vec<i8>, Vec<f32>) {
    per_axis(
        w,
        rows,
        cols,
        axis,
        |g| g.iter().fold(0f32, |m, x| m.max(x.abs())) / 127.0,
        |x| x.round().clamp(-127.0, 127.0) as i8,
    )
}

/// Ternary (BitNet b1.58): scale = mean|w| (stored F16), code = round(clip(w / scale, −1,
/// 1)), packed four 2-bit codes (0/1/2 = −1/0/+1) per byte, each row padded to whole bytes.
pub fn quantize_ternary(
    w: &[f32],
    rows: usize,
    cols: usize,
    axis: ScaleAxis,
) -> (Vec<u8>, Vec<f32>) {
    let (codes, scales) = per_axis(
        w,
        rows,
        cols,
        axis,
        |g| g.iter().map(|x| x.abs()).sum::<f32>() / g.len().max(1) as f32,
        |x| x.round().clamp(-1.0, 1.0) as i8,
    );
    let row_bytes = cols.div_ceil(4);
    let mut packed = vec![0u8; rows * row_bytes];
    for r in 0..rows {
        for c in 0..cols {
            let t = (codes[r * cols + c] + 1) as u8;
            packed[r * row_bytes + c / 4] |= t << (2 * (c % 4));
        }
    }
    (packed, scales)
}

/// Unpacks [`quantize_ternary`]'s codes to −1/0/+1.
pub fn unpack_ternary(packed: &[u8], rows: usize, cols: usize) -> Vec<i8> {
    let row_bytes = cols.div_ceil(4);
    let mut out = vec![0i8; rows * cols];
    for r in 0..rows {
        for c in 0..cols {
            let code = (packed[r * row_bytes + c / 4] >> (2 * (c % 4))) & 3;
            out[r * cols + c] = code as i8 - 1;
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn int8_and_ternary_round_trip_within_one_step() {
        let w: Vec<f32> = (0..24).map(|i| ((i * 7 % 11) as f32 - 5.0) / 3.0).collect();
        let (q, s) = quantize_int8(&w, 3, 8, ScaleAxis::Row);
        for r in 0..3 {
            for c in 0..8 {
                let back = q[r * 8 + c] as f32 * s[r];
                assert!((back - w[r * 8 + c]).abs() <= s[r] / 2.0 + 1e-6);
            }
        }
        // Per column: one scale per column, and the same bound.
        let (q, s) = quantize_int8(&w, 3, 8, ScaleAxis::Column);
        assert_eq!(s.len(), 8);
        for r in 0..3 {
            for c in 0..8 {
                let back = q[r * 8 + c] as f32 * s[c];
                assert!((back - w[r * 8 + c]).abs() <= s[c] / 2.0 + 1e-6);
            }
        }
        let (p, s) = quantize_ternary(&w, 3, 8, ScaleAxis::Row);
        assert_eq!(p.len(), 3 * 2);
        let codes = unpack_ternary(&p, 3, 8);
        for r in 0..3 {
            for c in 0..8 {
                let x = w[r * 8 + c] / s[r];
                let want = x.round().clamp(-1.0, 1.0) as i8;
                assert_eq!(codes[r * 8 + c], want);
            }
        }
        // A row of 5 values packs into 2 bytes.
        let (p, _) = quantize_ternary(&w[..10], 2, 5, ScaleAxis::Row);
        assert_eq!(p.len(), 4);
    }
}
