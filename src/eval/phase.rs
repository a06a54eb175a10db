//! `ssmkit eval`: trained runs, the baselines and the reference systems on exactly the
//! same test cases ([`super::split`]), the metric suite with paired statistics, the
//! canary suite, the analyses, and the phase gates with their validity
//! ([`super::gates`]); the report is written by [`super::output`].
//!
//! Several runs of one model (seeds) are compared with seed variance in the interval:
//! the bootstrap resamples seeds, then users ([`super::stats::compare_seeds`]).
//!
//! [`evaluate_read`] reads as its steps: check the runs, read the test users, score the
//! baselines and the runs, the metric suite, the canary suite, the analyses, the gates,
//! the report.

use std::collections::BTreeMap;
use std::path::PathBuf;

use burn::prelude::*;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;

use super::Unit;
use super::ablation::{Ablation, input_ablations, retrained_rows};
use super::canary::softmax_relevance;
use super::canary::{
    CanaryResult, ConstantProbe, FrequencyResponse, ModelProbe, ObservableProbe, OracleProbe,
    ProbeScorer, Probes, RandomProbe, SNR_LEVELS, SiteValues, fit_scale, frequency_response, judge,
    site_values,
};
use super::dual::{self, DualError, base_rate, model_dual};
use super::findings::{EvalReport, Latency, SnrLevel};
use super::full::{MetricSuite, paired_comparisons};
use super::gates::{self, Against, Evidence, Gate};
use super::options::EvalOptions;
use super::output::{training_curves, write_report};
use super::patterns::{self, PocPattern};
use super::runs::Runs;
use super::scoring::mean_relevant;
use super::scoring::{
    System, canary_turns, labelled_turns, model_scores, quantile_ms, step_latency,
};
use super::split::{Case, TestData, labels_of};
use super::strata::{COLD_START, SEQUENCE_LENGTH, Stratum, strata_of};
use crate::canary::Rules;
use crate::data::split::Cutoffs;
use crate::data::{Dataset, DatasetReader};
use crate::error::{Error, Result};
use crate::metrics::{Row, metric_index};
use crate::model::baselines::{self, Baseline};
use crate::model::rules::{self as history, HistoryRule};
use crate::model::scorer::{ModelConfig, Scorer, Variant};
use crate::run::load_run;

/// A model loaded with its config.
type Loaded = (Scorer, ModelConfig);

/// Each system's scores of every held-out query (per seed), for the PoC's pattern tables.
type HeldOutScores = Vec<(String, Vec<Vec<Vec<f64>>>)>;

/// Runs the evaluation and writes the report directory.
pub fn evaluate(opts: &EvalOptions) -> Result<EvalReport> {
    if opts.runs.is_empty() {
        return Err(Error::Usage("eval needs at least one --run".into()));
    }
    evaluate_read(&DatasetReader::open(&opts.data)?, opts)
}

