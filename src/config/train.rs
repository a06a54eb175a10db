//! The `[train]` section: what `ssmkit train` builds and how it trains it, the seed's
//! ablations as edits of it, and the name each variant reports under.

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use ssmkit_format::model::{Inputs, ModelConfig, Size, Variant};

/// The training loss.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Loss {
    /// Softmax cross-entropy against the turn's relevant labels spread evenly (ListNet;
    /// a convex bound on MRR and nDCG): the model learns each candidate's share of the
    /// relevant mass.
    #[default]
    Softmax,
    /// −log of the softmax mass on the turn's relevant candidates together (MIL-NCE):
    /// the likelihood that the top candidate is relevant, whichever it is. When a turn
    /// has several relevant candidates and the model cannot tell which rule made them
    /// relevant, it rewards covering every rule with one candidate over spreading mass
    /// across one rule's candidates: the objective HR@K asks for.
    Hit,
    /// −log of the chance that the top 5 hold a relevant candidate, each place drawn by
    /// softmax from the candidates below the model's own higher places: HR@5 made smooth.
    /// A rule needs one candidate somewhere in the top 5, not the most mass, so a ranker
    /// that cannot tell which rule made a turn's labels learns to give each rule a place.
    Slate,
    /// Binary cross-entropy of each candidate's label from sigmoid(score / τ): the model
    /// learns each candidate's own chance of being relevant, whatever else the turn
    /// holds. Softmax divides a turn's relevant mass among its relevant candidates, so a
    /// rule that marks five candidates gives each a fifth of what a rule that marks one
    /// gives; greedy picks ask which candidate is most likely relevant given the picks
    /// before it missed, and this is the loss that estimates it.
    Binary,
}

impl Loss {
    pub fn name(self) -> &'static str {
        match self {
            Loss::Softmax => "softmax",
            Loss::Hit => "hit",
            Loss::Slate => "slate",
            Loss::Binary => "binary",
        }
    }
}

/// The `[train]` section of a run config.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TrainConfig {
    pub model: Variant,
    pub size: Size,
    /// Overrides of the size preset: model width H, state size N, blocks, Mamba expansion.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub d_model: Option<usize>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub d_state: Option<usize>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub layers: Option<usize>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub expand: Option<usize>,
    /// Override of the pointwise branch's hidden units (each candidate's MLP over its own
    /// inputs and its keyed read).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub mlp_hidden: Option<usize>,
    /// Override of the pointwise branch's hidden layers (1 or 2).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub mlp_layers: Option<usize>,
    /// Mamba's selection mechanism; off is the seed's "no selectivity" ablation.
    pub selective: bool,
    /// What the model reads (`all`, or `temporal_only`).
    pub inputs: Inputs,
    /// Optimizer steps.
    pub steps: usize,
    /// Users per batch.
    pub batch_users: usize,
    /// Longest window of turns per training sequence.
    pub window: usize,
    pub lr: f64,
    pub min_lr: f64,
    pub warmup_steps: usize,
    pub weight_decay: f64,
    /// Global gradient-norm bound.
    pub grad_clip: f64,
    /// The training loss: `softmax` (ListNet, the default), `hit` (the softmax mass on
    /// the relevant candidates together), `slate` (a smooth HR@5) or `binary` (each
    /// candidate's own chance of being relevant; see [`Loss`]).
    pub loss: Loss,
    /// ListNet / softmax temperature.
    pub temperature: f64,
    /// Percentiles of turn timestamps where validation and test begin.
    pub valid_from: f64,
    pub test_from: f64,
    /// Validate (and checkpoint) every this many steps.
    pub eval_every: usize,
    /// Follow the dataset's curriculum stages in order, each for its share of the steps.
    pub curriculum: bool,
    /// Temporal models read each candidate's history features ([`crate::history`]).
    pub history: bool,
    /// Every model reads each candidate's turn-relative features (ranks within its turn,
    /// distances from the turn's first candidate; [`crate::relative`]).
    pub relative: bool,
    /// The pointwise branch reads the turn's candidates as a set (a max-pool of their
    /// hidden units; [`crate::model::ModelConfig::set_encoder`]).
    pub set_encoder: bool,
    /// Places of a turn picked one at a time, each given the picks before it
    /// ([`crate::model::ModelConfig::picks`]; 0: one score per candidate).
    pub picks: usize,
    /// Early stopping: stop once this many validations in a row have not improved the
    /// best validation DCG@10 (0: never; with a curriculum, only in its last stage). The
    /// run's model is always the best checkpoint.
    pub patience: usize,
    /// Megabytes of training users held in memory at once: a larger dataset is trained a
    /// block of users at a time ([`crate::train::stream`]).
    pub resident_mb: usize,
    /// Megabytes of validation users: a larger validation split is sampled (seeded).
    pub validation_mb: usize,
    /// Temporal models: decaying modes of the identity-keyed state
    /// ([`crate::model::ModelConfig::keyed_modes`]).
    pub keyed_modes: usize,
    /// Temporal models: oscillating modes of the keyed state (0: real modes only; with no
    /// decaying ones either, no keyed state: the pooled backbone alone).
    pub keyed_cycles: usize,
}

