//! `ssmkit export`, the plain-Rust runtime and `ssmkit predict`: the exported model scores
//! like the Burn model, quantization keeps the ranking, states and files are checked.

use std::path::Path;

mod common;
use common::{TINY_TOML, model_configs, opts, ssmkit, tiny_data, tiny_train};
use ssmkit::data::Dataset;
use ssmkit::error::Error;
use ssmkit::eval::replay::turn_of;
use ssmkit::eval::split::test_cases;
use ssmkit::export::{ExportOptions, Quant, encode, export_run, verify};
use ssmkit::model::scorer::{Init, ModelConfig, Size, Variant};
use ssmkit::runtime::Runtime;
use ssmkit::train::batch::cutoffs;
use ssmkit::train::{TrainConfig, train};

fn test_split(data: &Dataset) -> Vec<ssmkit::eval::split::Case> {
    let cfg = tiny_train();
    test_cases(data, &cutoffs(data, cfg.valid_from, cfg.test_from)).0
}

#[test]
fn f32_export_replayed_turn_by_turn_matches_the_burn_model_for_every_variant() {
    let dir = tempfile::tempdir().unwrap();
    let data = Dataset::load(&tiny_data(dir.path())).unwrap();
    let cases = test_split(&data);
    let device = burn::prelude::Device::flex();
    for (variant, cfg) in model_configs(data.embedding_dim) {
        let model = cfg.init(7, &device);
        let (bytes, _) = encode(&model, &cfg, Quant::F32, &serde_json::json!({})).unwrap();
        let rt = Runtime::from_bytes(&bytes, Path::new("mem")).unwrap();
        // The runtime steps through each user's turns; the Burn model runs each sequence
        // in one forward pass.
        let v = verify(&rt, &model, &cfg, &data, &cases);
        assert!(v.max_abs_diff <= 1e-4, "{variant:?}: {v:?}");
        assert!(v.top10_agreement > 0.999, "{variant:?}: {v:?}");
    }
}

#[test]
fn the_same_model_exports_to_the_same_bytes() {
    let device = burn::prelude::Device::flex();
    let cfg = ModelConfig::sized(Variant::Mamba, Size::Tiny, 16, 4096);
    let model = cfg.init(3, &device);
    for quant in [Quant::F32, Quant::Int8, Quant::Ternary] {
        // Each encoding builds its metadata map afresh (a HashMap, in its own order).
        let first = encode(&model, &cfg, quant, &serde_json::json!({"run": "r"})).unwrap();
        for _ in 0..4 {
            let again = encode(&model, &cfg, quant, &serde_json::json!({"run": "r"})).unwrap();
            assert!(first.0 == again.0, "{quant:?}: two encodings differ");
        }
        Runtime::from_bytes(&first.0, Path::new("m")).unwrap();
    }
}

#[test]
fn int8_export_keeps_the_ranking_and_max_drop_refuses_a_lossy_one() {
    let dir = tempfile::tempdir().unwrap();
    let path = tiny_data(dir.path());
    let run = dir.path().join("run");
    let cfg = TrainConfig {
        steps: 30,
        ..tiny_train()
    };
    train(&cfg, &opts(&path, &run, 1)).unwrap();
    let export = |quant: Quant, max_drop: Option<f64>, name: &str| {
        export_run(&ExportOptions {
            run: run.clone(),
            quant,
            out: dir.path().join(name),
            data: Some(path.clone()),
            max_drop,
            force: false,
        })
    };
    let f32r = export(Quant::F32, None, "f32.safetensors").unwrap();
    let v = f32r.verification.as_ref().unwrap();
    assert!(
        v.max_abs_diff <= 1e-4 && v.relative_drop.abs() < 1e-6,
        "{v:?}"
    );
    let int8 = export(Quant::Int8, None, "int8.safetensors").unwrap();
    let v = int8.verification.as_ref().unwrap();
    assert!(v.top10_agreement >= 0.95, "{v:?}");
    assert!(v.relative_drop.is_finite());
    assert!(
        int8.sizes.file_bytes < f32r.sizes.file_bytes / 2,
        "{int8:?}"
    );
    // A drop bound that is not a number.
    let err = export(Quant::Int8, Some(f64::NAN), "nan.safetensors").unwrap_err();
    assert!(matches!(err, Error::Usage(_)), "{err}");
    assert!(err.to_string().contains("--max-drop"), "{err}");
    assert!(!dir.path().join("nan.safetensors").exists());
    // An existing file is not replaced without --force.
    let before = std::fs::read(dir.path().join("int8.safetensors")).unwrap();
    let err = export(Quant::F32, None, "int8.safetensors").unwrap_err();
    assert!(matches!(err, Error::Occupied(_)), "{err}");
    assert!(err.to_string().contains("--force"), "{err}");
    assert_eq!(
        before,
        std::fs::read(dir.path().join("int8.safetensors")).unwrap()
    );
    let ternary = export(Quant::Ternary, None, "t.safetensors").unwrap();
    assert!(ternary.sizes.file_bytes < int8.sizes.file_bytes);
    // A drop bound the export cannot meet: an error, and no file.
    let err = export(Quant::Ternary, Some(-1.0), "refused.safetensors").unwrap_err();
    assert!(matches!(err, Error::Quality(_)), "{err}");
    assert!(err.to_string().contains("--max-drop"), "{err}");
    assert!(!dir.path().join("refused.safetensors").exists());
    // Every quantization loads and scores.
    for f in ["f32.safetensors", "int8.safetensors", "t.safetensors"] {
        let rt = Runtime::load(&dir.path().join(f)).unwrap();
        let data = Dataset::load(&path).unwrap();
        let (turn, _, _) = turn_of(&data.users[0], 0, data.k, data.embedding_dim);
        let s = rt.score(&rt.zero_state(), &turn);
        assert!(s.iter().all(|v| v.is_finite()) && s.len() == turn.candidates.len());
    }
}

