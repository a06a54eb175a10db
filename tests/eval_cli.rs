//! `ssmkit metrics`, `ssmkit compare` and `ssmkit eval` through the real CLI, and the
//! guarantees of the evaluation protocol (no test label reaches training or a score).

use std::path::Path;

mod common;
use common::{opts, ssmkit, tiny_data, tiny_train};
use ssmkit::data::Dataset;
use ssmkit::eval::scoring::model_scores;
use ssmkit::eval::split::test_cases;
use ssmkit::model::scorer::{Init, Variant};
use ssmkit::train::batch::cutoffs;
use ssmkit::train::{TrainConfig, flat_params, load_run, train, train_on};

fn write(dir: &Path, name: &str, text: &str) -> String {
    let p = dir.join(name);
    std::fs::write(&p, text).unwrap();
    p.to_str().unwrap().to_string()
}

fn one_line_error(args: &[&str]) -> String {
    let (ok, _, err) = ssmkit(args);
    assert!(!ok, "{args:?} succeeded");
    assert_eq!(err.trim_end().lines().count(), 1, "{err}");
    assert!(!err.contains("panicked"), "{err}");
    err
}

#[test]
fn metrics_json_matches_hand_computed_values() {
    let dir = tempfile::tempdir().unwrap();
    // Case q1 ranks c2, c0, c3, c1 (c0 relevant): HR@2 = 1, MRR@2 = 1/2, DCG@2 = 1/log2(3).
    // Case q2 ties: 0.5, 0.5, 0.5 with the last relevant: the first two rank above it.
    let f = write(
        dir.path(),
        "r.csv",
        "case_id,score,label\nq1,0.8,1\nq1,0.1,0\nq1,0.9,0\nq1,0.5,0\nq2,0.5,0\nq2,0.5,0\nq2,0.5,1\n",
    );
    let (ok, out, err) = ssmkit(&["metrics", &f, "--k", "2", "--json"]);
    assert!(ok, "{err}");
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    let q1 = &v["cases"][0];
    assert_eq!(q1["case_id"], "q1");
    assert_eq!(q1["hr"], 1.0);
    assert_eq!(q1["mrr"], 0.5);
    assert!((q1["dcg"].as_f64().unwrap() - 1.0 / 3f64.log2()).abs() < 1e-12);
    assert_eq!(q1["precision"], 0.5);
    assert_eq!(q1["recall"], 1.0);
    let q2 = &v["cases"][1];
    assert_eq!(q2["hr"], 0.0);
    assert_eq!(v["mean"]["hr"], 0.5);
    assert_eq!(v["mean"]["mrr"], 0.25);
    // The text form prints every case and the mean.
    let (ok, text, _) = ssmkit(&["metrics", &f, "--k", "2"]);
    assert!(
        ok && text.contains("q2") && text.contains("mean (2 cases)"),
        "{text}"
    );
}

#[test]
fn compare_reports_the_paired_statistics() {
    let dir = tempfile::tempdir().unwrap();
    let mut a = String::from("case_id,value\n");
    let mut b = String::from("value,case_id\n");
    for i in 0..12 {
        a += &format!("c{i},{}\n", 0.5 + 0.1 * (i % 3) as f64);
        b += &format!("{},c{}\n", 0.45, 11 - i);
    }
    let (fa, fb) = (
        write(dir.path(), "a.csv", &a),
        write(dir.path(), "b.csv", &b),
    );
    let args = [
        "compare",
        &fa,
        &fb,
        "--resamples",
        "2000",
        "--seed",
        "4",
        "--json",
    ];
    let (ok, out, err) = ssmkit(&args);
    assert!(ok, "{err}");
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["n"], 12);
    // A − B per case: 0.05, 0.15, 0.25 repeating: mean 0.15.
    assert!((v["theta_hat"].as_f64().unwrap() - 0.15).abs() < 1e-12);
    assert_eq!(v["exact"], true);
    // All differences positive: only the all-plus and all-minus patterns reach |mean|.
    assert!((v["p_value"].as_f64().unwrap() - 2.0 / 4096.0).abs() < 1e-15);
    let (lo, hi) = (
        v["ci_low"].as_f64().unwrap(),
        v["ci_high"].as_f64().unwrap(),
    );
    assert!(
        0.0 < lo && lo < 0.15 && 0.15 < hi && hi < 0.25,
        "[{lo}, {hi}]"
    );
    for key in [
        "percentile_ci_low",
        "percentile_ci_high",
        "z0",
        "acceleration",
        "n_resamples",
        "n_permutations",
    ] {
        assert!(v.get(key).is_some(), "{key} missing");
    }
    assert_eq!(v["significant"], true);
    // Same seed, same answer.
    let (_, again, _) = ssmkit(&args);
    assert_eq!(out, again);
}

#[test]
fn bad_inputs_are_one_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let a = write(d, "a.csv", "case_id,value\nx,1\ny,2\n");
    let missing = write(d, "missing.csv", "case_id,value\nx,1\n");
    let err = one_line_error(&["compare", &a, &missing]);
    assert!(err.contains("\"y\""), "{err}");
    let extra = write(d, "extra.csv", "case_id,value\nx,1\ny,2\nz,3\n");
    let err = one_line_error(&["compare", &a, &extra]);
    assert!(err.contains("\"z\""), "{err}");
    let dup = write(d, "dup.csv", "case_id,value\nx,1\ny,2\nx,3\n");
    let err = one_line_error(&["compare", &a, &dup]);
    assert!(err.contains("repeats"), "{err}");
    let empty = write(d, "empty.csv", "");
    one_line_error(&["compare", &a, &empty]);
    let header_only = write(d, "header.csv", "case_id,value\n");
    let err = one_line_error(&["compare", &a, &header_only]);
    assert!(err.contains("no rows"), "{err}");
    let nan = write(d, "nan.csv", "case_id,score,label\nq,NaN,1\n");
    let err = one_line_error(&["metrics", &nan]);
    assert!(err.contains("line 2") && err.contains("score"), "{err}");
    let word = write(d, "word.csv", "case_id,score,label\nq,0.3,yes\n");
    let err = one_line_error(&["metrics", &word]);
    assert!(err.contains("label"), "{err}");
    let nolabel = write(d, "nolabel.csv", "case_id,score\nq,0.3\n");
    let err = one_line_error(&["metrics", &nolabel]);
    assert!(err.contains("label"), "{err}");
    one_line_error(&["metrics", &d.join("absent.csv").to_string_lossy()]);
    let err = one_line_error(&["compare", &a, &a, "--unit", "user"]);
    assert!(err.contains("user_id"), "{err}");
}

#[test]
fn bench_scan_reports_json() {
    let (ok, out, err) = ssmkit(&[
        "bench",
        "scan",
        "--batch",
        "2",
        "--d-inner",
        "4",
        "--d-state",
        "3",
        "--len",
        "5",
        "--repeats",
        "2",
        "--json",
    ]);
    assert!(ok, "{err}");
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert!(v["fwd_bwd_ms"].as_f64().unwrap() > 0.0);
    assert_eq!(v["len"], 5);
    assert_eq!(v["implementation"], "fused");
    let (ok, out, err) = ssmkit(&[
        "bench",
        "scan",
        "--batch",
        "2",
        "--d-inner",
        "4",
        "--d-state",
        "3",
        "--len",
        "5",
        "--repeats",
        "1",
        "--impl",
        "reference",
        "--json",
    ]);
    assert!(ok, "{err}");
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["implementation"], "reference");
    let (ok, _, err) = ssmkit(&["bench", "scan", "--impl", "blocked"]);
    assert!(
        !ok && err.contains("fast") && err.contains("reference"),
        "{err}"
    );
}