impl Default for TrainConfig {
    fn default() -> Self {
        TrainConfig {
            model: Variant::Mamba,
            size: Size::Small,
            d_model: None,
            d_state: None,
            layers: None,
            expand: None,
            mlp_hidden: None,
            mlp_layers: None,
            selective: true,
            inputs: Inputs::All,
            steps: 200,
            batch_users: 8,
            window: 64,
            lr: 3e-3,
            min_lr: 1e-4,
            warmup_steps: 20,
            weight_decay: 0.01,
            grad_clip: 1.0,
            loss: Loss::Softmax,
            temperature: 1.0,
            valid_from: OWN_VALID_FROM,
            test_from: OWN_TEST_FROM,
            eval_every: 50,
            curriculum: true,
            history: true,
            relative: false,
            set_encoder: false,
            picks: 0,
            patience: 4,
            resident_mb: 2000,
            validation_mb: 500,
            keyed_modes: 4,
            keyed_cycles: 2,
        }
    }
}

/// A dataset's own split: validation turns from this quantile of its timestamps on, test
/// turns from [`OWN_TEST_FROM`] on (the defaults of `valid_from` and `test_from`).
pub const OWN_VALID_FROM: f64 = 0.8;
/// The quantile of a dataset's own test split ([`OWN_VALID_FROM`]).
pub const OWN_TEST_FROM: f64 = 0.9;

/// The most turns one training step's batch may hold (`batch_users` × `window`).
pub const MAX_STEP_TURNS: usize = 16_384;

impl TrainConfig {
    /// The model this config builds for a dataset of `content_dim`-wide content
    /// embeddings and `memory_slots` memory ids: its size preset with its overrides.
    pub fn model_config(&self, content_dim: usize, memory_slots: usize) -> ModelConfig {
        self.overrides(ModelConfig::sized(
            self.model,
            self.size,
            content_dim,
            memory_slots,
        ))
    }

    /// `base` (a size preset) with this config's overrides applied: sizes, selection,
    /// inputs, history and turn-relative features.
    pub fn overrides(&self, base: ModelConfig) -> ModelConfig {
        let mut c = base.with_history(self.history);
        c.relative = self.relative;
        // The cross-attention scorer has no pointwise branch to read the set.
        c.set_encoder = self.set_encoder && self.model != Variant::Xattn;
        c.picks = if self.model == Variant::Xattn {
            0
        } else {
            self.picks
        };
        c.d_model = self.d_model.unwrap_or(c.d_model);
        c.d_state = self.d_state.unwrap_or(c.d_state);
        c.layers = self.layers.unwrap_or(c.layers);
        c.expand = self.expand.unwrap_or(c.expand);
        if c.variant != Variant::Xattn {
            c.mlp_hidden = self.mlp_hidden.unwrap_or(c.mlp_hidden);
            c.mlp_layers = self.mlp_layers.unwrap_or(c.mlp_layers);
        }
        c.selective = self.selective;
        c.inputs = self.inputs;
        if c.variant.is_temporal() {
            c.keyed_modes = self.keyed_modes;
            c.keyed_cycles = self.keyed_cycles;
        }
        c
    }

