//! The command line's types: every subcommand, its flags and its help text (clap).

use std::path::PathBuf;

use clap::builder::{PossibleValue, PossibleValuesParser, TypedValueParser};
use clap::{Parser, Subcommand};
use ssmkit::eval::Unit;
use ssmkit::export::Quant;
use ssmkit::model::scorer::{Size, Variant};

#[derive(Parser)]
#[command(
    name = "ssmkit",
    version,
    about = "Train and validate small state-space models for agent memory"
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand)]
pub enum Command {
    /// Generate a synthetic dataset with planted ground truth (or import JSONL)
    #[command(after_help = "Examples:\n  \
        ssmkit gen --config configs/quick.toml --out data/quick\n  \
        ssmkit gen --config configs/quick.toml --out data/quick-10db --snr 10 --seed 3 --force\n  \
        ssmkit gen --import scenarios.jsonl --out data/poc-llm")]
    Gen(GenArgs),
    /// Train a model (or a learned baseline) on a generated dataset
    #[command(after_help = "Examples:\n  \
        ssmkit train --config configs/quick.toml --data data/quick --run runs/quick-mamba\n  \
        ssmkit train --config configs/quick.toml --data data/quick --run runs/quick-s4d --model s4d --seed 2\n  \
        ssmkit train --config configs/quick.toml --data data/quick --run runs/quick-mamba --resume\n  \
        ssmkit train --dry-run")]
    Train(TrainArgs),
    /// Speed measurements
    Bench {
        #[command(subcommand)]
        what: BenchCommand,
    },
    /// Ranking metrics of logged rankings: HR, MRR, DCG (unnormalized), nDCG, P, R at K
    #[command(
        after_help = "FILE is CSV (or .parquet) with columns case_id,score,label; a case's rows are its
        candidates in their original order. Ties in score keep that order (the earlier
        candidate ranks first); labels > 0 are relevant and are DCG's gains.