#[test]
fn state_round_trips_and_damage_is_detected() {
    let dir = tempfile::tempdir().unwrap();
    let data = Dataset::load(&tiny_data(dir.path())).unwrap();
    let device = burn::prelude::Device::flex();
    // A model with history features and a keyed state: the state holds both.
    let mut cfg = ModelConfig::sized(Variant::Mamba, Size::Tiny, data.embedding_dim, 4096);
    (cfg.keyed_modes, cfg.keyed_cycles) = (2, 1);
    let model = cfg.init(1, &device);
    let (bytes, _) = encode(&model, &cfg, Quant::Int8, &serde_json::json!({})).unwrap();
    let rt = Runtime::from_bytes(&bytes, Path::new("m")).unwrap();
    let mut state = rt.zero_state();
    for t in 0..5 {
        let (turn, _, labels) = turn_of(&data.users[0], t, data.k, data.embedding_dim);
        rt.step(&mut state, &turn, &labels);
    }
    assert!(state.keyed.memories() > 0 && !state.history.is_empty());
    let saved = state.to_bytes(&rt.fingerprint);
    let (back, warning) = rt.restore(&saved);
    assert_eq!(back, state);
    assert!(warning.is_none());
    // One flipped byte anywhere: the default state, with a warning.
    for at in [0, 20, saved.len() / 2, saved.len() - 1] {
        let mut bad = saved.clone();
        bad[at] ^= 0x40;
        let (s, warning) = rt.restore(&bad);
        assert_eq!(s, rt.zero_state());
        assert!(warning.is_some());
    }
    // A state of another model.
    let other = cfg.init(2, &device);
    let (ob, _) = encode(&other, &cfg, Quant::Int8, &serde_json::json!({})).unwrap();
    let rt2 = Runtime::from_bytes(&ob, Path::new("o")).unwrap();
    let (s, warning) = rt2.restore(&saved);
    assert_eq!(s, rt2.zero_state());
    assert!(warning.unwrap().contains("another model"));
    // A flipped byte in the model file is refused.
    let mut damaged = bytes.clone();
    let at = damaged.len() - 100;
    damaged[at] ^= 0x01;
    let err = Runtime::from_bytes(&damaged, Path::new("m.safetensors")).unwrap_err();
    assert!(
        matches!(err, ssmkit::runtime::Error::Export { .. }),
        "{err}"
    );
    assert!(err.to_string().contains("damaged"), "{err}");
}

