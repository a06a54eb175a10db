//! `ssmkit gen` on small real datasets: determinism, SNR, planted canaries, candidate
//! composition, the PoC preset, the JSONL importer, and bad input through the real CLI.

use std::collections::HashMap;
use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::Command;

use polars::prelude::*;
use ssmkit::canary::{Role, Selector};
use ssmkit::config::{Config, Preset};
use ssmkit::datagen::{GenOptions, calendar, generate, noise};
use ssmkit::features::{Canary, FEATURE_NAMES, HardNegative, clean_column, feat};

fn small_config(users: u32) -> Config {
    let mut c = Config::default();
    c.world.users = users;
    c.world.entities = [40, 80];
    c.timeline.turns = [80, 160];
    c.noise.calibration_users = users;
    c
}

/// Generates `config` into a directory of `dir` named after it, the observed columns
/// stored (these tests read them with polars).
fn gen_into(config: &Config, dir: &Path) -> PathBuf {
    let out = dir.join(format!("{}-{}", config.name, config.seed));
    gen_to(config, &out, true);
    out
}

fn gen_to(config: &Config, out: &Path, materialize: bool) {
    let opts = GenOptions {
        out: out.to_path_buf(),
        force: true,
        quiet: true,
        materialize,
    };
    generate(config, &opts).unwrap();
}

fn read(dir: &Path, table: &str) -> DataFrame {
    let f = File::open(dir.join(table)).unwrap();
    ParquetReader::new(f).finish().unwrap()
}

fn f32s(df: &DataFrame, name: &str) -> Vec<f32> {
    df.column(name)
        .unwrap()
        .f32()
        .unwrap()
        .into_no_null_iter()
        .collect()
}

fn u32s(df: &DataFrame, name: &str) -> Vec<u32> {
    df.column(name)
        .unwrap()
        .u32()
        .unwrap()
        .into_no_null_iter()
        .collect()
}

fn u16s(df: &DataFrame, name: &str) -> Vec<u16> {
    df.column(name)
        .unwrap()
        .u16()
        .unwrap()
        .into_no_null_iter()
        .collect()
}

fn u8s(df: &DataFrame, name: &str) -> Vec<u8> {
    df.column(name)
        .unwrap()
        .u8()
        .unwrap()
        .into_no_null_iter()
        .collect()
}

fn i32s(df: &DataFrame, name: &str) -> Vec<i32> {
    df.column(name)
        .unwrap()
        .i32()
        .unwrap()
        .into_no_null_iter()
        .collect()
}

fn i64s(df: &DataFrame, name: &str) -> Vec<i64> {
    df.column(name)
        .unwrap()
        .i64()
        .unwrap()
        .into_no_null_iter()
        .collect()
}

fn mean(xs: impl IntoIterator<Item = f64>) -> f64 {
    let (s, n) = xs
        .into_iter()
        .fold((0.0, 0usize), |(s, n), x| (s + x, n + 1));
    assert!(n > 0, "mean of nothing");
    s / n as f64
}

fn correlation(xs: &[f64], ys: &[f64]) -> f64 {
    let (mx, my) = (mean(xs.iter().copied()), mean(ys.iter().copied()));
    let cov: f64 = xs.iter().zip(ys).map(|(x, y)| (x - mx) * (y - my)).sum();
    let vx: f64 = xs.iter().map(|x| (x - mx).powi(2)).sum();
    let vy: f64 = ys.iter().map(|y| (y - my).powi(2)).sum();
    cov / (vx * vy).sqrt()
}

/// Candidate rows joined with their turn's timestamp and focal entities.
struct Rows {
    user: Vec<u32>,
    turn: Vec<u32>,
    memory: Vec<u32>,
    entity: Vec<u32>,
    relevance: Vec<f64>,
    canary: Vec<u16>,
    role: Vec<u8>,
    ts: Vec<i64>,
    focal: Vec<[i32; 2]>,
    /// The user's selector entities Z, W, P, T.
    selectors: Vec<[i32; 4]>,
    turn_canary: Vec<u16>,
    age_days: Vec<f64>,
    /// The user's cycle peak (days from Monday 00:00).
    cycle_peak: Vec<f64>,
}

/// A turn's timestamp, focal entities, canary bits, selectors and cycle peak, by (user,
/// turn).
type TurnInfo = (i64, [i32; 2], u16, [i32; 4], f32);

fn rows(dir: &Path) -> Rows {
    let turns = read(dir, "turns.parquet");
    let c = read(dir, "candidates.parquet");
    let mut by_turn: HashMap<(u32, u32), TurnInfo> = HashMap::new();
    let sel: Vec<Vec<i32>> = Selector::ALL
        .iter()
        .map(|s| i32s(&turns, s.column()))
        .collect();
    let peak = f32s(&turns, "cycle_peak");
    let (tu, ti, ts, f0, f1, tc) = (
        u32s(&turns, "user_id"),
        u32s(&turns, "turn_index"),
        i64s(&turns, "timestamp"),
        i32s(&turns, "focal_0"),
        i32s(&turns, "focal_1"),
        u16s(&turns, "canary"),
    );
    for i in 0..tu.len() {
        by_turn.insert(
            (tu[i], ti[i]),
            (
                ts[i],
                [f0[i], f1[i]],
                tc[i],
                [sel[0][i], sel[1][i], sel[2][i], sel[3][i]],
                peak[i],
            ),
        );
    }
    let user = u32s(&c, "user_id");
    let turn = u32s(&c, "turn_index");
    let joined: Vec<_> = user
        .iter()
        .zip(&turn)
        .map(|(u, t)| by_turn[&(*u, *t)])
        .collect();
    Rows {
        memory: u32s(&c, "memory_id"),
        entity: u32s(&c, "entity_id"),
        relevance: f32s(&c, "relevance").into_iter().map(f64::from).collect(),
        canary: u16s(&c, "canary"),
        role: u8s(&c, "canary_role"),
        ts: joined.iter().map(|j| j.0).collect(),
        focal: joined.iter().map(|j| j.1).collect(),
        selectors: joined.iter().map(|j| j.3).collect(),
        turn_canary: joined.iter().map(|j| j.2).collect(),
        cycle_peak: joined.iter().map(|j| j.4 as f64).collect(),
        age_days: f32s(&c, &clean_column("log_age"))
            .into_iter()
            .map(|x| (x as f64).exp_m1())
            .collect(),
        user,
        turn,
    }
}