/// Sets every label (observed and clean) and the relevance of the turns at or after `from`
/// of every user to the opposite of what they were.
fn flip_labels_from(data: &mut Dataset, from: i64) {
    let k = data.k;
    for u in &mut data.users {
        let first = ssmkit::train::batch::turns_before(u, from);
        for i in first * k..u.turns * k {
            u.labels[i] = 1.0 - u.labels[i];
            u.relevance[i] = 1.0 - u.relevance[i];
        }
    }
}

#[test]
fn gts_split_keeps_test_labels_out_of_training() {
    let dir = tempfile::tempdir().unwrap();
    let path = tiny_data(dir.path());
    let data = Dataset::load(&path).unwrap();
    let cfg = TrainConfig {
        steps: 30,
        eval_every: 10,
        ..tiny_train()
    };
    let cut = cutoffs(&data, cfg.valid_from, cfg.test_from);
    let weights = |d: &Dataset, name: &str| -> Vec<f32> {
        let run = dir.path().join(name);
        train_on(d, &cfg, &opts(&path, &run, 7)).unwrap();
        let (m, _) = load_run(&run, false, &burn::prelude::Device::flex()).unwrap();
        flat_params(&m)
    };
    let original = weights(&data, "original");
    // Every test label flipped: training and model selection must not notice.
    let mut test_flipped = data.clone();
    flip_labels_from(&mut test_flipped, cut.test);
    assert!(
        original == weights(&test_flipped, "test-flipped"),
        "test labels reached training"
    );
    // The check can fail: flipping every label changes the weights.
    let mut all_flipped = data.clone();
    flip_labels_from(&mut all_flipped, i64::MIN);
    assert!(
        original != weights(&all_flipped, "all-flipped"),
        "labels do not reach training at all"
    );
}

/// TSTR's synthetic + real arm: a dataset mixed into training gives only its training
/// turns (its validation and test labels never reach the weights), and the run's own
/// dataset keeps its test labels out as before.
#[test]
fn a_mixed_dataset_trains_on_its_training_turns_only() {
    let dir = tempfile::tempdir().unwrap();
    let path = tiny_data(dir.path());
    let data = Dataset::load(&path).unwrap();
    let other = common::gen_tiny(
        &ssmkit::config::Config {
            seed: 99,
            ..common::tiny_config()
        },
        &dir.path().join("other"),
    );
    let mixed = Dataset::load(&other).unwrap();
    let cfg = TrainConfig {
        steps: 30,
        eval_every: 10,
        ..tiny_train()
    };
    let weights = |d: &Dataset, m: Option<&Dataset>, name: &str| -> Vec<f32> {
        let run = dir.path().join(name);
        let mut o = opts(&path, &run, 7);
        match m {
            Some(m) => {
                o.mix = vec![other.clone()];
                ssmkit::train::train_on_mixed(d, std::slice::from_ref(m), &cfg, &o).unwrap();
            }
            None => {
                train_on(d, &cfg, &o).unwrap();
            }
        }
        let (model, _) = load_run(&run, false, &burn::prelude::Device::flex()).unwrap();
        flat_params(&model)
    };
    let original = weights(&data, Some(&mixed), "mixed");
    let state = ssmkit::train::read_run_state(&dir.path().join("mixed")).unwrap();
    assert_eq!(state.mixed.len(), 1);
    assert_eq!(state.mixed[0].share, 0.5);
    let (own, theirs) = (cut_of(&data, &cfg), cut_of(&mixed, &cfg));
    let mut held_out = (data.clone(), mixed.clone());
    flip_labels_from(&mut held_out.0, own.test);
    flip_labels_from(&mut held_out.1, theirs.valid);
    assert!(
        original == weights(&held_out.0, Some(&held_out.1), "held-out-flipped"),
        "held-out labels reached training"
    );
    // The checks can fail: the mixed dataset's training labels reach the weights, and
    // mixing it in trains another model than training alone.
    let mut all = mixed.clone();
    flip_labels_from(&mut all, i64::MIN);
    assert!(
        original != weights(&data, Some(&all), "mixed-flipped"),
        "the mixed dataset does not reach training"
    );
    assert!(original != weights(&data, None, "alone"));
}

/// The tiny dataset written into `dir` and loaded, and a run trained 10 steps on it:
/// (the dataset's path, the dataset, the run, its training config).
fn briefly_trained(dir: &Path) -> (std::path::PathBuf, Dataset, std::path::PathBuf, TrainConfig) {
    let path = tiny_data(dir);
    let data = Dataset::load(&path).unwrap();
    let run = dir.join("run");
    let cfg = TrainConfig {
        steps: 10,
        ..tiny_train()
    };
    train(&cfg, &opts(&path, &run, 1)).unwrap();
    (path, data, run, cfg)
}

#[test]
fn a_test_score_sees_only_the_history_before_its_turn() {
    let dir = tempfile::tempdir().unwrap();
    let (_, data, run, cfg) = briefly_trained(dir.path());
    let device = burn::prelude::Device::flex();
    let (model, mcfg) = load_run(&run, false, &device).unwrap();
    let (gts, _) = test_cases(&data, &cut_of(&data, &cfg));
    let case = *gts
        .iter()
        .find(|c| c.turn > 0)
        .expect("a test case after the first turn");
    let before = model_scores(&model, &mcfg, &data, &[case], &device);
    // The case's own labels and everything after it: no effect on its scores.
    let mut changed = data.clone();
    let turn_ts = changed.users[case.user].timestamp[case.turn];
    flip_labels_from(&mut changed, turn_ts);
    let after = model_scores(&model, &mcfg, &changed, &[case], &device);
    assert_eq!(before, after, "a score saw its own turn's labels");
    // The turn before it does reach it (the model is temporal), so the check can fail.
    let prev_ts = changed.users[case.user].timestamp[case.turn - 1];
    flip_labels_from(&mut changed, prev_ts);
    let earlier = model_scores(&model, &mcfg, &changed, &[case], &device);
    assert_ne!(before, earlier, "the history does not reach the score");
}

fn cut_of(data: &Dataset, cfg: &TrainConfig) -> ssmkit::train::batch::Cutoffs {
    cutoffs(data, cfg.valid_from, cfg.test_from)
}

