//! Two processes on one output, interrupted replaces, directories that are not ours,
//! edits, and values at their extremes: the second writer fails at once and changes
//! nothing, a stranded `.NAME.old` does not block later runs, `train` and `run` never
//! delete what they did not write, an edited `state.json` is refused, and input that the
//! generator, the importer or the runtime cannot hold is one clear error, never a panic.
//! (Unix: the tests plant symbolic links and ask `true` for a process id that has ended.)
#![cfg(unix)]

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

mod common;
use common::{TINY_TOML, opts, ssmkit, tiny_data, tiny_train};

/// Holds the lock file `file` as another process would (a separate open file, locked),
/// with `pid` written in it.
fn hold(file: &Path, pid: &str) -> fs::File {
    let mut f = fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(file)
        .unwrap();
    f.try_lock().unwrap();
    f.write_all(pid.as_bytes()).unwrap();
    f
}

/// Every entry under `dir`, with each file's bytes: what must not change.
fn snapshot(dir: &Path) -> Vec<(PathBuf, Vec<u8>)> {
    let mut out = Vec::new();
    for entry in fs::read_dir(dir).unwrap().flatten() {
        let path = entry.path();
        if path.is_dir() {
            out.push((path.clone(), Vec::new()));
            out.extend(snapshot(&path));
        } else {
            out.push((path.clone(), fs::read(&path).unwrap()));
        }
    }
    out.sort();
    out
}

/// A config file of the tiny world (12 users) with a tiny training section.
fn train_config(dir: &Path) -> String {
    let path = dir.join("tiny.toml");
    fs::write(&path, TINY_TOML).unwrap();
    path.display().to_string()
}

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

#[test]
fn a_held_lock_refuses_every_writer_at_once_and_changes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let data = tiny_data(d);
    let cfg = train_config(d);
    let outputs = d.join("outputs");
    fs::create_dir(&outputs).unwrap();
    // What each command would write, with something already there to keep.
    let run = outputs.join("run");
    let (gen_out, report) = (outputs.join("gen"), outputs.join("report"));
    for dir in [&run, &gen_out, &report] {
        fs::create_dir(dir).unwrap();
        fs::write(dir.join("keep"), b"theirs").unwrap();
    }
    let (export, state) = (outputs.join("m.safetensors"), outputs.join("user.state"));
    fs::write(&export, b"old export").unwrap();
    fs::write(&state, b"old state").unwrap();
    let root = outputs.join("root");
    fs::create_dir(&root).unwrap();
    let _locks = [
        hold(&run.join(".ssmkit.lock"), "4242"),
        hold(&outputs.join(".gen.lock"), "4242"),
        hold(&outputs.join(".report.lock"), "4242"),
        hold(&outputs.join(".m.safetensors.lock"), "4242"),
        hold(&outputs.join(".user.state.lock"), "4242"),
        hold(&root.join(".ssmkit.lock"), "4242"),
    ];
    let before = snapshot(&outputs);
    let cases: Vec<(&Path, Vec<&str>)> = vec![
        (
            &run,
            vec![
                "train",
                "--config",
                &cfg,
                "--data",
                s(&data),
                "--run",
                s(&run),
            ],
        ),
        (
            &gen_out,
            vec!["gen", "--config", &cfg, "--out", s(&gen_out), "--force"],
        ),
        (
            &report,
            vec![
                "eval",
                "--data",
                s(&data),
                "--run",
                s(&run),
                "--out",
                s(&report),
                "--force",
            ],
        ),
        (
            &export,
            vec!["export", s(&run), "--out", s(&export), "--force"],
        ),
        (
            &state,
            vec![
                "predict",
                s(&export),
                "--state",
                s(&state),
                "--input",
                "/dev/null",
            ],
        ),
        (&root, vec!["run", &cfg, "--root", s(&root), "--quiet"]),
    ];
    for (target, args) in cases {
        let (ok, _, err) = ssmkit(&args);
        assert!(!ok, "{args:?} succeeded");
        let want = format!("{} is in use by process 4242", target.display());
        assert!(err.contains(&want), "{args:?}: {err}");
    }
    assert!(
        snapshot(&outputs) == before,
        "a refused writer changed something"
    );
}