#[test]
fn same_seed_gives_identical_files_and_another_seed_differs() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = small_config(6);
    config.noise.missing = 0.01;
    config.noise.corruption = 0.01;
    config.output.users_per_batch = 2;
    let a = gen_into(&config, &dir.path().join("a"));
    let a2 = gen_into(&config, &dir.path().join("a2"));
    let tables = [
        "turns.parquet",
        "candidates.parquet",
        "memories.parquet",
        "paths.parquet",
    ];
    for name in tables.iter().chain(&["manifest.json", "config.toml"]) {
        let (x, y) = (
            std::fs::read(a.join(name)).unwrap(),
            std::fs::read(a2.join(name)).unwrap(),
        );
        assert!(x == y, "{name} differs between two runs with the same seed");
    }
    // Another batch size (so other threads and batches) must not change a table's byte.
    config.output.users_per_batch = 4;
    let b = gen_into(&config, &dir.path().join("b"));
    for name in tables {
        let (x, y) = (
            std::fs::read(a.join(name)).unwrap(),
            std::fs::read(b.join(name)).unwrap(),
        );
        assert!(x == y, "{name} depends on the batch size");
    }
    config.seed += 1;
    let c = gen_into(&config, &dir.path().join("c"));
    let x = std::fs::read(a.join("candidates.parquet")).unwrap();
    let y = std::fs::read(c.join("candidates.parquet")).unwrap();
    assert!(x != y, "another seed gave the same candidates");
}

#[test]
fn observed_features_rebuilt_when_read_equal_the_stored_ones() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = small_config(12);
    config.curriculum.enabled = true;
    config.noise.missing = 0.02;
    config.noise.corruption = 0.02;
    config.noise.label_flip = 0.05;
    let stored = gen_into(&config, &dir.path().join("stored"));
    let at_read = dir.path().join("at-read");
    gen_to(&config, &at_read, false);
    // Without the observed columns the candidates table holds the clean ones only.
    let c = read(&at_read, "candidates.parquet");
    for name in FEATURE_NAMES.iter().chain(&["mask"]) {
        assert!(c.column(name).is_err(), "{name} was stored");
    }
    let size = |d: &Path| {
        std::fs::metadata(d.join("candidates.parquet"))
            .unwrap()
            .len()
    };
    assert!(
        size(&at_read) * 2 < size(&stored),
        "{} bytes against {} stored",
        size(&at_read),
        size(&stored)
    );
    // Read, the two datasets are the same to the bit: every stage's noise scale, missing
    // cells, corrupted cells and flipped labels.
    let a = ssmkit::data::Dataset::load(&stored).unwrap();
    let b = ssmkit::data::Dataset::load(&at_read).unwrap();
    assert_eq!(a.users.len(), b.users.len());
    let bits = |x: &[f32]| x.iter().map(|v| v.to_bits()).collect::<Vec<_>>();
    let (mut missing, mut noisy) = (0, 0);
    for (ua, ub) in a.users.iter().zip(&b.users) {
        assert_eq!(ua.user_id, ub.user_id);
        assert_eq!(
            bits(&ua.features),
            bits(&ub.features),
            "user {}",
            ua.user_id
        );
        assert_eq!(bits(&ua.missing), bits(&ub.missing));
        assert_eq!(bits(&ua.labels), bits(&ub.labels));
        assert_eq!(bits(&ua.clean_features), bits(&ub.clean_features));
        missing += ub.missing.iter().filter(|&&m| m == 1.0).count();
        noisy += ub
            .features
            .iter()
            .zip(&ub.clean_features)
            .filter(|(x, c)| x != c)
            .count();
    }
    assert!(missing > 0 && noisy > 0, "{missing} missing, {noisy} noisy");
    let stages: std::collections::BTreeSet<u8> = b.users.iter().map(|u| u.stage).collect();
    assert!(stages.len() > 1, "stages {stages:?}");
}

#[test]
fn measured_snr_matches_the_request() {
    let dir = tempfile::tempdir().unwrap();
    for snr in [30.0, 20.0, 10.0, 0.0] {
        let mut config = small_config(8);
        config.noise.snr_db = Some(snr);
        let out = gen_into(&config, &dir.path().join(format!("snr{snr}")));
        let c = read(&out, "candidates.parquet");
        let mut checked = 0;
        for name in FEATURE_NAMES {
            let clean = f32s(&c, &clean_column(name));
            let noisy = f32s(&c, name);
            let var = {
                let m = mean(clean.iter().map(|&x| x as f64));
                mean(clean.iter().map(|&x| (x as f64 - m).powi(2)))
            };
            if var < 1e-10 {
                continue;
            }
            let measured = noise::measured_snr_db(&clean, &noisy).expect("noise was added");
            assert!(
                (measured - snr).abs() <= 0.5,
                "{name}: measured {measured:.3} dB for {snr} dB"
            );
            checked += 1;
        }
        assert!(checked >= 20, "only {checked} columns vary");
    }
}

