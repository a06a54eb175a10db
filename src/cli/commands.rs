//! One function per subcommand: each turns the parsed flags into a library call and
//! prints its result.

use std::process::ExitCode;

use ssmkit::config::Config;
use ssmkit::datagen::{self, GenOptions};
use ssmkit::eval::{self, stats::CompareOptions, verdict::Verdict};
use ssmkit::train::{self, TrainOptions};

use super::args::{
    BenchCommand, CanariesArgs, Cli, Command, CompareArgs, EvalArgs, ExportArgs, GenArgs,
    InferArgs, MetricsArgs, PredictArgs, RunArgs, ScanArgs, ScoreArgs, TrainArgs,
};

pub fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    match cli.command {
        Command::Gen(args) => generate(args),
        Command::Train(args) => train(args),
        Command::Bench {
            what: BenchCommand::Scan(args),
        } => bench_scan(args),
        Command::Bench {
            what: BenchCommand::Infer(args),
        } => bench_infer(args),
        Command::Export(args) => export(args),
        Command::Run(args) => run_all(args),
        Command::Predict(args) => predict(args),
        Command::Metrics(args) => metrics(args),
        Command::Canaries(args) => canaries(args),
        Command::Compare(args) => compare(args),
        Command::Eval(args) => eval(args),
        Command::Score(args) => score(args),
    }
}