        Examples:
          ssmkit metrics rankings.csv --k 10
          ssmkit metrics rankings.parquet --k 5 --json > metrics.json"
    )]
    Metrics(MetricsArgs),
    /// The canary suite of the reference systems on a dataset, before any training
    #[command(
        after_help = "Probes the GTS test cases of a dataset for every canary and judges the oracle (the
        planted rules), the observable reference (a rule learner that reads only what a model
        reads), random and a constant scorer, as `eval` does: every canary gate should pass for
        the first two and fail for the last two. A canary the observable reference fails is one
        the data cannot teach a model.

        Examples:
          ssmkit canaries --data data/quick
          ssmkit canaries --data data/phase0 --snr 20 --snr 10 --probes 64 --json"
    )]
    Canaries(CanariesArgs),
    /// Evaluate trained runs against the baselines on the GTS and LOO test cases; phase gates
    #[command(
        after_help = "Scores every --run (several seeds of one model are averaged per case) and the
        heuristic, random and oracle baselines on exactly the same test cases, compares the
        primary model with each of them (BCa 95% interval, sign-flip p-value), and writes
        report.md, gates.json, metrics.csv, cases.csv and comparisons.csv to --out.

        Examples:
          ssmkit eval --data data/quick --run runs/quick --out reports/quick
          ssmkit eval --data data/quick --run runs/q-s1 --run runs/q-s2 --run runs/q-xattn \\
              --out reports/quick --unit user --fail-on-gate"
    )]
    Eval(EvalArgs),
    /// Per-candidate scores of a trained run over a dataset's turns, for error analysis
    #[command(
        after_help = "Scores every turn of the first --users users (in the dataset's order), each
        from the history before it, and writes one row per real candidate to --out (Parquet):
        user_id, turn_index, cand_index and score, the model's log-relevance up to a constant
        per turn. Join it with the dataset's candidates.parquet on the first three columns.

        Example:
          ssmkit score --data data/phase0 --run runs/phase0/mamba-s1 --users 4000 --out scores.parquet"
    )]
    Score(ScoreArgs),
    /// The whole job: gen → train (all seeds and baselines) → eval → export, resumable
    #[command(
        after_help = "Outputs: data/<name>, runs/<name>/<model>-s<seed>, reports/<name> (report.md,
        report.html, gates.json) and runs/<name>/export/<model>-<quant>.safetensors, under
        --root. Seeds, baselines and exports come from the config's [pipeline] section. A
        finished stage is not redone; an interrupted training resumes from its checkpoint.

        With --shard I/N a job-array task trains only every N-th training job, starting at
        the I-th, and stops; gather every task's runs/<name>/ under one root and run again
        (with --no-train to refuse rather than train a missing run) to evaluate them together.

        Examples:
          ssmkit run configs/quick.toml
          ssmkit run configs/phase0.toml --fail-on-gate
          ssmkit run configs/phase0.toml --shard 3/8
          ssmkit run configs/phase0.toml --no-train"
    )]
    Run(RunArgs),
    /// Export a trained run as safetensors (f32, int8 or ternary) for the runtime
    #[command(
        after_help = "Names follow the reference Mamba checkpoint (layers.{i}.mixer.in_proj.weight, …);
        int8 stores projections and embeddings as <name>.qweight (I8) + <name>.scale (F16, per
        output channel), ternary as <name>.qweight2 (U8, four 2-bit codes a byte) + <name>.scale
        (F16); state-sensitive tensors (A_log, D, dt_proj, conv1d, norms, biases) are F16 in
        both and everything is F32 in f32. __metadata__ carries the model config, the feature
        layout and SHA-256 digests of the tensors and of the metadata. With --data, the exported model is replayed turn by
        turn over the run's GTS test cases and compared with the Burn model; --max-drop then
        refuses an export whose DCG@10 drops by more than that fraction.

        Examples:
          ssmkit export runs/quick-mamba --quant int8 --out runs/quick-mamba/export/model-int8.safetensors
          ssmkit export runs/quick-mamba --quant int8 --out m.safetensors --data data/quick --max-drop 0.02"
    )]
    Export(ExportArgs),
    /// Score JSONL turns with an exported model, carrying the recurrent state
    #[command(
        after_help = "Each input line is a turn: {\"timestamp\": unix seconds, \"context\": [6], \"query\": [..]?,
        \"focal\": [a, b]?, \"candidates\": [{\"features\": [24, null = missing], \"memory_slot\": n,
        \"memory_id\": n?, \"entity\": n, \"content\": [..]?, \"hops\": [[5], ..]?}], \"labels\": [K]?}.
        Models with history features need the timestamp and each candidate's memory_id (the
        key of the user's history). Each output line is
        {\"turn\": i, \"scores\": [K]}; labels, when given, are folded into the state after
        scoring. --state loads the state from FILE when it exists and saves it there at the
        end; a damaged state or another model's starts from the default state with a
        warning and is left untouched (--force replaces it).

        Example:
          ssmkit predict model.safetensors --input turns.jsonl --state user42.state"
    )]
    Predict(PredictArgs),
    /// Paired comparison of two systems: BCa bootstrap CI of mean(A − B) and sign-flip test
    #[command(
        after_help = "A and B are CSV (or .parquet) with columns case_id,value (and user_id for
        --unit user), one row per case; every case_id must appear once in each file.
        Significant means: BCa lower bound > 0 and p < 0.05.

        Examples:
          ssmkit compare ssm_hr10.csv heuristic_hr10.csv
          ssmkit compare a.csv b.csv --resamples 10000 --permutations 10000 --seed 7 --unit user --json"
    )]
    Compare(CompareArgs),
}