#[test]
fn eval_writes_the_report_and_gates_and_can_fail_the_build() {
    let dir = tempfile::tempdir().unwrap();
    let path = tiny_data(dir.path());
    let mut runs = Vec::new();
    for (model, seed) in [
        (Variant::Mamba, 1),
        (Variant::Mamba, 2),
        (Variant::Xattn, 1),
    ] {
        let run = dir.path().join(format!("{}-{seed}", model.name()));
        let cfg = TrainConfig {
            model,
            steps: 20,
            eval_every: 20,
            ..tiny_train()
        };
        train(&cfg, &opts(&path, &run, seed)).unwrap();
        runs.push(run);
    }
    let out = dir.path().join("report");
    let mut args = vec![
        "eval".to_string(),
        "--data".into(),
        path.display().to_string(),
        "--out".into(),
        out.display().to_string(),
        "--resamples".into(),
        "500".into(),
        "--permutations".into(),
        "500".into(),
        "--latency-users".into(),
        "1".into(),
        "--probes".into(),
        "4".into(),
        "--quiet".into(),
    ];
    for r in &runs {
        args.push("--run".into());
        args.push(r.display().to_string());
    }
    let argv: Vec<&str> = args.iter().map(String::as_str).collect();
    let (ok, stdout, err) = ssmkit(&argv);
    assert!(ok, "{err}");
    for f in [
        "report.md",
        "gates.json",
        "metrics.csv",
        "cases.csv",
        "comparisons.csv",
    ] {
        assert!(out.join(f).is_file(), "{f} missing; {stdout}");
    }
    let verdict: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("gates.json")).unwrap()).unwrap();
    let gates = verdict["gates"].as_array().unwrap();
    assert_eq!(gates.len(), 10);
    for g in gates {
        let status = g["status"].as_str().unwrap();
        assert!(
            ["PASS", "FAIL", "NOT MEASURED", "INVALID"].contains(&status),
            "{g}"
        );
        // A gate passes only with a measured value.
        assert!(status != "PASS" || g["value"].is_number(), "{g}");
        for key in ["name", "phase", "value", "ci_low", "ci_high", "threshold"] {
            assert!(g.get(key).is_some(), "{key} missing in {g}");
        }
    }
    // The same gates for the reference systems: random and constant fail every gate
    // that judges quality, the memorizer fails the dual-error gate, the oracle passes
    // the canary contract.
    let reference = &verdict["reference"];
    for name in ["oracle", "random", "constant", "memorizer"] {
        assert_eq!(reference[name].as_array().unwrap().len(), 10, "{name}");
    }
    for name in ["random", "constant"] {
        for g in reference[name].as_array().unwrap() {
            if g["judges_quality"] == true {
                assert_ne!(g["status"], "PASS", "{name} passes {g}");
            }
        }
    }
    let status_of = |who: &str, prefix: &str| -> String {
        reference[who]
            .as_array()
            .unwrap()
            .iter()
            .find(|g| g["name"].as_str().unwrap().starts_with(prefix))
            .unwrap()["status"]
            .as_str()
            .unwrap()
            .to_string()
    };
    assert_eq!(status_of("memorizer", "dual error"), "FAIL");
    for prefix in [
        "canaries",
        "mean canary detection",
        "SNR curve",
        "dual error",
    ] {
        assert_eq!(status_of("oracle", prefix), "PASS", "{prefix}");
    }
    let set = &verdict["test_set"];
    assert!(set["cases"].as_u64().unwrap() > 0 && set["users"].as_u64().unwrap() > 0);
    assert!(set["warm_users"].as_u64().unwrap() <= set["users"].as_u64().unwrap());
    let canary = gates
        .iter()
        .find(|g| g["name"].as_str().unwrap().starts_with("canaries"))
        .unwrap();
    assert!(canary["value"].is_number(), "{canary}");
    let summary: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("summary.json")).unwrap()).unwrap();
    assert_eq!(summary["poc"].as_array().unwrap().len(), 7);
    // The weight the training turns give the observable reference's weekly factor, the
    // same at every level, and what the report makes of it.
    let trust: Vec<f64> = summary["canaries"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| l["observable_week_trust"].as_f64().unwrap())
        .collect();
    assert!(trust[0].is_finite(), "{trust:?}");
    assert!(trust.iter().all(|&w| w == trust[0]), "{trust:?}");
    let report = std::fs::read_to_string(out.join("report.md")).unwrap();
    assert!(
        report.contains(&format!("a model's loss, gives it {:.3}, with", trust[0])),
        "the report does not give the weekly factor's weight"
    );
    // The learned baseline is probed on the same sites at 20 dB, beside the primary.
    let peers = summary["peers"].as_object().unwrap();
    assert_eq!(peers.keys().collect::<Vec<_>>(), ["xattn"], "{peers:?}");
    let xattn = peers["xattn"].as_array().unwrap();
    assert_eq!(xattn.len(), 7);
    assert!(
        xattn
            .iter()
            .all(|r| r["statistic"].is_number() || r["probes"] == 0)
    );
    let passed = xattn.iter().filter(|r| r["pass"] == true).count();
    assert!(
        report.contains("| canary | mamba | xattn |"),
        "no peer table"
    );
    let total = report
        .lines()
        .find(|l| l.starts_with("| passed | "))
        .unwrap();
    assert!(
        total.ends_with(&format!(" | {passed}/7 |")),
        "{total}: xattn passes {passed}/7"
    );
    let html = std::fs::read_to_string(out.join("report.html")).unwrap();
    assert!(
        html.contains("<svg") && html.contains("SNR curve"),
        "the HTML report lacks its figures"
    );
    // The report and the terminal open with the verdict: a line per phase transition and
    // every gate that did not pass, by name.
    let md = std::fs::read_to_string(out.join("report.md")).unwrap();
    let verdict_md = &md[md.find("## Verdict").unwrap()..md.find("## Phase gates").unwrap()];
    assert!(md.find("## Verdict") < md.find("## Metrics, GTS"), "{md}");
    for phase in ["0→1", "1→2", "0 contract"] {
        assert!(
            verdict_md.contains(&format!("Phase {phase}: ")),
            "{verdict_md}"
        );
        assert!(stdout.contains(&format!("Phase {phase}: ")), "{stdout}");
    }
    for g in gates.iter().filter(|g| g["status"] != "PASS") {
        let name = g["name"].as_str().unwrap();
        assert!(verdict_md.contains(name), "{name} missing:\n{verdict_md}");
        assert!(stdout.contains(name), "{name} missing:\n{stdout}");
    }
    assert!(verdict_md.contains("Validity: "), "{verdict_md}");
    assert!(out.join("snr_curve.svg").is_file() && out.join("canaries.csv").is_file());
    let canaries_csv = std::fs::read_to_string(out.join("canaries.csv")).unwrap();
    let peer_rows = canaries_csv.lines().filter(|l| l.starts_with("20,xattn,"));
    assert_eq!(peer_rows.count(), 7, "{canaries_csv}");
    // The seeds are averaged: the primary model has two.
    let metrics = std::fs::read_to_string(out.join("metrics.csv")).unwrap();
    assert!(
        metrics.lines().any(|l| l.starts_with("gts,mamba,model,2,")),
        "{metrics}"
    );
    assert!(
        metrics
            .lines()
            .any(|l| l.starts_with("gts,xattn,learned baseline,1,")),
        "{metrics}"
    );
    // An existing report is not replaced without --force, and --fail-on-gate fails.
    let (ok, _, err) = ssmkit(&argv);
    assert!(!ok && err.contains("--force"), "{err}");
    argv_with(&argv, &["--force", "--fail-on-gate"], |code, err| {
        assert_eq!(code, Some(2), "{err}");
    });
    // With room for a few users, eval reads a seeded sample of the users with a test
    // turn and says so; the whole set when everything fits.
    let summary_of = |dir: &Path| -> serde_json::Value {
        serde_json::from_str(&std::fs::read_to_string(dir.join("summary.json")).unwrap()).unwrap()
    };
    assert!(!summary["split"].as_str().unwrap().contains("sample"));
    let small = dir.path().join("small");
    let mut sampled: Vec<&str> = argv.clone();
    sampled[4] = small.to_str().unwrap();
    argv_with(&sampled, &["--resident-mb", "4"], |code, err| {
        assert_eq!(code, Some(0), "{err}");
    });
    let part = summary_of(&small);
    assert!(
        part["split"].as_str().unwrap().contains("seeded sample of"),
        "{}",
        part["split"]
    );
    // The analyses that need users in memory ran on the sample...
    let split = part["split"].as_str().unwrap();
    let sample: Vec<u64> = split
        .split("seeded sample of ")
        .nth(1)
        .unwrap()
        .split(' ')
        .filter_map(|w| w.parse().ok())
        .take(2)
        .collect();
    assert!(sample[0] >= 1 && sample[0] < sample[1], "{split}");
    // ...and the metric suite over every test user, read a block at a time: the same
    // cases as the whole eval, and the same metrics for every system that draws nothing
    // at random (the models' scores agree to float rounding across batchings).
    assert!(
        split.contains("every one of the") && split.contains("blocks"),
        "{split}"
    );
    assert_eq!(part["test_set"], summary["test_set"]);
    assert_eq!(part["loo_set"], summary["loo_set"]);
    let rows = |dir: &Path| -> Vec<Vec<String>> {
        std::fs::read_to_string(dir.join("metrics.csv"))
            .unwrap()
            .lines()
            .map(|l| l.split(',').map(String::from).collect())
            .collect()
    };
    let (whole, blocks) = (rows(&out), rows(&small));
    assert_eq!(whole.len(), blocks.len());
    assert_eq!(whole[0], blocks[0]);
    for (a, b) in whole.iter().zip(&blocks).skip(1) {
        assert_eq!(a[..5], b[..5]);
        if a[1] == "random" {
            continue;
        }
        for (x, y) in a[5..].iter().zip(&b[5..]) {
            let (x, y): (f64, f64) = (x.parse().unwrap(), y.parse().unwrap());
            assert!((x - y).abs() < 1e-9, "{a:?} vs {b:?}");
        }
    }
    // Bad input: an unknown run is one clear error and writes nothing.
    let r2 = dir.path().join("r2");
    let (ok, _, err) = ssmkit(&[
        "eval",
        "--data",
        &path.display().to_string(),
        "--run",
        "no/such/run",
        "--out",
        &r2.display().to_string(),
    ]);
    assert!(!ok && err.contains("no/such/run"), "{err}");
    assert!(!r2.exists());
}