/// [`evaluate`] on `opts.data` already opened (`ssmkit run` opens it once for every stage).
pub fn evaluate_read(reader: &DatasetReader, opts: &EvalOptions) -> Result<EvalReport> {
    if opts.runs.is_empty() {
        return Err(Error::Usage("eval needs at least one --run".into()));
    }
    // Locked from the start (the report's writer shares the lock), so a second eval into
    // the same report fails at once rather than after its work.
    let _lock = crate::lock::path(&opts.out)?;
    // Taken before anything is read: a run that changes meanwhile makes the next `run`
    // recompute rather than reuse.
    let inputs = super::inputs::Inputs::of(reader, opts)?;
    let device = Device::flex();
    let runs = Runs::check(reader, opts)?;
    let test = TestData::read(reader, &runs.split, opts)?;
    let mut systems = Vec::new();
    let mut held_out_scores = Vec::new();
    score_baselines(&test, opts.compare.seed, &mut systems, &mut held_out_scores);
    let (primary, wanted) = runs.primary(opts)?;
    let primary = primary.as_str();
    let trained = score_runs(
        &runs,
        (primary, wanted),
        &test,
        opts,
        &device,
        &mut systems,
        &mut held_out_scores,
    )?;
    let suite = MetricSuite::measure(reader, &test, &runs.split, &systems, opts)?;
    let comparisons = paired_comparisons(&suite, primary, opts);

    let data = &test.data;
    let cut = runs.training_cutoffs();
    let scales = fit_scales(&trained.models, data, &cut, &device);
    let rules = Rules::from_manifest(&data.manifest)?;
    let probes = Probes::build(data, &test.gts, opts.probes_per_canary, opts.compare.seed);
    let probing = rules.as_ref().map(|rules| Probing {
        data,
        cut,
        probes: &probes,
        rules,
        opts,
        device: &device,
    });
    let canaries = probing.as_ref().map(|p| p.levels(&trained.models, &scales));
    let mut ablation_canaries = probing
        .as_ref()
        .map_or_else(BTreeMap::new, |p| p.at_20db(&trained.ablations));
    let peers = probing
        .as_ref()
        .map_or_else(BTreeMap::new, |p| p.at_20db(&trained.peers));
    let train_cases = canary_turns(data, &cut, 2000);
    let dual_train = model_dual(
        data,
        &train_cases,
        &trained.scores_of(&train_cases, data, &device),
        &scales,
    );
    let dual_test = model_dual(data, &test.gts, &trained.gts_scores, &scales);
    let dual_reference = reference_dual(data, &train_cases, opts.compare.seed);

    let analyses = Analyses::run(
        &test,
        &runs.split,
        &systems,
        primary,
        &trained,
        &scales,
        rules.as_ref().map(|r| (r, &probes)),
        opts,
        &device,
    );
    let curves = training_curves(&trained.primary_runs);

    let (gates, reference) = judge_gates(
        &suite,
        primary,
        canaries.as_ref(),
        &dual_train,
        &dual_reference,
        trained.latency.as_ref(),
        opts,
    );
    if let Some(level) = canaries.iter().flatten().find(|l| l.snr_db == Some(20.0)) {
        ablation_canaries.insert(primary.to_string(), level.model.clone());
    }
    let retrained = retrained_rows(
        primary,
        suite.systems(),
        &comparisons,
        &trained.configs,
        &ablation_canaries,
    );
    let report = EvalReport {
        dataset: opts.data.display().to_string(),
        primary: primary.into(),
        n_gts: suite.cases.len(),
        n_loo: suite.loo.len(),
        test_set: suite.test_set,
        loo_set: suite.loo_set,
        unit: format!("{:?}", opts.unit).to_lowercase(),
        gates,
        reference,
        scales,
        comparisons,
        latency: trained.latency,
        canaries,
        peers,
        dual_train,
        dual_test,
        dual_reference,
        cold_start: analyses.cold_start,
        sequence_length: analyses.sequence_length,
        frequency: analyses.frequency,
        poc: analyses.poc,
        split: suite.split_text.clone(),
        patterns: patterns::rows(data, &test.held_out, &held_out_scores),
        ablations: analyses.ablations,
        retrained,
        out: opts.out.clone(),
        inputs,
    };
    write_report(
        opts,
        &report,
        suite.systems(),
        &suite.cases,
        &suite.loo,
        &curves,
    )?;
    Ok(report)
}

/// The analyses beside the gates, on the test users in memory.
struct Analyses {
    cold_start: Vec<Stratum>,
    sequence_length: Vec<Stratum>,
    frequency: Option<(FrequencyResponse, FrequencyResponse)>,
    ablations: Vec<Ablation>,
    poc: Vec<PocPattern>,
}

impl Analyses {
    /// The strata, the frequency response (where canaries were planted: their rules and
    /// probes), the input ablations and the proof-of-concept patterns.
    #[allow(clippy::too_many_arguments)]
    fn run(
        test: &TestData,
        split: &Cutoffs,
        systems: &[System],
        primary: &str,
        trained: &Trained,
        scales: &[f64],
        canaries: Option<(&Rules, &Probes)>,
        opts: &EvalOptions,
        device: &Device,
    ) -> Analyses {
        let data = &test.data;
        let scored = |name: &str| {
            let i = systems.iter().position(|s| s.name == name);
            i.unwrap_or_else(|| panic!("{name} was scored"))
        };
        let (p, heuristic) = (scored(primary), scored("heuristic"));
        let strata_by = |strata: &[(&str, u32, u32)], key: &dyn Fn(&Case) -> u32| {
            strata_of(
                strata,
                key,
                &test.gts,
                &systems[p],
                &systems[heuristic],
                &test.units,
                opts,
                data,
                split,
            )
        };
        // Cold start: the sessions the user has had, this one included.
        let cold_start = strata_by(&COLD_START, &|c: &Case| {
            data.users[c.user].session[c.turn] + 1
        });
        let sequence_length = strata_by(&SEQUENCE_LENGTH, &|c: &Case| {
            data.users[c.user].session.last().map_or(0, |s| s + 1)
        });
        let frequency = canaries.and_then(|(rules, probes)| {
            let (model, cfg) = trained.models.first()?;
            let scorer = ModelProbe {
                model,
                cfg,
                data,
                device,
                scale: scales[0],
            };
            // The first seed's and the oracle's response to the time of the week.
            let m = frequency_response(&scorer, data, probes, rules, 8);
            let o = frequency_response(&OracleProbe { rules }, data, probes, rules, 8);
            (m.sites > 0).then_some((m, o))
        });
        let ablations = input_ablations(
            data,
            &test.gts,
            &test.labels,
            &trained.models,
            &systems[p],
            &test.units,
            opts,
            device,
        );
        // The seed's proof-of-concept patterns: HR@5 on the test cases each one shaped.
        let poc = patterns::canary_patterns(
            data,
            &test.gts,
            &systems[p],
            &systems[scored("oracle")],
            &systems[scored("random")],
        );
        Analyses {
            cold_start,
            sequence_length,
            frequency,
            ablations,
            poc,
        }
    }
}

