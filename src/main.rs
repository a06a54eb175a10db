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
        /// Exit with status 2 when a gate does not pass (NOT MEASURED counts as not passing)
        #[arg(long)]
        fail_on_gate: bool,
        #[arg(long)]
        quiet: bool,
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
            let v = train::train(&cfg.train, &opts)?;
            println!(
                "trained {}: validation loss {:.4}, DCG@10 {:.4}, HR@10 {:.4}, nDCG@10 {:.4}",
                opts.run.display(),
                v.loss,
                v.dcg10,
                v.hr10,
                v.ndcg10
            );
            use ssmkit::model::baselines::Baseline;
            let data = ssmkit::data::Dataset::load(&opts.data)?;
            for kind in [Baseline::Heuristic, Baseline::Random, Baseline::Oracle] {
                let b = train::baseline_validation(&data, &cfg.train, kind, opts.seed);
                println!(
                    "  same validation turns, {:<9} DCG@10 {:.4}, HR@10 {:.4}, nDCG@10 {:.4}",
                    format!("{kind:?}").to_lowercase(),
                    b.dcg10,
                    b.hr10,
                    b.ndcg10
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
                unit,
                compare: CompareOptions {
                    resamples,
                    permutations,
                    seed,
                    confidence: 0.95,
                },
                latency_users,
                probes_per_canary: probes,
                quiet,
            };
            let r = eval::phase::evaluate(&opts)?;
            println!(
                "{} GTS cases, {} LOO cases; primary model {}; report in {}",
                r.n_gts,
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

fn main() -> ExitCode {
    match run(Cli::parse()) {
        Ok(code) => code,
        Err(e) => {
            let chain: Vec<String> = e.chain().map(|c| c.to_string()).collect();
            eprintln!("error: {}", chain.join(": "));
            ExitCode::FAILURE
        }
    }
}