#[test]
fn foreign_files_and_bad_turns_are_clear_errors() {
    let dir = tempfile::tempdir().unwrap();
    // A safetensors file that is not an ssmkit export.
    let foreign = dir.path().join("foreign.safetensors");
    let data = [0u8; 8];
    let view =
        safetensors::tensor::TensorView::new(safetensors::Dtype::F32, vec![2], &data).unwrap();
    std::fs::write(
        &foreign,
        safetensors::serialize([("w", view)], None).unwrap(),
    )
    .unwrap();
    let err = Runtime::load(&foreign).unwrap_err().to_string();
    assert!(
        err.contains("foreign.safetensors") && err.contains("not an ssmkit export"),
        "{err}"
    );
    // Not safetensors at all.
    let junk = dir.path().join("junk.safetensors");
    std::fs::write(&junk, b"hello").unwrap();
    assert!(
        Runtime::load(&junk)
            .unwrap_err()
            .to_string()
            .contains("not a safetensors file")
    );
    // A missing tensor: rebuild an export without one tensor, with a matching digest.
    let d = Dataset::load(&tiny_data(dir.path())).unwrap();
    let cfg = ModelConfig::sized(Variant::Mamba, Size::Tiny, d.embedding_dim, 4096);
    let model = cfg.init(1, &burn::prelude::Device::flex());
    // Serializes `tensors` with `meta`, as the exporter would.
    let file = |tensors: &std::collections::BTreeMap<String, ssmkit::export::Stored>,
                meta: std::collections::HashMap<String, String>| {
        let views: Vec<_> = tensors
            .iter()
            .map(|(n, t)| {
                let v = safetensors::tensor::TensorView::new(t.dtype, t.shape.clone(), &t.bytes);
                (n.clone(), v.unwrap())
            })
            .collect();
        safetensors::serialize(views, Some(meta)).unwrap()
    };
    let mut tensors = ssmkit::export::store(&model, Quant::F32);
    tensors.remove("layers.1.mixer.A_log");
    let digest = ssmkit::export::tensors_digest(&tensors);
    let meta = ssmkit::export::metadata(&cfg, Quant::F32, &digest, &serde_json::json!({}));
    let bytes = file(&tensors, meta);
    let err = Runtime::from_bytes(&bytes, Path::new("m"))
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("missing tensor `layers.1.mixer.A_log`"),
        "{err}"
    );
    // Edited metadata (one layer fewer) with the tensors untouched: refused.
    let full = ssmkit::export::store(&model, Quant::F32);
    let digest = ssmkit::export::tensors_digest(&full);
    let mut meta = ssmkit::export::metadata(&cfg, Quant::F32, &digest, &serde_json::json!({}));
    let edited = meta["model_config"].replace("\"layers\":2", "\"layers\":1");
    assert_ne!(edited, meta["model_config"]);
    meta.insert("model_config".into(), edited);
    let bytes = file(&full, meta);
    let err = Runtime::from_bytes(&bytes, Path::new("m"))
        .unwrap_err()
        .to_string();
    assert!(err.contains("edited"), "{err}");
    // The same edit with the metadata's digest made again: the second layer's tensors
    // are not silently ignored.
    let one_layer = ModelConfig {
        layers: 1,
        ..cfg.clone()
    };
    let meta = ssmkit::export::metadata(&one_layer, Quant::F32, &digest, &serde_json::json!({}));
    let bytes = file(&full, meta);
    let err = Runtime::from_bytes(&bytes, Path::new("m"))
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("does not use (`layers.1.") && err.contains("does not describe"),
        "{err}"
    );
    // A keyed model whose export does not list the keyed events this build computes (an
    // export from before the events held their time of the week) is refused.
    let keyed = ModelConfig {
        keyed_modes: 2,
        keyed_cycles: 1,
        ..cfg.clone()
    };
    let keyed_model = keyed.init(1, &burn::prelude::Device::flex());
    let tensors = ssmkit::export::store(&keyed_model, Quant::F32);
    let digest = ssmkit::export::tensors_digest(&tensors);
    let meta = ssmkit::export::metadata(&keyed, Quant::F32, &digest, &serde_json::json!({}));
    assert!(Runtime::from_bytes(&file(&tensors, meta.clone()), Path::new("m")).is_ok());
    // The layout without one of its entries, the metadata's digest made again.
    let without = |entry: &str| {
        let mut layout: serde_json::Value = serde_json::from_str(&meta["feature_layout"]).unwrap();
        layout.as_object_mut().unwrap().remove(entry);
        let mut meta = meta.clone();
        meta.insert("feature_layout".into(), layout.to_string());
        let sum = ssmkit_format::meta::metadata_digest(&meta);
        meta.insert("metadata_sha256".into(), sum);
        Runtime::from_bytes(&file(&tensors, meta), Path::new("m"))
            .unwrap_err()
            .to_string()
    };
    let err = without("keyed_events");
    assert!(err.contains("no time of the week"), "{err}");
    // Nor one that does not say how its keyed state reads them (an export from before the
    // oscillating modes' envelopes were bounded).
    let err = without("keyed_read");
    assert!(
        err.contains("as an earlier build did") && err.contains("cycle_max_rate"),
        "{err}"
    );
    // predict: a turn with the wrong number of features names the line and the problem.
    let model_path = dir.path().join("m.safetensors");
    let (good, _) = encode(&model, &cfg, Quant::F32, &serde_json::json!({})).unwrap();
    std::fs::write(&model_path, good).unwrap();
    let turns = dir.path().join("turns.jsonl");
    let feats = |n: usize| vec!["0.5"; n].join(",");
    // `predict` over these JSONL lines: whether it succeeded, and its stderr.
    let predict_lines = |text: String| {
        std::fs::write(&turns, text).unwrap();
        let (ok, _, err) = ssmkit(&[
            "predict",
            model_path.to_str().unwrap(),
            "--input",
            turns.to_str().unwrap(),
        ]);
        (ok, err)
    };
    let (ok, err) = predict_lines(format!(
        "{{\"timestamp\":0,\"context\":[0,0,0,0,0,0],\"candidates\":[{{\"features\":[{}],\"memory_id\":1}}]}}\n{{\"timestamp\":60,\"context\":[0,0,0,0,0,0],\"candidates\":[{{\"features\":[{}],\"memory_id\":1}}]}}\n",
        feats(24),
        feats(23)
    ));
    assert!(
        !ok && err.contains("line 2") && err.contains("23 features, expected 24"),
        "{err}"
    );
    assert_eq!(err.trim_end().lines().count(), 1, "{err}");
    // A model that reads history needs each turn's time.
    let (ok, err) = predict_lines(format!(
        "{{\"context\":[0,0,0,0,0,0],\"candidates\":[{{\"features\":[{}]}}]}}\n",
        feats(24)
    ));
    assert!(
        !ok && err.contains("line 1") && err.contains("no timestamp"),
        "{err}"
    );
    // ... and each candidate's memory id, the key of the user's history.
    let (ok, err) = predict_lines(format!(
        "{{\"timestamp\":0,\"context\":[0,0,0,0,0,0],\"candidates\":[{{\"features\":[{}]}}]}}\n",
        feats(24)
    ));
    assert!(!ok && err.contains("candidate 0 has no memory_id"), "{err}");
    // A value of the wrong type names its field, in the turn and in a candidate.
    let (ok, err) = predict_lines(format!(
        "{{\"timestamp\":\"noon\",\"context\":[0,0,0,0,0,0],\"candidates\":[{{\"features\":[{}],\"memory_id\":1}}]}}\n",
        feats(24)
    ));
    assert!(
        !ok && err.contains("line 1: `timestamp`: invalid type"),
        "{err}"
    );
    let (ok, err) = predict_lines(format!(
        "{{\"timestamp\":0,\"context\":[0,0,0,0,0,0],\"candidates\":[{{\"features\":[{}],\"memory_id\":\"one\"}}]}}\n",
        feats(24)
    ));
    assert!(
        !ok && err.contains("candidate 0: `memory_id`: invalid type"),
        "{err}"
    );
}