/// Metric rows of a system's scores of the GTS cases (empty candidate slots ranked last).
fn rows_of(test: &TestData, scores: &[Vec<f64>]) -> Vec<Row> {
    super::full::rows(&test.data, &test.gts, &test.labels, scores)
}

/// The baselines that need no training, the constant reference system and the history
/// baselines (each rule from the user's own earlier labels).
fn score_baselines(
    test: &TestData,
    seed: u64,
    systems: &mut Vec<System>,
    held_out_scores: &mut HeldOutScores,
) {
    let (data, k) = (&test.data, test.data.k);
    for kind in [Baseline::Heuristic, Baseline::Random, Baseline::Oracle] {
        let mut rng = ChaCha8Rng::seed_from_u64(seed ^ 0xBA5E);
        let mut score = |cases: &[Case]| -> Vec<Vec<f64>> {
            cases
                .iter()
                .map(|c| baselines::scores(kind, &data.users[c.user], c.turn, k, &mut rng))
                .collect()
        };
        let scores = score(&test.gts);
        let on_held_out = score(&test.held_out);
        let name = format!("{kind:?}").to_lowercase();
        held_out_scores.push((name.clone(), vec![on_held_out]));
        systems.push(System::new(
            name,
            "baseline",
            Vec::new(),
            Vec::new(),
            vec![rows_of(test, &scores)],
        ));
    }
    systems.push(System::new(
        "constant",
        "reference",
        Vec::new(),
        Vec::new(),
        vec![rows_of(test, &vec![vec![0.0; k]; test.gts.len()])],
    ));
    let history: Vec<Vec<Vec<f64>>> = test
        .gts
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
            vec![rows_of(test, &scores)],
        ));
    }
}

/// What scoring the trained runs keeps for the analyses after the metric suite.
struct Trained {
    /// The primary model's runs, loaded, for the canary suite and the ablations, with
    /// their directories and their scores of the GTS cases (for the dual-error test on
    /// test turns).
    models: Vec<Loaded>,
    primary_runs: Vec<PathBuf>,
    gts_scores: Vec<Vec<Vec<f64>>>,
    /// The retrained ablations' runs (for their canary results).
    ablations: BTreeMap<String, Vec<Loaded>>,
    /// The other models' runs (the learned baselines), for their canary results beside
    /// the primary's.
    peers: BTreeMap<String, Vec<Loaded>>,
    /// Every group's model config.
    configs: BTreeMap<String, ModelConfig>,
    latency: Option<Latency>,
}

impl Trained {
    /// `scores[seed][case]` of the primary model's seeds on `cases`.
    fn scores_of(&self, cases: &[Case], data: &Dataset, device: &Device) -> Vec<Vec<Vec<f64>>> {
        self.models
            .iter()
            .map(|(model, cfg)| model_scores(model, cfg, data, cases, device))
            .collect()
    }
}

