//! Helpers shared by the integration tests: a tiny generated dataset, a tiny training
//! configuration, and the built binary.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::Command;

use ssmkit::config::Config;
use ssmkit::datagen::{GenOptions, generate};
use ssmkit::model::scorer::{Size, Variant};
use ssmkit::train::{TrainConfig, TrainOptions};

/// The tiny dataset's config: 12 users of 90–120 turns, a canary in every turn (so the
/// canaries' probes find users whose history holds evidence of them).
pub fn tiny_config() -> Config {
    let mut c = Config::default();
    c.world.users = 12;
    c.world.entities = [20, 30];
    c.timeline.turns = [90, 120];
    c.noise.calibration_users = 12;
    // Every turn carries one canary, so 12 users give each canary probe sites.
    c.canaries.inject_prob = 1.0;
    c
}

/// [`tiny_config`] and a training section of 8 steps, as the TOML a user would write.
pub const TINY_TOML: &str = r#"name = "tiny"
[world]
users = 12
entities = [20, 30]
[timeline]
turns = [90, 120]
[noise]
calibration_users = 12
[canaries]
inject_prob = 1.0
[train]
size = "tiny"
steps = 8
batch_users = 4
window = 16
warmup_steps = 2
eval_every = 4
"#;

pub fn tiny_data(dir: &Path) -> PathBuf {
    gen_tiny(&tiny_config(), &dir.join("data"))
}

/// Generates `c` into `out`.
pub fn gen_tiny(c: &Config, out: &Path) -> PathBuf {
    generate(
        c,
        &GenOptions {
            out: out.to_path_buf(),
            force: true,
            quiet: true,
            materialize: false,
        },
    )
    .unwrap();
    out.to_path_buf()
}

pub fn tiny_train() -> TrainConfig {
    TrainConfig {
        model: Variant::Mamba,
        size: Size::Tiny,
        steps: 40,
        batch_users: 4,
        window: 24,
        warmup_steps: 4,
        eval_every: 20,
        ..TrainConfig::default()
    }
}

pub fn ssmkit(args: &[&str]) -> (bool, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_ssmkit"))
        .args(args)
        .output()
        .unwrap();
    (
        out.status.success(),
        String::from_utf8(out.stdout).unwrap(),
        String::from_utf8(out.stderr).unwrap(),
    )
}

pub fn opts(data: &Path, run: &Path, seed: u64) -> TrainOptions {
    TrainOptions::new(data.to_path_buf(), run.to_path_buf(), seed)
}

/// Every variant at its Tiny size, then Mamba with each retrained ablation of the seed's
/// grid (no selectivity, temporal inputs only, another state size and depth, no history
/// features): the model configs the equality tests run.
pub fn model_configs(content_dim: usize) -> Vec<(String, ssmkit::model::scorer::ModelConfig)> {
    use ssmkit::model::scorer::{Inputs, ModelConfig};
    let base = |v: Variant| ModelConfig::sized(v, Size::Tiny, content_dim, 4096);
    let mut out: Vec<_> = Variant::ALL
        .iter()
        .map(|&v| (v.name().to_string(), base(v)))
        .collect();
    let ablations = [
        TrainConfig {
            selective: false,
            ..TrainConfig::default()
        },
        TrainConfig {
            inputs: Inputs::TemporalOnly,
            ..TrainConfig::default()
        },
        TrainConfig {
            d_state: Some(4),
            layers: Some(1),
            ..TrainConfig::default()
        },
        TrainConfig {
            history: false,
            ..TrainConfig::default()
        },
        TrainConfig {
            mlp_layers: Some(2),
            ..TrainConfig::default()
        },
    ];
    for t in ablations {
        out.push((t.system_name(), t.overrides(base(Variant::Mamba))));
    }
    // Turn-relative features, on every variant and with temporal-only inputs.
    for &v in &Variant::ALL {
        let mut c = base(v);
        c.relative = true;
        out.push((format!("{}+relative", v.name()), c.clone()));
        // The set encoder over the turn's candidates (the cross-attention scorer has no
        // pointwise branch to read it).
        if v != Variant::Xattn {
            c.set_encoder = true;
            out.push((format!("{}+relative+set_encoder", v.name()), c.clone()));
            // Greedy picks, with and without the set encoder.
            c.picks = 3;
            out.push((
                format!("{}+relative+set_encoder+picks=3", v.name()),
                c.clone(),
            ));
            c.set_encoder = false;
            out.push((format!("{}+relative+picks=3", v.name()), c));
        }
    }
    // The identity-keyed state: with decaying and oscillating modes, without selection,
    // with real modes only, with temporal inputs only, on every temporal variant.
    let keyed = TrainConfig {
        keyed_modes: 3,
        keyed_cycles: 2,
        ..TrainConfig::default()
    };
    for t in [
        keyed.clone(),
        TrainConfig {
            selective: false,
            ..keyed.clone()
        },
        TrainConfig {
            keyed_cycles: 0,
            ..keyed.clone()
        },
        TrainConfig {
            inputs: Inputs::TemporalOnly,
            ..keyed.clone()
        },
    ] {
        out.push((t.system_name(), t.overrides(base(Variant::Mamba))));
    }
    for v in [Variant::S4d, Variant::Dual] {
        let t = TrainConfig {
            model: v,
            ..keyed.clone()
        };
        out.push((t.system_name(), t.overrides(base(v))));
    }
    let t = TrainConfig {
        inputs: Inputs::TemporalOnly,
        relative: true,
        ..TrainConfig::default()
    };
    out.push((t.system_name(), t.overrides(base(Variant::Mamba))));
    out
}