#[test]
fn two_trainings_on_one_run_directory_the_second_fails_at_once() {
    let dir = tempfile::tempdir().unwrap();
    let data = tiny_data(dir.path());
    let cfg = dir.path().join("long.toml");
    fs::write(
        &cfg,
        "[train]\nsize = \"tiny\"\nsteps = 100000\nbatch_users = 4\nwindow = 16\nwarmup_steps = 2\neval_every = 50000\n",
    )
    .unwrap();
    let run = dir.path().join("run");
    let args = [
        "train",
        "--config",
        s(&cfg),
        "--data",
        s(&data),
        "--run",
        s(&run),
        "--quiet",
    ];
    let mut first = Command::new(env!("CARGO_BIN_EXE_ssmkit"))
        .args(args)
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let pid = first.id().to_string();
    let lock = run.join(".ssmkit.lock");
    wait_for_lock(&lock, &pid);
    let (ok, _, err) = ssmkit(&args);
    first.kill().unwrap();
    first.wait().unwrap();
    assert!(!ok);
    let want = format!("{} is in use by process {pid}", run.display());
    assert!(err.contains(&want), "{err}");
}

#[test]
fn two_predicts_on_one_state_the_second_fails_at_once() {
    let dir = tempfile::tempdir().unwrap();
    let model_path = untrained_export(dir.path(), ssmkit::model::scorer::Variant::Mamba);
    let state = dir.path().join("user.state");
    let lock = dir.path().join(".user.state.lock");
    // The first waits for turns on its standard input, holding the state.
    let mut first = Command::new(env!("CARGO_BIN_EXE_ssmkit"))
        .args(["predict", s(&model_path), "--state", s(&state)])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    let pid = first.id().to_string();
    wait_for_lock(&lock, &pid);
    let (ok, _, err) = predict_nothing(&model_path, &state);
    assert!(!ok);
    let want = format!("{} is in use by process {pid}", state.display());
    assert!(err.contains(&want), "{err}");
    assert!(!state.exists(), "the second saved a state");
    drop(first.stdin.take());
    assert!(first.wait().unwrap().success());
    assert!(state.is_file(), "the first saves its state");
    assert!(!lock.exists(), "the lock file goes with its owner");
    let (ok, _, err) = predict_nothing(&model_path, &state);
    assert!(ok, "free again: {err}");
}

#[test]
fn a_stranded_old_copy_neither_blocks_a_forced_gen_nor_is_lost() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = train_config(dir.path());
    let out = dir.path().join("data");
    let old = dir.path().join(".data.old");
    // Killed after the old dataset was moved aside and the new one was in place.
    for d in [&out, &old] {
        fs::create_dir(d).unwrap();
        fs::write(d.join("manifest.json"), b"{}").unwrap();
    }
    let (ok, _, err) = ssmkit(&[
        "gen",
        "--config",
        &cfg,
        "--out",
        s(&out),
        "--force",
        "--quiet",
    ]);
    assert!(ok, "{err}");
    assert!(!old.exists(), "the stranded copy is removed");
    assert!(fs::read(out.join("manifest.json")).unwrap().len() > 2);
    // Killed after the old dataset was moved aside and before the new one was: the old
    // one is all there is, and it is put back, not deleted.
    fs::rename(&out, &old).unwrap();
    let (ok, _, err) = ssmkit(&["gen", "--config", &cfg, "--out", s(&out), "--quiet"]);
    assert!(!ok && err.contains("already exists"), "{err}");
    assert!(out.join("manifest.json").is_file() && !old.exists());
    let leftovers: Vec<_> = fs::read_dir(dir.path())
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with(".data"))
        .collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");
}

#[test]
fn a_forced_eval_replaces_a_report_over_a_stranded_old_copy() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let data = tiny_data(d);
    let run = d.join("run");
    ssmkit::train::train(&tiny_train(), &opts(&data, &run, 1)).unwrap();
    // An eval --force over a report left with a stranded `.report.old`.
    let report = d.join("report");
    let old = d.join(".report.old");
    for r in [&report, &old] {
        fs::create_dir(r).unwrap();
        fs::write(r.join("gates.json"), b"{}").unwrap();
    }
    let args = [
        "eval",
        "--data",
        s(&data),
        "--run",
        s(&run),
        "--out",
        s(&report),
        "--force",
        "--quiet",
        "--probes",
        "2",
        "--latency-users",
        "1",
        "--resamples",
        "200",
        "--permutations",
        "200",
    ];
    let (ok, _, err) = ssmkit(&args);
    assert!(ok, "{err}");
    assert!(!old.exists(), "the stranded copy is removed");
    assert!(report.join("report.md").is_file());
}