// The flags of `ssmkit gen`.
#[derive(clap::Args)]
pub struct GenArgs {
    /// TOML config (see configs/); defaults apply to absent fields
    #[arg(long, required_unless_present = "import")]
    pub config: Option<PathBuf>,
    /// Output directory (Parquet tables + manifest.json)
    #[arg(long)]
    pub out: PathBuf,
    /// Override the config's seed
    #[arg(long, allow_negative_numbers = true)]
    pub seed: Option<u64>,
    /// Override the feature SNR in dB (every curriculum stage too)
    #[arg(long, allow_hyphen_values = true)]
    pub snr: Option<f64>,
    /// Replace an existing output directory
    #[arg(long)]
    pub force: bool,
    /// Import a JSONL file (PoC scenarios or exported sessions) instead of simulating
    #[arg(long, conflicts_with_all = ["config", "seed", "snr"])]
    pub import: Option<PathBuf>,
    /// No progress bar
    #[arg(long)]
    pub quiet: bool,
    /// Store the observed (noisy) feature columns and `mask` too, for readers other
    /// than ssmkit (by default they are rebuilt from the clean columns when read)
    #[arg(long, conflicts_with = "import")]
    pub materialize: bool,
}

// The flags of `ssmkit train`.
#[derive(clap::Args)]
pub struct TrainArgs {
    /// Run config; its [train] section (defaults apply to absent fields)
    #[arg(long, required_unless_present = "dry_run")]
    pub config: Option<PathBuf>,
    /// Dataset directory written by `ssmkit gen`
    #[arg(long, required_unless_present = "dry_run")]
    pub data: Option<PathBuf>,
    /// Run directory: resolved config, metrics.csv, checkpoints, model.bpk
    #[arg(long, required_unless_present = "dry_run")]
    pub run: Option<PathBuf>,
    #[arg(long, value_parser = variant())]
    pub model: Option<Variant>,
    #[arg(long, value_parser = size())]
    pub size: Option<Size>,
    #[arg(long)]
    pub steps: Option<usize>,
    #[arg(long, allow_negative_numbers = true)]
    pub seed: Option<u64>,
    /// cpu (Burn's flex backend), wgpu (needs a build with `--features wgpu`), or auto
    /// (a GPU when the build and the machine have one; says which it picked)
    #[arg(long, value_enum, default_value = "cpu")]
    pub backend: ssmkit::backend::BackendChoice,
    /// Selective scan: fast (one kernel with a hand-written backward: the fused CPU
    /// kernel, or CubeCL kernels on the GPU of a `wgpu` build; the default where it
    /// runs) or reference (the per-turn loop of Burn ops, differentiated by autodiff)
    #[arg(long, value_enum)]
    pub scan: Option<ssmkit::model::mamba::ScanImpl>,
    /// Continue the run in --run from its last checkpoint
    #[arg(long)]
    pub resume: bool,
    /// Also train on this dataset's training turns (repeatable; TSTR's synthetic + real
    /// arm: --data REAL --mix SYNTHETIC). Each keeps its own split; --data's validation
    /// turns select the model, and the run is --data's
    #[arg(long, value_name = "DIR")]
    pub mix: Vec<PathBuf>,
    /// Share of the training steps whose batch comes from the --mix datasets
    #[arg(
        long,
        default_value_t = ssmkit::config::MIX_SHARE,
        requires = "mix",
        allow_negative_numbers = true
    )]
    pub mix_share: f64,
    /// Print the parameter counts of every model and size, and exit
    #[arg(long)]
    pub dry_run: bool,
    #[arg(long)]
    pub quiet: bool,
}

// The flags of `ssmkit metrics`.
#[derive(clap::Args)]
pub struct MetricsArgs {
    pub file: PathBuf,
    /// The top-K cut-off of every metric
    #[arg(long = "k", value_name = "K", default_value_t = 10, value_parser = count(1, 1_000_000), allow_negative_numbers = true)]
    pub cutoff: usize,
    /// Print JSON: {"cases": [{case_id, hr, mrr, dcg, ndcg, precision, recall}…], "mean": {…}}
    #[arg(long)]
    pub json: bool,
}

