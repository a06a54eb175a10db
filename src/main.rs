//! The `ssmkit` command line: parse, then call one library function per subcommand.

use std::path::PathBuf;
use std::process::ExitCode;

use burn::module::Module;
use clap::{Parser, Subcommand};
use ssmkit::config::Config;
use ssmkit::datagen::{self, GenOptions};
use ssmkit::eval::{self, Unit, stats::CompareOptions};
use ssmkit::model::scorer::{ModelConfig, Size, Variant};
use ssmkit::train::{self, TrainOptions};

#[derive(Parser)]
#[command(
    name = "ssmkit",
    version,
    about = "Train and validate small state-space models for agent memory"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Generate a synthetic dataset with planted ground truth (or import JSONL)
    #[command(after_help = "Examples:\n  \
        ssmkit gen --config configs/quick.toml --out data/quick\n  \
        ssmkit gen --config configs/quick.toml --out data/quick-10db --snr 10 --seed 3 --force\n  \
        ssmkit gen --import scenarios.jsonl --out data/poc-llm")]
    Gen {
        /// TOML config (see configs/); defaults apply to absent fields
        #[arg(long, required_unless_present = "import")]
        config: Option<PathBuf>,
        /// Output directory (Parquet tables + manifest.json)
        #[arg(long)]
        out: PathBuf,
        /// Override the config's seed
        #[arg(long)]
        seed: Option<u64>,
        /// Override the feature SNR in dB (every curriculum stage too)
        #[arg(long, allow_hyphen_values = true)]
        snr: Option<f64>,
        /// Replace an existing output directory
        #[arg(long)]
        force: bool,
        /// Import a JSONL file (PoC scenarios or exported sessions) instead of simulating
        #[arg(long, conflicts_with_all = ["config", "seed", "snr"])]
        import: Option<PathBuf>,
        /// No progress bar
        #[arg(long)]
        quiet: bool,
    },
    /// Train a model (or a learned baseline) on a generated dataset
    #[command(after_help = "Examples:\n  \
        ssmkit train --config configs/quick.toml --data data/quick --run runs/quick-mamba\n  \
        ssmkit train --config configs/quick.toml --data data/quick --run runs/quick-s4d --model s4d --seed 2\n  \
        ssmkit train --config configs/quick.toml --data data/quick --run runs/quick-mamba --resume\n  \
        ssmkit train --dry-run")]
    Train {
        /// Run config; its [train] section (defaults apply to absent fields)
        #[arg(long, required_unless_present = "dry_run")]
        config: Option<PathBuf>,
        /// Dataset directory written by `ssmkit gen`
        #[arg(long, required_unless_present = "dry_run")]
        data: Option<PathBuf>,
        /// Run directory: resolved config, metrics.csv, checkpoints, model.bpk
        #[arg(long, required_unless_present = "dry_run")]
        run: Option<PathBuf>,
        #[arg(long, value_enum)]
        model: Option<Variant>,
        #[arg(long, value_enum)]
        size: Option<Size>,
        #[arg(long)]
        steps: Option<usize>,
        #[arg(long)]
        seed: Option<u64>,
        /// cpu (Burn's flex backend), wgpu (needs a build with `--features wgpu`), or auto
        /// (a GPU when the build and the machine have one; says which it picked)
        #[arg(long, value_enum, default_value = "cpu")]
        backend: ssmkit::backend::BackendChoice,
        /// Selective scan: fast (the fused CPU kernel, default on CPU) or reference (the
        /// per-turn loop of Burn ops, differentiated by autodiff)
        #[arg(long, value_enum)]
        scan: Option<ssmkit::model::mamba::ScanImpl>,
        /// Continue the run in --run from its last checkpoint
        #[arg(long)]
        resume: bool,
        /// Print the parameter counts of every model and size, and exit
        #[arg(long)]
        dry_run: bool,
        #[arg(long)]
        quiet: bool,
    },
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
    Metrics {
        file: PathBuf,
        #[arg(long, default_value_t = 10)]
        k: usize,
        /// Print JSON: {"cases": [{case_id, hr, mrr, dcg, ndcg, precision, recall}…], "mean": {…}}
        #[arg(long)]
        json: bool,
    },
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
    Eval {
        #[arg(long)]
        data: PathBuf,
        /// A trained run directory (repeat the flag for seeds and learned baselines)
        #[arg(long = "run", required = true)]
        runs: Vec<PathBuf>,
        /// Report directory (replaced only with --force)
        #[arg(long)]
        out: PathBuf,
        #[arg(long)]
        force: bool,
        /// The model the gates judge (default: mamba if given, else the first temporal model)
        #[arg(long, value_enum)]
        primary: Option<Variant>,
        /// Resampling unit of the paired statistics
        #[arg(long, value_enum, default_value_t = Unit::User)]
        unit: Unit,
        #[arg(long, default_value_t = 10_000)]
        resamples: usize,
        #[arg(long, default_value_t = 10_000)]
        permutations: usize,
        #[arg(long, default_value_t = 0)]
        seed: u64,
        /// Users replayed one turn at a time for the latency measurement (0: skip)
        #[arg(long, default_value_t = 4)]
        latency_users: usize,
        /// Probe sites per canary (each site is scored at every SNR level)
        #[arg(long, default_value_t = 32)]
        probes: usize,
        /// TSTR: also accept runs trained on other datasets and evaluate them on this
        /// dataset's own test split (they appear as `<model>@<their dataset's SHA>`)
        #[arg(long)]
        transfer: bool,
        /// Exit with status 2 when a gate does not pass (NOT MEASURED and INVALID count as not
        /// passing)
        #[arg(long)]
        fail_on_gate: bool,
        #[arg(long)]
        quiet: bool,
    },
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
    Run {
        config: PathBuf,
        #[arg(long, default_value = ".")]
        root: PathBuf,
        /// Train only shard I of N of the training jobs (1-based), then stop
        #[arg(long, value_name = "I/N")]
        shard: Option<String>,
        /// Train nothing: evaluate and export runs that are all finished already
        #[arg(long)]
        no_train: bool,
        /// Exit with status 2 unless every gate passes
        #[arg(long)]
        fail_on_gate: bool,
        #[arg(long)]
        quiet: bool,
    },
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
    Export {
        run: PathBuf,
        #[arg(long, value_enum, default_value = "f32")]
        quant: ssmkit::export::Quant,
        #[arg(long)]
        out: PathBuf,
        #[arg(long)]
        data: Option<PathBuf>,
        #[arg(long)]
        max_drop: Option<f64>,
        #[arg(long)]
        json: bool,
        /// Replace an existing --out file
        #[arg(long)]
        force: bool,
    },
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
    Predict {
        model: PathBuf,
        /// JSONL turns (default: standard input)
        #[arg(long)]
        input: Option<PathBuf>,
        #[arg(long)]
        state: Option<PathBuf>,
        /// Replace a --state file that holds another model's (or a damaged) state
        #[arg(long)]
        force: bool,
    },
    /// Paired comparison of two systems: BCa bootstrap CI of mean(A − B) and sign-flip test
    #[command(
        after_help = "A and B are CSV (or .parquet) with columns case_id,value (and user_id for
        --unit user), one row per case; every case_id must appear once in each file.
        Significant means: BCa lower bound > 0 and p < 0.05.

        Examples:
          ssmkit compare ssm_hr10.csv heuristic_hr10.csv
          ssmkit compare a.csv b.csv --resamples 10000 --permutations 10000 --seed 7 --unit user --json"
    )]
    Compare {
        a: PathBuf,
        b: PathBuf,
        #[arg(long, default_value_t = 10_000)]
        resamples: usize,
        #[arg(long, default_value_t = 10_000)]
        permutations: usize,
        #[arg(long, default_value_t = 0)]
        seed: u64,
        /// Confidence level of the intervals
        #[arg(long, default_value_t = 0.95)]
        confidence: f64,
        /// Resampling unit: each case, or each user's cases together
        #[arg(long, value_enum, default_value_t = Unit::Case)]
        unit: Unit,
        #[arg(long)]
        json: bool,
    },
}