#[test]
fn the_next_predict_removes_a_killed_ones_temporary_state() {
    let dir = tempfile::tempdir().unwrap();
    let model_path = untrained_export(dir.path(), ssmkit::model::scorer::Variant::Mamba);
    let mut gone = Command::new("true").spawn().unwrap();
    let dead = gone.id();
    gone.wait().unwrap();
    let state = dir.path().join("user.state");
    let leftover = dir.path().join(format!(".user.state.tmp-{dead}"));
    fs::write(&leftover, vec![0u8; 4096]).unwrap();
    let (ok, _, err) = predict_nothing(&model_path, &state);
    assert!(ok, "{err}");
    assert!(state.is_file() && !leftover.exists(), "the leftover stays");
}

#[test]
fn train_writes_only_into_its_own_directories() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let data = tiny_data(d);
    let cfg = train_config(d);
    let train = |run: &Path, resume: bool| {
        let mut args = vec![
            "train",
            "--config",
            &cfg,
            "--data",
            s(&data),
            "--run",
            s(run),
        ];
        args.extend(if resume {
            vec!["--resume", "--quiet"]
        } else {
            vec!["--quiet"]
        });
        ssmkit(&args)
    };
    // A directory of someone else's, directly and through a link.
    let foreign = d.join("foreign");
    fs::create_dir_all(foreign.join("ckpt-00000004")).unwrap();
    fs::write(foreign.join("notes.txt"), b"mine").unwrap();
    fs::write(foreign.join("metrics.csv"), b"mine").unwrap();
    let link = d.join("link");
    std::os::unix::fs::symlink(&foreign, &link).unwrap();
    let before = snapshot(&foreign);
    for run in [&foreign, &link] {
        for resume in [false, true] {
            let (ok, _, err) = train(run, resume);
            assert!(!ok, "trained into {}", run.display());
            assert!(
                err.contains(&run.display().to_string()) && err.contains("notes.txt"),
                "{err}"
            );
        }
    }
    // A config.json that is not a run's is someone else's too.
    let theirs = d.join("theirs");
    fs::create_dir(&theirs).unwrap();
    fs::write(theirs.join("config.json"), b"{\"port\": 80}").unwrap();
    let (ok, _, err) = train(&theirs, false);
    assert!(!ok && err.contains("config.json"), "{err}");
    assert_eq!(
        fs::read(theirs.join("config.json")).unwrap(),
        b"{\"port\": 80}"
    );
    assert!(
        snapshot(&foreign) == before,
        "a refused training changed something"
    );
    // Each file alone that only looks like a run's: a log without the log's header, a
    // directory named like a checkpoint, a hidden temporary not of a run's file, a config
    // with a run's keys and one more.
    for (i, (name, bytes)) in [
        ("metrics.csv", &b"mine"[..]),
        ("ckpt-backup/mine.txt", b"mine"),
        (".notes.tmp-1", b"mine"),
        (
            "config.json",
            b"{\"model\": 1, \"train\": 2, \"seed\": 3, \"port\": 80}",
        ),
    ]
    .into_iter()
    .enumerate()
    {
        let theirs = d.join(format!("alone-{i}"));
        let file = theirs.join(name);
        fs::create_dir_all(file.parent().unwrap()).unwrap();
        fs::write(&file, bytes).unwrap();
        let before = snapshot(&theirs);
        let (ok, _, err) = train(&theirs, false);
        let top = name.split('/').next().unwrap();
        assert!(!ok && err.contains(top), "{name}: {err}");
        assert!(snapshot(&theirs) == before, "{name} was touched");
    }

    // A real run whose state.json is lost: --resume refuses and keeps the checkpoint.
    let run = d.join("run");
    ssmkit::train::train(&tiny_train(), &opts(&data, &run, 1)).unwrap();
    let kept = d.join("state.json");
    fs::rename(run.join("state.json"), &kept).unwrap();
    let before = snapshot(&run);
    let (ok, _, err) = train(&run, true);
    assert!(!ok && err.contains("no state.json"), "{err}");
    assert!(snapshot(&run) == before, "the checkpoint was touched");
    // A directory of the user's inside a real run survives its resume.
    fs::rename(&kept, run.join("state.json")).unwrap();
    fs::create_dir(run.join("ckpt-mine")).unwrap();
    fs::write(run.join("ckpt-mine/mine.txt"), b"mine").unwrap();
    let mut resume = opts(&data, &run, 1);
    resume.resume = true;
    ssmkit::train::train(&tiny_train(), &resume).unwrap();
    assert_eq!(fs::read(run.join("ckpt-mine/mine.txt")).unwrap(), b"mine");
}