#[test]
fn canaries_are_planted_in_clean_truth_and_absent_elsewhere() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = small_config(24);
    config.timeline.turns = [150, 200];
    let out = gen_into(&config, dir.path());
    let r = rows(&out);
    let n = r.user.len();
    let k = &config.canaries;
    let tagged = |c: Canary, i: usize| r.canary[i] & c.bit() != 0;
    let wd = |i: usize| calendar::weekday_index(r.ts[i]);
    // Whether the user's selector `s` is focal at row i's turn.
    let focal = |i: usize, s: Selector| r.focal[i].contains(&r.selectors[i][s as usize]);

    // 1: X within half a day of the user's own peak vs three days later, ≥ 2×; the peaks
    // differ between users; no weekday effect on untagged rows.
    let from_peak =
        |i: usize| (calendar::weekday(r.ts[i]) - r.cycle_peak[i] + 0.5).rem_euclid(7.0) - 0.5;
    let x_peak = mean(
        (0..n)
            .filter(|&i| tagged(Canary::TemporalCycle, i) && from_peak(i).abs() < 0.5)
            .map(|i| r.relevance[i]),
    );
    let x_later = mean(
        (0..n)
            .filter(|&i| tagged(Canary::TemporalCycle, i) && (from_peak(i) - 3.0).abs() < 0.5)
            .map(|i| r.relevance[i]),
    );
    assert!(
        x_peak >= 2.0 * x_later,
        "X: at the peak {x_peak:.3} vs three days later {x_later:.3}"
    );
    let peaks: std::collections::HashSet<u32> =
        r.cycle_peak.iter().map(|p| p.floor() as u32).collect();
    assert!(peaks.len() >= 3, "the users' peak weekdays: {peaks:?}");
    assert!(
        (0..n)
            .filter(|&i| tagged(Canary::TemporalCycle, i))
            .all(|i| r.role[i] == Role::Cycle.code())
    );
    let plain = |i: usize| r.canary[i] == 0;
    let o_mon = mean(
        (0..n)
            .filter(|&i| plain(i) && wd(i) == 0)
            .map(|i| r.relevance[i]),
    );
    let o_thu = mean(
        (0..n)
            .filter(|&i| plain(i) && wd(i) == 3)
            .map(|i| r.relevance[i]),
    );
    assert!(
        o_mon < 1.5 * o_thu && o_thu < 1.5 * o_mon,
        "untagged rows: Monday {o_mon:.3}, Thursday {o_thu:.3}"
    );

    // 2: R's relevance decays at the planted rate (least squares of ln p on age).
    let pts: Vec<(f64, f64)> = (0..n)
        .filter(|&i| tagged(Canary::RecencyDecay, i))
        .map(|i| (r.age_days[i], r.relevance[i].ln()))
        .collect();
    assert!(pts.len() > 50);
    let (mx, my) = (mean(pts.iter().map(|p| p.0)), mean(pts.iter().map(|p| p.1)));
    let slope = pts.iter().map(|p| (p.0 - mx) * (p.1 - my)).sum::<f64>()
        / pts.iter().map(|p| (p.0 - mx).powi(2)).sum::<f64>();
    assert!(
        (-slope - k.recency_lambda).abs() <= 0.2 * k.recency_lambda,
        "fitted λ {} vs {}",
        -slope,
        k.recency_lambda
    );

    // 3: Y given Z ≥ 3 × Y given W; untagged ordinary rows do not care whether Z or W is focal.
    let y_z = mean(
        (0..n)
            .filter(|&i| tagged(Canary::EntitySelectivity, i) && focal(i, Selector::Z))
            .map(|i| r.relevance[i]),
    );
    let y_w = mean(
        (0..n)
            .filter(|&i| tagged(Canary::EntitySelectivity, i) && focal(i, Selector::W))
            .map(|i| r.relevance[i]),
    );
    assert!(y_z > 3.0 * y_w, "Y: given Z {y_z:.3}, given W {y_w:.3}");
    let o_z = mean(
        (0..n)
            .filter(|&i| plain(i) && focal(i, Selector::Z))
            .map(|i| r.relevance[i]),
    );
    let o_w = mean(
        (0..n)
            .filter(|&i| plain(i) && focal(i, Selector::W))
            .map(|i| r.relevance[i]),
    );
    assert!(
        o_z < 1.5 * o_w && o_w < 1.5 * o_z,
        "untagged rows: given Z {o_z:.3}, given W {o_w:.3}"
    );

    // 4: C > B > A at every turn where the whole chain is shown.
    let mut chain: HashMap<(u32, u32), [f64; 3]> = HashMap::new();
    for i in (0..n).filter(|&i| tagged(Canary::SupersessionChain, i)) {
        let pos = [Role::ChainOldest, Role::ChainMiddle, Role::ChainNewest]
            .iter()
            .position(|role| role.code() == r.role[i])
            .expect("chain memory");
        chain.entry((r.user[i], r.turn[i])).or_insert([f64::NAN; 3])[pos] = r.relevance[i];
    }
    let full: Vec<_> = chain
        .values()
        .filter(|v| v.iter().all(|x| !x.is_nan()))
        .collect();
    assert!(
        full.len() > 20,
        "only {} turns show the whole chain",
        full.len()
    );
    for [a, b, c] in full {
        assert!(c > b && b > a, "chain relevance A {a}, B {b}, C {c}");
    }

    // 5: in post-burst queries the burst entity's memories fill the top of the ranking.
    let mut recalls = Vec::new();
    let mut by_turn: HashMap<(u32, u32), Vec<usize>> = HashMap::new();
    for i in (0..n).filter(|&i| r.turn_canary[i] & Canary::Burst.bit() != 0) {
        by_turn.entry((r.user[i], r.turn[i])).or_default().push(i);
    }
    for idx in by_turn.values() {
        let mut order = idx.clone();
        order.sort_by(|&a, &b| r.relevance[b].total_cmp(&r.relevance[a]));
        let burst: Vec<usize> = idx
            .iter()
            .copied()
            .filter(|&i| tagged(Canary::Burst, i))
            .collect();
        if burst.is_empty() {
            continue;
        }
        let hits = order.iter().take(10).filter(|i| burst.contains(i)).count();
        recalls.push(hits as f64 / burst.len() as f64);
    }
    assert!(recalls.len() > 10, "{} post-burst queries", recalls.len());
    let recall = mean(recalls.iter().copied());
    assert!(
        recall > 0.8,
        "clean Recall@10 on post-burst queries {recall:.3}"
    );

    // 6: P focal and Q's relevance move together; untagged rows do not follow P.
    let q: Vec<usize> = (0..n)
        .filter(|&i| tagged(Canary::CrossEntityDependency, i))
        .collect();
    let p_on: Vec<f64> = q
        .iter()
        .map(|&i| focal(i, Selector::P) as u8 as f64)
        .collect();
    let rel: Vec<f64> = q.iter().map(|&i| r.relevance[i]).collect();
    let corr = correlation(&p_on, &rel);
    assert!(corr > 0.7, "co-activation correlation {corr:.3}");
    let o: Vec<usize> = (0..n).filter(|&i| plain(i)).collect();
    let o_on: Vec<f64> = o
        .iter()
        .map(|&i| focal(i, Selector::P) as u8 as f64)
        .collect();
    let o_rel: Vec<f64> = o.iter().map(|&i| r.relevance[i]).collect();
    let o_corr = correlation(&o_on, &o_rel);
    assert!(o_corr.abs() < 0.3, "untagged rows follow P: {o_corr:.3}");

    // 7: each of the three signals moves V's relevance.
    let v: Vec<usize> = (0..n).filter(|&i| tagged(Canary::Combined, i)).collect();
    let split = |on: &dyn Fn(usize) -> bool, off: &dyn Fn(usize) -> bool| {
        let on = mean(v.iter().copied().filter(|&i| on(i)).map(|i| r.relevance[i]));
        let off = mean(
            v.iter()
                .copied()
                .filter(|&i| off(i))
                .map(|i| r.relevance[i]),
        );
        on / off
    };
    let selector = split(&|i| focal(i, Selector::T), &|i| !focal(i, Selector::T));
    let peak = k.combined_weekday;
    let cycle = split(&|i| wd(i) == peak, &|i| wd(i) == (peak + 3) % 7);
    let recency = split(&|i| r.age_days[i] < 5.0, &|i| r.age_days[i] >= 5.0);
    for (name, ratio) in [
        ("selector", selector),
        ("weekday", cycle),
        ("recency", recency),
    ] {
        assert!(ratio > 1.5, "combined canary: {name} ratio {ratio:.2}");
    }
}

