//! `ssmkit eval`: trained runs, the baselines and the reference systems on exactly the
//! same test cases ([`super::split`]), the metric suite with paired statistics, the
//! canary suite, the analyses, and the phase gates with their validity
//! ([`super::gates`]); the report is written by [`super::output`].
//!
//! Several runs of one model (seeds) are compared with seed variance in the interval:
//! the bootstrap resamples seeds, then users ([`super::stats::compare_seeds`]).

use std::collections::BTreeMap;
use std::path::PathBuf;

use burn::prelude::*;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;

use super::Unit;
use super::ablation::{input_ablations, retrained_rows};
use super::canary::{
    CanaryResult, ConstantProbe, ModelProbe, ObservableProbe, OracleProbe, ProbeScorer, Probes,
    RandomProbe, SNR_LEVELS, SiteValues, fit_scale, frequency_response, judge, site_values,
    softmax_relevance,
};
use super::dual::{self, DualError, base_rate};
use super::findings::{EvalReport, Latency, SnrLevel};
use super::gates::{self, Against, Evidence, Gate};
use super::options::{COMPARED, EvalOptions};
use super::output::{training_curves, write_report};
use super::patterns::{self};
use super::scoring::{
    System, canary_turns, labelled_turns, mean_relevant, model_scores, quantile_ms, step_latency,
};
use super::split::{Case, TestSet, labels_of, test_cases};
use super::stats::{ComparisonRow, compare_seeds};
use super::strata::{COLD_START, SEQUENCE_LENGTH, strata_of};
use crate::canary::Rules;
use crate::data::{Dataset, DatasetReader};
use crate::error::{Error, Result};
use crate::metrics::{Row, metric_index};
use crate::model::baselines::{self, Baseline};
use crate::model::rules::{self as history, HistoryRule};
use crate::model::scorer::{ModelConfig, Scorer, Variant};
use crate::run::{dataset_fingerprint, load_run, read_run_state};

/// Runs the evaluation and writes the report directory.
pub fn evaluate(opts: &EvalOptions) -> Result<EvalReport> {
    if opts.runs.is_empty() {
        return Err(Error::Input("eval needs at least one --run".into()));
    }
    evaluate_read(&DatasetReader::open(&opts.data)?, opts)
}