// The flags of `ssmkit canaries`.
#[derive(clap::Args)]
pub struct CanariesArgs {
    #[arg(long)]
    pub data: PathBuf,
    /// Feature SNR in dB of the probes (repeat for several; default 20)
    #[arg(long, allow_hyphen_values = true)]
    pub snr: Vec<f64>,
    /// Probe sites per canary
    #[arg(long, default_value_t = 32, value_parser = count(1, 100_000))]
    pub probes: usize,
    #[arg(long, allow_negative_numbers = true, default_value_t = 0)]
    pub seed: u64,
    /// Megabytes of users held in memory (a larger dataset is probed on a seeded sample)
    #[arg(long, default_value_t = ssmkit::eval::split::RESIDENT_MB, value_parser = count(1, 1_000_000))]
    pub resident_mb: usize,
    /// Print JSON instead of a table
    #[arg(long)]
    pub json: bool,
}

// The flags of `ssmkit eval`.
#[derive(clap::Args)]
pub struct EvalArgs {
    #[arg(long)]
    pub data: PathBuf,
    /// A trained run directory (repeat the flag for seeds and learned baselines)
    #[arg(long = "run", required = true)]
    pub runs: Vec<PathBuf>,
    /// Report directory (replaced only with --force)
    #[arg(long)]
    pub out: PathBuf,
    #[arg(long)]
    pub force: bool,
    /// The model the gates judge (default: mamba if given, else the first temporal model)
    #[arg(long, value_parser = variant())]
    pub primary: Option<Variant>,
    /// The primary system by its full name, as the report names runs
    /// (`mlp+relative`, `mamba+d_state=4`); takes precedence over --primary
    #[arg(long, value_name = "NAME")]
    pub primary_system: Option<String>,
    /// Resampling unit of the paired statistics
    #[arg(long, value_enum, default_value_t = Unit::User)]
    pub unit: Unit,
    #[arg(long, default_value_t = 10_000, value_parser = count(1, 1_000_000))]
    pub resamples: usize,
    #[arg(long, default_value_t = 10_000, value_parser = count(1, 1_000_000))]
    pub permutations: usize,
    #[arg(long, allow_negative_numbers = true, default_value_t = 0)]
    pub seed: u64,
    /// Users replayed one turn at a time for the latency measurement (0: skip)
    #[arg(long, default_value_t = 4, value_parser = count(0, 10_000))]
    pub latency_users: usize,
    /// Probe sites per canary (each site is scored at every SNR level)
    #[arg(long, default_value_t = 32, value_parser = count(1, 100_000))]
    pub probes: usize,
    /// TSTR: also accept runs trained on other datasets and evaluate them on this
    /// dataset's own test split (they appear as `<model>@<their dataset's SHA>`)
    #[arg(long)]
    pub transfer: bool,
    /// Exit with status 2 when a gate does not pass (NOT MEASURED and INVALID count as not
    /// passing)
    #[arg(long)]
    pub fail_on_gate: bool,
    #[arg(long)]
    pub quiet: bool,
    /// Megabytes of users held in memory: a larger dataset is evaluated on a seeded
    /// sample of its users with a test turn (the report says how many)
    #[arg(long, default_value_t = ssmkit::eval::split::RESIDENT_MB, value_parser = count(1, 1_000_000))]
    pub resident_mb: usize,
}

// The flags of `ssmkit score`.
#[derive(clap::Args)]
pub struct ScoreArgs {
    #[arg(long)]
    pub data: PathBuf,
    /// A trained run directory
    #[arg(long)]
    pub run: PathBuf,
    /// Parquet file to write (replaced only with --force)
    #[arg(long)]
    pub out: PathBuf,
    #[arg(long)]
    pub force: bool,
    /// Users scored, the dataset's first
    #[arg(long, default_value_t = 1000, value_parser = count(1, 100_000_000))]
    pub users: usize,
    /// Megabytes of users held in memory at a time
    #[arg(long, default_value_t = ssmkit::eval::split::RESIDENT_MB, value_parser = count(1, 1_000_000))]
    pub resident_mb: usize,
}