fn argv_with(argv: &[&str], extra: &[&str], check: impl FnOnce(Option<i32>, String)) {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_ssmkit"))
        .args(argv)
        .args(extra)
        .output()
        .unwrap();
    check(out.status.code(), String::from_utf8(out.stderr).unwrap());
}

#[test]
fn canary_probes_pass_for_the_oracle_and_fail_for_blind_and_untrained_models() {
    use ssmkit::canary::Rules;
    use ssmkit::eval::canary::{
        ConstantProbe, ModelProbe, OracleProbe, Probes, RandomProbe, SNR_LEVELS, mean_detection,
        run_suite,
    };
    use ssmkit::eval::dual::dual_error;
    use ssmkit::model::scorer::{ModelConfig, Size};
    let dir = tempfile::tempdir().unwrap();
    let path = tiny_data(dir.path());
    let data = Dataset::load(&path).unwrap();
    let cfg = tiny_train();
    let (gts, _) = test_cases(&data, &cut_of(&data, &cfg));
    let rules = Rules::from_manifest(&data.manifest)
        .unwrap()
        .expect("the tiny dataset plants canaries");
    let probes = Probes::build(&data, &gts, 16, 0);
    let oracle = OracleProbe { rules: &rules };
    let clean = run_suite(&oracle, &data, &probes, &rules, None, 0);
    for r in &clean {
        assert!(r.probes > 0, "no probe for {}", r.canary);
        assert!(r.pass, "the oracle fails {}: {r:?}", r.canary);
        assert!(r.ci_low <= r.statistic && r.statistic <= r.ci_high, "{r:?}");
    }
    // At 20 dB too: the probes judge within the turn, so noise shared by the versions
    // of a probe does not move the oracle.
    for r in run_suite(&oracle, &data, &probes, &rules, Some(20.0), 0) {
        assert!(r.pass, "the oracle fails {} at 20 dB: {r:?}", r.canary);
    }
    // Blind systems detect half and pass nothing.
    for blind in [
        run_suite(&ConstantProbe, &data, &probes, &rules, None, 0),
        run_suite(&RandomProbe::new(3), &data, &probes, &rules, None, 0),
    ] {
        for r in &blind {
            assert!(!r.pass, "a blind scorer passes {}: {r:?}", r.canary);
        }
        assert!(mean_detection(&blind) < 0.7, "{blind:?}");
    }
    // A listwise model's per-turn constant does not count: shifting every score of a
    // turn by an amount that depends on the edit changes no value.
    struct Shifted<'a>(OracleProbe<'a>);
    impl ssmkit::eval::canary::ProbeScorer for Shifted<'_> {
        fn score(&self, seqs: &[ssmkit::data::UserSeq], k: usize) -> Vec<Vec<f64>> {
            self.0
                .score(seqs, k)
                .into_iter()
                .zip(seqs)
                .map(|(s, u)| {
                    let t = u.turns - 1;
                    let shift = 5.0 * u.focal[2 * t + 1] as f64 + 3.0 * u.context[t * 6 + 3] as f64;
                    s.into_iter().map(|x| x + shift).collect()
                })
                .collect()
        }
    }
    let shifted = run_suite(
        &Shifted(OracleProbe { rules: &rules }),
        &data,
        &probes,
        &rules,
        None,
        0,
    );
    for (a, b) in shifted.iter().zip(&clean) {
        assert!((a.statistic - b.statistic).abs() < 1e-9, "{a:?} vs {b:?}");
    }
    // An untrained model fails the suite.
    let device = burn::prelude::Device::flex();
    let mcfg = ModelConfig::sized(Variant::Mamba, Size::Tiny, data.embedding_dim, 4096);
    let model = mcfg.init(3, &device);
    let untrained = ModelProbe {
        model: &model,
        cfg: &mcfg,
        data: &data,
        device: &device,
        scale: 1.0,
    };
    let u = run_suite(&untrained, &data, &probes, &rules, None, 0);
    let passed = u.iter().filter(|r| r.pass).count();
    assert!(passed < 7, "an untrained model passes every canary: {u:?}");
    assert!(mean_detection(&u) < mean_detection(&clean));
    // The oracle reading noisy features never gains from noise.
    let curve: Vec<f64> = SNR_LEVELS
        .iter()
        .map(|&snr| mean_detection(&run_suite(&oracle, &data, &probes, &rules, snr, 0)))
        .collect();
    assert!(curve.windows(2).all(|w| w[1] <= w[0] + 1e-12), "{curve:?}");
    // The oracle's response to the time of the week is the planted weekly cycle.
    let f = ssmkit::eval::canary::frequency_response(&oracle, &data, &probes, &rules, 4);
    assert!(f.weekly_share > 0.8 && f.daily_share < 0.05, "{f:?}");
    // The dual-error test fails a system that memorized the observed labels and a
    // constant, and passes the truth.
    let k = data.k;
    let predict = |f: &dyn Fn(usize, usize) -> f64| -> Vec<Vec<f64>> {
        gts.iter()
            .map(|c| (0..k).map(|j| f(c.user, c.turn * k + j)).collect())
            .collect()
    };
    let memorized = predict(&|u, s| data.users[u].labels[s] as f64);
    let truth = predict(&|u, s| data.users[u].relevance[s] as f64);
    let constant = predict(&|_, _| ssmkit::eval::dual::base_rate(&data, &gts));
    for (name, p, want) in [
        ("memorizer", &memorized, false),
        ("constant", &constant, false),
        ("truth", &truth, true),
    ] {
        let measured: Vec<_> = dual_error(&data, &gts, p)
            .into_iter()
            .filter(|d| d.n > 0)
            .collect();
        assert!(!measured.is_empty());
        assert!(
            measured.iter().all(|d| d.pass == want),
            "{name}: {measured:?}"
        );
    }
}

