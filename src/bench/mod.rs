//! `ssmkit bench`: speed measurements that stay out of the tests.

use std::time::Instant;

use burn::prelude::*;
use rand::{RngExt, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde::Serialize;

use crate::model::mamba::{ScanImpl, selective_scan};
use crate::model::scorer::Init;
use crate::model::uniform_tensor;

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

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

/// Times the selective scan alone (x, Δ, A, B, C → y; then the gradient of Σy w.r.t. all
/// five inputs) with the chosen implementation on `device` (named `backend`).
pub fn scan(
    implementation: ScanImpl,
    (device, backend): (Device, String),
    batch: usize,
    d_inner: usize,
    d_state: usize,
    len: usize,
    repeats: usize,
) -> ScanBench {
    let device = device.autodiff();
    let mut rng = ChaCha8Rng::seed_from_u64(0);
    let x = uniform_tensor(&mut rng, [batch, len, d_inner], -1.0, 1.0, &device).require_grad();
    let delta = uniform_tensor(&mut rng, [batch, len, d_inner], 0.001, 0.1, &device).require_grad();
    let a = uniform_tensor(&mut rng, [d_inner, d_state], -4.0, -0.5, &device).require_grad();
    let bm = uniform_tensor(&mut rng, [batch, len, d_state], -1.0, 1.0, &device).require_grad();
    let cm = uniform_tensor(&mut rng, [batch, len, d_state], -1.0, 1.0, &device).require_grad();
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
        backend,
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

/// The model [`infer`] times: a variant, its size and the options that change its
/// runtime's work.
#[derive(Clone, Debug)]
pub struct InferModel {
    pub variant: crate::model::scorer::Variant,
    pub size: crate::model::scorer::Size,
    pub relative: bool,
    pub set_encoder: bool,
    pub picks: usize,
    /// Hidden units of the pointwise branch (`None`: the preset's).
    pub mlp_hidden: Option<usize>,
    /// Hidden layers of the pointwise branch (`None`: the preset's).
    pub mlp_layers: Option<usize>,
    /// A retrained ablation ([`crate::config::TrainConfig::ablated`]) applied after the
    /// settings above (`pooled`: without the keyed state).
    pub ablation: Option<String>,
}

impl InferModel {
    /// The training config that builds this model (defaults elsewhere); a bad
    /// ablation is refused.
    fn train(&self) -> crate::error::Result<crate::config::TrainConfig> {
        let own = crate::config::TrainConfig {
            model: self.variant,
            size: self.size,
            relative: self.relative,
            set_encoder: self.set_encoder,
            picks: self.picks,
            mlp_hidden: self.mlp_hidden,
            mlp_layers: self.mlp_layers,
            ..Default::default()
        };
        match &self.ablation {
            Some(spec) => own.ablated(spec),
            None => Ok(own),
        }
    }
}

/// Per-turn latency of the runtime.
#[derive(Clone, Debug, Serialize)]
pub struct InferBench {
    pub model: String,
    pub size: String,
    pub quantization: String,
    pub candidates: usize,
    pub turns: usize,
    pub p50_us: f64,
    pub p95_us: f64,
    pub p99_us: f64,
    pub mean_us: f64,
    pub state_bytes: usize,
    pub file_bytes: usize,
}

/// Times [`Runtime::step`](crate::runtime::Runtime::step) (score, then fold the outcome in) of the runtime on random turns, one thread, for a freshly
/// initialized model as `options` describe it (latency does not depend on training).
pub fn infer(
    options: &InferModel,
    candidates: usize,
    quant: crate::export::Quant,
    turns: usize,
) -> crate::error::Result<InferBench> {
    use crate::features::{FEATURE_DIM, HOP_FEATURE_NAMES};
    use crate::runtime::{Candidate, Runtime, Turn};
    let content = 16;
    let train = options.train()?;
    let cfg = train.model_config(content, 4096);
    let model = cfg.init(0, &Device::flex());
    let (bytes, _) =
        crate::export::encode(&model, &cfg, quant, &serde_json::json!({"bench": true}))?;
    let rt = Runtime::from_bytes(&bytes, std::path::Path::new("bench"))?;
    let mut rng = ChaCha8Rng::seed_from_u64(1);
    let mut clock = 1_767_571_200i64;
    let mut turn = || -> (Turn, Vec<f32>) {
        clock += 60;
        let mut t = Turn {
            timestamp: Some(clock),
            query: (0..content).map(|_| rng.random_range(-1.0..1.0)).collect(),
            focal: [rng.random_range(0..200), -1],
            ..Default::default()
        };
        for v in t.context.iter_mut() {
            *v = rng.random_range(-1.0..1.0);
        }
        for _ in 0..candidates {
            let slot = rng.random_range(0..4096);
            let mut c = Candidate {
                memory_slot: slot,
                memory_id: Some(slot as u64),
                entity: rng.random_range(0..200),
                content: (0..content).map(|_| rng.random_range(-1.0..1.0)).collect(),
                hops: (0..3).map(|_| [0.5; HOP_FEATURE_NAMES.len()]).collect(),
                ..Default::default()
            };
            for d in 0..FEATURE_DIM {
                c.features[d] = rng.random_range(0.0..1.0);
            }
            t.candidates.push(c);
        }
        let labels = (0..candidates)
            .map(|_| rng.random_bool(0.2) as u8 as f32)
            .collect();
        (t, labels)
    };
    let inputs: Vec<(Turn, Vec<f32>)> = (0..256).map(|_| turn()).collect();
    let mut state = rt.zero_state();
    let mut times = Vec::with_capacity(turns);
    let mut sink = 0f32;
    for i in 0..turns + 100 {
        let (t, labels) = &inputs[i % inputs.len()];
        let start = Instant::now();
        let s = rt.step(&mut state, t, labels);
        let us = start.elapsed().as_secs_f64() * 1e6;
        sink += s[0];
        if i >= 100 {
            times.push(us); // the first 100 turns warm the caches
        }
    }
    std::hint::black_box(sink);
    times.sort_by(f64::total_cmp);
    let q = |p: f64| crate::eval::stats::quantile(&times, p);
    Ok(InferBench {
        model: train.system_name(),
        size: format!("{:?}", options.size).to_lowercase(),
        quantization: quant.name().into(),
        candidates,
        turns,
        p50_us: q(0.5),
        p95_us: q(0.95),
        p99_us: q(0.99),
        mean_us: times.iter().sum::<f64>() / times.len() as f64,
        state_bytes: state.to_bytes(&rt.fingerprint).len(),
        file_bytes: bytes.len(),
    })
}