// The flags of `ssmkit run`.
#[derive(clap::Args)]
pub struct RunArgs {
    pub config: PathBuf,
    #[arg(long, default_value = ".")]
    pub root: PathBuf,
    /// Train only shard I of N of the training jobs (1-based), then stop
    #[arg(long, value_name = "I/N")]
    pub shard: Option<String>,
    /// Train nothing: evaluate and export runs that are all finished already
    #[arg(long)]
    pub no_train: bool,
    /// Exit with status 2 unless every gate passes
    #[arg(long)]
    pub fail_on_gate: bool,
    #[arg(long)]
    pub quiet: bool,
}

// The flags of `ssmkit export`.
#[derive(clap::Args)]
pub struct ExportArgs {
    pub run: PathBuf,
    #[arg(long, value_parser = quant(), default_value = "f32")]
    pub quant: Quant,
    #[arg(long)]
    pub out: PathBuf,
    #[arg(long)]
    pub data: Option<PathBuf>,
    #[arg(long, allow_negative_numbers = true)]
    pub max_drop: Option<f64>,
    #[arg(long)]
    pub json: bool,
    /// Replace an existing --out file
    #[arg(long)]
    pub force: bool,
}

// The flags of `ssmkit predict`.
#[derive(clap::Args)]
pub struct PredictArgs {
    pub model: PathBuf,
    /// JSONL turns (default: standard input)
    #[arg(long)]
    pub input: Option<PathBuf>,
    #[arg(long)]
    pub state: Option<PathBuf>,
    /// Replace a --state file that holds another model's (or a damaged) state
    #[arg(long)]
    pub force: bool,
}

// The flags of `ssmkit compare`.
#[derive(clap::Args)]
pub struct CompareArgs {
    pub a: PathBuf,
    pub b: PathBuf,
    #[arg(long, default_value_t = 10_000, value_parser = count(1, 1_000_000))]
    pub resamples: usize,
    #[arg(long, default_value_t = 10_000, value_parser = count(1, 1_000_000))]
    pub permutations: usize,
    #[arg(long, allow_negative_numbers = true, default_value_t = 0)]
    pub seed: u64,
    /// Confidence level of the intervals
    #[arg(long, default_value_t = 0.95)]
    pub confidence: f64,
    /// Resampling unit: each case, or each user's cases together
    #[arg(long, value_enum, default_value_t = Unit::Case)]
    pub unit: Unit,
    #[arg(long)]
    pub json: bool,
}

#[derive(Subcommand)]
pub enum BenchCommand {
    /// Per-turn latency of the runtime (one thread): score K candidates, then fold the turn
    #[command(after_help = "Example:\n  ssmkit bench infer --size small --candidates 20 --json")]
    Infer(InferArgs),
    /// Forward + backward time of the selective scan alone
    #[command(
        after_help = "Example:\n  ssmkit bench scan --batch 32 --d-inner 128 --d-state 16 --len 64 --json"
    )]
    Scan(ScanArgs),
}