#[derive(Subcommand)]
enum BenchCommand {
    /// Per-turn latency of the runtime (one thread): score K candidates, then fold the turn
    #[command(after_help = "Example:\n  ssmkit bench infer --size small --candidates 20 --json")]
    Infer {
        #[arg(long, value_enum, default_value = "small")]
        size: Size,
        #[arg(long, value_enum, default_value = "mamba")]
        model: Variant,
        /// The model reads turn-relative features (`[train] relative`)
        #[arg(long)]
        relative: bool,
        #[arg(long, default_value_t = 20)]
        candidates: usize,
        #[arg(long, value_enum, default_value = "f32")]
        quant: ssmkit::export::Quant,
        #[arg(long, default_value_t = 5000)]
        turns: usize,
        #[arg(long)]
        json: bool,
    },
    /// Forward + backward time of the selective scan alone
    #[command(
        after_help = "Example:\n  ssmkit bench scan --batch 32 --d-inner 128 --d-state 16 --len 64 --json"
    )]
    Scan {
        #[arg(long, default_value_t = 32)]
        batch: usize,
        #[arg(long, default_value_t = 128)]
        d_inner: usize,
        #[arg(long, default_value_t = 16)]
        d_state: usize,
        #[arg(long, default_value_t = 64)]
        len: usize,
        /// `fast`: the fused kernel with its hand-written backward; `reference`: the
        /// per-timestep loop of Burn ops
        #[arg(long = "impl", value_enum, default_value = "fast")]
        implementation: ssmkit::model::mamba::ScanImpl,
        #[arg(long, default_value_t = 20)]
        repeats: usize,
        #[arg(long)]
        json: bool,
    },
}

fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    match cli.command {
        Command::Gen {
            config,
            out,
            seed,
            snr,
            force,
            import,
            quiet,
        } => {
            let opts = GenOptions { out, force, quiet };
            let summary = if let Some(input) = import {
                datagen::import::import(&input, &opts)?
            } else {
                let path = config.expect("clap requires --config without --import");
                let mut config = Config::load(&path)?;
                if let Some(seed) = seed {
                    config.seed = seed;
                }
                if let Some(snr) = snr {
                    config.noise.snr_db = Some(snr);
                    for stage in &mut config.curriculum.stages {
                        stage.snr_db = snr;
                    }
                }
                datagen::generate(&config, &opts)?
            };
            println!(
                "wrote {}: {} users, {} turns, {} candidates",
                summary.out.display(),
                summary.users,
                summary.turns,
                summary.candidates
            );
        }
        Command::Train {
            config,
            data,
            run,
            model,
            size,
            steps,
            seed,
            backend,
            scan,
            resume,
            dry_run,
            quiet,
        } => {
            if dry_run {
                println!(
                    "{:<8} {:>10} {:>10} {:>10}",
                    "model", "tiny", "small", "medium"
                );
                for v in Variant::ALL {
                    let counts: Vec<usize> = [Size::Tiny, Size::Small, Size::Medium]
                        .iter()
                        .map(|&s| {
                            ModelConfig::sized(v, s, 16, 4096)
                                .init(0, &burn::prelude::Device::flex())
                                .num_params()
                        })
                        .collect();
                    println!(
                        "{:<8} {:>10} {:>10} {:>10}",
                        v.name(),
                        counts[0],
                        counts[1],
                        counts[2]
                    );
                }
                return Ok(ExitCode::SUCCESS);
            }
            let path = config.expect("required");
            let mut cfg = Config::load(&path)?;
            if let Some(m) = model {
                cfg.train.model = m;
            }
            if let Some(s) = size {
                cfg.train.size = s;
            }
            if let Some(s) = steps {
                cfg.train.steps = s;
            }
            let opts = TrainOptions {
                data: data.expect("required"),
                run: run.expect("required"),
                seed: seed.unwrap_or(cfg.seed),
                resume,
                quiet,
                stop_after: None,
                backend,
                scan,
            };
            // One load serves the training and the baselines printed after it.
            cfg.train.validate()?;
            let data = ssmkit::data::Dataset::load(&opts.data)?;
            let v = train::train_on(&data, &cfg.train, &opts)?;
            let state = train::read_run_state(&opts.run)?;
            println!(
                "trained {}: step {}{}, validation loss {:.4}, DCG@10 {:.4}, HR@10 {:.4}, nDCG@10 {:.4}",
                opts.run.display(),
                state.step,
                if state.stopped_early {
                    " (stopped early)"
                } else {
                    ""
                },
                v.loss,
                v.dcg10,
                v.hr10,
                v.ndcg10
            );
            println!(
                "  the run's model: best validation DCG@10 {:.4}, at step {}",
                state.best_dcg10, state.best_step
            );
            use ssmkit::model::baselines::Baseline;
            let mut rows = Vec::new();
            for kind in [Baseline::Heuristic, Baseline::Random, Baseline::Oracle] {
                let name = format!("{kind:?}").to_lowercase();
                rows.push((
                    name,
                    train::baseline_validation(&data, &cfg.train, kind, opts.seed),
                ));
            }
            for (rule, b) in train::history_validations(&data, &cfg.train) {
                rows.push((rule.name().to_string(), b));
            }
            for (name, b) in rows {
                println!(
                    "  same validation turns, {name:<13} DCG@10 {:.4}, HR@10 {:.4}, nDCG@10 {:.4}",
                    b.dcg10, b.hr10, b.ndcg10
                );
            }
        }
        Command::Bench {
            what:
                BenchCommand::Scan {
                    batch,
                    d_inner,
                    d_state,
                    len,
                    implementation,
                    repeats,
                    json,
                },
        } => {
            if batch == 0 || d_inner == 0 || d_state == 0 || len == 0 || repeats == 0 {
                anyhow::bail!(
                    "--batch, --d-inner, --d-state, --len and --repeats must be at least 1"
                );
            }
            let r = ssmkit::bench::scan(implementation, batch, d_inner, d_state, len, repeats);
            if json {
                println!("{}", serde_json::to_string_pretty(&r)?);
            } else {
                println!(
                    "selective scan ({}, {}), batch {batch}, d_inner {d_inner}, d_state {d_state}, len {len}: forward+backward {:.2} ms (median of {repeats}, min {:.2}), forward {:.2} ms",
                    r.implementation, r.backend, r.fwd_bwd_ms, r.fwd_bwd_min_ms, r.fwd_ms
                );
            }
        }
        Command::Bench {
            what:
                BenchCommand::Infer {
                    size,
                    model,
                    relative,
                    candidates,
                    quant,
                    turns,
                    json,
                },
        } => {
            if candidates == 0 || turns == 0 {
                anyhow::bail!("--candidates and --turns must be at least 1");
            }
            let r = ssmkit::bench::infer(model, size, relative, candidates, quant, turns)?;
            if json {
                println!("{}", serde_json::to_string_pretty(&r)?);
            } else {
                println!(
                    "runtime, {} {} ({}), K = {candidates}, {turns} turns, one thread: p50 {:.1} µs, p95 {:.1} µs, p99 {:.1} µs; state {} bytes, file {} bytes",
                    r.model,
                    r.size,
                    r.quantization,
                    r.p50_us,
                    r.p95_us,
                    r.p99_us,
                    r.state_bytes,
                    r.file_bytes
                );
            }
        }
        Command::Export {
            run,
            quant,
            out,
            data,
            max_drop,
            json,
            force,
        } => {
            let r = ssmkit::export::export_run(&ssmkit::export::ExportOptions {
                run,
                quant,
                out,
                data,
                force,
                max_drop,
            })?;
            if json {
                println!("{}", serde_json::to_string_pretty(&r)?);
            } else {
                println!("wrote {} ({}):", r.out.display(), r.quantization);
                for (g, b) in &r.sizes.groups {
                    println!("  {g:<32} {b:>10} bytes");
                }
                println!(
                    "  {:<32} {:>10} bytes (file {} bytes); state {} bytes",
                    "tensors", r.sizes.tensor_bytes, r.sizes.file_bytes, r.state_bytes
                );
                if r.history_entry_bytes > 0 {
                    println!(
                        "  the state grows by {} bytes per memory in the user's history table (at most {} memories: {} bytes)",
                        r.history_entry_bytes,
                        r.history_max_entries,
                        r.state_bytes + r.history_entry_bytes * r.history_max_entries
                    );
                }
                if let Some(v) = &r.verification {
                    println!(
                        "  verified on {} test cases: DCG@10 {:.4} (Burn) vs {:.4} (export), drop {:.3}%; top-10 agreement {:.4}; max |score difference| {:.2e}",
                        v.cases,
                        v.burn_dcg10,
                        v.export_dcg10,
                        100.0 * v.relative_drop,
                        v.top10_agreement,
                        v.max_abs_diff
                    );
                }
            }
        }
        Command::Run {
            config,
            root,
            shard,
            no_train,
            fail_on_gate,
            quiet,
        } => {
            let shard = shard
                .as_deref()
                .map(ssmkit::pipeline::parse_shard)
                .transpose()?;
            let r = ssmkit::pipeline::run(&ssmkit::pipeline::RunOptions {
                config,
                root,
                quiet,
                shard,
                no_train,
            })?;
            for s in &r.reused {
                println!("reused: {s}");
            }
            println!("dataset  {}", r.data.display());
            for run in &r.runs {
                println!("run      {}", run.display());
            }
            if let Some((i, n)) = r.shard {
                println!("shard {}/{n} trained; no eval or export in a shard", i + 1);
                return Ok(ExitCode::SUCCESS);
            }
            println!("report   {}", r.report.join("report.html").display());
            let gates = r.report.join("gates.json");
            let v: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&gates)?)?;
            for g in v["gates"].as_array().into_iter().flatten() {
                let value = g["value"]
                    .as_f64()
                    .map_or("—".to_string(), |v| format!("{v:.4}"));
                println!(
                    "  [{}] {} (phase {}): {value}",
                    g["status"].as_str().unwrap_or("?"),
                    g["name"].as_str().unwrap_or("?"),
                    g["phase"].as_str().unwrap_or("?")
                );
            }
            for e in &r.exports {
                println!("export   {}", e.display());
            }
            if fail_on_gate && !r.all_gates_passed {
                eprintln!("a phase gate did not pass (--fail-on-gate)");
                return Ok(ExitCode::from(2));
            }
        }
        Command::Predict {
            model,
            input,
            state,
            force,
        } => {
            predict(&model, input.as_deref(), state.as_deref(), force)?;
        }
        Command::Metrics { file, k, json } => {
            let report = eval::metrics_file(&file, k)?;
            if json {
                println!("{}", serde_json::to_string_pretty(&report)?);
            } else {
                print!("{}", report.to_text());
            }
        }
        Command::Compare {
            a,
            b,
            resamples,
            permutations,
            seed,
            confidence,
            unit,
            json,
        } => {
            let opts = CompareOptions {
                resamples,
                permutations,
                seed,
                confidence,
            };
            let c = eval::compare_files(&a, &b, unit, &opts)?;
            if json {
                println!("{}", serde_json::to_string_pretty(&c)?);
            } else {
                print!("{}", c.to_text());
            }
        }
        Command::Eval {
            data,
            runs,
            out,
            force,
            primary,
            unit,
            resamples,
            permutations,
            seed,
            latency_users,
            probes,
            transfer,
            fail_on_gate,
            quiet,
        } => {
            if resamples == 0 || permutations == 0 {
                anyhow::bail!("--resamples and --permutations must be at least 1");
            }
            let opts = eval::phase::EvalOptions {
                data,
                runs,
                out,
                force,
                primary,
                primary_system: None,
                unit,
                compare: CompareOptions {
                    resamples,
                    permutations,
                    seed,
                    confidence: 0.95,
                },
                latency_users,
                probes_per_canary: probes,
                transfer,
                quiet,
            };
            let r = eval::phase::evaluate(&opts)?;
            println!(
                "{} GTS cases from {} users ({} with history), {} LOO cases; primary model {}; report in {}",
                r.n_gts,
                r.test_set.users,
                r.test_set.warm_users,
                r.n_loo,
                r.primary,
                r.out.display()
            );
            for g in &r.gates {
                let v = g.value.map_or("—".to_string(), |v| format!("{v:.4}"));
                println!("  [{}] {} (phase {}): {v}", g.status, g.name, g.phase);
            }
            if fail_on_gate && !r.all_passed() {
                eprintln!("a phase gate did not pass (--fail-on-gate)");
                return Ok(ExitCode::from(2));
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// `ssmkit predict`: JSONL turns in, JSONL scores out, the state carried in a file.
fn predict(
    model: &std::path::Path,
    input: Option<&std::path::Path>,
    state_path: Option<&std::path::Path>,
    force: bool,
) -> anyhow::Result<()> {
    use ssmkit::runtime::{Runtime, State, jsonl::parse_turn};
    use std::io::{BufRead, Write};
    let rt = Runtime::load(model)?;
    // A state file this model cannot read (another model's, or damaged) is left as it is
    // unless --force says to replace it.
    let mut save_to = state_path;
    let mut state = match state_path.filter(|p| p.exists()) {
        Some(p) => {
            let bytes = std::fs::read(p).map_err(|e| anyhow::anyhow!("{}: {e}", p.display()))?;
            match State::from_bytes(&bytes, &rt.fingerprint, rt.state_len()) {
                Ok(_) => {
                    let (s, warning) = rt.restore(&bytes);
                    if let Some(w) = warning {
                        eprintln!("warning: {}: {w}", p.display());
                    }
                    s
                }
                Err(why) => {
                    let fate = if force {
                        "it will be replaced (--force)"
                    } else {
                        save_to = None;
                        "it is left untouched and this run's state is not saved (--force replaces it)"
                    };
                    eprintln!(
                        "warning: {}: {why}; starting from the default state; {fate}",
                        p.display()
                    );
                    rt.zero_state()
                }
            }
        }
        None => rt.zero_state(),
    };
    let reader: Box<dyn BufRead> = match input {
        Some(p) => Box::new(std::io::BufReader::new(
            std::fs::File::open(p).map_err(|e| anyhow::anyhow!("{}: {e}", p.display()))?,
        )),
        None => Box::new(std::io::stdin().lock()),
    };
    let name = input.map_or("stdin".to_string(), |p| p.display().to_string());
    let mut out = std::io::BufWriter::new(std::io::stdout().lock());
    let mut n = 0usize;
    for (i, line) in reader.lines().enumerate() {
        let line = line.map_err(|e| anyhow::anyhow!("{name}: line {}: {e}", i + 1))?;
        if line.trim().is_empty() {
            continue;
        }
        let (turn, labels) =
            parse_turn(&line).map_err(|e| anyhow::anyhow!("{name}: line {}: {e}", i + 1))?;
        rt.check(&turn)
            .map_err(|e| anyhow::anyhow!("{name}: line {}: {e}", i + 1))?;
        let scores = rt.score(&state, &turn);
        writeln!(out, "{}", serde_json::json!({"turn": n, "scores": scores}))?;
        let labels = labels.unwrap_or_else(|| vec![0.0; turn.candidates.len()]);
        rt.observe(&mut state, &turn, &labels);
        n += 1;
    }
    out.flush()?;
    if state.values.iter().any(|v| !v.is_finite()) {
        anyhow::bail!("the state became non-finite: nothing saved");
    }
    if let Some(p) = save_to {
        ssmkit::train::checkpoint::write_atomic(p, &state.to_bytes(&rt.fingerprint))?;
    }
    Ok(())
}

fn main() -> ExitCode {
    match run(Cli::parse()) {
        Ok(code) => code,
        Err(e) => {
            // Each cause once: an error that already quotes its source is not followed by it.
            let mut line = String::new();
            for cause in e.chain().map(|c| c.to_string()) {
                if !line.contains(&cause) {
                    if !line.is_empty() {
                        line.push_str(": ");
                    }
                    line.push_str(&cause);
                }
            }
            eprintln!("error: {line}");
            ExitCode::FAILURE
        }
    }
}