#[test]
fn predict_carries_the_state_across_invocations() {
    let dir = tempfile::tempdir().unwrap();
    let data = Dataset::load(&tiny_data(dir.path())).unwrap();
    let cfg = ModelConfig::sized(Variant::Mamba, Size::Tiny, data.embedding_dim, 4096);
    let model = cfg.init(4, &burn::prelude::Device::flex());
    let (bytes, _) = encode(&model, &cfg, Quant::F32, &serde_json::json!({})).unwrap();
    let model_path = dir.path().join("m.safetensors");
    std::fs::write(&model_path, bytes).unwrap();
    // Six turns of a user as JSONL, with their outcomes.
    let lines: Vec<String> = (0..6)
        .map(|t| {
            let (turn, _, labels) = turn_of(&data.users[1], t, data.k, data.embedding_dim);
            let cands: Vec<serde_json::Value> = turn
                .candidates
                .iter()
                .map(|c| {
                    let f: Vec<serde_json::Value> = c
                        .features
                        .iter()
                        .zip(&c.missing)
                        .map(|(x, m)| if *m == 1.0 { serde_json::Value::Null } else { serde_json::json!(x) })
                        .collect();
                    serde_json::json!({"features": f, "memory_slot": c.memory_slot,
                        "memory_id": c.memory_id, "entity": c.entity, "content": c.content,
                        "hops": c.hops})
                })
                .collect();
            serde_json::json!({"timestamp": turn.timestamp, "context": turn.context, "query": turn.query, "focal": turn.focal,
                "candidates": cands, "labels": labels})
            .to_string()
        })
        .collect();
    let write = |name: &str, ls: &[String]| {
        let p = dir.path().join(name);
        std::fs::write(&p, ls.join("\n") + "\n").unwrap();
        p
    };
    let all = write("all.jsonl", &lines);
    let first = write("first.jsonl", &lines[..3]);
    let second = write("second.jsonl", &lines[3..]);
    let m = model_path.to_str().unwrap();
    let (ok, whole, err) = ssmkit(&["predict", m, "--input", all.to_str().unwrap()]);
    assert!(ok, "{err}");
    let state = dir.path().join("user.state");
    let s = state.to_str().unwrap();
    let (ok, _, err) = ssmkit(&[
        "predict",
        m,
        "--input",
        first.to_str().unwrap(),
        "--state",
        s,
    ]);
    assert!(ok, "{err}");
    let (ok, rest, err) = ssmkit(&[
        "predict",
        m,
        "--input",
        second.to_str().unwrap(),
        "--state",
        s,
    ]);
    assert!(ok && err.is_empty(), "{err}");
    let scores = |out: &str| -> Vec<serde_json::Value> {
        out.lines()
            .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap()["scores"].clone())
            .collect()
    };
    assert_eq!(scores(&whole)[3..], scores(&rest)[..]);
    // A damaged state file: a warning, the default state, and the file left untouched.
    let mut b = std::fs::read(&state).unwrap();
    b[10] ^= 1;
    std::fs::write(&state, &b).unwrap();
    let args = |force: bool| {
        let mut a = vec![
            "predict",
            m,
            "--input",
            second.to_str().unwrap(),
            "--state",
            s,
        ];
        if force {
            a.push("--force");
        }
        a
    };
    let (ok, fresh, err) = ssmkit(&args(false));
    assert!(
        ok && err.contains("warning") && err.contains("default state") && err.contains("untouched"),
        "{err}"
    );
    let (_, direct, _) = ssmkit(&["predict", m, "--input", second.to_str().unwrap()]);
    assert_eq!(scores(&fresh), scores(&direct));
    assert_eq!(
        std::fs::read(&state).unwrap(),
        b,
        "the damaged state was replaced"
    );
    // With --force it is replaced by this run's state.
    let (ok, _, err) = ssmkit(&args(true));
    assert!(ok && err.contains("replaced"), "{err}");
    assert_ne!(std::fs::read(&state).unwrap(), b);
    // A label that is not a finite number is refused with the line.
    let bad = write(
        "bad.jsonl",
        &[lines[0].replace("\"labels\":[", "\"labels\":[1e39,")],
    );
    let (ok, _, err) = ssmkit(&["predict", m, "--input", bad.to_str().unwrap()]);
    assert!(!ok && err.contains("line 1"), "{err}");
}

/// A `run` config of the tiny world (12 users, a canary in every turn, 8 training steps) in
/// `dir`, with `pipeline` lines in its `[pipeline]` section.
fn tiny_run_config(dir: &Path, pipeline: &str) -> std::path::PathBuf {
    let cfg = dir.join("tiny.toml");
    std::fs::write(
        &cfg,
        format!(
            r#"{TINY_TOML}[pipeline]
{pipeline}
max_drop = 1.0
probes = 4
"#
        ),
    )
    .unwrap();
    cfg
}