#[test]
fn transfer_evaluates_runs_trained_elsewhere_on_this_datasets_split() {
    let dir = tempfile::tempdir().unwrap();
    let synthetic = tiny_data(dir.path());
    // A second dataset stands in for the real one: same layout, other seed.
    let real = common::gen_tiny(
        &ssmkit::config::Config {
            seed: 99,
            ..common::tiny_config()
        },
        &dir.path().join("real"),
    );
    let cfg = TrainConfig {
        steps: 10,
        ..tiny_train()
    };
    let (on_syn, on_real) = (dir.path().join("syn-run"), dir.path().join("real-run"));
    train(&cfg, &opts(&synthetic, &on_syn, 1)).unwrap();
    train(&cfg, &opts(&real, &on_real, 1)).unwrap();
    let out = dir.path().join("tstr");
    let args = |extra: &[&str]| -> Vec<String> {
        let mut a: Vec<String> = [
            "eval",
            "--data",
            real.to_str().unwrap(),
            "--run",
            on_syn.to_str().unwrap(),
            "--run",
            on_real.to_str().unwrap(),
            "--out",
            out.to_str().unwrap(),
            "--resamples",
            "200",
            "--permutations",
            "200",
            "--probes",
            "2",
            "--latency-users",
            "0",
            "--quiet",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        a.extend(extra.iter().map(|s| s.to_string()));
        a
    };
    let a = args(&[]);
    let (ok, _, err) = ssmkit(&a.iter().map(String::as_str).collect::<Vec<_>>());
    assert!(!ok && err.contains("--transfer"), "{err}");
    let a = args(&["--transfer"]);
    let (ok, _, err) = ssmkit(&a.iter().map(String::as_str).collect::<Vec<_>>());
    assert!(ok, "{err}");
    let metrics = std::fs::read_to_string(out.join("metrics.csv")).unwrap();
    assert!(
        metrics.lines().any(|l| l.starts_with("gts,mamba,")),
        "{metrics}"
    );
    assert!(
        metrics.lines().any(|l| l.starts_with("gts,mamba@")),
        "{metrics}"
    );
    assert!(
        std::fs::read_to_string(out.join("report.md"))
            .unwrap()
            .contains("## TSTR")
    );
}

/// A JSONL stream of `users` × `turns` turns of 20 candidates whose features carry no
/// signal: each user's topic of 3 memories stays from one turn to the next with
/// probability `persist` and is relevant with probability 0.9, other memories 0.03.
fn topic_stream(dir: &Path, name: &str, persist: f64, seed: u64) -> std::path::PathBuf {
    use rand::{RngExt, SeedableRng};
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
    let mut lines = Vec::new();
    for user in 0..24 {
        let draw_topic = |rng: &mut rand_chacha::ChaCha8Rng| -> Vec<u32> {
            let mut t: Vec<u32> = Vec::new();
            while t.len() < 3 {
                let m = rng.random_range(0..60u32);
                if !t.contains(&m) {
                    t.push(m);
                }
            }
            t
        };
        let mut topic = draw_topic(&mut rng);
        for turn in 0..60 {
            if turn > 0 && !rng.random_bool(persist) {
                topic = draw_topic(&mut rng);
            }
            let mut ids = topic.clone();
            while ids.len() < 20 {
                let m = rng.random_range(0..60u32);
                if !ids.contains(&m) {
                    ids.push(m);
                }
            }
            for i in (1..ids.len()).rev() {
                let j = rng.random_range(0..=i);
                ids.swap(i, j);
            }
            let labels: Vec<f64> = ids
                .iter()
                .map(|m| rng.random_bool(if topic.contains(m) { 0.9 } else { 0.03 }) as u8 as f64)
                .collect();
            let features: Vec<Vec<f64>> = ids
                .iter()
                .map(|_| (0..17).map(|_| rng.random_range(0.0..1.0)).collect())
                .collect();
            lines.push(
                serde_json::json!({
                    "user_id": format!("u{user}"),
                    "timestamp": 1_767_571_200 + turn * 3_600 + user,
                    "memory_ids": ids,
                    "features": features,
                    "labels": labels,
                })
                .to_string(),
            );
        }
    }
    import_lines(dir, name, &lines)
}

/// Writes `lines` to `dir/<name>.jsonl` and imports them into the dataset `dir/<name>`.
fn import_lines(dir: &Path, name: &str, lines: &[String]) -> std::path::PathBuf {
    let input = dir.join(format!("{name}.jsonl"));
    std::fs::write(&input, lines.join("\n") + "\n").unwrap();
    let out = dir.join(name);
    ssmkit::datagen::import::import(
        &input,
        &ssmkit::datagen::GenOptions {
            out: out.clone(),
            force: false,
            quiet: true,
            materialize: false,
        },
    )
    .unwrap();
    out
}

#[test]
fn history_baselines_see_persistence_and_only_persistence() {
    use ssmkit::metrics::case_metrics;
    use ssmkit::model::baselines::{self, Baseline};
    use ssmkit::model::rules::{HistoryRule, scores};
    let dir = tempfile::tempdir().unwrap();
    // Mean DCG@10 of each history rule and of random, over every turn with a relevant
    // label (all scored from the turns before them).
    let dcg = |data: &Dataset| -> (Vec<f64>, f64) {
        let every = ssmkit::train::batch::Cutoffs {
            valid: i64::MIN,
            test: i64::MIN,
            random: None,
        };
        let (cases, _) = test_cases(data, &every);
        let k = data.k;
        let mut rng = rand::SeedableRng::seed_from_u64(5);
        let mut rules = vec![0.0; HistoryRule::ALL.len()];
        let mut random = 0.0;
        for c in &cases {
            let u = &data.users[c.user];
            let labels: Vec<f64> = (0..k).map(|j| u.labels[c.turn * k + j] as f64).collect();
            for (r, s) in scores(u, c.turn, k).iter().enumerate() {
                rules[r] += case_metrics(s, &labels, 10).dcg / cases.len() as f64;
            }
            let s = baselines::scores(Baseline::Random, u, c.turn, k, &mut rng);
            random += case_metrics(&s, &labels, 10).dcg / cases.len() as f64;
        }
        (rules, random)
    };
    // A persisting topic: the previous turn's relevant memories are the next turn's.
    let data = Dataset::load(&topic_stream(dir.path(), "persist", 0.85, 1)).unwrap();
    let (rules, random) = dcg(&data);
    let previous = rules[0];
    assert!(
        previous > 1.8 * random,
        "prev-relevant {previous:.3}, random {random:.3}"
    );
    assert!(
        rules[2] > 1.8 * random,
        "decayed count {:.3}, random {random:.3}",
        rules[2]
    );
    // A topic redrawn every turn: history says nothing, and no rule beats chance.
    let data = Dataset::load(&topic_stream(dir.path(), "fresh", 0.0, 2)).unwrap();
    let (rules, random) = dcg(&data);
    for (rule, v) in HistoryRule::ALL.iter().zip(&rules) {
        assert!(
            v - random < 0.1,
            "{}: {v:.3} against random {random:.3} on a stream without persistence",
            rule.name()
        );
    }
}

/// A JSONL stream of timestamped sessions with a weekly cycle: 30 users, a turn about
/// every 21 hours over eight weeks, 20 candidates. On weekends the two candidates flagged
/// `is_constraint` are relevant (p 0.9), on weekdays the one with importance 1; the rest
/// 0.03. `inverted` swaps weekend and weekday. Features carry the turn's day of the week.
fn weekly_stream(dir: &Path, name: &str, seed: u64, inverted: bool) -> std::path::PathBuf {
    let labels = if inverted {
        Labels::Inverted
    } else {
        Labels::Weekly
    };
    weekly_users(dir, name, seed, labels, 30, 0)
}

/// The labels of a [`weekly_users`] stream.
#[derive(Clone, Copy, PartialEq)]
enum Labels {
    Weekly,
    /// Weekend and weekday swapped.
    Inverted,
    /// Relevant with the same probability (0.1) whatever the memory, day or history.
    Random,
}

/// [`weekly_stream`] of `users` users with `labels`, who log no weekend turn before their
/// turn `weekends_from` (0: every turn is logged).
fn weekly_users(
    dir: &Path,
    name: &str,
    seed: u64,
    labels: Labels,
    users: i64,
    weekends_from: i64,
) -> std::path::PathBuf {
    let inverted = labels == Labels::Inverted;
    let kind = labels;
    use rand::{RngExt, SeedableRng};
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
    let mut lines = Vec::new();
    let start = 1_767_571_200i64; // Monday 2026-01-05 00:00 UTC
    for user in 0..users {
        for turn in 0..64i64 {
            let ts = start + turn * 75_600 + rng.random_range(0..3_600) + user * 60;
            let day = ts.div_euclid(86_400);
            let weekday = (day + 3).rem_euclid(7); // 0 = Monday (1970-01-01 was a Thursday)
            if weekday >= 5 && turn < weekends_from {
                continue;
            }
            let weekend = (weekday >= 5) != inverted;
            let hour = (ts.rem_euclid(86_400)) as f64 / 3_600.0;
            let tau = std::f64::consts::TAU;
            let mut ids: Vec<u32> = vec![0, 1, 2];
            while ids.len() < 20 {
                let m = rng.random_range(3..80u32);
                if !ids.contains(&m) {
                    ids.push(m);
                }
            }
            for i in (1..ids.len()).rev() {
                let j = rng.random_range(0..=i);
                ids.swap(i, j);
            }
            let mut features = Vec::new();
            let mut labels = Vec::new();
            for &m in &ids {
                let mut x: Vec<f64> = (0..17).map(|_| rng.random_range(0.0..1.0)).collect();
                x[1] = if m == 2 {
                    1.0
                } else {
                    rng.random_range(0.0..0.5)
                };
                x[3] = (tau * hour / 24.0).sin();
                x[4] = (tau * hour / 24.0).cos();
                x[5] = (tau * weekday as f64 / 7.0).sin();
                x[6] = (tau * weekday as f64 / 7.0).cos();
                x[14] = (m < 2) as u8 as f64;
                let on = if weekend { m < 2 } else { m == 2 };
                let p = match (kind, on) {
                    (Labels::Random, _) => 0.1,
                    (_, true) => 0.9,
                    (_, false) => 0.03,
                };
                labels.push(rng.random_bool(p) as u8 as f64);
                features.push(x);
            }
            lines.push(
                serde_json::json!({
                    "user_id": format!("u{user}"),
                    "session_id": day,
                    "timestamp": ts,
                    "memory_ids": ids,
                    "features": features,
                    "labels": labels,
                })
                .to_string(),
            );
        }
    }
    import_lines(dir, name, &lines)
}

/// Layouts that meet: a model that reads no content (`temporal_only`) trained on a world
/// with 16-dimensional content is evaluated on imported sessions without content; one
/// that reads content is refused, and the error names the setting that makes them meet.
#[test]
fn a_model_that_reads_no_content_transfers_across_content_widths() {
    let dir = tempfile::tempdir().unwrap();
    let synthetic = tiny_data(dir.path());
    let real = weekly_stream(dir.path(), "real", 1, false);
    assert_eq!(Dataset::load(&real).unwrap().embedding_dim, 0);
    let run = |inputs: ssmkit::model::scorer::Inputs, name: &str| {
        let r = dir.path().join(name);
        let cfg = TrainConfig {
            steps: 6,
            inputs,
            ..tiny_train()
        };
        train(&cfg, &opts(&synthetic, &r, 1)).unwrap();
        r
    };
    let reads = run(ssmkit::model::scorer::Inputs::All, "reads-content");
    let blind = run(ssmkit::model::scorer::Inputs::TemporalOnly, "temporal-only");
    let eval = |r: &Path, name: &str| {
        let out = dir.path().join(name);
        let (ok, _, err) = ssmkit(&[
            "eval",
            "--data",
            real.to_str().unwrap(),
            "--run",
            r.to_str().unwrap(),
            "--transfer",
            "--out",
            out.to_str().unwrap(),
            "--resamples",
            "100",
            "--permutations",
            "100",
            "--latency-users",
            "1",
            "--quiet",
        ]);
        (ok, err, out)
    };
    let (ok, err, out) = eval(&reads, "refused");
    assert!(
        !ok && err.contains("16-dimensional") && err.contains("`[world] embedding_dim = 0`"),
        "{err}"
    );
    assert!(!out.exists());
    let (ok, err, out) = eval(&blind, "transferred");
    assert!(ok, "{err}");
    let metrics = std::fs::read_to_string(out.join("metrics.csv")).unwrap();
    assert!(
        metrics.lines().any(|l| l.starts_with("gts,mamba")),
        "{metrics}"
    );
}

/// Exported sessions, end to end: import → train → eval on the global temporal split,
/// then TSTR: a model trained on a synthetic stream of the same weekly cycle is evaluated
/// on the real one with `--transfer`, and the TSTR gate passes; trained on a stream whose
/// cycle is inverted, it fails, and transfers far less than the same cycle does.
#[test]
fn weekly_sessions_import_train_evaluate_and_transfer_from_synthetic() {
    let dir = tempfile::tempdir().unwrap();
    let real = weekly_stream(dir.path(), "real", 1, false);
    let synthetic = weekly_stream(dir.path(), "synthetic", 2, false);
    let inverted = weekly_stream(dir.path(), "inverted", 3, true);
    assert!(Dataset::load(&real).unwrap().time_axis());
    let cfg = TrainConfig {
        steps: 160,
        eval_every: 40,
        patience: 0,
        ..tiny_train()
    };
    let run = |data: &Path, name: &str| {
        let r = dir.path().join(name);
        train(&cfg, &opts(data, &r, 1)).unwrap();
        r
    };
    let (on_real, on_syn, on_inv) = (
        run(&real, "on-real"),
        run(&synthetic, "on-synthetic"),
        run(&inverted, "on-inverted"),
    );
    let eval = |other: &Path, name: &str| -> (String, serde_json::Value, String) {
        let out = dir.path().join(name);
        let (_, _, err) = ssmkit(&[
            "eval",
            "--data",
            real.to_str().unwrap(),
            "--run",
            on_real.to_str().unwrap(),
            "--run",
            other.to_str().unwrap(),
            "--transfer",
            "--out",
            out.to_str().unwrap(),
            "--resamples",
            "200",
            "--permutations",
            "200",
            "--latency-users",
            "0",
            "--quiet",
        ]);
        let gates = std::fs::read_to_string(out.join("gates.json"))
            .unwrap_or_else(|_| panic!("no report: {err}"));
        (
            std::fs::read_to_string(out.join("metrics.csv")).unwrap(),
            serde_json::from_str(&gates).unwrap(),
            std::fs::read_to_string(out.join("report.md")).unwrap(),
        )
    };
    let tstr = |gates: &serde_json::Value| -> f64 {
        let g = gates["gates"]
            .as_array()
            .unwrap()
            .iter()
            .find(|g| g["name"].as_str().unwrap().starts_with("TSTR"))
            .expect("a TSTR gate");
        g["value"].as_f64().unwrap()
    };
    let dcg = |metrics: &str, system: &str| -> f64 {
        let header: Vec<&str> = metrics.lines().next().unwrap().split(',').collect();
        let col = header.iter().position(|h| *h == "dcg@10").unwrap();
        let row = metrics
            .lines()
            .find(|l| l.starts_with(&format!("gts,{system},")))
            .unwrap_or_else(|| panic!("no {system} in\n{metrics}"));
        row.split(',').nth(col).unwrap().parse().unwrap()
    };
    let (metrics, gates, report) = eval(&on_syn, "tstr");
    assert!(
        report.contains("global temporal split"),
        "GTS on timestamped sessions"
    );
    // The weekly cycle is learned: the model trained on the real stream is far above chance.
    let (model, random) = (dcg(&metrics, "mamba"), dcg(&metrics, "random"));
    assert!(model > 1.5 * random, "mamba {model:.3}, random {random:.3}");
    let ratio = tstr(&gates);
    eprintln!("weekly stream: mamba DCG@10 {model:.3}, random {random:.3}, TSTR ratio {ratio:.3}");
    assert!(
        ratio > 0.8,
        "TSTR ratio {ratio:.3} from a stream of the same cycle"
    );
    let same = ratio;
    let (_, gates, _) = eval(&on_inv, "tstr-inverted");
    let ratio = tstr(&gates);
    eprintln!("inverted cycle: TSTR ratio {ratio:.3}");
    // The inverted stream still teaches which three memories matter, so its model keeps
    // the real stream's relevant memory near the top; what it gets wrong is the day.
    assert!(
        ratio < 0.6,
        "TSTR ratio {ratio:.3} from a stream whose cycle is inverted"
    );
    assert!(
        ratio < 0.7 * same,
        "TSTR ratio {ratio:.3} from a stream whose cycle is inverted, {same:.3} from one of the same cycle"
    );
}

/// The seed's TSTR protocol, both gates both ways: on a real stream whose history holds
/// no weekend before its test period, a synthetic stream of the same cycle passes
/// "synthetic > 60% of real" and, mixed in, "synthetic + real > real" (it teaches the
/// weekend half of the cycle); a stream whose labels ignore the cycle fails both.
#[test]
fn tstr_gates_pass_for_a_faithful_world_and_fail_for_a_blind_one() {
    let dir = tempfile::tempdir().unwrap();
    let real = weekly_users(dir.path(), "real", 1, Labels::Weekly, 30, 56);
    let synthetic = weekly_stream(dir.path(), "synthetic", 2, false);
    let blind = weekly_users(dir.path(), "blind", 3, Labels::Random, 30, 0);
    let cfg = TrainConfig {
        steps: 160,
        eval_every: 40,
        patience: 0,
        ..tiny_train()
    };
    let run = |data: &Path, mix: Option<&Path>, name: &str| {
        let r = dir.path().join(name);
        let mut o = opts(data, &r, 1);
        o.mix = mix.into_iter().map(Path::to_path_buf).collect();
        train(&cfg, &o).unwrap();
        r
    };
    let on_real = run(&real, None, "real-only");
    let gates = |arms: [&Path; 2], name: &str| -> Vec<(String, String, f64)> {
        let out = dir.path().join(format!("report-{name}"));
        let mut args = vec!["eval", "--data", real.to_str().unwrap()];
        for r in [on_real.as_path(), arms[0], arms[1]] {
            args.extend(["--run", r.to_str().unwrap()]);
        }
        args.extend([
            "--transfer",
            "--unit",
            "case",
            "--out",
            out.to_str().unwrap(),
            "--latency-users",
            "0",
            "--quiet",
        ]);
        let (_, _, err) = ssmkit(&args);
        let text = std::fs::read_to_string(out.join("gates.json"))
            .unwrap_or_else(|_| panic!("no report: {err}"));
        let g: serde_json::Value = serde_json::from_str(&text).unwrap();
        g["gates"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|g| g["name"].as_str().unwrap().starts_with("TSTR"))
            .map(|g| {
                let s = |k: &str| g[k].as_str().unwrap().to_string();
                (s("name"), s("status"), g["value"].as_f64().unwrap())
            })
            .collect()
    };
    let faithful = gates(
        [
            &run(&synthetic, None, "synthetic-only"),
            &run(&real, Some(&synthetic), "real+synthetic"),
        ],
        "faithful",
    );
    eprintln!("faithful world: {faithful:?}");
    assert_eq!(faithful.len(), 2, "{faithful:?}");
    assert!(faithful.iter().all(|g| g.1 == "PASS"), "{faithful:?}");
    let wrong = gates(
        [
            &run(&blind, None, "blind-only"),
            &run(&real, Some(&blind), "real+blind"),
        ],
        "blind",
    );
    eprintln!("world whose labels ignore the cycle: {wrong:?}");
    assert_eq!(wrong.len(), 2, "{wrong:?}");
    assert!(wrong.iter().all(|g| g.1 == "FAIL"), "{wrong:?}");
}

#[test]
fn the_observable_reference_reads_no_hidden_column() {
    use ssmkit::eval::canary::{ObservableProbe, ProbeScorer};
    use ssmkit::train::slice_user;
    let dir = tempfile::tempdir().unwrap();
    let data = Dataset::load(&tiny_data(dir.path())).unwrap();
    let k = data.k;
    // A prefix of every user, through a turn that shows a canary memory.
    let seqs: Vec<ssmkit::data::UserSeq> = data
        .users
        .iter()
        .map(|u| {
            let t = (u.turns / 2..u.turns)
                .find(|&t| (0..k).any(|j| u.role[t * k + j] != 0))
                .unwrap();
            slice_user(
                u,
                0,
                t + 1,
                k,
                data.embedding_dim,
                ssmkit::train::batch::Prefix::NONE,
            )
        })
        .collect();
    let observable = ObservableProbe::fit(&data, |u| u.turns / 2);
    let before = observable.score(&seqs, k);
    // What only the generator knows: roles, canary tags, selectors, the cycle's peak,
    // the clean features and relevance, the clean labels.
    let hidden: Vec<ssmkit::data::UserSeq> = seqs
        .iter()
        .map(|u| {
            let mut h = u.clone();
            h.role.iter_mut().for_each(|r| *r = 3);
            h.canary.iter_mut().for_each(|c| *c = 0xFFFF);
            h.selectors = [7, 7, 7, 7];
            h.cycle_peak = 1.25;
            h.clean_features.iter_mut().for_each(|x| *x = 0.5);
            h.relevance.iter_mut().for_each(|x| *x = 0.9);
            h.hard_negative.iter_mut().for_each(|x| *x = 1);
            // The probed turn's own labels are not known before it is scored.
            let t = h.turns - 1;
            h.labels[t * k..(t + 1) * k]
                .iter_mut()
                .for_each(|x| *x = 1.0 - *x);
            h
        })
        .collect();
    assert_eq!(before, observable.score(&hidden, k));
    // What a model reads moves it: the earlier labels.
    let mut flipped = seqs.clone();
    for u in &mut flipped {
        let t = u.turns - 1;
        u.labels[..t * k].iter_mut().for_each(|x| *x = 1.0 - *x);
    }
    assert_ne!(before, observable.score(&flipped, k));
}

#[test]
fn canaries_command_judges_the_reference_systems_without_a_model() {
    let dir = tempfile::tempdir().unwrap();
    let data = tiny_data(dir.path());
    let (ok, out, err) = ssmkit(&[
        "canaries",
        "--data",
        data.to_str().unwrap(),
        "--snr",
        "20",
        "--probes",
        "16",
        "--json",
    ]);
    assert!(ok, "{err}");
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    let level = &v[0];
    assert_eq!(level["snr_db"], 20.0);
    let systems = level["systems"].as_array().unwrap();
    let names: Vec<&str> = systems.iter().map(|s| s[0].as_str().unwrap()).collect();
    assert_eq!(names, ["oracle", "observable", "random", "constant"]);
    let passes = |i: usize| -> Vec<bool> {
        systems[i][1]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| r["pass"].as_bool().unwrap())
            .collect()
    };
    assert!(
        passes(0).iter().all(|&p| p),
        "the oracle fails a canary: {}",
        systems[0]
    );
    for blind in [2, 3] {
        assert!(
            passes(blind).iter().all(|&p| !p),
            "a blind system passes: {}",
            systems[blind]
        );
    }
    // The table names each system, and a dataset without canaries is refused.
    let (ok, table, _) = ssmkit(&["canaries", "--data", data.to_str().unwrap()]);
    assert!(ok && table.contains("observable") && table.contains("entity_selectivity"));
    let (ok, _, err) = ssmkit(&["canaries", "--data", data.to_str().unwrap(), "--snr", "nan"]);
    assert!(!ok && err.contains("--snr"), "{err}");
}