#[test]
fn run_never_replaces_a_data_directory_it_did_not_write() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = train_config(dir.path());
    let data = dir.path().join("data").join("tiny");
    fs::create_dir_all(&data).unwrap();
    fs::write(data.join("notes.txt"), b"mine").unwrap();
    let (ok, _, err) = ssmkit(&["run", &cfg, "--root", s(dir.path()), "--quiet"]);
    assert!(!ok, "run replaced the directory");
    assert!(
        err.contains(&data.display().to_string()) && err.contains("manifest.json"),
        "{err}"
    );
    assert_eq!(fs::read(data.join("notes.txt")).unwrap(), b"mine");
    // A manifest.json of someone else's is named as not an ssmkit dataset.
    fs::write(data.join("manifest.json"), b"{\"mine\": true}").unwrap();
    let (ok, _, err) = ssmkit(&["run", &cfg, "--root", s(dir.path()), "--quiet"]);
    assert!(
        !ok && err.contains("manifest.json") && err.contains("not an ssmkit dataset"),
        "{err}"
    );
    assert_eq!(fs::read(data.join("notes.txt")).unwrap(), b"mine");
}

#[test]
fn run_never_replaces_a_report_directory_it_did_not_write() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = train_config(dir.path());
    let report = dir.path().join("reports").join("tiny");
    fs::create_dir_all(&report).unwrap();
    fs::write(report.join("notes.txt"), b"mine").unwrap();
    let (ok, _, err) = ssmkit(&["run", &cfg, "--root", s(dir.path()), "--quiet"]);
    assert!(!ok, "run replaced the directory");
    assert!(
        err.contains(&report.display().to_string()) && err.contains("no report ssmkit wrote"),
        "{err}"
    );
    assert_eq!(fs::read(report.join("notes.txt")).unwrap(), b"mine");
}

#[test]
fn gen_runs_at_the_bounds_of_its_config_and_names_the_field_beyond_them() {
    use ssmkit::config::{MAX_START_UNIX, MAX_TURN_GAP_S, MAX_ZIPF_EXPONENT};
    let dir = tempfile::tempdir().unwrap();
    let mut at_bounds = common::tiny_config();
    at_bounds.world.users = 4;
    at_bounds.timeline.start_unix = MAX_START_UNIX;
    at_bounds.timeline.mean_turn_gap_s = MAX_TURN_GAP_S;
    at_bounds.patterns.zipf_exponent = MAX_ZIPF_EXPONENT;
    common::gen_tiny(&at_bounds, &dir.path().join("at_bounds"));
    let cfg = train_config(dir.path());
    let base = fs::read_to_string(&cfg).unwrap();
    for (section, field, value) in [
        ("timeline", "start_unix", "9223372036854775807"),
        ("timeline", "start_unix", "-1"),
        ("timeline", "mean_turn_gap_s", "1e300"),
        ("patterns", "zipf_exponent", "1000.0"),
        ("patterns", "seasonal_period_days", "5e-324"),
        ("world", "users", "4294967295"),
        ("world", "communities", "[3, 4294967295]"),
        ("world", "memories_per_entity", "[2, 4294967295]"),
        ("timeline", "turns", "[90, 4294967295]"),
        ("timeline", "start_spread_days", "4294967295"),
        (
            "candidates",
            "hard_negative_mix",
            "[1e308, 1e308, 1e308, 1e308]",
        ),
        ("train", "batch_users", "4294967295"),
        ("train", "window", "9223372036854775807"),
        ("train", "eval_every", "9223372036854775807"),
        ("train", "resident_mb", "9223372036854775807"),
        ("train", "steps", "4294967295"),
    ] {
        // The field replaces its line in the base config, if it has one.
        let base: String = base
            .lines()
            .filter(|l| !l.starts_with(&format!("{field} = ")))
            .map(|l| format!("{l}\n"))
            .collect();
        let text = base.replace(
            &format!("[{section}]\n"),
            &format!("[{section}]\n{field} = {value}\n"),
        );
        let text = if text.contains(&format!("[{section}]")) {
            text
        } else {
            format!("{text}[{section}]\n{field} = {value}\n")
        };
        fs::write(&cfg, text).unwrap();
        let out = dir.path().join("beyond");
        let (ok, _, err) = ssmkit(&["gen", "--config", &cfg, "--out", s(&out), "--quiet"]);
        assert!(!ok && !err.contains("panicked"), "{field} = {value}: {err}");
        let value = value.trim_end_matches(".0");
        let shown = value.trim_start_matches('[').split(", ").last().unwrap();
        let shown = shown.trim_end_matches(']');
        assert!(
            err.contains(&format!("{section}.{field}"))
                && (err.contains(shown) || field == "hard_negative_mix"),
            "{field} = {value}: {err}"
        );
        assert!(!out.exists());
    }
}

