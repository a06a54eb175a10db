//! The bounds every config field must respect, a function per section; each error names
//! the field and its value. Sections are checked in the order of the config file, so the
//! first field at fault is the one reported.

use super::{
    CanaryConfig, CandidateConfig, Config, CurriculumConfig, MAX_START_UNIX, MAX_TURN_GAP_S,
    MAX_ZIPF_EXPONENT, NoiseConfig, PatternConfig, PipelineConfig, Range, TimelineConfig,
    TrainConfig, WorldConfig,
};
use crate::error::{Error, Result};

/// Checks every section of `cfg`.
pub(super) fn config(cfg: &Config) -> Result<()> {
    world(&cfg.world)?;
    timeline(&cfg.timeline)?;
    candidates(&cfg.candidates)?;
    patterns(&cfg.patterns)?;
    canaries(&cfg.canaries)?;
    poc_and_persistence(cfg)?;
    noise(&cfg.noise)?;
    curriculum(&cfg.curriculum)?;
    output(cfg)?;
    cfg.train.validate()?;
    pipeline(&cfg.pipeline, &cfg.train)?;
    if let Some(t) = &cfg.tstr {
        if !(t.mix_share > 0.0 && t.mix_share < 1.0) {
            return bad(
                "tstr.mix_share",
                format!("{} is not a share of the steps in (0, 1)", t.mix_share),
            );
        }
        if t.real.as_os_str().is_empty() {
            return bad("tstr.real", "names no file or directory".into());
        }
    }
    name(&cfg.name)
}

fn bad(field: &str, why: String) -> Result<()> {
    Err(Error::Config(format!("{field}: {why}")))
}

/// A `[lo, hi]` range with `min <= lo <= hi`.
fn range(field: &str, r: Range, min: u32) -> Result<()> {
    if r[0] < min || r[0] > r[1] {
        return bad(
            field,
            format!("[{}, {}] must satisfy {min} <= lo <= hi", r[0], r[1]),
        );
    }
    Ok(())
}

/// A count of at most `max` (what a run can hold in memory, far beyond any real use).
fn at_most(field: &str, n: u64, max: u64) -> Result<()> {
    if n > max {
        return bad(field, format!("{n} is more than {max}"));
    }
    Ok(())
}

/// A number in `[lo, hi]` (NaN is in no range).
fn within(field: &str, x: f64, lo: f64, hi: f64) -> Result<()> {
    if !(lo..=hi).contains(&x) {
        return bad(field, format!("{x:?} is not in [{lo}, {hi}]"));
    }
    Ok(())
}

fn prob(field: &str, p: f64) -> Result<()> {
    if !(0.0..=1.0).contains(&p) {
        return bad(field, format!("{p} is not a probability in [0, 1]"));
    }
    Ok(())
}

fn positive(field: &str, x: f64) -> Result<()> {
    if !(x.is_finite() && x > 0.0) {
        return bad(field, format!("{x:?} must be a positive number"));
    }
    Ok(())
}

fn world(w: &WorldConfig) -> Result<()> {
    if w.users == 0 {
        return bad("world.users", "must be at least 1".into());
    }
    range("world.entities", w.entities, 12)?;
    range("world.communities", w.communities, 1)?;
    range("world.aspects_per_entity", w.aspects_per_entity, 1)?;
    range("world.attributes_per_aspect", w.attributes_per_aspect, 1)?;
    range("world.memories_per_entity", w.memories_per_entity, 1)?;
    at_most("world.users", w.users as u64, 10_000_000)?;
    at_most("world.communities", w.communities[1] as u64, 4096)?;
    at_most(
        "world.aspects_per_entity",
        w.aspects_per_entity[1] as u64,
        64,
    )?;
    at_most(
        "world.attributes_per_aspect",
        w.attributes_per_aspect[1] as u64,
        64,
    )?;
    at_most(
        "world.memories_per_entity",
        w.memories_per_entity[1] as u64,
        256,
    )?;
    at_most("world.memory_slots", w.memory_slots as u64, 1 << 20)?;
    if w.entities[1] > 4096 {
        return bad("world.entities", "at most 4096 entities per user".into());
    }
    if w.memory_slots == 0 {
        return bad("world.memory_slots", "must be at least 1".into());
    }
    // 0: no content embeddings, as a dataset imported without them.
    if w.embedding_dim > 1024 {
        return bad(
            "world.embedding_dim",
            format!("{} is not in 0..=1024", w.embedding_dim),
        );
    }
    positive("world.dependency_degree", w.dependency_degree)?;
    within("world.dependency_degree", w.dependency_degree, 0.0, 100.0)?;
    for (f, p) in [
        ("world.within_community", w.within_community),
        ("world.pinned_share", w.pinned_share),
        ("world.constraint_share", w.constraint_share),
        ("world.embedded_share", w.embedded_share),
        ("world.supersession_rate", w.supersession_rate),
        ("world.memory_creation_rate", w.memory_creation_rate),
    ] {
        prob(f, p)?;
    }
    Ok(())
}