#[test]
fn poc_patterns_follow_their_rules() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = small_config(12);
    config.canaries.poc_share = 0.5;
    let out = gen_into(&config, dir.path());
    let c = read(&out, "candidates.parquet");
    let canary = u16s(&c, "canary");
    let rel = f32s(&c, "relevance");
    let imp = f32s(&c, &clean_column("importance"));
    let age = f32s(&c, &clean_column("log_age"));
    let importance_rule = |i: usize| imp[i] > 0.45;
    let recency_rule = |i: usize| age[i] < 7f32.ln_1p();
    let cases: [(Canary, &dyn Fn(usize) -> bool); 2] = [
        (Canary::ImportanceThreshold, &importance_rule),
        (Canary::RecencyBias, &recency_rule),
    ];
    for (pattern, rule) in cases {
        let rows: Vec<usize> = (0..rel.len())
            .filter(|&i| canary[i] & pattern.bit() != 0)
            .collect();
        assert!(rows.len() > 100, "{}: {} rows", pattern.name(), rows.len());
        for &i in &rows {
            let expect = if rule(i) { 0.9 } else { 0.04 };
            assert!(
                (rel[i] - expect).abs() < 1e-6,
                "{}: row {i} relevance {}",
                pattern.name(),
                rel[i]
            );
        }
        // Untagged rows carry no hard threshold.
        let plain: Vec<usize> = (0..rel.len()).filter(|&i| canary[i] == 0).collect();
        let above = mean(plain.iter().filter(|&&i| rule(i)).map(|&i| rel[i] as f64));
        let below = mean(plain.iter().filter(|&&i| !rule(i)).map(|&i| rel[i] as f64));
        assert!(
            above / below < 10.0,
            "{}: untagged rows {above:.3} vs {below:.3}",
            pattern.name()
        );
    }
}

#[test]
fn relevant_and_hard_negative_shares_follow_the_config() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = small_config(10);
    config.candidates.hard_negative_share = 0.5;
    // 20 candidates: a small world has enough hard negatives of every kind for half of
    // the negative slots (at 40 it runs short and fills the rest with distractors).
    config.candidates.k = 20;
    config.candidates.relevant_share = [0.05, 0.15];
    let out = gen_into(&config, &dir.path().join("mixed"));
    let turns = read(&out, "turns.parquet");
    let c = read(&out, "candidates.parquet");
    let kk = config.candidates.k as f64;
    let [lo, hi] = config.candidates.relevant_share;
    // The expected relevant count (the sum of relevance) is filled into the band...
    let rel = f32s(&c, "relevance");
    let user = u32s(&c, "user_id");
    let turn = u32s(&c, "turn_index");
    let mut expected: HashMap<(u32, u32), f64> = HashMap::new();
    for i in 0..rel.len() {
        *expected.entry((user[i], turn[i])).or_default() += rel[i] as f64;
    }
    let m = mean(expected.values().map(|e| e / kk));
    assert!(
        (lo..=hi * 1.5).contains(&m),
        "mean expected relevant share {m:.3}, band [{lo}, {hi}]"
    );
    let observed = mean(u8s(&turns, "n_relevant").iter().map(|&n| n as f64 / kk));
    assert!(
        (observed - m).abs() < 0.01,
        "observed share {observed:.4} vs expected {m:.4}"
    );
    // ...and each clean label is a draw from its relevance: calibrated in every bin.
    let clean = u8s(&c, "clean_label");
    for (a, b) in [(0.0, 0.1), (0.1, 0.3), (0.3, 0.6), (0.6, 1.01)] {
        let idx: Vec<usize> = (0..rel.len())
            .filter(|&i| (a..b).contains(&(rel[i] as f64)))
            .collect();
        if idx.len() < 400 {
            continue;
        }
        let p = mean(idx.iter().map(|&i| rel[i] as f64));
        let l = mean(idx.iter().map(|&i| clean[i] as f64));
        let se = (p * (1.0 - p) / idx.len() as f64).sqrt();
        assert!(
            (p - l).abs() < 4.0 * se + 0.01,
            "relevance in [{a}, {b}): mean {p:.3}, label rate {l:.3} ({} rows)",
            idx.len()
        );
    }
    let hard = u8s(&c, "hard_negative");
    let n_hard = hard.iter().filter(|&&h| h != 0).count() as f64;
    let slots: f64 = u8s(&turns, "negative_slots")
        .iter()
        .map(|&n| n as f64)
        .sum();
    let share = n_hard / slots;
    assert!(
        (share - 0.5).abs() < 0.05,
        "hard-negative share {share:.3} of negatives, asked 0.5"
    );
    for kind in HardNegative::KINDS {
        let n = hard.iter().filter(|&&h| h == kind as u8).count();
        assert!(
            n as f64 > 0.05 * n_hard,
            "{} is {n} of {n_hard}",
            kind.name()
        );
    }
    // A mix with one kind gives only that kind.
    config.candidates.hard_negative_mix = [0.0, 0.0, 0.0, 1.0];
    config.world.supersession_rate = 1.0;
    let out = gen_into(&config, &dir.path().join("superseded"));
    let hard = u8s(&read(&out, "candidates.parquet"), "hard_negative");
    assert!(hard.contains(&(HardNegative::Superseded as u8)));
    assert!(
        hard.iter()
            .all(|&h| h == 0 || h == HardNegative::Superseded as u8)
    );
    // No hard negatives when the share is zero.
    config.candidates.hard_negative_share = 0.0;
    let out = gen_into(&config, &dir.path().join("none"));
    assert!(
        u8s(&read(&out, "candidates.parquet"), "hard_negative")
            .iter()
            .all(|&h| h == 0)
    );
}

#[test]
fn curriculum_stages_set_length_snr_and_hard_negatives() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = small_config(20);
    config.curriculum.enabled = true;
    config.noise.calibration_users = 20;
    let out = gen_into(&config, dir.path());
    let turns = read(&out, "turns.parquet");
    let (users, stage) = (u32s(&turns, "user_id"), u8s(&turns, "stage"));
    let mut len: HashMap<u32, (u8, u32)> = HashMap::new();
    for (u, s) in users.iter().zip(&stage) {
        len.entry(*u).or_insert((*s, 0)).1 += 1;
    }
    let mut per_stage = [0; 5];
    for (s, n) in len.values() {
        let st = &config.curriculum.stages[*s as usize - 1];
        assert!(
            (st.turns[0]..=st.turns[1]).contains(n),
            "stage {s} user with {n} turns"
        );
        per_stage[*s as usize] += 1;
    }
    assert_eq!(
        per_stage,
        [0, 4, 6, 6, 4],
        "users per stage follow the 20/30/30/20 shares"
    );
    // Stage 1 has no hard negatives, stage 4 has them.
    let c = read(&out, "candidates.parquet");
    let cu = u32s(&c, "user_id");
    let hard = u8s(&c, "hard_negative");
    let stage_of = |u: u32| len[&u].0;
    assert!(
        cu.iter()
            .zip(&hard)
            .all(|(u, h)| stage_of(*u) != 1 || *h == 0)
    );
    assert!(
        cu.iter()
            .zip(&hard)
            .any(|(u, h)| stage_of(*u) == 4 && *h != 0)
    );
    // Each stage's measured SNR is its own.
    let clean = f32s(&c, &clean_column("importance"));
    let noisy = f32s(&c, "importance");
    for (s, want) in [(1u8, 30.0), (4, 5.0)] {
        let idx: Vec<usize> = (0..cu.len()).filter(|&i| stage_of(cu[i]) == s).collect();
        let cl: Vec<f32> = idx.iter().map(|&i| clean[i]).collect();
        let no: Vec<f32> = idx.iter().map(|&i| noisy[i]).collect();
        let got = noise::measured_snr_db(&cl, &no).unwrap();
        assert!(
            (got - want).abs() < 1.5,
            "stage {s}: {got:.2} dB, want {want} dB"
        );
    }
}