// The flags of `ssmkit bench infer`.
#[derive(clap::Args)]
pub struct InferArgs {
    #[arg(long, value_parser = size(), default_value = "small")]
    pub size: Size,
    #[arg(long, value_parser = variant(), default_value = "mamba")]
    pub model: Variant,
    /// The model reads turn-relative features (`[train] relative`)
    #[arg(long)]
    pub relative: bool,
    /// The pointwise branch reads the turn as a set (`[train] set_encoder`)
    #[arg(long)]
    pub set_encoder: bool,
    /// Places picked one at a time (`[train] picks`)
    #[arg(long, default_value_t = 0, value_parser = clap::value_parser!(u64).range(0..=20))]
    pub picks: u64,
    /// Without the keyed state: the pooled backbone alone (the `pooled` ablation)
    #[arg(long)]
    pub pooled: bool,
    /// Hidden units of the pointwise branch (`[train] mlp_hidden`; default: the preset's)
    #[arg(long, value_parser = count(1, ssmkit_format::model::MAX_MLP_HIDDEN as u64))]
    pub mlp_hidden: Option<usize>,
    /// Hidden layers of the pointwise branch (`[train] mlp_layers`; default: the preset's)
    #[arg(long, value_parser = count(1, ssmkit_format::model::MAX_MLP_LAYERS as u64))]
    pub mlp_layers: Option<usize>,
    /// A retrained ablation's model, as `[pipeline] ablations` names it (`real_only`,
    /// `keyed_modes=1+no_selectivity`, …), applied after the flags above
    #[arg(long)]
    pub ablation: Option<String>,
    #[arg(long, default_value_t = 20, value_parser = count(1, 256))]
    pub candidates: usize,
    #[arg(long, value_parser = quant(), default_value = "f32")]
    pub quant: Quant,
    #[arg(long, default_value_t = 5000, value_parser = count(1, 10_000_000))]
    pub turns: usize,
    #[arg(long)]
    pub json: bool,
}

// The flags of `ssmkit bench scan`.
#[derive(clap::Args)]
pub struct ScanArgs {
    #[arg(long, default_value_t = 32, value_parser = count(1, 4096))]
    pub batch: usize,
    #[arg(long, default_value_t = 128, value_parser = count(1, 4096))]
    pub d_inner: usize,
    #[arg(long, default_value_t = 16, value_parser = count(1, 256))]
    pub d_state: usize,
    #[arg(long, default_value_t = 64, value_parser = count(1, 4096))]
    pub len: usize,
    /// `fast`: the fused kernel with its hand-written backward; `reference`: the
    /// per-timestep loop of Burn ops
    #[arg(long = "impl", value_enum, default_value = "fast")]
    pub implementation: ssmkit::model::mamba::ScanImpl,
    /// cpu, wgpu (needs a build with `--features wgpu`) or auto
    #[arg(long, value_enum, default_value = "cpu")]
    pub backend: ssmkit::backend::BackendChoice,
    #[arg(long, default_value_t = 20, value_parser = count(1, 10_000))]
    pub repeats: usize,
    #[arg(long)]
    pub json: bool,
}

/// A parser of a whole number in `lo..=hi`; the error names the flag and the range.
fn count(lo: u64, hi: u64) -> clap::builder::RangedU64ValueParser<usize> {
    clap::builder::RangedU64ValueParser::<usize>::new().range(lo..=hi)
}

/// A parser for one of `all`, each value named by `name` and described by `help`. The
/// library's enums stay free of clap, so the command line lists their values here.
fn choices<T: Copy + Send + Sync + 'static>(
    all: &'static [T],
    name: fn(T) -> &'static str,
    help: fn(T) -> Option<&'static str>,
) -> impl TypedValueParser<Value = T> {
    let values = all.iter().map(move |&v| {
        let value = PossibleValue::new(name(v));
        match help(v) {
            Some(h) => value.help(h),
            None => value,
        }
    });
    PossibleValuesParser::new(values).map(move |s: String| {
        *all.iter()
            .find(|&&v| name(v) == s)
            .expect("the parser accepts only listed values")
    })
}

fn variant() -> impl TypedValueParser<Value = Variant> {
    choices(&Variant::ALL, Variant::name, |v| Some(v.about()))
}

fn size() -> impl TypedValueParser<Value = Size> {
    choices(&Size::ALL, Size::name, |_| None)
}

fn quant() -> impl TypedValueParser<Value = Quant> {
    choices(&Quant::ALL, Quant::name, |_| None)
}