/// [`evaluate`] on `opts.data` already opened (`ssmkit run` opens it once for every stage).
pub fn evaluate_read(reader: &DatasetReader, opts: &EvalOptions) -> Result<EvalReport> {
    if opts.runs.is_empty() {
        return Err(Error::Input("eval needs at least one --run".into()));
    }
    // Locked from the start (the report's writer shares the lock), so a second eval into
    // the same report fails at once rather than after its work.
    let _lock = crate::lock::path(&opts.out)?;
    let outline = &reader.outline;
    let sha = dataset_fingerprint(outline);
    let device = Device::flex();
    // Every run must come from this dataset and share one test cut-off; with `transfer`
    // (TSTR) runs trained on other datasets are evaluated on this one's own test split.
    let mut states = Vec::new();
    let defaults = crate::train::TrainConfig::default();
    let own_split = crate::train::batch::cutoffs(outline, defaults.valid_from, defaults.test_from);
    for run in &opts.runs {
        let st = read_run_state(run)?;
        if st.model.content_dim != outline.embedding_dim {
            return Err(Error::Input(format!(
                "{}: the model reads {}-dimensional content embeddings, {} has {}",
                run.display(),
                st.model.content_dim,
                opts.data.display(),
                outline.embedding_dim
            )));
        }
        if st.dataset_sha != sha {
            if !opts.transfer {
                return Err(Error::Input(format!(
                    "{}: trained on another dataset (candidates SHA-256 {}…, {} has {}…); pass --transfer to evaluate it on this one (TSTR)",
                    run.display(),
                    &st.dataset_sha.get(..12).unwrap_or(""),
                    opts.data.display(),
                    &sha.get(..12).unwrap_or("")
                )));
            }
        } else if opts.transfer
            && (st.cutoffs.test != own_split.test || st.cutoffs.random != own_split.random)
        {
            return Err(Error::Input(format!(
                "{}: its test split is not this dataset's own (90th percentile, or its random partition)",
                run.display()
            )));
        }
        if !opts.transfer
            && let Some((first, r0)) = states
                .first()
                .map(|s: &(PathBuf, crate::run::RunState)| (&s.1, &s.0))
            && first.cutoffs != st.cutoffs
        {
            return Err(Error::Input(format!(
                "{} and {} use different split cut-offs: the test cases would differ",
                r0.display(),
                run.display()
            )));
        }
        states.push((run.clone(), st));
    }
    let split = if opts.transfer {
        own_split
    } else {
        states[0].1.cutoffs
    };
    let (data, sampled) = super::split::read_test_users(reader, &split, opts.resident_mb)?;
    let split_text = match sampled {
        None => split.describe(),
        Some((n, of)) => format!(
            "{}; test users: a seeded sample of {n} of the {of} users with a test turn, as many as fit --resident-mb {}",
            split.describe(),
            opts.resident_mb
        ),
    };
    let (gts, loo) = test_cases(&data, &split);
    if gts.is_empty() {
        return Err(Error::Input(format!(
            "{}: no test case (no test turn has a relevant label; {})",
            opts.data.display(),
            split.describe()
        )));
    }
    let test_set = TestSet::of(&data, &gts, &split);
    let loo_set = TestSet::of(&data, &loo, &split);
    let k = data.k;
    let labels: Vec<Vec<f64>> = gts
        .iter()
        .map(|c| labels_of(&data.users[c.user], c.turn, k))
        .collect();
    // Metric rows of every system's scores (empty candidate slots ranked last).
    let rows_of = |scores: &[Vec<f64>]| super::full::rows(&data, &gts, &labels, scores);
    let mut systems: Vec<System> = Vec::new();
    // Every held-out query, for the PoC's metrics, and each system's scores of them.
    let held_out = super::split::test_turns(&data, &split);
    // Where each GTS case sits among them: a model scores every held-out turn once.
    let gts_in_held_out: Vec<usize> = gts
        .iter()
        .map(|c| {
            held_out
                .binary_search(c)
                .expect("GTS cases are held-out turns")
        })
        .collect();
    let mut held_out_scores: Vec<(String, Vec<Vec<Vec<f64>>>)> = Vec::new();
    // Baselines that need no training, and the constant reference system.
    for kind in [Baseline::Heuristic, Baseline::Random, Baseline::Oracle] {
        let mut rng = ChaCha8Rng::seed_from_u64(opts.compare.seed ^ 0xBA5E);
        let scores: Vec<Vec<f64>> = gts
            .iter()
            .map(|c| baselines::scores(kind, &data.users[c.user], c.turn, k, &mut rng))
            .collect();
        let on_held_out: Vec<Vec<f64>> = held_out
            .iter()
            .map(|c| baselines::scores(kind, &data.users[c.user], c.turn, k, &mut rng))
            .collect();
        held_out_scores.push((format!("{kind:?}").to_lowercase(), vec![on_held_out]));
        systems.push(System::new(
            format!("{kind:?}").to_lowercase(),
            "baseline",
            Vec::new(),
            Vec::new(),
            vec![rows_of(&scores)],
        ));
    }
    systems.push(System::new(
        "constant",
        "reference",
        Vec::new(),
        Vec::new(),
        vec![rows_of(&vec![vec![0.0; k]; gts.len()])],
    ));
    // History baselines: each rule from the user's own earlier labels.
    let history: Vec<Vec<Vec<f64>>> = gts
        .iter()
        .map(|c| history::scores(&data.users[c.user], c.turn, k))
        .collect();
    for (r, rule) in HistoryRule::ALL.iter().enumerate() {
        let scores: Vec<Vec<f64>> = history.iter().map(|h| h[r].clone()).collect();
        systems.push(System::new(
            rule.name(),
            "history baseline",
            Vec::new(),
            Vec::new(),
            vec![rows_of(&scores)],
        ));
    }
    // Trained runs, grouped by system (the model and its departures from the defaults,
    // `mamba+d_state=4`; for TSTR also the dataset they were trained on: `mamba@1a2b3c4d`
    // is a mamba trained on another dataset).
    let group = |st: &crate::run::RunState| -> String {
        if st.dataset_sha == sha {
            st.train.system_name()
        } else {
            format!(
                "{}@{}",
                st.train.system_name(),
                st.dataset_sha.get(..8).unwrap_or("")
            )
        }
    };
    let mut by_variant: BTreeMap<String, Vec<usize>> = BTreeMap::new();
    for (i, (_, st)) in states.iter().enumerate() {
        by_variant.entry(group(st)).or_default().push(i);
    }
    let mut latency = None;
    // The primary model's runs, kept loaded for the canary suite and the ablations.
    let mut models: Vec<(Scorer, ModelConfig)> = Vec::new();
    // The retrained ablations' runs (for their canary results) and every group's config.
    let mut ablation_models: BTreeMap<String, Vec<(Scorer, ModelConfig)>> = BTreeMap::new();
    let mut configs: BTreeMap<String, ModelConfig> = BTreeMap::new();
    // Their scores of the GTS cases, for the dual-error test on test turns.
    let mut primary_scores: Vec<Vec<Vec<f64>>> = Vec::new();
    if let Some(n) = &opts.primary_system
        && !by_variant.contains_key(n)
    {
        return Err(Error::Input(format!(
            "--primary-system {n}: no run of that system was given (systems: {})",
            by_variant.keys().cloned().collect::<Vec<_>>().join(", ")
        )));
    }
    let named = opts.primary_system.as_ref();
    let wanted = match (named, opts.primary) {
        (Some(n), _) => states[by_variant[n][0]].1.model.variant,
        (None, Some(v)) => v,
        (None, None) => {
            let has = |v: Variant| states.iter().any(|(_, st)| st.model.variant == v);
            if has(Variant::Mamba) {
                Variant::Mamba
            } else {
                Variant::ALL
                    .into_iter()
                    .find(|&v| v.is_temporal() && has(v))
                    .unwrap_or(states[0].1.model.variant)
            }
        }
    };
    // The runs of that model at its defaults trained on this dataset if there are any,
    // else the first group of it trained here (with other settings), else the first
    // group trained elsewhere.
    let of_wanted = |k: &&String| {
        let st = &states[by_variant[*k][0]].1;
        st.model.variant == wanted
    };
    let here = |k: &&String| !k.contains('@');
    let primary: String = if let Some(n) = named {
        n.clone()
    } else if by_variant.contains_key(wanted.name()) {
        wanted.name().to_string()
    } else {
        match by_variant
            .keys()
            .filter(of_wanted)
            .find(here)
            .or_else(|| by_variant.keys().find(of_wanted))
        {
            Some(k) => k.clone(),
            None => {
                return Err(Error::Input(format!(
                    "--primary {}: no run of that model was given",
                    wanted.name()
                )));
            }
        }
    };
    let primary = primary.as_str();
    for (name, idx) in &by_variant {
        let variant = states[idx[0]].1.model.variant;
        let is_ablation = variant == wanted && !name.contains('@') && name != primary;
        configs.insert(name.clone(), states[idx[0]].1.model.clone());
        let mut per_run: Vec<Vec<Row>> = Vec::new();
        let mut seeds = Vec::new();
        let mut on_held_out = Vec::new();
        for &i in idx {
            let (run, st) = &states[i];
            if !opts.quiet {
                eprintln!("scoring {} ({name}, seed {})", run.display(), st.seed);
            }
            let (model, cfg) = load_run(run, false, &device)?;
            let every = model_scores(&model, &cfg, &data, &held_out, &device);
            let scores: Vec<Vec<f64>> = gts_in_held_out.iter().map(|&i| every[i].clone()).collect();
            per_run.push(rows_of(&scores));
            on_held_out.push(every);
            seeds.push(st.seed);
            if *name == primary {
                primary_scores.push(scores);
                if latency.is_none() && opts.latency_users > 0 {
                    let times = step_latency(&model, &cfg, &data, opts.latency_users, &device);
                    if !times.is_empty() {
                        latency = Some(Latency {
                            model: run.display().to_string(),
                            turns: times.len(),
                            p50_ms: quantile_ms(&times, 0.50),
                            p95_ms: quantile_ms(&times, 0.95),
                            p99_ms: quantile_ms(&times, 0.99),
                        });
                    }
                }
                models.push((model, cfg));
            } else if is_ablation {
                ablation_models
                    .entry(name.clone())
                    .or_default()
                    .push((model, cfg));
            }
        }
        let per_seed: Vec<(String, Vec<Vec<Vec<f64>>>)> = if name == primary && seeds.len() > 1 {
            // Each seed of the primary model on its own after their mean: the spread a
            // single trained model shows.
            seeds
                .iter()
                .zip(&on_held_out)
                .map(|(seed, scores)| (format!("{name} seed {seed}"), vec![scores.clone()]))
                .collect()
        } else {
            Vec::new()
        };
        held_out_scores.push((name.clone(), on_held_out));
        held_out_scores.extend(per_seed);
        systems.push(System::new(
            name.to_string(),
            if is_ablation {
                "ablation"
            } else if variant.is_temporal() {
                "model"
            } else {
                "learned baseline"
            },
            idx.iter().map(|&i| states[i].0.clone()).collect(),
            seeds,
            per_run,
        ));
    }
    let find_system = |name: &str| systems.iter().position(|s| s.name == name);
    let p = find_system(primary).expect("primary scored");
    let heuristic = find_system("heuristic").expect("heuristic scored");
    let loo_idx: Vec<usize> = loo
        .iter()
        .map(|c| gts.binary_search(c).expect("LOO cases are GTS cases"))
        .collect();
    let units: Vec<u64> = gts
        .iter()
        .map(|c| data.users[c.user].user_id as u64)
        .collect();
    // The metric suite (the systems' metrics, their comparisons, the quality gates): over
    // the users in memory, or, when they are a sample, over every test user read a block
    // at a time (half the budget each, beside the sample).
    let full = match sampled {
        Some(_) => Some(super::full::score(
            reader,
            &split,
            &systems,
            (opts.resident_mb / 2).max(1),
            opts.compare.seed,
            opts.quiet,
        )?),
        None => None,
    };
    let suite: &[System] = full.as_ref().map_or(&systems[..], |f| &f.systems[..]);
    let suite_cases: Vec<(u32, usize)> = match &full {
        Some(f) => f.cases.clone(),
        None => gts
            .iter()
            .map(|c| (data.users[c.user].user_id, c.turn))
            .collect(),
    };
    let suite_units: Vec<u64> = suite_cases.iter().map(|&(u, _)| u as u64).collect();
    let suite_loo: Vec<usize> = full
        .as_ref()
        .map_or_else(|| loo_idx.clone(), |f| f.loo.clone());
    let (suite_set, suite_loo_set) = full
        .as_ref()
        .map_or((test_set, loo_set), |f| (f.test_set, f.loo_set));
    let split_text = match &full {
        Some(f) => format!(
            "{split_text}; the metrics, their comparisons and the quality gates: every one of the {} users with a test turn, read in {} blocks ({} GTS cases from {} users); the canary probes, SNR curve, frequency response, dual error, strata, input ablations and pattern tables: the sample",
            f.users, f.blocks, f.test_set.cases, f.test_set.users
        ),
        None => split_text,
    };
    // Paired comparisons: the primary model against every other system, on both splits,
    // seeds resampled with the users.
    let all: Vec<usize> = (0..suite_cases.len()).collect();
    let mut comparisons = Vec::new();
    for (split, idx) in [("gts", &all), ("loo", &suite_loo)] {
        if idx.len() < 2 {
            continue;
        }
        let split_units: Vec<u64> = idx.iter().map(|&i| suite_units[i]).collect();
        for (j, other) in suite.iter().enumerate() {
            if j == p {
                continue;
            }
            for metric in COMPARED {
                let m = metric_index(metric);
                let stats = compare_seeds(
                    &suite[p].column(m, idx),
                    &other.column(m, idx),
                    1.0,
                    (opts.unit == Unit::User).then_some(&split_units[..]),
                    &opts.compare,
                );
                comparisons.push(ComparisonRow {
                    split: split.into(),
                    metric: metric.into(),
                    a: primary.into(),
                    b: other.name.clone(),
                    mean_a: suite[p].mean(m, idx),
                    mean_b: other.mean(m, idx),
                    stats,
                });
            }
        }
    }
    // The score scale of each seed, fitted on the validation turns.
    // Validation and training turns of this dataset: the cut-offs of a run trained on it,
    // else (only transfer runs) its own percentiles.
    let cut = &states
        .iter()
        .find(|(_, st)| st.dataset_sha == sha)
        .map(|(_, st)| st.cutoffs)
        .unwrap_or(own_split);
    let valid_cases = labelled_turns(&data, cut, 2000);
    let fit_scales = |models: &[(Scorer, ModelConfig)]| -> Vec<f64> {
        models
            .iter()
            .map(|(model, cfg)| {
                let scores = model_scores(model, cfg, &data, &valid_cases, &device);
                let l: Vec<Vec<f64>> = valid_cases
                    .iter()
                    .map(|c| labels_of(&data.users[c.user], c.turn, k))
                    .collect();
                let v: Vec<Vec<f32>> = valid_cases
                    .iter()
                    .map(|c| data.users[c.user].valid[c.turn * k..(c.turn + 1) * k].to_vec())
                    .collect();
                if valid_cases.is_empty() {
                    1.0
                } else {
                    fit_scale(&scores, &l, &v)
                }
            })
            .collect()
    };
    let scales = fit_scales(&models);
    // Canary suite and SNR curve: the primary model's seeds and the reference systems.
    let primary_runs: Vec<usize> = by_variant[primary].clone();
    let rules = Rules::from_manifest(&data.manifest);
    let probes = Probes::build(&data, &gts, opts.probes_per_canary, opts.compare.seed);
    let seed = opts.compare.seed;
    // The observable reference learns its decay rate on the training turns.
    let observable = ObservableProbe::fit(&data, |u| cut.test_start(u));
    let canaries = match &rules {
        Some(rules) => {
            let mut levels = Vec::new();
            for &snr in &SNR_LEVELS {
                if !opts.quiet {
                    eprintln!("canary probes at {}", super::sections::snr_name(snr));
                }
                let model_probes = ModelProbe::seeds(&models, &scales, &data, &device);
                let (oracle, random) = (OracleProbe { rules }, RandomProbe::new(seed));
                let mut scorers: Vec<&dyn ProbeScorer> =
                    vec![&oracle, &random, &ConstantProbe, &observable];
                scorers.extend(model_probes.iter().map(|m| m as &dyn ProbeScorer));
                let mut values = site_values(&scorers, &data, &probes, rules, snr, seed);
                let per_seed = values.split_off(4);
                let reference = |v: SiteValues| judge(&[v], rules, seed);
                let mut values = values.into_iter();
                let mut next = || values.next().expect("four reference systems");
                levels.push(SnrLevel {
                    snr_db: snr,
                    model: judge(&per_seed, rules, seed),
                    oracle: reference(next()),
                    random: reference(next()),
                    constant: reference(next()),
                    observable: reference(next()),
                });
            }
            Some(levels)
        }
        None => None,
    };
    // Each retrained ablation's canary results at 20 dB (its seeds judged together).
    let mut ablation_canaries = BTreeMap::new();
    if let Some(rules) = &rules {
        for (name, group) in &ablation_models {
            let scales = fit_scales(group);
            let model_probes = ModelProbe::seeds(group, &scales, &data, &device);
            let scorers: Vec<&dyn ProbeScorer> =
                model_probes.iter().map(|m| m as &dyn ProbeScorer).collect();
            let values = site_values(&scorers, &data, &probes, rules, Some(20.0), seed);
            ablation_canaries.insert(name.clone(), judge(&values, rules, seed));
        }
    }
    // Dual-error test on the training turns (where noise could be memorized) and on the
    // test cases.
    let train_cases = canary_turns(&data, cut, 2000);
    // `scores[seed][case]` of the primary model's seeds on `cases`.
    let model_dual = |cases: &[Case], scores: &[Vec<Vec<f64>>]| -> Vec<DualError> {
        let per_turn = mean_relevant(&data, cases);
        let per_seed: Vec<Vec<DualError>> = scores
            .iter()
            .zip(&scales)
            .map(|(scores, &scale)| {
                let probs: Vec<Vec<f64>> = cases
                    .iter()
                    .zip(scores)
                    .map(|(c, s)| {
                        let u = &data.users[c.user];
                        let s: Vec<f64> = s.iter().map(|x| scale * x).collect();
                        softmax_relevance(&s, &u.valid[c.turn * k..(c.turn + 1) * k], per_turn)
                    })
                    .collect();
                dual::dual_error(&data, cases, &probs)
            })
            .collect();
        dual::average(&per_seed)
    };
    let train_scores: Vec<Vec<Vec<f64>>> = models
        .iter()
        .map(|(model, cfg)| model_scores(model, cfg, &data, &train_cases, &device))
        .collect();
    let dual_train = model_dual(&train_cases, &train_scores);
    let dual_test = model_dual(&gts, &primary_scores);
    let dual_reference = reference_dual(&data, &train_cases, seed);
    // Cold-start strata of the GTS cases: sessions the user has had, this one included.
    let session_now = |c: &Case| data.users[c.user].session[c.turn] + 1;
    let strata = strata_of(
        &COLD_START,
        session_now,
        &gts,
        &systems[p],
        &systems[heuristic],
        &units,
        opts,
        &data,
        &split,
    );
    let sessions_total = |c: &Case| data.users[c.user].session.last().map_or(0, |s| s + 1);
    let length_strata = strata_of(
        &SEQUENCE_LENGTH,
        sessions_total,
        &gts,
        &systems[p],
        &systems[heuristic],
        &units,
        opts,
        &data,
        &split,
    );
    // Frequency response of the first seed and of the oracle to the time of the week.
    let frequency = match (&rules, models.first()) {
        (Some(rules), Some((model, cfg))) => {
            let scorer = ModelProbe {
                model,
                cfg,
                data: &data,
                device: &device,
                scale: scales[0],
            };
            let m = frequency_response(&scorer, &data, &probes, rules, 8);
            let o = frequency_response(&OracleProbe { rules }, &data, &probes, rules, 8);
            (m.sites > 0).then_some((m, o))
        }
        _ => None,
    };
    // Input ablations of the primary model at evaluation time.
    let ablations = input_ablations(
        &data,
        &gts,
        &labels,
        &models,
        &systems[p],
        &units,
        opts,
        &device,
    );
    let curves = training_curves(
        &primary_runs
            .iter()
            .map(|&i| states[i].0.clone())
            .collect::<Vec<_>>(),
    );
    // The seed's proof-of-concept patterns: HR@5 on the test cases each one shaped.
    let oracle_sys = find_system("oracle").expect("oracle scored");
    let random_sys = find_system("random").expect("random scored");
    let poc = patterns::canary_patterns(
        &data,
        &gts,
        &systems[p],
        &systems[oracle_sys],
        &systems[random_sys],
    );
    // The gates, for the primary model and for each reference system.
    let levels_of = |pick: fn(&SnrLevel) -> &Vec<CanaryResult>| {
        canaries.as_ref().map(|ls| {
            ls.iter()
                .map(|l| (l.snr_db, pick(l).clone()))
                .collect::<Vec<_>>()
        })
    };
    let transfer = primary_transfer(suite, primary);
    let dcg = metric_index("dcg@10");
    let best_history = suite
        .iter()
        .filter(|s| s.kind == "history baseline")
        .max_by(|a, b| a.mean(dcg, &all).total_cmp(&b.mean(dcg, &all)))
        .map(|s| (s.name.clone(), &s.seed_rows[..]));
    let xattn = find_system("xattn").filter(|&x| x != p);
    let user_units = (opts.unit == Unit::User).then_some(&suite_units[..]);
    let against = Against {
        heuristic: &suite[heuristic].seed_rows,
        history: best_history,
        xattn: xattn.map(|x| &suite[x].seed_rows[..]),
        transfer,
        units: user_units,
        compare: &opts.compare,
    };
    let mut primary_gates = gates::evaluate(
        &Evidence {
            name: primary.into(),
            runs: suite[p].seed_rows.clone(),
            canaries: levels_of(|l| &l.model),
            dual: dual_train.clone(),
            latency: latency.as_ref().map(|l| (l.p95_ms, l.turns)),
            reference: false,
        },
        &against,
    );
    let constant = find_system("constant").expect("constant scored");
    // The metric rows of each reference; the observable reference (last) ranks no test
    // case and has no dual-error figures (`dual_reference` holds the first four): it is
    // judged on the canary gates only.
    let reference_rows = [oracle_sys, random_sys, constant, constant];
    let reference_levels = [
        levels_of(|l| &l.oracle),
        levels_of(|l| &l.random),
        levels_of(|l| &l.constant),
        levels_of(|l| &l.constant),
        levels_of(|l| &l.observable),
    ];
    let reference: Vec<(String, Vec<Gate>)> = gates::REFERENCES
        .iter()
        .enumerate()
        .map(|(i, name)| {
            let e = Evidence {
                name: name.to_string(),
                runs: reference_rows
                    .get(i)
                    .map_or_else(Vec::new, |&r| suite[r].seed_rows.clone()),
                canaries: reference_levels[i].clone(),
                dual: dual_reference.get(i).map_or_else(Vec::new, |d| d.1.clone()),
                latency: None,
                reference: true,
            };
            let mut g = gates::evaluate(&e, &against);
            if *name == gates::OBSERVABLE {
                gates::canary_gates_only(&mut g);
            }
            (name.to_string(), g)
        })
        .collect();
    gates::check_validity(
        &mut primary_gates,
        &reference.iter().map(|r| r.1.clone()).collect::<Vec<_>>(),
    );
    if let Some(level) = canaries.iter().flatten().find(|l| l.snr_db == Some(20.0)) {
        ablation_canaries.insert(primary.to_string(), level.model.clone());
    }
    let retrained = retrained_rows(primary, suite, &comparisons, &configs, &ablation_canaries);
    let report = EvalReport {
        dataset: opts.data.display().to_string(),
        primary: primary.into(),
        n_gts: suite_cases.len(),
        n_loo: suite_loo.len(),
        test_set: suite_set,
        loo_set: suite_loo_set,
        unit: format!("{:?}", opts.unit).to_lowercase(),
        gates: primary_gates,
        reference,
        scales,
        comparisons,
        latency,
        canaries,
        dual_train,
        dual_test,
        dual_reference,
        cold_start: strata,
        sequence_length: length_strata,
        frequency,
        poc,
        split: split_text,
        patterns: patterns::rows(&data, &held_out, &held_out_scores),
        ablations,
        retrained,
        out: opts.out.clone(),
    };
    write_report(opts, &report, suite, &suite_cases, &suite_loo, &curves)?;
    Ok(report)
}