#[test]
fn import_refuses_what_its_layout_would_distort_naming_the_line() {
    let dir = tempfile::tempdir().unwrap();
    let v17: Vec<f64> = vec![0.5; 17];
    let turn = |user: serde_json::Value, n: usize| {
        serde_json::json!({"user_id": user, "timestamp": 100, "features": vec![&v17; n],
            "labels": vec![1.0; n]})
        .to_string()
    };
    for (name, lines, want) in [
        (
            "all_relevant",
            vec![
                turn(serde_json::json!(1), 2),
                turn(serde_json::json!(1), 256),
            ],
            "line 2: 256 relevant candidates",
        ),
        (
            "mixed_ids",
            vec![
                turn(serde_json::json!(7), 2),
                turn(serde_json::json!("7"), 2),
            ],
            "line 2: `user_id` is a string but a number on line 1",
        ),
        (
            "object_id",
            vec![turn(serde_json::json!({"id": 7}), 2)],
            "line 1: `user_id` is {\"id\":7}",
        ),
        (
            "float_id",
            vec![
                turn(serde_json::json!(1), 2),
                turn(serde_json::json!(1.0), 2),
            ],
            "line 2: `user_id` is 1.0: a numeric user id must be a whole number",
        ),
    ] {
        let input = dir.path().join(format!("{name}.jsonl"));
        fs::write(&input, lines.join("\n") + "\n").unwrap();
        let out = dir.path().join(name);
        let (ok, _, err) = ssmkit(&["gen", "--import", s(&input), "--out", s(&out)]);
        assert!(!ok && err.contains(want), "{name}: {err}");
        assert!(!out.exists(), "{name}: written");
    }
    // A value of the wrong type names its field.
    let input = dir.path().join("typed.jsonl");
    let mut line: serde_json::Value = serde_json::from_str(&turn(serde_json::json!(1), 2)).unwrap();
    line["timestamp"] = serde_json::json!("noon");
    fs::write(&input, line.to_string() + "\n").unwrap();
    let (ok, _, err) = ssmkit(&[
        "gen",
        "--import",
        s(&input),
        "--out",
        s(&dir.path().join("typed")),
    ]);
    assert!(
        !ok && err.contains("line 1: not a valid record: `timestamp`: invalid type"),
        "{err}"
    );
    // 255 relevant candidates still fit.
    let input = dir.path().join("most.jsonl");
    fs::write(&input, turn(serde_json::json!(1), 255) + "\n").unwrap();
    let out = dir.path().join("most");
    let (ok, _, err) = ssmkit(&["gen", "--import", s(&input), "--out", s(&out)]);
    assert!(ok, "{err}");
    // Timestamped lines without a user_id become users of one turn, with a warning.
    let input = dir.path().join("anonymous.jsonl");
    let mut lines = vec![turn(serde_json::json!(1), 2), turn(serde_json::json!(1), 2)];
    let mut no_user: serde_json::Value = serde_json::from_str(&lines[0]).unwrap();
    no_user.as_object_mut().unwrap().remove("user_id");
    lines.extend([no_user.to_string(), no_user.to_string()]);
    fs::write(&input, lines.join("\n") + "\n").unwrap();
    let out = dir.path().join("anonymous");
    let (ok, stdout, err) = ssmkit(&["gen", "--import", s(&input), "--out", s(&out)]);
    assert!(ok && stdout.contains("3 users, 4 turns"), "{stdout}{err}");
    assert!(
        err.contains("warning: 2 of 4 timestamped lines have no user_id"),
        "{err}"
    );
}

#[test]
fn a_negative_seed_is_named_as_an_invalid_value() {
    let (ok, _, err) = ssmkit(&[
        "gen",
        "--config",
        "configs/quick.toml",
        "--out",
        "x",
        "--seed",
        "-1",
    ]);
    assert!(!ok);
    assert!(err.contains("invalid value '-1' for '--seed"), "{err}");
}