fn timeline(t: &TimelineConfig) -> Result<()> {
    range("timeline.turns", t.turns, 1)?;
    range("timeline.turns_per_session", t.turns_per_session, 1)?;
    at_most("timeline.turns", t.turns[1] as u64, 100_000)?;
    at_most(
        "timeline.turns_per_session",
        t.turns_per_session[1] as u64,
        100_000,
    )?;
    at_most(
        "timeline.start_spread_days",
        t.start_spread_days as u64,
        3650,
    )?;
    if !(1..=3650).contains(&t.span_days) {
        return bad(
            "timeline.span_days",
            format!("{} is not in 1..=3650", t.span_days),
        );
    }
    positive("timeline.mean_turn_gap_s", t.mean_turn_gap_s)?;
    // Timestamps are whole seconds in an i64: bounded starts and gaps keep every sum
    // of them far from overflowing.
    if t.mean_turn_gap_s > MAX_TURN_GAP_S {
        return bad(
            "timeline.mean_turn_gap_s",
            format!(
                "{:?} is more than {MAX_TURN_GAP_S} (a day)",
                t.mean_turn_gap_s
            ),
        );
    }
    if !(0..=MAX_START_UNIX).contains(&t.start_unix) {
        return bad(
            "timeline.start_unix",
            format!(
                "{} is not in 0..={MAX_START_UNIX} (1970 to the end of 9999)",
                t.start_unix
            ),
        );
    }
    Ok(())
}

fn candidates(c: &CandidateConfig) -> Result<()> {
    if !(4..=256).contains(&c.k) {
        return bad("candidates.k", format!("{} is not in 4..=256", c.k));
    }
    let [lo, hi] = c.relevant_share;
    if !(0.0 < lo && lo <= hi && hi < 1.0) {
        return bad(
            "candidates.relevant_share",
            format!("[{lo}, {hi}] must satisfy 0 < lo <= hi < 1"),
        );
    }
    if (hi * c.k as f64).floor() < (lo * c.k as f64).ceil() {
        return bad(
            "candidates.relevant_share",
            format!(
                "no whole number of relevant candidates out of k = {} lies in [{lo}, {hi}]",
                c.k
            ),
        );
    }
    prob("candidates.hard_negative_share", c.hard_negative_share)?;
    if c.hard_negative_mix
        .iter()
        .any(|x| !(x.is_finite() && (0.0..=1e6).contains(x)))
        || c.hard_negative_mix.iter().sum::<f64>() <= 0.0
    {
        return bad(
            "candidates.hard_negative_mix",
            "weights must be in [0, 1e6] with a positive sum".into(),
        );
    }
    Ok(())
}

