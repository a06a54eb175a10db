//! `ssmkit metrics` and `ssmkit compare` through the real CLI.

use std::path::Path;
use std::process::Command;

fn ssmkit(args: &[&str]) -> (bool, String, String) {
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
    let (ok, _, err) = ssmkit(&["bench", "scan", "--impl", "fused"]);
    assert!(!ok && err.contains("reference"), "{err}");
}