#[test]
fn run_does_the_whole_job_and_a_second_run_reuses_it() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = tiny_run_config(
        dir.path(),
        "seeds = [1, 2]\nbaselines = [\"xattn\"]\nablations = [\"d_state=4\", \"no_selectivity\"]\nexport = [\"f32\", \"int8\"]",
    );
    let root = dir.path().to_str().unwrap();
    let c = cfg.to_str().unwrap();
    let (ok, out, err) = ssmkit(&["run", c, "--root", root, "--quiet"]);
    assert!(ok, "{err}");
    assert!(!out.contains("reused"), "{out}");
    for f in [
        "data/tiny/manifest.json",
        "runs/tiny/mamba-s1/state.json",
        "runs/tiny/mamba-s2/state.json",
        "runs/tiny/xattn-s2/state.json",
        "runs/tiny/mamba+d_state=4-s2/state.json",
        "runs/tiny/mamba+no_selectivity-s1/state.json",
        "reports/tiny/report.html",
        "reports/tiny/gates.json",
        "runs/tiny/export/mamba-f32.safetensors",
        "runs/tiny/export/mamba-int8.safetensors",
    ] {
        assert!(dir.path().join(f).is_file(), "{f} missing:\n{out}");
    }
    Runtime::load(&dir.path().join("runs/tiny/export/mamba-int8.safetensors")).unwrap();
    // The retrained ablations are compared with the primary model, row by row of the
    // seed's list: the primary stands for N = 16 and 2 layers (Tiny).
    let csv = std::fs::read_to_string(dir.path().join("reports/tiny/ablations.csv")).unwrap();
    let names: std::collections::BTreeSet<&str> = csv
        .lines()
        .skip(1)
        .filter_map(|l| l.split(',').next())
        .collect();
    for name in [
        "no_temporal_features",
        "no_content_features",
        "primary",
        "d_state=16",
        "layers=2",
        "d_state=4",
        "no_selectivity",
        "fft",
    ] {
        assert!(
            names.contains(name),
            "{name} missing from ablations.csv:\n{csv}"
        );
    }
    assert!(
        names.iter().any(|n| n.starts_with("sequence_length")),
        "{csv}"
    );
    let row = csv
        .lines()
        .find(|l| l.starts_with("d_state=4,dcg@10,"))
        .unwrap();
    let fields: Vec<f64> = row.split(',').skip(2).map(|v| v.parse().unwrap()).collect();
    assert!(
        fields[2] <= fields[1] && fields[1] <= fields[3],
        "diff outside its CI: {row}"
    );
    let md = std::fs::read_to_string(dir.path().join("reports/tiny/report.md")).unwrap();
    assert!(
        md.contains("Is Mamba's selection mechanism helping?"),
        "{md}"
    );
    assert!(
        dir.path()
            .join("reports/tiny/ablation_state_size.svg")
            .is_file()
    );
    // Nothing is redone; --fail-on-gate reports the failing gates with status 2.
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_ssmkit"))
        .args(["run", c, "--root", root, "--quiet", "--fail-on-gate"])
        .output()
        .unwrap();
    let stdout = String::from_utf8(out.stdout).unwrap();
    assert_eq!(stdout.matches("reused").count(), 1 + 8 + 1 + 2, "{stdout}");
    assert_eq!(out.status.code(), Some(2), "{stdout}");
    // A damaged export is made again, however new it is; the intact one is reused. A
    // report missing one of its files is made again too.
    let f32_path = dir.path().join("runs/tiny/export/mamba-f32.safetensors");
    let mut bytes = std::fs::read(&f32_path).unwrap();
    let last = bytes.len() - 1;
    bytes[last] ^= 0xff;
    std::fs::write(&f32_path, bytes).unwrap();
    let report_md = dir.path().join("reports/tiny/report.md");
    std::fs::remove_file(&report_md).unwrap();
    let (ok, out, err) = ssmkit(&["run", c, "--root", root, "--quiet"]);
    assert!(ok, "{err}");
    assert_eq!(out.matches("reused").count(), 1 + 8 + 1, "{out}");
    let f32_reused = out
        .lines()
        .any(|l| l.starts_with("reused: export") && l.contains("mamba-f32"));
    assert!(!f32_reused, "{out}");
    assert!(!out.contains("reused: eval"), "{out}");
    assert!(report_md.is_file());
    Runtime::load(&f32_path).unwrap();
    // Reuse goes by the digests of what a report and an export were made from, not by
    // modification times: outputs dated long before their inputs are still reused...
    for f in [
        "reports/tiny/gates.json",
        "runs/tiny/export/mamba-f32.safetensors",
        "runs/tiny/export/mamba-int8.safetensors",
    ] {
        let file = std::fs::File::options()
            .write(true)
            .open(dir.path().join(f))
            .unwrap();
        file.set_modified(std::time::UNIX_EPOCH).unwrap();
    }
    let (ok, out, err) = ssmkit(&["run", c, "--root", root, "--quiet"]);
    assert!(ok, "{err}");
    assert_eq!(out.matches("reused").count(), 1 + 8 + 1 + 2, "{out}");
    // A report with one file cut short is made again: each file is checked against the
    // digest the report records.
    let html = dir.path().join("reports/tiny/report.html");
    let text = std::fs::read(&html).unwrap();
    std::fs::write(&html, &text[..text.len() / 3]).unwrap();
    let (ok, out, err) = ssmkit(&["run", c, "--root", root, "--quiet"]);
    assert!(ok, "{err}");
    assert!(!out.contains("reused: eval"), "{out}");
    assert!(std::fs::read(&html).unwrap().len() > text.len() / 3);
    // ...and a changed option of the evaluation makes the report again, and only it.
    let probes = std::fs::read_to_string(&cfg)
        .unwrap()
        .replace("probes = 4", "probes = 3");
    std::fs::write(&cfg, probes).unwrap();
    let (ok, out, err) = ssmkit(&["run", c, "--root", root, "--quiet"]);
    assert!(ok, "{err}");
    assert_eq!(out.matches("reused").count(), 1 + 8 + 2, "{out}");
    assert!(!out.contains("reused: eval"), "{out}");
    let gates = std::fs::read_to_string(dir.path().join("reports/tiny/gates.json")).unwrap();
    assert!(gates.contains("\"probes_per_canary\": 3"), "{gates}");
    // An edited state.json is refused, naming it, rather than trained over.
    let state = dir.path().join("runs/tiny/mamba-s1/state.json");
    let text = std::fs::read_to_string(&state).unwrap();
    std::fs::write(&state, text.replace("\"seed\": 1,", "\"seed\": 7,")).unwrap();
    let (ok, _, err) = ssmkit(&["run", c, "--root", root, "--quiet"]);
    assert!(
        !ok && err.contains(&state.display().to_string()) && err.contains("edited or damaged"),
        "{err}"
    );
    std::fs::write(&state, text).unwrap();
    // The same name with another dataset config is refused, not silently reused.
    let changed = std::fs::read_to_string(&cfg)
        .unwrap()
        .replace("users = 12", "users = 13");
    std::fs::write(&cfg, changed).unwrap();
    let (ok, _, err) = ssmkit(&["run", c, "--root", root, "--quiet"]);
    assert!(!ok && err.contains("another config"), "{err}");
}