    pub fn validate(&self) -> Result<()> {
        let bad = |f: &str, why: &str| Err(Error::Config(format!("train.{f}: {why}")));
        if self.steps == 0 || self.batch_users == 0 || self.window < 2 || self.eval_every == 0 {
            return bad(
                "steps",
                "steps, batch_users, eval_every must be >= 1 and window >= 2",
            );
        }
        if !(self.lr > 0.0 && self.lr <= 1.0 && self.min_lr >= 0.0 && self.min_lr <= self.lr) {
            return bad("lr", "need 0 < lr <= 1 and 0 <= min_lr <= lr");
        }
        if !(0.0 < self.valid_from && self.valid_from < self.test_from && self.test_from < 1.0) {
            return bad("valid_from", "need 0 < valid_from < test_from < 1");
        }
        use ssmkit_format::model::{
            MAX_D_MODEL, MAX_D_STATE, MAX_EXPAND, MAX_KEYED_CYCLES, MAX_KEYED_MODES, MAX_LAYERS,
            MAX_MLP_HIDDEN, MAX_MLP_LAYERS, MAX_PICKS,
        };
        for (f, v, max) in [
            ("d_model", self.d_model, MAX_D_MODEL),
            ("d_state", self.d_state, MAX_D_STATE),
            ("layers", self.layers, MAX_LAYERS),
            ("expand", self.expand, MAX_EXPAND),
            ("mlp_hidden", self.mlp_hidden, MAX_MLP_HIDDEN),
            ("mlp_layers", self.mlp_layers, MAX_MLP_LAYERS),
            ("picks", (self.picks > 0).then_some(self.picks), MAX_PICKS),
            (
                "keyed_modes",
                (self.keyed_modes > 0).then_some(self.keyed_modes),
                MAX_KEYED_MODES,
            ),
            (
                "keyed_cycles",
                (self.keyed_cycles > 0).then_some(self.keyed_cycles),
                MAX_KEYED_CYCLES,
            ),
        ] {
            if v.is_some_and(|v| v == 0 || v > max) {
                return bad(f, &format!("must be in 1..={max}"));
            }
        }
        // Counts and budgets, bounded so that no product of them can overflow.
        for (f, v, lo, hi) in [
            ("steps", self.steps, 1, 10_000_000),
            ("batch_users", self.batch_users, 1, 4096),
            ("window", self.window, 2, 4096),
            ("warmup_steps", self.warmup_steps, 0, 10_000_000),
            ("eval_every", self.eval_every, 1, 10_000_000),
            ("patience", self.patience, 0, 10_000_000),
            ("resident_mb", self.resident_mb, 1, 1_000_000),
            ("validation_mb", self.validation_mb, 0, 1_000_000),
        ] {
            if !(lo..=hi).contains(&v) {
                return bad(f, &format!("{v} is not in {lo}..={hi}"));
            }
        }
        // The turns of one step's batch, held with their candidates and gradients.
        if self.batch_users * self.window > MAX_STEP_TURNS {
            return bad(
                "batch_users",
                &format!(
                    "batch_users × window = {} turns per step, more than {MAX_STEP_TURNS}",
                    self.batch_users * self.window
                ),
            );
        }
        if !self.selective && !matches!(self.model, Variant::Mamba | Variant::Dual) {
            return bad(
                "selective",
                "only Mamba blocks (mamba, dual) have a selection mechanism to switch off",
            );
        }
        // Bounded ranges (NaN fails every comparison).
        for (f, v, lo, hi) in [
            ("temperature", self.temperature, 1e-3, 1e3),
            ("grad_clip", self.grad_clip, 1e-6, 1e6),
            ("weight_decay", self.weight_decay, 0.0, 10.0),
        ] {
            if !(v >= lo && v <= hi) {
                return bad(f, &format!("{v} is not in {lo}..={hi}"));
            }
        }
        Ok(())
    }

    /// The same training (steps, schedule, split, history) for another model, at that
    /// model's own size settings: how learned baselines are trained beside the primary.
    pub fn for_baseline(&self, model: Variant) -> TrainConfig {
        let own = TrainConfig::default();
        TrainConfig {
            model,
            d_model: own.d_model,
            d_state: own.d_state,
            layers: own.layers,
            expand: own.expand,
            mlp_hidden: own.mlp_hidden,
            mlp_layers: own.mlp_layers,
            selective: own.selective,
            inputs: own.inputs,
            keyed_modes: own.keyed_modes,
            keyed_cycles: own.keyed_cycles,
            ..self.clone()
        }
    }

    /// This config with one retrained ablation applied: the seed's grid (`d_state=N`,
    /// `layers=N`, `d_model=N`, `expand=N`, `no_selectivity`, `temporal_only`,
    /// `no_history`) or the turn-relative features on or off (`relative`,
    /// `no_relative`), or several joined by `+`, applied together. The result is
    /// validated.
    pub fn ablated(&self, spec: &str) -> Result<TrainConfig> {
        let mut t = self.clone();
        let spec = spec.trim();
        for part in spec.split('+') {
            t.ablate_one(spec, part.trim())?;
        }
        t.validate()
            .map_err(|e| Error::Config(format!("ablation `{spec}`: {e}")))?;
        Ok(t)
    }