#[test]
fn output_into_a_closed_pipe_ends_quietly() {
    use std::io::{BufRead, BufReader};
    use std::process::{Command, Stdio};
    // Enough cases that the report outgrows a pipe's buffer, so the writer meets the
    // reader's close.
    let dir = tempfile::tempdir().unwrap();
    let mut csv = String::from("case_id,score,label\n");
    for c in 0..20_000 {
        for j in 0..3 {
            csv += &format!("c{c},{}.5,{}\n", 3 - j, (j == c % 3) as u8);
        }
    }
    let f = write(dir.path(), "rankings.csv", &csv);
    let mut child = Command::new(env!("CARGO_BIN_EXE_ssmkit"))
        .args(["metrics", &f])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut first = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut first)
        .unwrap();
    assert!(first.starts_with("case_id"), "{first}");
    // The reader is gone (like `| head -1`).
    let out = child.wait_with_output().unwrap();
    let err = String::from_utf8(out.stderr).unwrap();
    assert!(!err.contains("panicked"), "{err}");
    assert_ne!(out.status.code(), Some(101), "{err}");
}

#[test]
fn score_writes_each_real_candidate_as_a_forward_pass_over_its_history_scores_it() {
    use polars::prelude::*;
    use ssmkit::model::batch::make_batch;
    use ssmkit::model::mamba::ScanImpl;
    let dir = tempfile::tempdir().unwrap();
    let (path, data, run, _) = briefly_trained(dir.path());
    let out = dir.path().join("scores.parquet");
    let argv = |extra: &[&str]| {
        let mut a = vec![
            "score",
            "--data",
            path.to_str().unwrap(),
            "--run",
            run.to_str().unwrap(),
            "--users",
            "3",
            "--out",
            out.to_str().unwrap(),
        ];
        a.extend_from_slice(extra);
        ssmkit(&a)
    };
    let (ok, stdout, stderr) = argv(&[]);
    assert!(ok, "{stderr}");
    assert!(stdout.contains("of 3 users"), "{stdout}");

    let df = ParquetReader::new(std::fs::File::open(&out).unwrap())
        .finish()
        .unwrap();
    let col = |name: &str| -> Vec<f64> {
        let c = df.column(name).unwrap().cast(&DataType::Float64).unwrap();
        c.f64().unwrap().into_no_null_iter().collect()
    };
    let (users, turns, cands, scores) = (
        col("user_id"),
        col("turn_index"),
        col("cand_index"),
        col("score"),
    );
    let k = data.k;
    let real: usize = data.users[..3]
        .iter()
        .map(|u| u.valid.iter().filter(|&&v| v == 1.0).count())
        .sum();
    assert_eq!(scores.len(), real, "one row per real candidate");

    // A turn of each user, scored by one forward pass over the user's turns up to it.
    let device = burn::prelude::Device::flex();
    let (model, mcfg) = load_run(&run, false, &device).unwrap();
    for u in &data.users[..3] {
        let t = u.turns / 2;
        let batch = make_batch(&data, &[u], &[t + 1], &mcfg, &device);
        let all: Vec<f32> = model
            .forward(&batch, ScanImpl::Fused)
            .try_into_vec_as::<f32>()
            .unwrap();
        let want = &all[t * k..(t + 1) * k];
        let mut seen = 0;
        for i in 0..scores.len() {
            if users[i] == u.user_id as f64 && turns[i] == t as f64 {
                let j = cands[i] as usize;
                assert_eq!(u.valid[t * k + j], 1.0);
                assert!(
                    (scores[i] - want[j] as f64).abs() < 1e-4,
                    "user {} turn {t} candidate {j}: {} against {}",
                    u.user_id,
                    scores[i],
                    want[j]
                );
                seen += 1;
            }
        }
        assert_eq!(seen, (0..k).filter(|&j| u.valid[t * k + j] == 1.0).count());
    }

    // The file is replaced only with --force.
    let before = std::fs::read(&out).unwrap();
    let (ok, _, stderr) = argv(&[]);
    assert!(!ok && stderr.contains("--force"), "{stderr}");
    assert_eq!(std::fs::read(&out).unwrap(), before);
    let (ok, _, stderr) = argv(&["--force"]);
    assert!(ok, "{stderr}");
}