fn patterns(p: &PatternConfig) -> Result<()> {
    within(
        "patterns.seasonal_period_days",
        p.seasonal_period_days,
        1.0,
        3650.0,
    )?;
    positive("patterns.exp_decay_days", p.exp_decay_days)?;
    within("patterns.exp_decay_days", p.exp_decay_days, 0.0, 3650.0)?;
    positive("patterns.power_law_alpha", p.power_law_alpha)?;
    within("patterns.power_law_alpha", p.power_law_alpha, 0.0, 10.0)?;
    // Far above any real skew (1 to 3), and below where the weights underflow to zero.
    if !(p.zipf_exponent.is_finite() && (0.0..=MAX_ZIPF_EXPONENT).contains(&p.zipf_exponent)) {
        return bad(
            "patterns.zipf_exponent",
            format!("{} is not in [0, {MAX_ZIPF_EXPONENT}]", p.zipf_exponent),
        );
    }
    range("patterns.burst_turns", p.burst_turns, 1)?;
    at_most("patterns.burst_turns", p.burst_turns[1] as u64, 100_000)?;
    for (f, x) in [
        ("patterns.daily_amplitude", p.daily_amplitude),
        ("patterns.weekly_amplitude", p.weekly_amplitude),
        ("patterns.seasonal_amplitude", p.seasonal_amplitude),
        ("patterns.focal_persistence", p.focal_persistence),
        ("patterns.second_focal", p.second_focal),
        ("patterns.burst_prob_per_turn", p.burst_prob_per_turn),
        ("patterns.power_law_share", p.power_law_share),
        ("patterns.superseded_factor", p.superseded_factor),
        ("patterns.focal_relevance", p.focal_relevance),
        ("patterns.neighbour_relevance", p.neighbour_relevance),
        ("patterns.background_relevance", p.background_relevance),
    ] {
        prob(f, x)?;
    }
    Ok(())
}

fn canaries(c: &CanaryConfig) -> Result<()> {
    for (f, x) in [
        ("canaries.inject_prob", c.inject_prob),
        ("canaries.selector_inject_prob", c.selector_inject_prob),
        ("canaries.cycle_mean", c.cycle_mean),
        ("canaries.cycle_amplitude", c.cycle_amplitude),
        ("canaries.recency_p0", c.recency_p0),
        ("canaries.selectivity_on", c.selectivity_on),
        ("canaries.selectivity_off", c.selectivity_off),
        ("canaries.selectivity_focal_prob", c.selectivity_focal_prob),
        ("canaries.burst_relevance", c.burst_relevance),
        ("canaries.dependency_on", c.dependency_on),
        ("canaries.dependency_off", c.dependency_off),
        ("canaries.dependency_focal_prob", c.dependency_focal_prob),
        ("canaries.combined_floor", c.combined_floor),
        ("canaries.combined_focal_prob", c.combined_focal_prob),
        ("canaries.poc_share", c.poc_share),
    ] {
        prob(f, x)?;
    }
    for x in c.supersession_levels {
        prob("canaries.supersession_levels", x)?;
    }
    if c.cycle_mean * (1.0 + c.cycle_amplitude) > 1.0 {
        return bad(
            "canaries.cycle_mean",
            "cycle_mean * (1 + cycle_amplitude) must be <= 1".into(),
        );
    }
    if c.selectivity_focal_prob + c.dependency_focal_prob + c.combined_focal_prob > 1.0 {
        return bad(
            "canaries.selectivity_focal_prob",
            "the three canary focal probabilities must sum to at most 1".into(),
        );
    }
    at_most(
        "canaries.post_burst_turns",
        c.post_burst_turns as u64,
        100_000,
    )?;
    positive("canaries.recency_lambda", c.recency_lambda)?;
    positive("canaries.combined_lambda", c.combined_lambda)?;
    if c.combined_weekday > 6 {
        return bad(
            "canaries.combined_weekday",
            "weekdays are 0 (Monday) to 6 (Sunday)".into(),
        );
    }
    let [from, to] = c.cycle_peak_hours;
    if !((0.0..24.0).contains(&from) && from < to && to <= 24.0) {
        return bad(
            "canaries.cycle_peak_hours",
            format!("[{from}, {to}] is not a range of hours within 0 to 24"),
        );
    }
    Ok(())
}