/// Scores every held-out query with every run, a group (system) at a time, and adds each
/// group to `systems`: the primary model (each seed also on its own in the pattern
/// tables), its retrained ablations, and the other models.
fn score_runs(
    runs: &Runs,
    (primary, wanted): (&str, Variant),
    test: &TestData,
    opts: &EvalOptions,
    device: &Device,
    systems: &mut Vec<System>,
    held_out_scores: &mut HeldOutScores,
) -> Result<Trained> {
    let mut t = Trained {
        models: Vec::new(),
        primary_runs: runs.groups[primary]
            .iter()
            .map(|&i| runs.states[i].0.clone())
            .collect(),
        gts_scores: Vec::new(),
        ablations: BTreeMap::new(),
        peers: BTreeMap::new(),
        configs: BTreeMap::new(),
        latency: None,
    };
    let data = &test.data;
    for (name, idx) in &runs.groups {
        let variant = runs.states[idx[0]].1.model.variant;
        // A TSTR arm (trained elsewhere, or with another dataset mixed in) is neither an
        // ablation nor a peer.
        let is_arm = name.contains('@') || name.contains("+mix=");
        let is_ablation = variant == wanted && !is_arm && name != primary;
        let is_peer = variant != wanted && !is_arm;
        t.configs
            .insert(name.clone(), runs.states[idx[0]].1.model.clone());
        let mut per_run: Vec<Vec<Row>> = Vec::new();
        let mut seeds = Vec::new();
        let mut on_held_out = Vec::new();
        for &i in idx {
            let (run, st) = &runs.states[i];
            if !opts.quiet {
                eprintln!("scoring {} ({name}, seed {})", run.display(), st.seed);
            }
            let (model, cfg) = load_run(run, false, device)?;
            let every = model_scores(&model, &cfg, data, &test.held_out, device);
            let scores: Vec<Vec<f64>> = test
                .gts_in_held_out
                .iter()
                .map(|&i| every[i].clone())
                .collect();
            per_run.push(rows_of(test, &scores));
            on_held_out.push(every);
            seeds.push(st.seed);
            if *name == primary {
                t.gts_scores.push(scores);
                if t.latency.is_none() && opts.latency_users > 0 {
                    t.latency = latency(run, &model, &cfg, data, opts.latency_users, device);
                }
                t.models.push((model, cfg));
            } else if is_ablation {
                t.ablations
                    .entry(name.clone())
                    .or_default()
                    .push((model, cfg));
            } else if is_peer {
                t.peers.entry(name.clone()).or_default().push((model, cfg));
            }
        }
        let per_seed: HeldOutScores = if name == primary && seeds.len() > 1 {
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
            idx.iter().map(|&i| runs.states[i].0.clone()).collect(),
            seeds,
            per_run,
        ));
    }
    Ok(t)
}

/// A run's latency, one turn per step, over the first `users` users.
fn latency(
    run: &std::path::Path,
    model: &Scorer,
    cfg: &ModelConfig,
    data: &Dataset,
    users: usize,
    device: &Device,
) -> Option<Latency> {
    let times = step_latency(model, cfg, data, users, device);
    (!times.is_empty()).then(|| Latency {
        model: run.display().to_string(),
        turns: times.len(),
        p50_ms: quantile_ms(&times, 0.50),
        p95_ms: quantile_ms(&times, 0.95),
        p99_ms: quantile_ms(&times, 0.99),
    })
}

/// The score scale of each seed, fitted on the validation turns of `cut`.
fn fit_scales(models: &[Loaded], data: &Dataset, cut: &Cutoffs, device: &Device) -> Vec<f64> {
    let k = data.k;
    let valid_cases = labelled_turns(data, cut, 2000);
    models
        .iter()
        .map(|(model, cfg)| {
            let scores = model_scores(model, cfg, data, &valid_cases, device);
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
}

/// What every canary probe of a group of models shares: the test users, the training
/// cut-offs (for the observable reference and the score scales), the probe sites and
/// the planted rules.
struct Probing<'a> {
    data: &'a Dataset,
    cut: Cutoffs,
    probes: &'a Probes,
    rules: &'a Rules,
    opts: &'a EvalOptions,
    device: &'a Device,
}

impl Probing<'_> {
    /// The canary suite at every SNR level: the primary model's seeds (at their `scales`)
    /// judged together, and the reference systems (the observable reference learns its
    /// decay rate on the training turns).
    fn levels(&self, models: &[Loaded], scales: &[f64]) -> Vec<SnrLevel> {
        let (data, rules, seed) = (self.data, self.rules, self.opts.compare.seed);
        let observable = ObservableProbe::fit(data, |u| self.cut.test_start(u));
        let mut levels = Vec::new();
        for &snr in &SNR_LEVELS {
            if !self.opts.quiet {
                eprintln!("canary probes at {}", super::sections::snr_name(snr));
            }
            let model_probes = ModelProbe::seeds(models, scales, data, self.device);
            let (oracle, random) = (OracleProbe { rules }, RandomProbe::new(seed));
            let mut scorers: Vec<&dyn ProbeScorer> =
                vec![&oracle, &random, &ConstantProbe, &observable];
            scorers.extend(model_probes.iter().map(|m| m as &dyn ProbeScorer));
            let mut values = site_values(&scorers, data, self.probes, rules, snr, seed);
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
                observable_week_trust: observable.week_trust,
                observable_week_scale: observable.week_scale,
            });
        }
        levels
    }

    /// Each group's canary results at 20 dB (its seeds judged together, each at the scale
    /// fitted on validation turns): the retrained ablations, the learned baselines.
    fn at_20db(
        &self,
        groups: &BTreeMap<String, Vec<Loaded>>,
    ) -> BTreeMap<String, Vec<CanaryResult>> {
        let (data, rules, seed) = (self.data, self.rules, self.opts.compare.seed);
        groups
            .iter()
            .map(|(name, group)| {
                let scales = fit_scales(group, data, &self.cut, self.device);
                let model_probes = ModelProbe::seeds(group, &scales, data, self.device);
                let scorers: Vec<&dyn ProbeScorer> =
                    model_probes.iter().map(|m| m as &dyn ProbeScorer).collect();
                let values = site_values(&scorers, data, self.probes, rules, Some(20.0), seed);
                (name.clone(), judge(&values, rules, seed))
            })
            .collect()
    }
}