#[test]
fn poc_preset_plants_the_pocs_turn_relative_rules_on_its_share_of_queries() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = small_config(1400);
    config.preset = Preset::Poc;
    config.candidates.k = 20;
    config.noise.snr_db = None;
    config.noise.label_flip = 0.0;
    let out = gen_into(&config, dir.path());
    let turns = read(&out, "turns.parquet");
    assert_eq!(turns.height(), 1400);
    let names: Vec<String> = turns
        .column("name")
        .unwrap()
        .str()
        .unwrap()
        .iter()
        .map(|v| v.unwrap().to_string())
        .collect();
    let c = read(&out, "candidates.parquet");
    assert_eq!(c.height(), 1400 * 20);
    let manifest: serde_json::Value =
        serde_json::from_slice(&std::fs::read(out.join("manifest.json")).unwrap()).unwrap();
    assert_eq!(manifest["time_axis"], false);
    assert_eq!(manifest["chance_names"][0], "random_relevance");
    let (rel, label) = (f32s(&c, "relevance"), u8s(&c, "label"));
    let x = |name: &str| f32s(&c, &clean_column(name));
    let (age, imp, acc) = (x("log_age"), x("importance"), x("log_access"));
    let (tod_s, tod_c, ent) = (x("tod_sin"), x("tod_cos"), x("entity_slot"));
    let (sup, dens, ka) = (
        x("is_superseded"),
        x("log_structural_density"),
        x("is_ka_traversal"),
    );
    let mut patterned = 0;
    let mut random_hits = Vec::new();
    for (u, name) in names.iter().enumerate() {
        let r = u * 20..(u + 1) * 20;
        let want_name = Canary::POC[u % 7].name();
        for i in r.clone() {
            assert_eq!(label[i], (rel[i] > 0.5) as u8, "label is relevance > 0.5");
        }
        if name == "random_relevance" {
            random_hits.extend(r.map(|i| rel[i]));
            continue;
        }
        assert_eq!(name, want_name, "query {u} carries the pattern of its id");
        patterned += 1;
        let l: Vec<bool> = r.clone().map(|i| label[i] == 1).collect();
        let v = |col: &[f32]| -> Vec<f32> { r.clone().map(|i| col[i]).collect() };
        let want: Vec<bool> = match u % 7 {
            0 => {
                let a = v(&age);
                let mut sorted = a.clone();
                sorted.sort_by(f32::total_cmp);
                a.iter().map(|&y| y <= sorted[4]).collect()
            }
            1 => {
                let m = v(&imp);
                let max = m.iter().cloned().fold(f32::MIN, f32::max);
                m.iter()
                    .map(|&y| y > 0.7 || (y == max && max <= 0.7))
                    .collect()
            }
            2 => {
                let a = v(&acc);
                let mut sorted = a.clone();
                sorted.sort_by(f32::total_cmp);
                // numpy's 75th percentile of 20 values: 3/4 of the way from rank 14 to 15.
                let p75 = sorted[14] + 0.25 * (sorted[15] - sorted[14]);
                let max = sorted[19];
                let any = a.iter().any(|&y| y > p75);
                let first_max = a.iter().position(|&y| y == max).unwrap();
                (0..20)
                    .map(|i| if any { a[i] > p75 } else { i == first_max })
                    .collect()
            }
            3 => {
                let (s, c) = (v(&tod_s), v(&tod_c));
                (0..20)
                    .map(|i| ((s[i] - s[0]).powi(2) + (c[i] - c[0]).powi(2)).sqrt() < 0.5)
                    .collect()
            }
            4 => {
                let e = v(&ent);
                e.iter().map(|&y| (y - e[0]).abs() < 0.15).collect()
            }
            5 => {
                let (s, m) = (v(&sup), v(&imp));
                let strict: Vec<bool> = (0..20).map(|i| s[i] < 0.5 && m[i] > 0.5).collect();
                if strict.iter().any(|&b| b) {
                    strict
                } else {
                    let first = s.iter().position(|&y| y < 0.5);
                    (0..20).map(|i| Some(i) == first).collect()
                }
            }
            _ => {
                let (d, t) = (v(&dens), v(&ka));
                let mut sorted = d.clone();
                sorted.sort_by(f32::total_cmp);
                let median = 0.5 * (sorted[9] + sorted[10]);
                let strict: Vec<bool> = (0..20).map(|i| t[i] > 0.5 && d[i] > median).collect();
                if strict.iter().any(|&b| b) {
                    strict
                } else {
                    // Every traversal candidate (one is made if there is none).
                    assert!(t.iter().any(|&y| y > 0.5));
                    t.iter().map(|&y| y > 0.5).collect()
                }
            }
        };
        assert_eq!(l, want, "query {u} ({name}) breaks its rule");
    }
    // About 30% of queries carry a pattern; the others' labels are Beta(1, 3) draws, a
    // share 0.5^3 = 0.125 of them above 0.5.
    let share = patterned as f64 / 1400.0;
    assert!((share - 0.3).abs() < 0.04, "patterned share {share}");
    let n = random_hits.len() as f64;
    let above = random_hits.iter().filter(|&&r| r > 0.5).count() as f64 / n;
    let mean = random_hits.iter().map(|&r| r as f64).sum::<f64>() / n;
    assert!((above - 0.125).abs() < 0.01, "share above 0.5: {above}");
    assert!(
        (mean - 0.25).abs() < 0.01,
        "mean {mean}, Beta(1, 3) has 0.25"
    );
}