/// Copies the directory tree `from` to `to`.
fn copy_tree(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let target = to.join(entry.file_name());
        if entry.file_type().unwrap().is_dir() {
            copy_tree(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), &target).unwrap();
        }
    }
}

/// The names in the directory `dir`, sorted.
fn entries(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    v.sort();
    v
}

#[test]
fn shards_of_a_run_train_their_share_and_merge_into_one_eval() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = tiny_run_config(
        dir.path(),
        "seeds = [1, 2]\nbaselines = [\"mlp\"]\nexport = [\"f32\"]",
    );
    let c = cfg.to_str().unwrap();
    let root = |name: &str| dir.path().join(name);
    let run_in = |r: &Path, extra: &[&str]| {
        let mut args = vec!["run", c, "--root", r.to_str().unwrap(), "--quiet"];
        args.extend(extra);
        ssmkit(&args)
    };
    // Two job-array tasks: jobs 0 and 2 (mamba-s1, mlp-s1), then 1 and 3.
    let (ok, out, err) = run_in(&root("a"), &["--shard", "1/2"]);
    assert!(ok && out.contains("shard 1/2"), "{err}");
    let (ok, _, err) = run_in(&root("b"), &["--shard", "2/2"]);
    assert!(ok, "{err}");
    let runs = |r: &str| entries(&root(r).join("runs/tiny"));
    assert_eq!(runs("a"), ["mamba-s1", "mlp-s1"]);
    assert_eq!(runs("b"), ["mamba-s2", "mlp-s2"]);
    assert!(
        !root("a").join("reports").exists(),
        "a shard evaluates nothing"
    );
    // Merging one shard only: --no-train names what is missing and trains nothing.
    copy_tree(&root("a").join("runs"), &root("merged").join("runs"));
    let (ok, _, err) = run_in(&root("merged"), &["--no-train"]);
    assert!(
        !ok && err.contains("2 of 4") && err.contains("mamba-s2") && err.contains("mlp-s2"),
        "{err}"
    );
    assert_eq!(runs("merged"), ["mamba-s1", "mlp-s1"]);
    // Both shards: one eval over every run, nothing retrained.
    copy_tree(&root("b").join("runs"), &root("merged").join("runs"));
    let (ok, out, err) = run_in(&root("merged"), &["--no-train"]);
    assert!(ok, "{err}");
    assert_eq!(out.matches("reused: train").count(), 4, "{out}");
    let metrics = std::fs::read_to_string(root("merged").join("reports/tiny/metrics.csv")).unwrap();
    assert!(
        metrics.contains("gts,mamba,") && metrics.contains("gts,mlp,"),
        "{metrics}"
    );
    assert!(
        root("merged")
            .join("runs/tiny/export/mamba-f32.safetensors")
            .is_file()
    );
    // A shard trains exactly what one machine would have.
    let (ok, _, err) = run_in(&root("whole"), &[]);
    assert!(ok, "{err}");
    // (Weights compared: the files also hold parameter ids drawn per process.)
    let weights = |r: &str| {
        let (m, _) = ssmkit::train::load_run(
            &root(r).join("runs/tiny/mamba-s2"),
            false,
            &burn::prelude::Device::flex(),
        )
        .unwrap();
        ssmkit::train::flat_params(&m)
    };
    assert!(
        weights("b") == weights("whole"),
        "a shard trained other weights"
    );
    // Shards are written I/N with 1 <= I <= N.
    for bad in ["0/2", "3/2", "2", "a/b"] {
        let (ok, _, err) = run_in(&root("bad"), &["--shard", bad]);
        assert!(!ok && err.contains("I/N"), "{bad}: {err}");
    }
}