#[test]
fn numeric_flags_beyond_their_bounds_are_named_before_any_work() {
    for (args, named) in [
        (&["metrics", "x.csv", "--k", "-1"][..], "'--k <K>'"),
        (&["metrics", "x.csv", "--k", "0"], "'--k <K>'"),
        (
            &[
                "compare",
                "a.csv",
                "b.csv",
                "--resamples",
                "18446744073709551615",
            ],
            "'--resamples <RESAMPLES>'",
        ),
        (
            &["canaries", "--data", "d", "--probes", "0"],
            "'--probes <PROBES>'",
        ),
        (
            &["canaries", "--data", "d", "--snr", "-1e300"],
            "--snr -1e300",
        ),
        (
            &[
                "eval", "--data", "d", "--run", "r", "--out", "o", "--probes", "0",
            ],
            "'--probes <PROBES>'",
        ),
        (
            &["bench", "infer", "--candidates", "1000000000"],
            "'--candidates <CANDIDATES>'",
        ),
        (
            &["bench", "infer", "--ablation", "real_only+depth=2"],
            "unknown setting `depth`",
        ),
        (
            &["bench", "scan", "--batch", "4096", "--d-inner", "4096"],
            "--d-inner",
        ),
        (
            &["export", "r", "--out", "o", "--max-drop", "-2"],
            "--max-drop -2",
        ),
    ] {
        let (ok, _, err) = ssmkit(args);
        assert!(!ok && err.contains(named), "{args:?}: {err}");
        assert!(!err.contains("panicked"), "{args:?}: {err}");
    }
}

