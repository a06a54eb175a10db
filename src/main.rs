//! The `ssmkit` command line: parse, then call one library function per subcommand.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use ssmkit::config::Config;
use ssmkit::datagen::{self, GenOptions};

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
}

fn run(cli: Cli) -> anyhow::Result<()> {
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
    }
    Ok(())
}

fn main() -> ExitCode {
    match run(Cli::parse()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            let chain: Vec<String> = e.chain().map(|c| c.to_string()).collect();
            eprintln!("error: {}", chain.join(": "));
            ExitCode::FAILURE
        }
    }
}