#[test]
fn shards_on_one_root_run_side_by_side_and_keep_a_whole_run_out() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = tiny_run_config(
        dir.path(),
        "seeds = [1]\nbaselines = [\"mlp\"]\nexport = []",
    );
    let c = cfg.to_str().unwrap();
    let root = dir.path().join("root");
    let r = root.to_str().unwrap();
    // Two tasks of a job array started together on a shared root: one generates the
    // dataset while the other waits for it, then each trains its run.
    let shards: Vec<_> = ["1/2", "2/2"]
        .iter()
        .map(|s| {
            std::process::Command::new(env!("CARGO_BIN_EXE_ssmkit"))
                .args(["run", c, "--root", r, "--shard", s, "--quiet"])
                .stdout(std::process::Stdio::piped())
                .stderr(std::process::Stdio::piped())
                .spawn()
                .unwrap()
        })
        .collect();
    for shard in shards {
        let out = shard.wait_with_output().unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    assert_eq!(entries(&root.join("runs/tiny")), ["mamba-s1", "mlp-s1"]);
    assert_eq!(
        entries(&root.join("data")),
        ["tiny"],
        "one dataset, no leftovers"
    );
    // While a shard holds the root, the whole run (which evaluates) is refused at once.
    let shard = std::fs::File::open(root.join(".ssmkit.lock")).unwrap();
    shard.try_lock_shared().unwrap();
    let (ok, _, err) = ssmkit(&["run", c, "--root", r, "--no-train", "--quiet"]);
    assert!(!ok && err.contains("in use"), "{err}");
    drop(shard);
    let (ok, out, err) = ssmkit(&["run", c, "--root", r, "--no-train", "--quiet"]);
    assert!(ok, "{err}");
    assert_eq!(out.matches("reused: train").count(), 2, "{out}");
}

#[test]
fn imported_content_survives_import_train_export_and_predict() {
    let dir = tempfile::tempdir().unwrap();
    // Three users of 24 timestamped turns; 5 candidates a turn from 8 memories each, whose
    // content (3 numbers, fixed per memory) says which are relevant.
    let content = |m: u32| -> Vec<f64> {
        let x = m as f64;
        vec![
            (x * 0.7).sin(),
            (x * 1.3).cos(),
            if m.is_multiple_of(2) { 1.0 } else { -1.0 },
        ]
    };
    let mut lines = Vec::new();
    for u in 0..3u32 {
        for t in 0..24u32 {
            let memories: Vec<u32> = (0..5).map(|i| (t * 3 + i * 5 + u) % 8).collect();
            let mut seen = std::collections::HashSet::new();
            let memories: Vec<u32> = memories
                .into_iter()
                .map(|m| (m..m + 8).map(|x| x % 8).find(|x| seen.insert(*x)).unwrap())
                .collect();
            let features: Vec<Vec<f64>> = memories
                .iter()
                .map(|&m| (0..17).map(|d| ((m + d) % 5) as f64 / 5.0).collect())
                .collect();
            let labels: Vec<f64> = memories
                .iter()
                .map(|&m| m.is_multiple_of(2) as u8 as f64)
                .collect();
            lines.push(serde_json::json!({
                "user_id": u, "timestamp": 1_700_000_000 + 3_600 * t as i64,
                "features": features, "labels": labels, "memory_ids": memories,
                "content": memories.iter().map(|&m| content(m)).collect::<Vec<_>>(),
                "query": [0.5, -0.5, t as f64 / 24.0],
            }));
        }
    }
    let input = dir.path().join("sessions.jsonl");
    let text: Vec<String> = lines.iter().map(|l| l.to_string()).collect();
    std::fs::write(&input, text.join("\n") + "\n").unwrap();
    let data_dir = dir.path().join("data");
    ssmkit::datagen::import::import(
        &input,
        &ssmkit::datagen::GenOptions {
            out: data_dir.clone(),
            force: false,
            quiet: true,
            materialize: false,
        },
    )
    .unwrap();

    // Parquet: every candidate reads its memory's content, every turn its query.
    let data = Dataset::load(&data_dir).unwrap();
    assert_eq!((data.embedding_dim, data.k), (3, 5));
    for u in &data.users {
        for t in 0..u.turns {
            assert_eq!(u.query[t * 3 + 2], t as f32 / 24.0);
            for c in 0..5 {
                let m = u.memory_id[t * 5 + c];
                let want: Vec<f32> = content(m).iter().map(|&x| x as f32).collect();
                assert_eq!(u.content[(t * 5 + c) * 3..(t * 5 + c + 1) * 3], want[..]);
            }
        }
    }

    // Train, export (verified against the trained model on the test cases), predict.
    let run = dir.path().join("run");
    let cfg = TrainConfig {
        steps: 20,
        ..tiny_train()
    };
    train(&cfg, &opts(&data_dir, &run, 1)).unwrap();
    let out = dir.path().join("m.safetensors");
    let report = export_run(&ExportOptions {
        run: run.clone(),
        quant: Quant::F32,
        out: out.clone(),
        data: Some(data_dir.clone()),
        max_drop: None,
        force: false,
    })
    .unwrap();
    assert!(report.verification.unwrap().max_abs_diff <= 1e-4);
    let rt = Runtime::load(&out).unwrap();
    assert_eq!(rt.config.content_dim, 3);
    let u = &data.users[0];
    let (turn, _, _) = turn_of(u, 20, data.k, data.embedding_dim);
    let scores = rt.score(&rt.zero_state(), &turn);
    let mut blank = turn.clone();
    for c in &mut blank.candidates {
        c.content = vec![0.0; 3];
    }
    let without = rt.score(&rt.zero_state(), &blank);
    assert_ne!(
        scores, without,
        "the exported model reads the imported content"
    );
    // `predict` on the same turn, content given in its JSONL, scores as the runtime does.
    let cands: Vec<serde_json::Value> = turn
        .candidates
        .iter()
        .map(|c| {
            // A missing feature is a null.
            let f: Vec<Option<f32>> = c
                .features
                .iter()
                .zip(&c.missing)
                .map(|(x, m)| (*m != 1.0).then_some(*x))
                .collect();
            serde_json::json!({"features": f, "memory_slot": c.memory_slot,
                "memory_id": c.memory_id, "entity": c.entity, "content": c.content})
        })
        .collect();
    let line = serde_json::json!({"timestamp": turn.timestamp, "context": turn.context,
        "query": turn.query, "focal": turn.focal, "candidates": cands});
    let input = dir.path().join("turn.jsonl");
    std::fs::write(&input, line.to_string() + "\n").unwrap();
    let (ok, printed, err) = ssmkit(&[
        "predict",
        out.to_str().unwrap(),
        "--input",
        input.to_str().unwrap(),
    ]);
    assert!(ok, "{err}");
    let printed: serde_json::Value = serde_json::from_str(printed.trim()).unwrap();
    let predicted: Vec<f32> = printed["scores"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_f64().unwrap() as f32)
        .collect();
    assert_eq!(predicted, scores);
}