    /// One setting of an ablation (`spec` the whole, for the error's wording).
    fn ablate_one(&mut self, spec: &str, part: &str) -> Result<()> {
        let t = self;
        if part.is_empty() {
            return Err(Error::Config(format!(
                "ablation `{spec}`: an empty setting (settings are joined by `+`)"
            )));
        }
        match part.split_once('=') {
            Some((key, value)) => {
                let n: usize = value.trim().parse().map_err(|_| {
                    Error::Config(format!(
                        "ablation `{spec}`: `{value}` is not a whole number"
                    ))
                })?;
                match key.trim() {
                    "d_state" => t.d_state = Some(n),
                    "layers" => t.layers = Some(n),
                    "d_model" => t.d_model = Some(n),
                    "expand" => t.expand = Some(n),
                    "mlp_hidden" => t.mlp_hidden = Some(n),
                    "mlp_layers" => t.mlp_layers = Some(n),
                    "picks" => t.picks = n,
                    "keyed_modes" => t.keyed_modes = n,
                    "keyed_cycles" => t.keyed_cycles = n,
                    other => {
                        return Err(Error::Config(format!(
                            "ablation `{spec}`: unknown setting `{other}` (d_state, layers, d_model, expand, mlp_hidden, mlp_layers, picks, keyed_modes, keyed_cycles)"
                        )));
                    }
                }
            }
            None => match part {
                "no_selectivity" => t.selective = false,
                "temporal_only" => t.inputs = Inputs::TemporalOnly,
                "no_history" => t.history = false,
                "relative" => t.relative = true,
                "no_relative" => t.relative = false,
                "set_encoder" => t.set_encoder = true,
                "no_set_encoder" => t.set_encoder = false,
                "no_picks" => t.picks = 0,
                "pooled" => (t.keyed_modes, t.keyed_cycles) = (0, 0),
                "real_only" => t.keyed_cycles = 0,
                _ => {
                    return Err(Error::Config(format!(
                        "ablation `{spec}`: expected d_state=N, layers=N, d_model=N, expand=N, mlp_hidden=N, mlp_layers=N, no_selectivity, temporal_only, no_history, relative, no_relative, set_encoder, no_set_encoder, picks=N, no_picks, keyed_modes=N, keyed_cycles=N, pooled or real_only"
                    )));
                }
            },
        }
        Ok(())
    }

    /// The name a run of this config goes by in reports: the model, then each departure
    /// from its defaults (`mamba`, `mamba+d_state=4`, `mamba+no_selectivity`, …).
    pub fn system_name(&self) -> String {
        let mut name = self.model.name().to_string();
        for (f, v) in [
            ("d_model", self.d_model),
            ("d_state", self.d_state),
            ("layers", self.layers),
            ("expand", self.expand),
            ("mlp_hidden", self.mlp_hidden),
            ("mlp_layers", self.mlp_layers),
        ] {
            if let Some(v) = v {
                name += &format!("+{f}={v}");
            }
        }
        if !self.selective {
            name += "+no_selectivity";
        }
        if self.inputs == Inputs::TemporalOnly {
            name += "+temporal_only";
        }
        if !self.history && self.model.is_temporal() {
            name += "+no_history";
        }
        if self.loss != Loss::default() {
            name += &format!("+loss={}", self.loss.name());
        }
        if self.relative != TrainConfig::default().relative {
            name += if self.relative {
                "+relative"
            } else {
                "+no_relative"
            };
        }
        if self.picks > 0 && self.model != Variant::Xattn {
            name += &format!("+picks={}", self.picks);
        }
        if self.set_encoder != TrainConfig::default().set_encoder && self.model != Variant::Xattn {
            name += if self.set_encoder {
                "+set_encoder"
            } else {
                "+no_set_encoder"
            };
        }
        let own = TrainConfig::default();
        if self.model.is_temporal()
            && (self.keyed_modes, self.keyed_cycles) != (own.keyed_modes, own.keyed_cycles)
        {
            if self.keyed_modes + self.keyed_cycles == 0 {
                name += "+pooled";
            } else {
                if self.keyed_modes != own.keyed_modes {
                    name += &format!("+keyed_modes={}", self.keyed_modes);
                }
                if self.keyed_cycles != own.keyed_cycles {
                    name += &if self.keyed_cycles == 0 {
                        "+real_only".to_string()
                    } else {
                        format!("+keyed_cycles={}", self.keyed_cycles)
                    };
                }
            }
        }
        name
    }

    /// LR at step s (0-based): linear warm-up to `lr`, then cosine to `min_lr`.
    pub fn lr_at(&self, step: usize) -> f64 {
        if step < self.warmup_steps {
            return self.lr * (step + 1) as f64 / self.warmup_steps as f64;
        }
        let span = (self.steps - self.warmup_steps).max(1) as f64;
        let progress = ((step - self.warmup_steps) as f64 / span).min(1.0);
        self.min_lr
            + 0.5 * (self.lr - self.min_lr) * (1.0 + (std::f64::consts::PI * progress).cos())
    }
}