/// The gates of the primary model and of each reference system, the primary's checked
/// for validity against the references'.
fn judge_gates(
    suite: &MetricSuite,
    primary: &str,
    canaries: Option<&Vec<SnrLevel>>,
    dual_train: &[DualError],
    dual_reference: &[(String, Vec<DualError>)],
    latency: Option<&Latency>,
    opts: &EvalOptions,
) -> (Vec<Gate>, Vec<(String, Vec<Gate>)>) {
    let systems = suite.systems();
    let rows = |name: &str| suite.system(name).map(|s| &s.seed_rows[..]);
    let levels_of = |pick: fn(&SnrLevel) -> &Vec<CanaryResult>| {
        canaries.map(|ls| {
            ls.iter()
                .map(|l| (l.snr_db, pick(l).clone()))
                .collect::<Vec<_>>()
        })
    };
    let dcg = metric_index("dcg@10");
    let all: Vec<usize> = (0..suite.cases.len()).collect();
    let best_history = systems
        .iter()
        .filter(|s| s.kind == "history baseline")
        .max_by(|a, b| a.mean(dcg, &all).total_cmp(&b.mean(dcg, &all)))
        .map(|s| (s.name.clone(), &s.seed_rows[..]));
    let against = Against {
        heuristic: rows("heuristic").expect("the heuristic was scored"),
        history: best_history,
        xattn: rows("xattn").filter(|_| primary != "xattn"),
        transfer: primary_arm(systems, primary, '@'),
        mixed: primary_arm(systems, primary, '+'),
        units: (opts.unit == Unit::User).then_some(&suite.units[..]),
        compare: &opts.compare,
    };
    let mut primary_gates = gates::evaluate(
        &Evidence {
            name: primary.into(),
            runs: rows(primary).expect("the primary was scored").to_vec(),
            canaries: levels_of(|l| &l.model),
            dual: dual_train.to_vec(),
            latency: latency.map(|l| (l.p95_ms, l.turns)),
            reference: false,
        },
        &against,
    );
    // The metric rows of each reference; the observable reference (last) ranks no test
    // case and has no dual-error figures (`dual_reference` holds the first four): it is
    // judged on the canary gates only. The memorizer is the constant away from its
    // training turns.
    let reference_rows = ["oracle", "random", "constant", "constant"];
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
                    .and_then(|r| rows(r))
                    .map_or_else(Vec::new, <[_]>::to_vec),
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
    (primary_gates, reference)
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

/// A TSTR arm of the primary model, with its per-seed rows: with `'@'` the primary model
/// trained on another dataset (`primary@sha`), with `'+'` trained on this one with another
/// mixed in (`primary+mix=sha`).
fn primary_arm<'a>(
    systems: &'a [System],
    primary: &str,
    mark: char,
) -> Option<(String, &'a [Vec<crate::metrics::Row>])> {
    if primary.contains('@') || primary.contains("+mix=") {
        return None;
    }
    let prefix = match mark {
        '@' => format!("{primary}@"),
        _ => format!("{primary}+mix="),
    };
    let arm = systems
        .iter()
        .find(|s| s.name.starts_with(&prefix) && (mark == '@' || !s.name.contains('@')))?;
    Some((arm.name.clone(), &arm.seed_rows[..]))
}