/// The seed's TSTR protocol in one `run`: a `[tstr]` section names real sessions (JSONL);
/// the run imports them, trains the primary model on three seeds in each of the three
/// arms, reports both TSTR gates with their intervals in the real sessions' report, and a
/// second run reuses every part.
#[test]
fn run_trains_the_three_tstr_arms_and_reports_both_gates() {
    use rand::{RngExt, SeedableRng};
    let dir = tempfile::tempdir().unwrap();
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(5);
    let mut lines = Vec::new();
    for user in 0..12 {
        for turn in 0..40i64 {
            let ts = 1_767_571_200 + turn * 75_600 + user * 60;
            let features: Vec<Vec<f64>> = (0..10)
                .map(|_| (0..17).map(|_| rng.random_range(0.0..1.0)).collect())
                .collect();
            let labels: Vec<f64> = features.iter().map(|x| (x[1] > 0.8) as u8 as f64).collect();
            let ids: Vec<u32> = (0..10).map(|i| (turn as u32 * 3 + i) % 25).collect();
            lines.push(
                serde_json::json!({"user_id": user, "timestamp": ts, "memory_ids": ids,
                    "features": features, "labels": labels})
                .to_string(),
            );
        }
    }
    std::fs::write(dir.path().join("sessions.jsonl"), lines.join("\n") + "\n").unwrap();
    // A world whose content width the model reads and the sessions lack is refused before
    // anything trains, naming the setting.
    let wide = dir.path().join("wide.toml");
    std::fs::write(
        &wide,
        format!(
            "{}[pipeline]\nseeds = [1]\nbaselines = []\nexport = []\n[tstr]\nreal = \"sessions.jsonl\"\n",
            TINY_TOML.replace("name = \"tiny\"", "name = \"wide\"")
        ),
    )
    .unwrap();
    let root = dir.path().to_str().unwrap();
    let (ok, _, err) = ssmkit(&["run", wide.to_str().unwrap(), "--root", root, "--quiet"]);
    assert!(!ok && err.contains("`[world] embedding_dim = 0`"), "{err}");
    assert!(
        !dir.path().join("runs/wide").exists(),
        "trained before refusing"
    );
    let cfg = dir.path().join("tstr.toml");
    std::fs::write(
        &cfg,
        format!(
            "{}[pipeline]\nseeds = [1, 2, 3]\nbaselines = []\nexport = []\nprobes = 2\n[tstr]\nreal = \"sessions.jsonl\"\n",
            TINY_TOML.replace("[world]\n", "[world]\nembedding_dim = 0\n")
        ),
    )
    .unwrap();
    let (root, c) = (dir.path().to_str().unwrap(), cfg.to_str().unwrap());
    let (ok, out, err) = ssmkit(&["run", c, "--root", root, "--quiet"]);
    assert!(ok, "{err}");
    for s in 1..=3 {
        for f in [
            format!("runs/tiny/mamba-s{s}/state.json"),
            format!("runs/tiny-real/mamba-s{s}/state.json"),
            format!("runs/tiny-real/mamba+mix-s{s}/state.json"),
        ] {
            assert!(dir.path().join(&f).is_file(), "{f} missing:\n{out}");
        }
    }
    let mixed =
        ssmkit::train::read_run_state(&dir.path().join("runs/tiny-real/mamba+mix-s2")).unwrap();
    assert_eq!(mixed.mixed.len(), 1);
    let text = std::fs::read_to_string(dir.path().join("reports/tiny-real/gates.json")).unwrap();
    let gates: serde_json::Value = serde_json::from_str(&text).unwrap();
    let tstr: Vec<&serde_json::Value> = gates["gates"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|g| g["name"].as_str().unwrap().starts_with("TSTR"))
        .collect();
    assert_eq!(tstr.len(), 2, "{text}");
    for g in tstr {
        assert!(
            g["value"].is_f64() && g["ci_low"].is_f64() && g["ci_high"].is_f64(),
            "{g}"
        );
        assert!(g["note"].as_str().unwrap().contains("3 × 3 seeds"), "{g}");
        let status = g["status"].as_str().unwrap();
        assert!(status == "PASS" || status == "FAIL", "{g}");
    }
    assert!(out.contains("tstr "), "{out}");
    // A second run trains, imports and evaluates nothing again.
    let (ok, again, err) = ssmkit(&["run", c, "--root", root, "--quiet"]);
    assert!(ok, "{err}");
    for part in ["import (", "train (", "eval ("] {
        assert!(again.contains(part), "{part} not reused:\n{again}");
    }
    let reused_trains = again
        .lines()
        .filter(|l| l.starts_with("reused: train"))
        .count();
    assert_eq!(reused_trains, 9, "{again}");
}