#[test]
fn output_into_a_pipe_closed_before_the_first_line_ends_without_a_panic() {
    let mut child = Command::new(env!("CARGO_BIN_EXE_ssmkit"))
        .args(["train", "--dry-run"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // The reader is gone before the writer starts.
    drop(child.stdout.take());
    let out = child.wait_with_output().unwrap();
    let err = String::from_utf8(out.stderr).unwrap();
    assert!(!err.contains("panicked"), "{err}");
    assert_ne!(out.status.code(), Some(101), "{err}");
}

#[test]
fn an_edited_table_is_refused_naming_the_first_in_table_order() {
    let dir = tempfile::tempdir().unwrap();
    let data = tiny_data(dir.path());
    let flip = |table: &str| {
        let path = data.join(table);
        let mut bytes = fs::read(&path).unwrap();
        let at = bytes.len() / 2;
        bytes[at] ^= 1;
        fs::write(&path, bytes).unwrap();
    };
    let run = dir.path().join("run");
    let refused = |table: &str| {
        let (ok, _, err) = ssmkit(&[
            "train",
            "--config",
            &train_config(dir.path()),
            "--data",
            s(&data),
            "--run",
            s(&run),
        ]);
        assert!(!ok && !run.exists(), "{err}");
        assert!(
            err.contains(&data.join(table).display().to_string())
                && err.contains("does not match the SHA-256"),
            "{err}"
        );
    };
    // Two tables edited: the digests are checked side by side, and the one reported is
    // the first in the dataset's table order, whichever finished hashing first.
    let [first, .., last] = ssmkit::layout::TABLES;
    flip(last);
    refused(last);
    flip(first);
    refused(first);
}

#[test]
fn an_edited_state_json_is_refused_naming_it() {
    let dir = tempfile::tempdir().unwrap();
    let data = tiny_data(dir.path());
    let run = dir.path().join("run");
    ssmkit::train::train(&tiny_train(), &opts(&data, &run, 1)).unwrap();
    ssmkit::train::read_run_state(&run).expect("the state as written reads back");
    let path = run.join("state.json");
    let text = fs::read_to_string(&path).unwrap();
    assert!(text.contains("\"seed\": 1,"), "{text}");
    let out = dir.path().join("m.safetensors");
    let refused = |edited: String, why: &str| {
        fs::write(&path, edited).unwrap();
        let (ok, _, err) = ssmkit(&["export", s(&run), "--out", s(&out)]);
        assert!(!ok && !out.exists(), "{err}");
        assert!(
            err.contains(&path.display().to_string()) && err.contains(why),
            "{err}"
        );
    };
    let edited = text.replace("\"seed\": 1,", "\"seed\": 2,");
    refused(edited.clone(), "edited or damaged");
    // Blanking or removing the recorded digest with the edit does not hide it.
    let state: serde_json::Value = serde_json::from_str(&text).unwrap();
    let digest = state["state_sha256"].as_str().unwrap().to_string();
    let blanked = edited.replace(&digest, "");
    refused(blanked, "records none");
    let mut removed: serde_json::Value = serde_json::from_str(&edited).unwrap();
    removed.as_object_mut().unwrap().remove("state_sha256");
    refused(
        serde_json::to_string_pretty(&removed).unwrap(),
        "records none",
    );
    // A model no build could hold is refused before anything is allocated, even with its
    // digest recomputed.
    for (field, value) in [("d_state", 4_000_000_000u64), ("layers", 1_000_000)] {
        let mut huge = state.clone();
        huge["model"][field] = value.into();
        huge["state_sha256"] = "".into();
        let unsealed = serde_json::to_string_pretty(&huge).unwrap();
        let sha = {
            use sha2::Digest;
            format!("{:x}", sha2::Sha256::digest(unsealed.as_bytes()))
        };
        let sealed = unsealed.replacen(
            "\"state_sha256\": \"\"",
            &format!("\"state_sha256\": \"{sha}\""),
            1,
        );
        refused(sealed, &format!("{field} = {value}"));
    }
}

#[test]
fn a_loss_that_overflows_before_the_first_checkpoint_claims_no_checkpoint() {
    let dir = tempfile::tempdir().unwrap();
    // Features at the edge of f32: the first forward pass overflows.
    let lines: Vec<String> = (0..60)
        .map(|i| {
            let f: Vec<Vec<f64>> = (0..8)
                .map(|j| {
                    (0..17)
                        .map(|d| if (d + j) % 3 == 0 { 1e38 } else { 0.5 })
                        .collect()
                })
                .collect();
            let labels: Vec<f64> = (0..8).map(|j| (j == i % 8) as u8 as f64).collect();
            serde_json::json!({"features": f, "labels": labels}).to_string()
        })
        .collect();
    let input = dir.path().join("huge.jsonl");
    fs::write(&input, lines.join("\n") + "\n").unwrap();
    let data = dir.path().join("huge");
    let (ok, _, err) = ssmkit(&["gen", "--import", s(&input), "--out", s(&data)]);
    assert!(ok, "{err}");
    let cfg = dir.path().join("mlp.toml");
    fs::write(
        &cfg,
        "[train]\nmodel = \"mlp\"\nsize = \"tiny\"\nsteps = 8\nbatch_users = 4\nwindow = 2\nwarmup_steps = 2\neval_every = 4\n",
    )
    .unwrap();
    let run = dir.path().join("run");
    let (ok, _, err) = ssmkit(&[
        "train",
        "--config",
        s(&cfg),
        "--data",
        s(&data),
        "--run",
        s(&run),
        "--quiet",
    ]);
    assert!(!ok && err.contains("step 1: the training loss"), "{err}");
    assert!(err.contains("no checkpoint was written yet"), "{err}");
    assert!(!run.join("state.json").exists());
}

#[test]
fn predict_steps_through_extreme_timestamps_and_ids_without_a_panic() {
    use ssmkit::model::scorer::Variant;
    let dir = tempfile::tempdir().unwrap();
    for variant in [Variant::Mamba, Variant::Mlp] {
        let model_path = untrained_export(dir.path(), variant);
        let lines: Vec<String> = [0, i64::MAX, i64::MIN, i64::MAX, 5]
            .iter()
            .map(|&ts| {
                let c = |id: u64| {
                    serde_json::json!({"features": vec![0.5; 24], "memory_id": id,
                        "memory_slot": u32::MAX, "entity": u32::MAX})
                };
                serde_json::json!({"timestamp": ts, "context": vec![0.5; 6],
                    "candidates": [c(u64::MAX), c(0)], "labels": [1.0, 0.0]})
                .to_string()
            })
            .collect();
        let input = dir.path().join("turns.jsonl");
        fs::write(&input, lines.join("\n") + "\n").unwrap();
        let state = dir.path().join(format!("{variant:?}.state"));
        for _ in 0..2 {
            let (ok, out, err) = ssmkit(&[
                "predict",
                s(&model_path),
                "--input",
                s(&input),
                "--state",
                s(&state),
            ]);
            assert!(!err.contains("panicked"), "{variant:?}: {err}");
            assert!(ok, "{variant:?}: {err}");
            assert_eq!(out.lines().count(), 5, "{variant:?}: {out}");
            assert!(
                !out.contains("null"),
                "{variant:?}: a score is not finite: {out}"
            );
        }
    }
}

/// An f32 export of an untrained Tiny `variant` (16-dimensional content, 4,096 memory
/// rows) at `dir/m.safetensors`.
fn untrained_export(dir: &Path, variant: ssmkit::model::scorer::Variant) -> PathBuf {
    use ssmkit::export::{Quant, encode};
    use ssmkit::model::scorer::{Init, ModelConfig, Size};
    let cfg = ModelConfig::sized(variant, Size::Tiny, 16, 4096);
    let model = cfg.init(4, &burn::prelude::Device::flex());
    let (bytes, _) = encode(&model, &cfg, Quant::F32, &serde_json::json!({})).unwrap();
    let path = dir.join("m.safetensors");
    fs::write(&path, bytes).unwrap();
    path
}

/// Waits (at most a minute) until the process `pid` holds the lock file `lock`.
fn wait_for_lock(lock: &Path, pid: &str) {
    let started = std::time::Instant::now();
    while fs::read_to_string(lock).unwrap_or_default() != pid {
        assert!(
            started.elapsed().as_secs() < 60,
            "the first never took the lock"
        );
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
}

/// `predict` of no turn with `model` on the state file `state`.
fn predict_nothing(model: &Path, state: &Path) -> (bool, String, String) {
    ssmkit(&[
        "predict",
        s(model),
        "--state",
        s(state),
        "--input",
        "/dev/null",
    ])
}

#[test]
fn a_state_named_through_a_link_is_saved_where_it_leads_and_outputs_replace_links() {
    let dir = tempfile::tempdir().unwrap();
    let model = untrained_export(dir.path(), ssmkit::model::scorer::Variant::Mamba);
    // The state a link names is the one read and saved; the link stays.
    let saved = dir.path().join("saved.state");
    let (ok, _, err) = predict_nothing(&model, &saved);
    assert!(ok, "{err}");
    let link = dir.path().join("user.state");
    std::os::unix::fs::symlink("saved.state", &link).unwrap();
    let before = fs::metadata(&saved).unwrap().modified().unwrap();
    std::thread::sleep(std::time::Duration::from_millis(20));
    let (ok, _, err) = predict_nothing(&model, &link);
    assert!(ok, "{err}");
    assert!(fs::symlink_metadata(&link).unwrap().is_symlink());
    assert!(fs::metadata(&saved).unwrap().modified().unwrap() > before);
    // An export onto a dangling link is refused at the start, naming it; with --force the
    // link itself is replaced and what it names is never created.
    let dangling = dir.path().join("dangling.safetensors");
    std::os::unix::fs::symlink("nowhere.safetensors", &dangling).unwrap();
    let data = tiny_data(dir.path());
    let run = dir.path().join("run");
    ssmkit::train::train(&tiny_train(), &opts(&data, &run, 1)).unwrap();
    let (ok, _, err) = ssmkit(&["export", s(&run), "--out", s(&dangling)]);
    assert!(
        !ok && err.contains(&dangling.display().to_string()) && err.contains("already exists"),
        "{err}"
    );
    let (ok, _, err) = ssmkit(&["export", s(&run), "--out", s(&dangling), "--force"]);
    assert!(ok, "{err}");
    assert!(!fs::symlink_metadata(&dangling).unwrap().is_symlink());
    assert!(!dir.path().join("nowhere.safetensors").exists());
}

#[test]
fn an_export_whose_scheme_contradicts_its_tensors_is_refused_even_with_its_digest_fixed() {
    let dir = tempfile::tempdir().unwrap();
    let model = untrained_export(dir.path(), ssmkit::model::scorer::Variant::Mamba);
    let bytes = fs::read(&model).unwrap();
    let n = u64::from_le_bytes(bytes[..8].try_into().unwrap()) as usize;
    let mut header: serde_json::Value = serde_json::from_slice(&bytes[8..8 + n]).unwrap();
    let mut meta: std::collections::HashMap<String, String> =
        serde_json::from_value(header["__metadata__"].clone()).unwrap();
    meta.insert("quantization".into(), r#"{"name":"int8"}"#.into());
    let digest = ssmkit_format::meta::metadata_digest(&meta);
    meta.insert("metadata_sha256".into(), digest);
    header["__metadata__"] = serde_json::to_value(&meta).unwrap();
    let text = header.to_string();
    let mut edited = (text.len() as u64).to_le_bytes().to_vec();
    edited.extend(text.as_bytes());
    edited.extend(&bytes[8 + n..]);
    fs::write(&model, edited).unwrap();
    let (ok, _, err) = predict_nothing(&model, &dir.path().join("s.state"));
    assert!(
        !ok && err.contains("names quantization int8 but the tensors are stored as f32"),
        "{err}"
    );
}
