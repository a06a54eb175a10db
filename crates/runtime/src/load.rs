//! Reading an export's tensors: f32, or dequantized from int8 / ternary with their
//! scales, into the runtime's layers.

use std::cell::RefCell;
use std::collections::BTreeSet;
use std::path::Path;

use super::layers::{Dense, LayerNorm, S4d};
use crate::{Error, Result};
use ssmkit_format::names::{BIAS, QWEIGHT, QWEIGHT2, SCALE, WEIGHT, join, s4d};
use ssmkit_format::quant::{ScaleAxis, unpack_ternary};
use ssmkit_format::simd::transpose;

/// Reads a tensor as f32, dequantizing `<base>.qweight`/`.qweight2` with `<base>.scale`.
pub(super) struct Loader<'a> {
    st: safetensors::SafeTensors<'a>,
    path: &'a Path,
    /// The tensors read so far.
    read: RefCell<BTreeSet<String>>,
}

impl<'a> Loader<'a> {
    pub(super) fn new(st: safetensors::SafeTensors<'a>, path: &'a Path) -> Loader<'a> {
        Loader {
            st,
            path,
            read: RefCell::default(),
        }
    }

    /// Refuses a file with tensors the model config did not ask for: a config edited
    /// together with its digest (one layer fewer) would otherwise load and silently
    /// ignore them.
    pub(super) fn all_read(&self) -> Result<()> {
        let read = self.read.borrow();
        let mut unread: Vec<&str> = self
            .st
            .names()
            .into_iter()
            .filter(|n| !read.contains(*n))
            .collect();
        unread.sort();
        match unread.first() {
            None => Ok(()),
            Some(first) => Err(self.err(format!(
                "{} tensors that its model config does not use (`{first}` first): the config does not describe this file",
                unread.len()
            ))),
        }
    }

    pub(super) fn err(&self, msg: String) -> Error {
        Error::Export {
            path: self.path.to_path_buf(),
            msg,
        }
    }

    pub(super) fn has(&self, name: &str) -> bool {
        self.st.tensor(name).is_ok()
    }

    pub(super) fn raw(&self, name: &str) -> Result<(Vec<usize>, safetensors::Dtype, &[u8])> {
        let t = self
            .st
            .tensor(name)
            .map_err(|_| self.err(format!("missing tensor `{name}`")))?;
        self.read.borrow_mut().insert(name.to_string());
        Ok((t.shape().to_vec(), t.dtype(), t.data()))
    }

    /// A full-precision tensor (F32, or F16 widened to f32).
    pub(super) fn f32s(&self, name: &str) -> Result<(Vec<usize>, Vec<f32>)> {
        let (shape, dtype, data) = self.raw(name)?;
        let v = match dtype {
            safetensors::Dtype::F32 => data
                .chunks_exact(4)
                .map(|c| f32::from_le_bytes(c.try_into().expect("4 bytes")))
                .collect(),
            safetensors::Dtype::F16 => data
                .chunks_exact(2)
                .map(|c| half::f16::from_le_bytes(c.try_into().expect("2 bytes")).to_f32())
                .collect(),
            _ => return Err(self.err(format!("tensor `{name}` is {dtype:?}, expected F32 or F16"))),
        };
        Ok((shape, v))
    }

    /// A projection (`axis` Row: one scale per output row) or an embedding table (Column:
    /// one scale per column), whatever its quantization. `cols` is the width the config
    /// expects (packed ternary rows do not record it).
    pub(super) fn matrix(
        &self,
        base: &str,
        cols: usize,
        axis: ScaleAxis,
    ) -> Result<(usize, usize, Vec<f32>)> {
        if self.has(&join(base, WEIGHT)) {
            let (s, v) = self.f32s(&join(base, WEIGHT))?;
            if s.len() != 2 {
                return Err(self.err(format!(
                    "`{base}.weight` has shape {s:?}, expected 2 dimensions"
                )));
            }
            return Ok((s[0], s[1], v));
        }
        let (_, scale) = self.f32s(&join(base, SCALE))?;
        let (rows, codes) = if self.has(&join(base, QWEIGHT)) {
            let (s, dtype, data) = self.raw(&join(base, QWEIGHT))?;
            if dtype != safetensors::Dtype::I8 || s.len() != 2 || s[1] != cols {
                return Err(self.err(format!("`{base}.qweight` is not I8 [rows, {cols}]")));
            }
            (s[0], data.iter().map(|&q| q as i8).collect::<Vec<i8>>())
        } else {
            let (s, dtype, data) = self.raw(&join(base, QWEIGHT2))?;
            if dtype != safetensors::Dtype::U8 || s.len() != 2 || s[1] != cols.div_ceil(4) {
                return Err(self.err(format!(
                    "`{base}.qweight2` is not U8 [rows, {}] (four 2-bit codes per byte)",
                    cols.div_ceil(4)
                )));
            }
            (s[0], unpack_ternary(data, s[0], cols))
        };
        let want = match axis {
            ScaleAxis::Row => rows,
            ScaleAxis::Column => cols,
        };
        if scale.len() != want {
            return Err(self.err(format!(
                "`{base}.scale` has {} values, expected one per {} ({want})",
                scale.len(),
                if axis == ScaleAxis::Row {
                    "row"
                } else {
                    "column"
                }
            )));
        }
        let v = codes
            .iter()
            .enumerate()
            .map(|(i, &q)| {
                let g = match axis {
                    ScaleAxis::Row => i / cols,
                    ScaleAxis::Column => i % cols,
                };
                q as f32 * scale[g]
            })
            .collect();
        Ok((rows, cols, v))
    }

    pub(super) fn dense(&self, base: &str, d_in: usize, d_out: usize) -> Result<Dense> {
        let (rows, cols, w) = self.matrix(base, d_in, ScaleAxis::Row)?;
        if rows != d_out || cols != d_in {
            return Err(self.err(format!(
                "`{base}` is [{rows}, {cols}], the config needs [{d_out}, {d_in}]"
            )));
        }
        let wt = transpose(&w, d_out, d_in);
        let b = if self.has(&join(base, BIAS)) {
            Some(self.vector(&join(base, BIAS), d_out)?)
        } else {
            None
        };
        Ok(Dense { wt, b, d_in, d_out })
    }

    pub(super) fn vector(&self, name: &str, len: usize) -> Result<Vec<f32>> {
        let (s, v) = self.f32s(name)?;
        if v.len() != len {
            return Err(self.err(format!(
                "`{name}` has shape {s:?}, the config needs {len} values"
            )));
        }
        Ok(v)
    }

    pub(super) fn layer_norm(&self, base: &str, len: usize) -> Result<LayerNorm> {
        Ok(LayerNorm {
            gamma: self.vector(&join(base, WEIGHT), len)?,
            beta: if self.has(&join(base, BIAS)) {
                Some(self.vector(&join(base, BIAS), len)?)
            } else {
                None
            },
        })
    }

    pub(super) fn s4d(&self, norm: &str, m: &str, h: usize, modes: usize) -> Result<S4d> {
        let log_dt = self.vector(&join(m, s4d::LOG_DT), h)?;
        let log_a_real = self.vector(&join(m, s4d::LOG_A_REAL), h * modes)?;
        let a_imag = self.vector(&join(m, s4d::A_IMAG), h * modes)?;
        let c_re = self.vector(&join(m, s4d::C_RE), h * modes)?;
        let c_im = self.vector(&join(m, s4d::C_IM), h * modes)?;
        // ZOH, as S4dBlock::discretize.
        let n = h * modes;
        let (mut ar, mut ai, mut cr, mut ci) =
            (vec![0f32; n], vec![0f32; n], vec![0f32; n], vec![0f32; n]);
        for i in 0..n {
            let dt = log_dt[i / modes].exp();
            let (re_a, im_a) = (-log_a_real[i].exp(), a_imag[i]);
            let mag = (re_a * dt).exp();
            let (a_re, a_im) = (mag * (im_a * dt).cos(), mag * (im_a * dt).sin());
            let (p, q) = (a_re - 1.0, a_im);
            let den = re_a * re_a + im_a * im_a;
            let b_re = (p * re_a + q * im_a) / den;
            let b_im = (q * re_a - p * im_a) / den;
            ar[i] = a_re;
            ai[i] = a_im;
            cr[i] = c_re[i] * b_re - c_im[i] * b_im;
            ci[i] = c_re[i] * b_im + c_im[i] * b_re;
        }
        Ok(S4d {
            norm: self.layer_norm(norm, h)?,
            a_re: ar,
            a_im: ai,
            c_re: cr,
            c_im: ci,
            d: self.vector(&join(m, s4d::D), h)?,
            out: self.dense(&join(m, s4d::OUT_PROJ), h, h)?,
            h,
            m: modes,
        })
    }
}
