//! `ssmkit bench`: speed measurements that stay out of the tests.

use std::time::Instant;

use burn::prelude::*;
use rand::{RngExt, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde::Serialize;

use crate::model::mamba::{ScanImpl, selective_scan};

#[derive(Clone, Debug, Serialize)]
pub struct ScanBench {
    pub implementation: String,
    pub backend: String,
    pub batch: usize,
    pub d_inner: usize,
    pub d_state: usize,
    pub len: usize,
    pub repeats: usize,
    /// Median forward + backward time.
    pub fwd_bwd_ms: f64,
    pub fwd_bwd_min_ms: f64,
    pub fwd_ms: f64,
}

fn random<const D: usize>(
    rng: &mut ChaCha8Rng,
    shape: [usize; D],
    lo: f32,
    hi: f32,
    device: &Device,
) -> Tensor<D> {
    let v: Vec<f32> = (0..shape.iter().product::<usize>())
        .map(|_| rng.random_range(lo..hi))
        .collect();
    Tensor::from_data(TensorData::new(v, shape), device)
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

/// Times the selective scan alone (x, Δ, A, B, C → y; then the gradient of Σy w.r.t. all
/// five inputs) on the CPU backend with the chosen implementation.
pub fn scan(
    implementation: ScanImpl,
    batch: usize,
    d_inner: usize,
    d_state: usize,
    len: usize,
    repeats: usize,
) -> ScanBench {
    let device = Device::flex().autodiff();
    let mut rng = ChaCha8Rng::seed_from_u64(0);
    let x = random(&mut rng, [batch, len, d_inner], -1.0, 1.0, &device).require_grad();
    let delta = random(&mut rng, [batch, len, d_inner], 0.001, 0.1, &device).require_grad();
    let a = random(&mut rng, [d_inner, d_state], -4.0, -0.5, &device).require_grad();
    let bm = random(&mut rng, [batch, len, d_state], -1.0, 1.0, &device).require_grad();
    let cm = random(&mut rng, [batch, len, d_state], -1.0, 1.0, &device).require_grad();
    let run = |backward: bool| -> f64 {
        let start = Instant::now();
        let y = selective_scan(
            implementation,
            x.clone(),
            delta.clone(),
            a.clone(),
            bm.clone(),
            cm.clone(),
        );
        if backward {
            let grads = y.sum().backward();
            let g = x.grad(&grads).expect("gradient of x");
            let _: f32 = g.sum().into_scalar();
        } else {
            let _: f32 = y.sum().into_scalar();
        }
        start.elapsed().as_secs_f64() * 1e3
    };
    run(true); // warm-up
    let fb: Vec<f64> = (0..repeats).map(|_| run(true)).collect();
    let f: Vec<f64> = (0..repeats).map(|_| run(false)).collect();
    ScanBench {
        implementation: implementation.name().into(),
        backend: "cpu (burn flex)".into(),
        batch,
        d_inner,
        d_state,
        len,
        repeats,
        fwd_bwd_min_ms: fb.iter().copied().fold(f64::INFINITY, f64::min),
        fwd_bwd_ms: median(fb),
        fwd_ms: median(f),
    }
}