#[test]
fn manifest_records_layout_hashes_and_canary_parameters() {
    let dir = tempfile::tempdir().unwrap();
    let config = small_config(3);
    let out = gen_into(&config, dir.path());
    let m: serde_json::Value =
        serde_json::from_slice(&std::fs::read(out.join("manifest.json")).unwrap()).unwrap();
    assert_eq!(m["layout_version"], ssmkit::features::LAYOUT_VERSION);
    assert_eq!(m["features"].as_array().unwrap().len(), 24);
    assert_eq!(m["canaries"]["temporal_cycle"]["role"], Role::Cycle.code());
    assert_eq!(
        m["canaries"]["recency_decay"]["lambda_per_day"],
        config.canaries.recency_lambda
    );
    assert_eq!(
        m["canaries"]["entity_selectivity"]["selector"],
        Selector::Z.column()
    );
    for name in [
        "turns.parquet",
        "candidates.parquet",
        "memories.parquet",
        "paths.parquet",
    ] {
        let want = m["files"][name]["sha256"].as_str().unwrap();
        assert_eq!(
            want,
            ssmkit::layout::sha256_file(&out.join(name)).unwrap(),
            "{name}"
        );
        assert_eq!(
            read(&out, name).height() as u64,
            m["files"][name]["rows"].as_u64().unwrap()
        );
    }
    // Every candidate's memory and path are in their tables.
    let c = read(&out, "candidates.parquet");
    let mems = read(&out, "memories.parquet");
    let paths = read(&out, "paths.parquet");
    let known: std::collections::HashSet<(u32, u32)> = u32s(&mems, "user_id")
        .into_iter()
        .zip(u32s(&mems, "memory_id"))
        .collect();
    let known_paths: std::collections::HashSet<(u32, u32)> = u32s(&paths, "user_id")
        .into_iter()
        .zip(u32s(&paths, "path_id"))
        .collect();
    for ((u, m), p) in u32s(&c, "user_id")
        .into_iter()
        .zip(u32s(&c, "memory_id"))
        .zip(u32s(&c, "path_id"))
    {
        assert!(known.contains(&(u, m)), "memory ({u}, {m}) missing");
        assert!(known_paths.contains(&(u, p)), "path ({u}, {p}) missing");
    }
    // Hop counts agree with the path features.
    let hop_norm = f32s(&c, &clean_column(FEATURE_NAMES[feat::HOP_COUNT_NORM]));
    let mut hops: HashMap<(u32, u32), u32> = HashMap::new();
    for (u, p) in u32s(&paths, "user_id")
        .into_iter()
        .zip(u32s(&paths, "path_id"))
    {
        *hops.entry((u, p)).or_default() += 1;
    }
    for (i, (u, p)) in u32s(&c, "user_id")
        .into_iter()
        .zip(u32s(&c, "path_id"))
        .enumerate()
    {
        let n = hops[&(u, p)];
        assert!((1..=10).contains(&n));
        assert!((hop_norm[i] - n as f32 / 10.0).abs() < 1e-6);
    }
}

#[test]
fn canary_roles_are_drawn_per_user() {
    let dir = tempfile::tempdir().unwrap();
    let config = small_config(16);
    let out = gen_into(&config, dir.path());
    let r = rows(&out);
    // The memory and entity playing each role differ from user to user.
    for role in [
        Role::Cycle,
        Role::Selectivity,
        Role::ChainNewest,
        Role::Dependency,
    ] {
        let mut by_user: HashMap<u32, (u32, u32)> = HashMap::new();
        for i in (0..r.user.len()).filter(|&i| r.role[i] == role.code()) {
            by_user.insert(r.user[i], (r.memory[i], r.entity[i]));
        }
        assert!(
            by_user.len() >= 10,
            "{}: {} users",
            role.name(),
            by_user.len()
        );
        let memories: std::collections::HashSet<u32> = by_user.values().map(|v| v.0).collect();
        let entities: std::collections::HashSet<u32> = by_user.values().map(|v| v.1).collect();
        assert!(
            memories.len() * 2 > by_user.len() && entities.len() * 2 > by_user.len(),
            "{}: {} memory ids and {} entity ids over {} users",
            role.name(),
            memories.len(),
            entities.len(),
            by_user.len()
        );
    }
    let mut z: HashMap<u32, i32> = HashMap::new();
    for i in 0..r.user.len() {
        z.insert(r.user[i], r.selectors[i][Selector::Z as usize]);
    }
    let distinct: std::collections::HashSet<i32> = z.values().copied().collect();
    assert!(distinct.len() * 2 > z.len(), "selector Z ids {distinct:?}");
    // Only canary memories carry a role, and every tagged contract row has one.
    for i in 0..r.user.len() {
        let contract = r.canary[i]
            & Canary::CONTRACT
                .iter()
                .filter(|c| **c != Canary::Burst)
                .fold(0, |m, c| m | c.bit());
        assert_eq!(contract != 0, r.role[i] != 0, "row {i}");
    }
}

#[test]
fn timelines_span_weeks_so_the_test_split_has_warm_users() {
    use ssmkit::eval::split::{TestSet, test_cases};
    let dir = tempfile::tempdir().unwrap();
    let config = Config::load(Path::new(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/configs/quick.toml"
    )))
    .unwrap();
    let out = gen_into(&config, dir.path());
    let data = ssmkit::data::Dataset::load(&out).unwrap();
    let cut = ssmkit::train::batch::cutoffs(&data, 0.8, 0.9);
    let (gts, _) = test_cases(&data, &cut);
    let set = TestSet::of(&data, &gts, &cut);
    assert!(
        set.warm_users >= 30,
        "GTS on quick: {} cases, {} users, {} warm",
        set.cases,
        set.users,
        set.warm_users
    );
    // Users span weeks, and start within days of each other.
    let spans: Vec<f64> = data
        .users
        .iter()
        .map(|u| (u.timestamp[u.turns - 1] - u.timestamp[0]) as f64 / 86_400.0)
        .collect();
    let median = {
        let mut s = spans.clone();
        s.sort_by(f64::total_cmp);
        s[s.len() / 2]
    };
    assert!(median >= 21.0, "median timeline {median:.1} days");
}

// ---- The importer ----------------------------------------------------------------