fn generate(args: GenArgs) -> anyhow::Result<ExitCode> {
    let GenArgs {
        config,
        out,
        seed,
        snr,
        force,
        import,
        quiet,
        materialize,
    } = args;
    let opts = GenOptions {
        out,
        force,
        quiet,
        materialize,
    };
    let summary = if let Some(input) = import {
        datagen::import::import(&input, &opts)?
    } else {
        let path = config.expect("clap requires --config without --import");
        let mut config = Config::load(&path)?;
        if let Some(seed) = seed {
            config.seed = seed;
        }
        if let Some(snr) = snr {
            config.set_snr(snr);
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
    if summary.anonymous > 0 {
        eprintln!(
            "warning: {} of {} timestamped lines have no user_id: each became a user of one turn",
            summary.anonymous, summary.turns
        );
    }
    Ok(ExitCode::SUCCESS)
}

fn train(args: TrainArgs) -> anyhow::Result<ExitCode> {
    let TrainArgs {
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
        mix,
        mix_share,
        dry_run,
        quiet,
    } = args;
    if dry_run {
        println!(
            "{:<8} {:>10} {:>10} {:>10}",
            "model", "tiny", "small", "medium"
        );
        for (v, counts) in ssmkit::model::param_counts() {
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
        resume,
        quiet,
        backend,
        scan,
        mix,
        mix_share,
        ..TrainOptions::new(
            data.expect("required"),
            run.expect("required"),
            seed.unwrap_or(cfg.seed),
        )
    };
    // The baselines printed after training score the same validation users.
    let trained = train::train_validated(&cfg.train, &opts)?;
    let v = trained.last;
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
    for (name, b) in
        train::reference_validations(&trained.validation_users, &trained.cutoffs, opts.seed)
    {
        println!(
            "  same validation turns, {name:<13} DCG@10 {:.4}, HR@10 {:.4}, nDCG@10 {:.4}",
            b.dcg10, b.hr10, b.ndcg10
        );
    }
    Ok(ExitCode::SUCCESS)
}

fn bench_scan(args: ScanArgs) -> anyhow::Result<ExitCode> {
    let ScanArgs {
        batch,
        d_inner,
        d_state,
        len,
        implementation,
        backend,
        repeats,
        json,
    } = args;
    if batch == 0 || d_inner == 0 || d_state == 0 || len == 0 || repeats == 0 {
        anyhow::bail!("--batch, --d-inner, --d-state, --len and --repeats must be at least 1");
    }
    // The scan holds a state per (batch, step, channel, state dimension).
    let elements = batch * len * d_inner * d_state;
    if elements > 1 << 28 {
        anyhow::bail!(
            "--batch × --len × --d-inner × --d-state is {elements}: more than {} state values to hold",
            1u64 << 28
        );
    }
    let device = ssmkit::backend::select(backend)?;
    let r = ssmkit::bench::scan(
        implementation,
        device,
        batch,
        d_inner,
        d_state,
        len,
        repeats,
    );
    if json {
        println!("{}", serde_json::to_string_pretty(&r)?);
    } else {
        println!(
            "selective scan ({}, {}), batch {batch}, d_inner {d_inner}, d_state {d_state}, len {len}: forward+backward {:.2} ms (median of {repeats}, min {:.2}), forward {:.2} ms",
            r.implementation, r.backend, r.fwd_bwd_ms, r.fwd_bwd_min_ms, r.fwd_ms
        );
    }
    Ok(ExitCode::SUCCESS)
}

fn bench_infer(args: InferArgs) -> anyhow::Result<ExitCode> {
    let InferArgs {
        size,
        model,
        relative,
        set_encoder,
        picks,
        pooled,
        mlp_hidden,
        mlp_layers,
        ablation,
        candidates,
        quant,
        turns,
        json,
    } = args;
    if candidates == 0 || turns == 0 {
        anyhow::bail!("--candidates and --turns must be at least 1");
    }
    let options = ssmkit::bench::InferModel {
        variant: model,
        size,
        relative,
        set_encoder,
        picks: picks as usize,
        mlp_hidden,
        mlp_layers,
        // `--pooled` is the `pooled` ablation, joined to any other.
        ablation: match (pooled, ablation) {
            (true, Some(a)) => Some(format!("pooled+{a}")),
            (true, None) => Some("pooled".into()),
            (false, a) => a,
        },
    };
    let r = ssmkit::bench::infer(&options, candidates, quant, turns)?;
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
    Ok(ExitCode::SUCCESS)
}

fn export(args: ExportArgs) -> anyhow::Result<ExitCode> {
    let ExportArgs {
        run,
        quant,
        out,
        data,
        max_drop,
        json,
        force,
    } = args;
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
    Ok(ExitCode::SUCCESS)
}

fn run_all(args: RunArgs) -> anyhow::Result<ExitCode> {
    let RunArgs {
        config,
        root,
        shard,
        no_train,
        fail_on_gate,
        quiet,
    } = args;
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
    print_verdict(&r.verdict);
    for e in &r.exports {
        println!("export   {}", e.display());
    }
    if let Some(t) = &r.tstr {
        println!("real     {}", t.data.display());
        for run in &t.runs {
            println!("run      {}", run.display());
        }
        println!("tstr     {}", t.report.join("report.html").display());
        for g in t.gates.iter().filter(|g| g.name.starts_with("TSTR")) {
            let value = g.value.map_or("—".to_string(), |v| format!("{v:.4}"));
            let ci = match (g.ci_low, g.ci_high) {
                (Some(lo), Some(hi)) => format!(" [{lo:.4}, {hi:.4}]"),
                _ => String::new(),
            };
            println!("  {} {}: {value}{ci}", g.status, g.name);
        }
    }
    if fail_on_gate && !r.all_gates_passed {
        eprintln!("a phase gate did not pass (--fail-on-gate)");
        return Ok(ExitCode::from(2));
    }
    Ok(ExitCode::SUCCESS)
}

/// `ssmkit predict`.
fn predict(args: PredictArgs) -> anyhow::Result<ExitCode> {
    let PredictArgs {
        model,
        input,
        state,
        force,
    } = args;
    predict_turns(&model, input.as_deref(), state.as_deref(), force)?;
    Ok(ExitCode::SUCCESS)
}

fn metrics(args: MetricsArgs) -> anyhow::Result<ExitCode> {
    let MetricsArgs { file, cutoff, json } = args;
    let report = eval::metrics_file(&file, cutoff)?;
    show(&report, json, |r| r.to_text())
}

fn score(args: ScoreArgs) -> anyhow::Result<ExitCode> {
    let ScoreArgs {
        data,
        run,
        out,
        force,
        users,
        resident_mb,
    } = args;
    let reader = ssmkit::data::DatasetReader::open(&data)?;
    let s = ssmkit::eval::scoring::write_scores(&reader, &run, users, resident_mb, &out, force)?;
    println!(
        "scored {} turns of {} users: {} candidates in {}",
        s.turns,
        s.users,
        s.rows,
        out.display()
    );
    Ok(ExitCode::SUCCESS)
}

fn canaries(args: CanariesArgs) -> anyhow::Result<ExitCode> {
    let CanariesArgs {
        data,
        snr,
        probes,
        seed,
        resident_mb,
        json,
    } = args;
    if let Some(d) = snr.iter().find(|d| !(-40.0..=100.0).contains(*d)) {
        anyhow::bail!("--snr {d:?}: expected a number of dB in -40..=100");
    }
    let levels: Vec<Option<f64>> = if snr.is_empty() {
        vec![Some(20.0)]
    } else {
        snr.into_iter().map(Some).collect()
    };
    let suites = eval::reference_canaries(&data, probes, &levels, resident_mb, seed)?;
    if json {
        println!("{}", serde_json::to_string_pretty(&suites)?);
    } else {
        for s in &suites {
            print!("{}", s.to_text());
        }
    }
    Ok(ExitCode::SUCCESS)
}

fn compare(args: CompareArgs) -> anyhow::Result<ExitCode> {
    let CompareArgs {
        a,
        b,
        resamples,
        permutations,
        seed,
        confidence,
        unit,
        json,
    } = args;
    let opts = CompareOptions {
        resamples,
        permutations,
        seed,
        confidence,
    };
    let c = eval::compare_files(&a, &b, unit, &opts)?;
    show(&c, json, |c| c.to_text())
}

fn eval(args: EvalArgs) -> anyhow::Result<ExitCode> {
    let EvalArgs {
        data,
        runs,
        out,
        force,
        primary,
        primary_system,
        unit,
        resamples,
        permutations,
        seed,
        latency_users,
        probes,
        transfer,
        fail_on_gate,
        quiet,
        resident_mb,
    } = args;
    if resamples == 0 || permutations == 0 {
        anyhow::bail!("--resamples and --permutations must be at least 1");
    }
    let opts = eval::options::EvalOptions {
        data,
        runs,
        out,
        force,
        primary,
        primary_system,
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
        resident_mb,
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
    print_verdict(&Verdict::new(&r.gates, !r.reference.is_empty()));
    if fail_on_gate && !r.all_passed() {
        eprintln!("a phase gate did not pass (--fail-on-gate)");
        return Ok(ExitCode::from(2));
    }
    Ok(ExitCode::SUCCESS)
}

/// Prints `value` as JSON with `--json`, else as the text `text` makes of it.
fn show<T: serde::Serialize>(
    value: &T,
    json: bool,
    text: impl FnOnce(&T) -> String,
) -> anyhow::Result<ExitCode> {
    if json {
        println!("{}", serde_json::to_string_pretty(value)?);
    } else {
        print!("{}", text(value));
    }
    Ok(ExitCode::SUCCESS)
}

/// The verdict block: a line per phase transition, its gates that did not pass, validity.
fn print_verdict(v: &Verdict) {
    for line in v.lines() {
        println!("  {line}");
    }
}

/// JSONL turns in, JSONL scores out, the state carried in a file.
fn predict_turns(
    model: &std::path::Path,
    input: Option<&std::path::Path>,
    state_path: Option<&std::path::Path>,
    force: bool,
) -> anyhow::Result<()> {
    use ssmkit::runtime::{Runtime, State, jsonl::parse_turn};
    use std::io::{BufRead, Write};
    // A state named through a symbolic link is read and saved where the link leads.
    let resolved = state_path.map(ssmkit::lock::resolved);
    let state_path = resolved.as_deref();
    // Two processes on one state would each save their own turns and lose the other's.
    let _lock = state_path.map(ssmkit::lock::path).transpose()?;
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
        ssmkit::atomic::write(p, &state.to_bytes(&rt.fingerprint))?;
    }
    Ok(())
}