fn poc_and_persistence(cfg: &Config) -> Result<()> {
    prob("poc.pattern_share", cfg.poc.pattern_share)?;
    let ps = &cfg.persistence;
    for (f, x) in [
        ("persistence.stay", ps.stay),
        ("persistence.relevance_on", ps.relevance_on),
        ("persistence.relevance_off", ps.relevance_off),
    ] {
        prob(f, x)?;
    }
    if ps.topic == 0 || ps.topic > cfg.candidates.k {
        return bad(
            "persistence.topic",
            format!(
                "{} is not in 1..=candidates.k ({})",
                ps.topic, cfg.candidates.k
            ),
        );
    }
    if ps.pool < cfg.candidates.k {
        return bad(
            "persistence.pool",
            format!("{} is below candidates.k ({})", ps.pool, cfg.candidates.k),
        );
    }
    Ok(())
}

fn noise(n: &NoiseConfig) -> Result<()> {
    if let Some(snr) = n.snr_db
        && !(-40.0..=100.0).contains(&snr)
    {
        return bad("noise.snr_db", format!("{snr} is not in -40..=100 dB"));
    }
    prob("noise.label_flip", n.label_flip)?;
    prob("noise.corruption", n.corruption)?;
    prob("noise.missing", n.missing)?;
    if n.calibration_users == 0 {
        return bad("noise.calibration_users", "must be at least 1".into());
    }
    Ok(())
}

fn curriculum(cur: &CurriculumConfig) -> Result<()> {
    if cur.enabled {
        if cur.stages.is_empty() {
            return bad(
                "curriculum.stages",
                "an enabled curriculum needs at least one stage".into(),
            );
        }
        for (i, s) in cur.stages.iter().enumerate() {
            range(&format!("curriculum.stages[{i}].turns"), s.turns, 1)?;
            prob(
                &format!("curriculum.stages[{i}].hard_negative_share"),
                s.hard_negative_share,
            )?;
            prob(&format!("curriculum.stages[{i}].share"), s.share)?;
            if !(-40.0..=100.0).contains(&s.snr_db) {
                return bad(
                    &format!("curriculum.stages[{i}].snr_db"),
                    format!("{} is not in -40..=100 dB", s.snr_db),
                );
            }
        }
        let total: f64 = cur.stages.iter().map(|s| s.share).sum();
        if (total - 1.0).abs() > 1e-6 {
            return bad("curriculum.stages", format!("shares sum to {total}, not 1"));
        }
    }
    Ok(())
}

fn output(cfg: &Config) -> Result<()> {
    if cfg.output.users_per_batch == 0 {
        return bad("output.users_per_batch", "must be at least 1".into());
    }
    cfg.output.parquet_compression()?;
    Ok(())
}

fn pipeline(p: &PipelineConfig, train: &TrainConfig) -> Result<()> {
    if p.seeds.is_empty() {
        return bad("pipeline.seeds", "at least one seed".into());
    }
    let mut seeds = p.seeds.clone();
    seeds.sort_unstable();
    seeds.dedup();
    if seeds.len() != p.seeds.len() {
        return bad("pipeline.seeds", format!("{:?} repeats a seed", p.seeds));
    }
    if p.baselines.contains(&train.model) {
        return bad(
            "pipeline.baselines",
            format!("lists the primary model {}", train.model.name()),
        );
    }
    // Each ablation must build another model than the primary's and the others'.
    let model = |t: &TrainConfig| t.model_config(16, 4096);
    let mut models = vec![model(train)];
    for spec in &p.ablations {
        let m = model(&train.ablated(spec)?);
        if models.contains(&m) {
            return bad(
                "pipeline.ablations",
                format!("`{spec}` builds the same model as the primary or another ablation"),
            );
        }
        models.push(m);
    }
    if p.max_drop.is_nan() || p.max_drop < 0.0 {
        return bad("pipeline.max_drop", format!("{} must be >= 0", p.max_drop));
    }
    if p.probes == 0 {
        return bad("pipeline.probes", "must be at least 1".into());
    }
    at_most("pipeline.probes", p.probes as u64, 100_000)?;
    Ok(())
}

fn name(name: &str) -> Result<()> {
    // `name` names directories under data/, runs/ and reports/: "." or ".." would be
    // those directories themselves or their parent.
    if matches!(name, "" | "." | "..") || name.contains(['/', '\\']) {
        return bad("name", format!("{:?} must be a non-empty plain name", name));
    }
    Ok(())
}