#[test]
fn jsonl_scenarios_and_sessions_import() {
    let dir = tempfile::tempdir().unwrap();
    let import = |name: &str, lines: &[serde_json::Value]| {
        let input = dir.path().join(format!("{name}.jsonl"));
        let text: Vec<String> = lines.iter().map(|v| v.to_string()).collect();
        std::fs::write(&input, text.join("\n") + "\n").unwrap();
        let out = dir.path().join(name);
        let summary = ssmkit::datagen::import::import(
            &input,
            &GenOptions {
                out: out.clone(),
                force: false,
                quiet: true,
                materialize: true,
            },
        );
        (summary, out)
    };
    let v17: Vec<f64> = (0..17).map(|d| d as f64 / 17.0).collect();
    // PoC scenarios: one user of one turn each, named, split at random; a label counts as
    // relevant above 0.5.
    let scenario = |name: &str| serde_json::json!({"name": name, "features": [v17, v17, v17], "labels": [0.9, 0.5, 0.2]});
    let (s, out) = import(
        "scenarios",
        &[scenario("s1"), scenario("s2"), scenario("s1")],
    );
    let s = s.unwrap();
    assert_eq!((s.users, s.turns, s.candidates), (3, 3, 9));
    let data = ssmkit::data::Dataset::load(&out).unwrap();
    assert!(!data.time_axis());
    let names: Vec<&str> = data.users.iter().map(|u| data.name_of(u, 0)).collect();
    assert_eq!(names, ["s1", "s2", "s1"]);
    assert_eq!(data.users[0].labels[..3], [1.0, 0.0, 0.0]);
    assert_eq!(data.users[0].relevance[..3], [0.9, 0.5, 0.2]);
    // Exported sessions: users by id, turns in time order, split in time.
    let session = |user: &str, ts: i64| {
        serde_json::json!({"user_id": user, "session_id": "a", "timestamp": ts,
            "features": [v17, v17], "labels": [0.0, 1.0], "memory_ids": [5, 9]})
    };
    let (s, out) = import(
        "sessions",
        &[session("u1", 200), session("u1", 100), session("u2", 50)],
    );
    let s = s.unwrap();
    assert_eq!((s.users, s.turns, s.candidates), (2, 3, 6));
    let turns = read(&out, "turns.parquet");
    assert_eq!(
        i64s(&turns, "timestamp"),
        vec![100, 200, 50],
        "a user's turns are in time order"
    );
    assert!(turns.column("name").is_err(), "no names, no column");
    let data = ssmkit::data::Dataset::load(&out).unwrap();
    assert!(data.time_axis());
    let c = read(&out, "candidates.parquet");
    let mask = u32s(&c, "mask");
    assert!(
        mask.iter().all(|&m| m == 0x00FE_0000),
        "path features of 17-dim vectors are masked"
    );
    assert_eq!(u32s(&c, "memory_id")[..2], [5, 9]);
    // A file that mixes the two has no meaningful split: refused, naming the line.
    let (s, out) = import("mixed", &[scenario("s1"), session("u1", 100)]);
    let err = s.unwrap_err().to_string();
    assert!(
        err.contains("mixed.jsonl") && err.contains("line 1"),
        "{err}"
    );
    assert!(!out.exists());

    // Content embeddings: one width on every line, one vector per memory, no query
    // without content; each refusal names its line and writes nothing.
    let with = |ts: i64, memories: [u32; 2], content: serde_json::Value| {
        let mut line = session("u1", ts);
        line["memory_ids"] = serde_json::json!(memories);
        line["content"] = content;
        line
    };
    let (s, out) = import(
        "content",
        &[
            with(100, [5, 9], serde_json::json!([[1.0, 2.0], [3.0, 4.0]])),
            with(200, [9, 7], serde_json::json!([[3.0, 4.0], [5.0, 6.0]])),
        ],
    );
    s.unwrap();
    let data = ssmkit::data::Dataset::load(&out).unwrap();
    assert_eq!(data.embedding_dim, 2);
    assert_eq!(
        data.users[0].content[..8],
        [1.0, 2.0, 3.0, 4.0, 3.0, 4.0, 5.0, 6.0]
    );
    assert_eq!(
        data.users[0].query[..4],
        [0.0; 4],
        "no query reads as zeros"
    );
    for (name, lines, said) in [
        (
            "widths",
            vec![
                with(100, [5, 9], serde_json::json!([[1.0, 2.0], [3.0, 4.0]])),
                with(200, [5, 9], serde_json::json!([[1.0], [3.0]])),
            ],
            "line 2",
        ),
        (
            "partial",
            vec![
                with(100, [5, 9], serde_json::json!([[1.0], [3.0]])),
                session("u1", 200),
            ],
            "line 2",
        ),
        (
            "changed",
            vec![
                with(100, [5, 9], serde_json::json!([[1.0], [3.0]])),
                with(200, [5, 9], serde_json::json!([[1.0], [4.0]])),
            ],
            "memory 9 has other content than on line 1",
        ),
        (
            "query",
            vec![{
                let mut l = session("u1", 100);
                l["query"] = serde_json::json!([1.0]);
                l
            }],
            "`query` without `content`",
        ),
        (
            "nan",
            vec![with(100, [5, 9], serde_json::json!([[1.0], [1e39]]))],
            "content vector 1",
        ),
    ] {
        let (s, out) = import(name, &lines);
        let err = s.unwrap_err().to_string();
        assert!(err.contains(said), "{name}: {err}");
        assert!(!out.exists(), "{name}");
    }
}

fn ssmkit() -> Command {
    Command::new(env!("CARGO_BIN_EXE_ssmkit"))
}

/// Runs the CLI expecting failure; returns stderr, which must be one line.
fn fails(args: &[&str]) -> String {
    let out = ssmkit().args(args).output().unwrap();
    assert!(!out.status.success(), "{args:?} succeeded");
    let err = String::from_utf8(out.stderr).unwrap();
    assert_eq!(err.trim_end().lines().count(), 1, "not one line: {err}");
    assert!(!err.contains("panicked"), "{err}");
    err
}

#[test]
fn bad_input_is_one_clear_error_and_writes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let d = |name: &str| dir.path().join(name).to_str().unwrap().to_string();
    let write = |name: &str, text: &str| std::fs::write(dir.path().join(name), text).unwrap();

    write("unknown.toml", "[world]\nusers = 2\nusrs = 3\n");
    let err = fails(&["gen", "--config", &d("unknown.toml"), "--out", &d("o1")]);
    assert!(err.contains("usrs"), "{err}");
    write("negative.toml", "[world]\nusers = -2\n");
    let err = fails(&["gen", "--config", &d("negative.toml"), "--out", &d("o2")]);
    assert!(err.contains("users"), "{err}");
    write("preset.toml", "preset = \"llm\"\n");
    let err = fails(&["gen", "--config", &d("preset.toml"), "--out", &d("o3")]);
    assert!(err.contains("llm") || err.contains("preset"), "{err}");
    for o in ["o1", "o2", "o3"] {
        assert!(!dir.path().join(o).exists(), "{o} was created");
    }

    // An existing directory is refused without --force and left as it was.
    std::fs::create_dir(dir.path().join("exists")).unwrap();
    write("exists/keep.txt", "precious");
    write(
        "tiny.toml",
        "[world]\nusers = 2\nentities = [20, 30]\n[timeline]\nturns = [10, 12]\n",
    );
    let err = fails(&["gen", "--config", &d("tiny.toml"), "--out", &d("exists")]);
    assert!(err.contains("--force"), "{err}");
    assert_eq!(
        std::fs::read_to_string(dir.path().join("exists/keep.txt")).unwrap(),
        "precious"
    );
    let leftovers: Vec<_> = std::fs::read_dir(dir.path())
        .unwrap()
        .filter_map(|e| e.ok())
        .filter(|e| e.file_name().to_string_lossy().contains(".tmp-"))
        .collect();
    assert!(leftovers.is_empty(), "temporary directories left behind");
    // With --force it is replaced.
    let ok = ssmkit()
        .args([
            "gen",
            "--config",
            &d("tiny.toml"),
            "--out",
            &d("exists"),
            "--force",
            "--quiet",
        ])
        .output()
        .unwrap();
    assert!(
        ok.status.success(),
        "{}",
        String::from_utf8_lossy(&ok.stderr)
    );
    assert!(dir.path().join("exists/manifest.json").exists());
    assert!(!dir.path().join("exists/keep.txt").exists());

    // A malformed JSONL line is reported with its number.
    let v: Vec<f64> = vec![0.5; 17];
    let good = serde_json::json!({"features": [v], "labels": [1.0]}).to_string();
    write(
        "bad.jsonl",
        &format!("{good}\n{good}\n{{\"features\": [[1, 2]], \"labels\": [1]}}\n"),
    );
    let err = fails(&["gen", "--import", &d("bad.jsonl"), "--out", &d("o4")]);
    assert!(err.contains("line 3"), "{err}");
    write("broken.jsonl", &format!("{good}\nnot json\n"));
    let err = fails(&["gen", "--import", &d("broken.jsonl"), "--out", &d("o4")]);
    assert!(err.contains("line 2"), "{err}");
    assert!(!dir.path().join("o4").exists());
}