/// The dual-error test of the reference systems on `cases`, in [`gates::REFERENCES`]
/// order: the truth, random scores through the softmax, the base rate, the labels.
fn reference_dual(data: &Dataset, cases: &[Case], seed: u64) -> Vec<(String, Vec<DualError>)> {
    let k = data.k;
    let per_turn = mean_relevant(data, cases);
    let base = base_rate(data, cases);
    let mut rng = ChaCha8Rng::seed_from_u64(seed ^ 0xD0A1);
    let predict = |f: &mut dyn FnMut(&crate::data::UserSeq, usize, usize) -> f64| -> Vec<Vec<f64>> {
        cases
            .iter()
            .map(|c| {
                let u = &data.users[c.user];
                (0..k).map(|j| f(u, c.turn, j)).collect()
            })
            .collect()
    };
    let oracle = predict(&mut |u, t, j| u.relevance[t * k + j] as f64);
    let random: Vec<Vec<f64>> = cases
        .iter()
        .map(|c| {
            let u = &data.users[c.user];
            let s: Vec<f64> = (0..k)
                .map(|_| rand::RngExt::random_range(&mut rng, 0.0..1.0))
                .collect();
            softmax_relevance(&s, &u.valid[c.turn * k..(c.turn + 1) * k], per_turn)
        })
        .collect();
    let constant = predict(&mut |_, _, _| base);
    let memorizer = predict(&mut |u, t, j| u.labels[t * k + j] as f64);
    gates::REFERENCES
        .iter()
        .zip([oracle, random, constant, memorizer])
        .map(|(name, p)| (name.to_string(), dual::dual_error(data, cases, &p)))
        .collect()
}

/// The TSTR ratio when the primary model was also trained on another dataset: the DCG@10
/// of `primary@sha` over the primary model's trained here.
fn primary_transfer(systems: &[System], primary: &str) -> Option<(String, f64)> {
    if primary.contains('@') {
        return None;
    }
    let here = systems.iter().find(|s| s.name == primary)?;
    let there = systems
        .iter()
        .find(|s| s.name.starts_with(&format!("{primary}@")))?;
    let m = metric_index("dcg@10");
    let all: Vec<usize> = (0..here.cases.len()).collect();
    Some((there.name.clone(), there.mean(m, &all) / here.mean(m, &all)))
}