#[test]
fn gen_help_shows_an_example() {
    let out = ssmkit().args(["gen", "--help"]).output().unwrap();
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(
        text.contains("ssmkit gen --config configs/quick.toml --out data/quick"),
        "{text}"
    );
}

#[test]
fn shipped_configs_parse() {
    for name in ["quick", "phase0", "poc"] {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join(format!("configs/{name}.toml"));
        let c = Config::load(&path).unwrap_or_else(|e| panic!("{name}: {e}"));
        assert_eq!(c.name, name);
    }
    let phase0 =
        Config::load(&Path::new(env!("CARGO_MANIFEST_DIR")).join("configs/phase0.toml")).unwrap();
    assert_eq!(phase0.world.users, 50_000);
    assert!(phase0.curriculum.enabled);
}

#[test]
fn gen_removes_the_leftovers_of_killed_writers_only() {
    let dir = tempfile::tempdir().unwrap();
    let target = dir.path().join("data");
    // A writer killed long ago (no such process) and one still running (this test).
    let dead = dir.path().join(".data.tmp-4000000000");
    let live = dir.path().join(format!(".data.tmp-{}", std::process::id()));
    let other = dir.path().join(".other.tmp-4000000000");
    for d in [&dead, &live, &other] {
        std::fs::create_dir(d).unwrap();
        std::fs::write(d.join("turns.parquet"), b"partial").unwrap();
    }
    let (ok, _, err) = {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_ssmkit"))
            .args(["gen", "--config", "configs/persistence.toml", "--out"])
            .arg(&target)
            .arg("--quiet")
            .output()
            .unwrap();
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    assert!(ok, "{err}");
    assert!(target.join("manifest.json").is_file());
    assert!(!dead.exists(), "a dead writer's directory was left");
    assert!(
        live.exists() && other.exists(),
        "a live or unrelated directory was removed"
    );
    // A plain file under the target name is never replaced, even with --force.
    let file = dir.path().join("afile");
    std::fs::write(&file, b"mine").unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_ssmkit"))
        .args([
            "gen",
            "--config",
            "configs/persistence.toml",
            "--quiet",
            "--force",
            "--out",
        ])
        .arg(&file)
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && err.contains("not a directory"),
        "{err}"
    );
    assert_eq!(std::fs::read(&file).unwrap(), b"mine");
}

#[test]
fn a_killed_gen_leaves_no_dataset_and_the_next_one_cleans_up() {
    use rand::{RngExt, SeedableRng};
    let dir = tempfile::tempdir().unwrap();
    let target = dir.path().join("quick");
    let spawn_gen = |target: &Path| {
        std::process::Command::new(env!("CARGO_BIN_EXE_ssmkit"))
            .args([
                "gen",
                "--config",
                "configs/quick.toml",
                "--quiet",
                "--force",
                "--out",
            ])
            .arg(target)
            .stdout(std::process::Stdio::null())
            .spawn()
            .unwrap()
    };
    let started = std::time::Instant::now();
    assert!(spawn_gen(&target).wait().unwrap().success());
    let span = started.elapsed().as_millis() as u64;
    let whole = std::fs::read(target.join("manifest.json")).unwrap();
    std::fs::remove_dir_all(&target).unwrap();
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(5);
    for _ in 0..4 {
        let at = rng.random_range(span / 10..span.max(20));
        let mut child = spawn_gen(&target);
        std::thread::sleep(std::time::Duration::from_millis(at));
        let _ = child.kill();
        child.wait().unwrap();
        // Either the whole dataset or none of it under the final name.
        if target.exists() {
            assert_eq!(std::fs::read(target.join("manifest.json")).unwrap(), whole);
        }
    }
    // The next gen completes and leaves no staging directory behind.
    assert!(spawn_gen(&target).wait().unwrap().success());
    assert_eq!(std::fs::read(target.join("manifest.json")).unwrap(), whole);
    let leftovers: Vec<_> = std::fs::read_dir(dir.path())
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.contains("tmp"))
        .collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");
}

/// A tmpfs of `kb` kilobytes mounted on a fresh directory, unmounted on drop; `None` where
/// this machine does not let the test mount one (not root, no tmpfs).
struct SmallDisk {
    dir: tempfile::TempDir,
}

impl SmallDisk {
    fn mount(kb: u32) -> Option<SmallDisk> {
        let dir = tempfile::tempdir().ok()?;
        let ok = std::process::Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={kb}k"), "tmpfs"])
            .arg(dir.path())
            .stderr(std::process::Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
        ok.then_some(SmallDisk { dir })
    }
}

impl Drop for SmallDisk {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount")
            .arg(self.dir.path())
            .status();
    }
}

#[test]
fn a_full_disk_is_a_clear_error_that_leaves_nothing_behind() {
    let Some(disk) = SmallDisk::mount(600) else {
        eprintln!("skipped: cannot mount a small tmpfs here (needs root)");
        return;
    };
    let root = disk.dir.path();
    let target = root.join("quick");
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_ssmkit"))
        .args(["gen", "--config", "configs/quick.toml", "--quiet", "--out"])
        .arg(&target)
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "gen succeeded on a full disk");
    assert!(
        err.contains("No space left") && err.contains(".parquet") && !err.contains("panicked"),
        "{err}"
    );
    assert_eq!(err.trim_end().lines().count(), 1, "{err}");
    // No dataset under the final name, no staging directory left.
    let left: Vec<String> = std::fs::read_dir(root)
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    assert!(left.is_empty(), "{left:?}");
}
