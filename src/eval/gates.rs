//! The phase gates (the seed's "Measurable Targets" and validation contracts)
//! and their validity.
//!
//! Every gate is computed for the judged model and for five reference systems whose
//! answer is known: the **oracle** (the planted relevance) must pass every gate that
//! judges model quality, **random** and a **constant** scorer must fail each of them, a
//! **label memorizer** (the observed labels on the turns it trained on, a constant
//! elsewhere) must fail the dual-error test, and the **observable reference** (a rule
//! learner that reads only what a model reads) must pass every canary gate. A gate that
//! does not behave so cannot tell a good model from a bad one, or cannot be learned, on
//! this data: it reads INVALID, and an INVALID gate never lets the verdict pass.
//!
//! Gates on a margin ("+10% over the heuristic", "+3% over the cross-attention
//! baseline") test the margin itself: the paired difference A − (1 + margin)·B must have
//! its BCa lower bound above 0 and p < 0.05, with seed variance in the interval.

use std::fmt;

use serde::Serialize;

use super::canary::{CanaryResult, mean_detection};
use super::dual::DualError;
use super::stats::{CompareOptions, compare_seeds};
use crate::metrics::{Row, metric_index};

/// A gate's outcome.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, serde::Deserialize)]
pub enum Status {
    #[serde(rename = "PASS")]
    Pass,
    #[serde(rename = "FAIL")]
    Fail,
    #[serde(rename = "NOT MEASURED")]
    NotMeasured,
    /// The gate cannot discriminate on this data (see the module docs).
    #[serde(rename = "INVALID")]
    Invalid,
}

impl fmt::Display for Status {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Status::Pass => "PASS",
            Status::Fail => "FAIL",
            Status::NotMeasured => "NOT MEASURED",
            Status::Invalid => "INVALID",
        })
    }
}

#[derive(Clone, Debug, Serialize, serde::Deserialize)]
pub struct Gate {
    pub name: String,
    pub phase: String,
    pub value: Option<f64>,
    pub ci_low: Option<f64>,
    pub ci_high: Option<f64>,
    pub threshold: f64,
    pub status: Status,
    pub note: String,
    /// The gate judges model quality, so its validity is checked on the references.
    pub judges_quality: bool,
}

impl Gate {
    pub fn passed(&self) -> bool {
        self.status == Status::Pass
    }
}

/// A gate before its status: measured or not.
struct Measure {
    value: Option<f64>,
    ci: Option<(f64, f64)>,
    pass: bool,
    note: String,
}

impl Measure {
    fn none(note: impl Into<String>) -> Measure {
        Measure {
            value: None,
            ci: None,
            pass: false,
            note: note.into(),
        }
    }
}

fn gate(name: &str, phase: &str, threshold: f64, quality: bool, m: Measure) -> Gate {
    Gate {
        name: name.into(),
        phase: phase.into(),
        value: m.value,
        ci_low: m.ci.map(|c| c.0),
        ci_high: m.ci.map(|c| c.1),
        threshold,
        status: match m.value {
            None => Status::NotMeasured,
            Some(_) if m.pass => Status::Pass,
            Some(_) => Status::Fail,
        },
        note: m.note,
        judges_quality: quality,
    }
}

/// What a judged system (the model, or a reference) brings to the gates.
#[derive(Clone, Debug)]
pub struct Evidence {
    pub name: String,
    /// Per seed, per GTS case: the metric rows (one "seed" for a reference system; none
    /// for one that ranks no test case, which then has no metric gate measured).
    pub runs: Vec<Vec<Row>>,
    /// Canary results at each SNR level (`None`: the dataset planted no canaries).
    pub canaries: Option<Vec<(Option<f64>, Vec<CanaryResult>)>>,
    /// The dual-error test on training turns (empty: not measured).
    pub dual: Vec<DualError>,
    /// p95 latency (ms) and the turns measured.
    pub latency: Option<(f64, usize)>,
    /// A reference system: deterministic, so the seed count does not apply.
    pub reference: bool,
}

/// What every system is compared with.
pub struct Against<'a> {
    pub heuristic: &'a [Vec<Row>],
    /// The history baseline with the highest DCG@10 (name, rows).
    pub history: Option<(String, &'a [Vec<Row>])>,
    pub xattn: Option<&'a [Vec<Row>]>,
    /// The primary model trained on another dataset (TSTR's arm 1: its group and rows).
    pub transfer: Option<(String, &'a [Vec<Row>])>,
    /// The primary model trained on this dataset with another mixed in (TSTR's arm 3).
    pub mixed: Option<(String, &'a [Vec<Row>])>,
    pub units: Option<&'a [u64]>,
    pub compare: &'a CompareOptions,
}

fn column(runs: &[Vec<Row>], metric: &str) -> Vec<Vec<f64>> {
    let m = metric_index(metric);
    runs.iter()
        .map(|r| r.iter().map(|row| row[m]).collect())
        .collect()
}

fn mean_of(runs: &[Vec<f64>]) -> f64 {
    let n: usize = runs.iter().map(Vec::len).sum();
    runs.iter().flatten().sum::<f64>() / n.max(1) as f64
}

/// A paired test of `a − (1 + margin) · b` on a metric (seeds resampled with the units),
/// as a gate: the value and interval are relative to `b`'s mean (`a / b − 1`), and it
/// passes when the difference beyond the margin is significant. Returns the comparison
/// for the note.
fn beyond_margin(
    a: &[Vec<f64>],
    b: &[Vec<f64>],
    margin: f64,
    with: &Against,
) -> (Measure, super::stats::Comparison) {
    let base = mean_of(b);
    let c = compare_seeds(a, b, 1.0 + margin, with.units, with.compare);
    let m = Measure {
        value: Some(mean_of(a) / base - 1.0),
        ci: Some((c.ci_low / base + margin, c.ci_high / base + margin)),
        pass: c.significant,
        note: String::new(),
    };
    (m, c)
}

fn level(e: &Evidence, db: Option<f64>) -> Option<&Vec<CanaryResult>> {
    e.canaries
        .as_ref()?
        .iter()
        .find(|l| l.0 == db)
        .map(|l| &l.1)
}

/// The largest drop in mean detection between adjacent SNR levels from the clean level
/// down to the noise floor (the first level below 50% detection; the step into the floor
/// counts: a fall from high detection straight into it is the cliff), and the clean
/// detection.
pub fn cliff(levels: &[(Option<f64>, Vec<CanaryResult>)]) -> Option<(f64, f64)> {
    let d: Vec<f64> = levels.iter().map(|l| mean_detection(&l.1)).collect();
    let clean = *d.first()?;
    if !clean.is_finite() {
        return None;
    }
    let floor = d.iter().position(|&x| x < 0.5).unwrap_or(d.len() - 1);
    let drop = d[..=floor]
        .windows(2)
        .map(|w| w[0] - w[1])
        .fold(0.0, f64::max);
    Some((drop, clean))
}

/// Largest drop between adjacent levels for the SNR curve to count as cliff-free.
pub const MAX_CLIFF: f64 = 0.25;

/// The gates of one system.
pub fn evaluate(e: &Evidence, with: &Against) -> Vec<Gate> {
    let mut gates = vec![
        canaries_gate(e),
        hr5_gate(e, with),
        over_heuristic_gate(e, with),
        history_gate(e, with),
        latency_gate(e),
        xattn_gate(e, with),
    ];
    gates.extend(detection_gates(e));
    gates.push(cliff_gate(e));
    gates.push(dual_gate(e));
    gates.extend(tstr_gate(e, with));
    gates.extend(tstr_mixed_gate(e, with));
    gates
}

/// The measure of a metric gate for a system that ranks no test case.
fn unranked() -> Measure {
    Measure::none("the system ranks no test case")
}

/// Every canary's criterion at 20 dB.
fn canaries_gate(e: &Evidence) -> Gate {
    let canaries_20 = match level(e, Some(20.0)) {
        Some(l) => {
            let passed = l.iter().filter(|r| r.pass).count();
            let failed: Vec<&str> = l
                .iter()
                .filter(|r| !r.pass)
                .map(|r| r.canary.name())
                .collect();
            Measure {
                value: Some(passed as f64),
                ci: None,
                pass: passed == 7,
                note: if failed.is_empty() {
                    "every canary's criterion holds on its probes".into()
                } else {
                    format!("failing: {}", failed.join(", "))
                },
            }
        }
        None => Measure::none("the dataset planted no canaries"),
    };
    gate("canaries 7/7 pass at 20 dB", "0→1", 7.0, true, canaries_20)
}

/// HR@5: the BCa lower bound over the seeds must reach 0.60.
fn hr5_gate(e: &Evidence, with: &Against) -> Gate {
    // A system that ranks no test case (no rows) is measured on no metric gate.
    let ranked = !e.runs.is_empty();
    let hr5_gate = if ranked {
        let hr5 = column(&e.runs, "hr@5");
        let zeros = vec![vec![0.0; hr5[0].len()]];
        let c = compare_seeds(&hr5, &zeros, 0.0, with.units, with.compare);
        Measure {
            value: Some(c.theta_hat),
            ci: Some((c.ci_low, c.ci_high)),
            pass: c.ci_low >= 0.60,
            note: "GTS test cases; the BCa lower bound must reach the threshold".into(),
        }
    } else {
        unranked()
    };
    gate("HR@5 ≥ 0.60", "0→1", 0.60, true, hr5_gate)
}

/// DCG@10 at least 10% over the heuristic, significant.
fn over_heuristic_gate(e: &Evidence, with: &Against) -> Gate {
    // A system that ranks no test case (no rows) is measured on no metric gate.
    let ranked = !e.runs.is_empty();
    let dcg = column(&e.runs, "dcg@10");
    let over_heuristic = if ranked {
        let (mut m, c) = beyond_margin(&dcg, &column(with.heuristic, "dcg@10"), 0.10, with);
        m.note = format!(
            "paired test of DCG@10 − 1.1 × heuristic: BCa [{:.4}, {:.4}], p = {:.4}",
            c.ci_low, c.ci_high, c.p_value
        );
        m
    } else {
        unranked()
    };
    gate(
        "DCG@10 ≥ +10% over the heuristic, significant",
        "0→1",
        0.10,
        true,
        over_heuristic,
    )
}

/// DCG@10 above the best history baseline, significant.
fn history_gate(e: &Evidence, with: &Against) -> Gate {
    // A system that ranks no test case (no rows) is measured on no metric gate.
    let ranked = !e.runs.is_empty();
    let dcg = column(&e.runs, "dcg@10");
    let history = match &with.history {
        _ if !ranked => unranked(),
        Some((name, rows)) => {
            let (mut m, c) = beyond_margin(&dcg, &column(rows, "dcg@10"), 0.0, with);
            m.note = format!(
                "against {name}, the best history baseline: difference {:+.4}, BCa [{:.4}, {:.4}], p = {:.4}",
                c.theta_hat, c.ci_low, c.ci_high, c.p_value
            );
            m
        }
        None => Measure::none("no history baseline"),
    };
    gate(
        "DCG@10 above the best history baseline, significant",
        "0→1",
        0.0,
        true,
        history,
    )
}

/// The Burn model's p95 latency per prediction.
fn latency_gate(e: &Evidence) -> Gate {
    let latency = match e.latency {
        Some((p95, turns)) => Measure {
            value: Some(p95),
            ci: None,
            pass: p95 <= 5.0,
            note: format!(
                "Burn model, one turn per step, {turns} turns (CPU), each the fastest of {} replays",
                crate::eval::scoring::LATENCY_REPLAYS
            ),
        },
        None if e.reference => Measure::none("a reference system has no model to time"),
        None => Measure::none("latency not measured"),
    };
    gate(
        "p95 latency ≤ 5 ms per prediction",
        "0→1",
        5.0,
        false,
        latency,
    )
}

/// HR@10 over the cross-attention baseline by 3%, on at least 5 seeds.
fn xattn_gate(e: &Evidence, with: &Against) -> Gate {
    // A system that ranks no test case (no rows) is measured on no metric gate.
    let ranked = !e.runs.is_empty();
    let xattn = match with.xattn {
        _ if !ranked => unranked(),
        Some(x) => {
            let (mut m, c) =
                beyond_margin(&column(&e.runs, "hr@10"), &column(x, "hr@10"), 0.03, with);
            let seeds = e.runs.len();
            m.pass &= e.reference || seeds >= 5;
            m.note = format!(
                "synthetic held-out data; paired test of HR@10 − 1.03 × xattn: BCa [{:.4}, {:.4}], p = {:.4}; {}",
                c.ci_low,
                c.ci_high,
                c.p_value,
                if e.reference {
                    "deterministic system".to_string()
                } else {
                    format!("{seeds} seed(s) × {} xattn seed(s)", x.len())
                }
            );
            m
        }
        None => Measure::none("no xattn run was given"),
    };
    gate(
        "HR@10 > cross-attention baseline + 3%, p < 0.05, ≥ 5 seeds",
        "1→2",
        0.03,
        true,
        xattn,
    )
}

/// Mean canary detection above 90% at 20 dB and 70% at 10 dB.
fn detection_gates(e: &Evidence) -> Vec<Gate> {
    [(20.0, 0.90), (10.0, 0.70)]
        .into_iter()
        .map(|(db, threshold)| {
            let name = format!(
                "mean canary detection > {:.0}% at {db} dB",
                threshold * 100.0
            );
            let m = match level(e, Some(db)) {
                Some(l) => {
                    let d = mean_detection(l);
                    Measure {
                        value: Some(d),
                        ci: None,
                        pass: d > threshold,
                        note: "mean over the seven canaries (SNR curve)".into(),
                    }
                }
                None => Measure::none("no canaries"),
            };
            gate(&name, "0 contract", threshold, true, m)
        })
        .collect()
}

/// The SNR curve degrades without a cliff above the noise floor.
fn cliff_gate(e: &Evidence) -> Gate {
    let cliff_m = match e.canaries.as_deref().and_then(cliff) {
        Some((drop, clean)) => Measure {
            value: Some(drop),
            ci: None,
            pass: drop <= MAX_CLIFF && clean >= 0.90,
            note: format!(
                "clean detection {:.1}% (≥ 90% needed); the value is the largest drop of mean detection between adjacent levels down to the noise floor",
                100.0 * clean
            ),
        },
        None => Measure::none("no canaries"),
    };
    gate(
        "SNR curve degrades without a cliff above the noise floor",
        "0 contract",
        MAX_CLIFF,
        true,
        cliff_m,
    )
}

/// The dual-error test on every canary.
fn dual_gate(e: &Evidence) -> Gate {
    let passed = e.dual.iter().filter(|d| d.pass).count();
    let dual = if e.dual.iter().all(|d| d.n == 0) {
        Measure::none("no canary candidate in the training turns")
    } else {
        let failing: Vec<String> = e
            .dual
            .iter()
            .filter(|d| !d.pass)
            .map(|d| d.canary.to_string())
            .collect();
        let rule = "training turns: MSE_Obs − MSE_True > floor / 2 and skill over the canary's mean relevance > 0.1";
        Measure {
            value: Some(passed as f64),
            ci: None,
            pass: passed == 7,
            note: if failing.is_empty() {
                rule.into()
            } else {
                format!("failing: {}; {rule}", failing.join(", "))
            },
        }
    };
    gate(
        "dual error: MSE_True < MSE_Obs beyond the noise floor, 7/7 canaries",
        "0 contract",
        7.0,
        true,
        dual,
    )
}

/// The share of the real-only arm's DCG@10 that TSTR's synthetic-only arm must exceed.
pub const TSTR_SHARE: f64 = 0.60;

/// TSTR (the seed's Phase 1→2 protocol), arm 1 against arm 2: trained on synthetic,
/// tested on real, over 60% of trained on real. The value is the ratio of their DCG@10
/// with its BCa interval over seeds and units; it passes when `arm1 − 0.6 · arm2` is
/// significantly above 0.
fn tstr_gate(e: &Evidence, with: &Against) -> Option<Gate> {
    let (group, rows) = with.transfer.as_ref()?;
    let mut m = tstr_measure(
        e,
        rows,
        TSTR_SHARE - 1.0,
        with,
        &format!("DCG@10 of {group} over the same model trained on this dataset"),
    );
    // The relative difference beyond the margin, as the ratio itself.
    m.value = m.value.map(|v| v + 1.0);
    m.ci = m.ci.map(|(lo, hi)| (lo + 1.0, hi + 1.0));
    Some(gate(
        "TSTR: trained on synthetic, tested on real > 60% of trained on real",
        "1→2",
        TSTR_SHARE,
        false,
        m,
    ))
}

/// TSTR, arm 3 against arm 2: trained on synthetic + real above trained on real alone.
/// The value is the relative DCG@10 gain with its BCa interval; it passes when the gain
/// is significant.
fn tstr_mixed_gate(e: &Evidence, with: &Against) -> Option<Gate> {
    let (group, rows) = with.mixed.as_ref()?;
    let what = format!("DCG@10 of {group} over the same model trained on this dataset alone, − 1");
    Some(gate(
        "TSTR: trained on synthetic + real > trained on real",
        "1→2",
        0.0,
        false,
        tstr_measure(e, rows, 0.0, with, &what),
    ))
}

/// A TSTR arm's DCG@10 (`rows`) against the primary model's trained on this dataset alone,
/// beyond `margin` ([`beyond_margin`]), noted as `what` with the seeds and the p-value.
fn tstr_measure(
    e: &Evidence,
    rows: &[Vec<Row>],
    margin: f64,
    with: &Against,
    what: &str,
) -> Measure {
    if e.reference {
        return Measure::none("a reference system is not trained");
    }
    let dcg = |r: &[Vec<Row>]| column(r, "dcg@10");
    let (mut m, c) = beyond_margin(&dcg(rows), &dcg(&e.runs), margin, with);
    m.note = format!(
        "{what} ({} × {} seeds); p = {:.4}",
        rows.len(),
        e.runs.len(),
        c.p_value
    );
    m
}

/// The reference systems and what each must do on a quality gate.
pub const REFERENCES: [&str; 5] = ["oracle", "random", "constant", "memorizer", OBSERVABLE];

/// The reference that learns the canaries from observable inputs only
/// ([`super::canary::ObservableProbe`]).
pub const OBSERVABLE: &str = "observable";

/// Whether a gate is judged on the canary probes (the gates the observable reference is
/// measured on).
pub fn is_canary_gate(g: &Gate) -> bool {
    g.name.starts_with("canaries ")
        || g.name.starts_with("mean canary detection")
        || g.name.starts_with("SNR curve")
}

/// Leaves a system's canary gates measured and the rest NOT MEASURED: the observable
/// reference learns the canaries; it is no ranker of the test cases.
pub fn canary_gates_only(gates: &mut [Gate]) {
    for g in gates.iter_mut().filter(|g| !is_canary_gate(g)) {
        g.value = None;
        g.ci_low = None;
        g.ci_high = None;
        g.status = Status::NotMeasured;
        g.note = "the observable reference is judged on the canary gates only".into();
    }
}

/// What the reference at `index` in [`REFERENCES`] did on a quality gate, against what it
/// must do: `None` where it is not judged there (the gate judges no quality, or the
/// reference was not measured on it), `Some(Ok(()))` where it behaved as it must, and
/// `Some(Err(why))` where it did not, which makes the gate INVALID. (Away from its
/// training turns the memorizer is the constant, so it tells the constant apart only on
/// the dual-error gate.)
pub fn reference_behaved(
    index: usize,
    gate: &Gate,
    status: Status,
) -> Option<std::result::Result<(), &'static str>> {
    if !gate.judges_quality {
        return None;
    }
    let ok = |good: bool, why| Some(if good { Ok(()) } else { Err(why) });
    match (index, status) {
        (_, Status::NotMeasured) if index != 0 => None,
        (0, s) => ok(s == Status::Pass, "the oracle does not pass it"),
        (1, s) => ok(s != Status::Pass, "random passes it"),
        (2, s) => ok(s != Status::Pass, "a constant scorer passes it"),
        (3, s) => ok(s != Status::Pass, "a label memorizer passes it"),
        (4, s) => ok(
            s != Status::Fail,
            "the observable reference fails it, so the data cannot teach it to a learner",
        ),
        _ => None,
    }
}

/// Marks INVALID every measured quality gate of `gates` that the references show cannot
/// discriminate ([`reference_behaved`]): the oracle does not pass it, or random, constant
/// or the label memorizer passes it, or the observable reference is measured on it and
/// fails it (then the data cannot teach it to a learner). `references` are in
/// [`REFERENCES`] order.
pub fn check_validity(gates: &mut [Gate], references: &[Vec<Gate>]) {
    for (i, g) in gates.iter_mut().enumerate() {
        if !g.judges_quality || g.status == Status::NotMeasured {
            continue;
        }
        let why: Vec<&str> = (0..REFERENCES.len())
            .filter_map(|r| {
                // A reference without this gate counts as not passing it.
                let status = references
                    .get(r)
                    .and_then(|v| v.get(i))
                    .map_or(Status::NotMeasured, |x| x.status);
                reference_behaved(r, g, status)?.err()
            })
            .collect();
        if !why.is_empty() {
            g.status = Status::Invalid;
            g.note = format!("{INVALID_PREFIX}{}. {}", why.join("; "), g.note);
        }
    }
}

const INVALID_PREFIX: &str = "INVALID on this data: ";

/// Why [`check_validity`] made a gate INVALID, as it wrote it in the gate's note.
pub fn invalid_reason(gate: &Gate) -> Option<&str> {
    let rest = gate.note.strip_prefix(INVALID_PREFIX)?;
    Some(rest.split_once(". ").map_or(rest, |(why, _)| why))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn measured(name: &str, status: Status) -> Gate {
        Gate {
            name: name.into(),
            phase: "0→1".into(),
            value: Some(1.0),
            ci_low: None,
            ci_high: None,
            threshold: 1.0,
            status,
            note: String::new(),
            judges_quality: true,
        }
    }

    /// The primary's gates and each reference's, in [`REFERENCES`] order, all of the named
    /// gates with the given statuses.
    fn judged(names: &[&str], reference: [Status; 5]) -> Vec<Gate> {
        let mut gates: Vec<Gate> = names.iter().map(|n| measured(n, Status::Fail)).collect();
        let references: Vec<Vec<Gate>> = reference
            .iter()
            .enumerate()
            .map(|(r, &s)| {
                let mut g: Vec<Gate> = names.iter().map(|n| measured(n, s)).collect();
                if r == 4 {
                    canary_gates_only(&mut g);
                }
                g
            })
            .collect();
        check_validity(&mut gates, &references);
        gates
    }

    #[test]
    fn a_gate_the_observable_reference_fails_is_invalid_and_only_canary_gates_count() {
        use Status::{Fail, Pass};
        let names = ["canaries 7/7 pass at 20 dB", "HR@5 ≥ 0.60"];
        // Every reference as it must be: nothing is INVALID.
        let ok = judged(&names, [Pass, Fail, Fail, Fail, Pass]);
        assert!(ok.iter().all(|g| g.status == Fail), "{ok:?}");
        // The observable reference fails both: the canary gate turns INVALID and says why;
        // the metric gate, on which it is not measured, does not.
        let g = judged(&names, [Pass, Fail, Fail, Fail, Fail]);
        assert_eq!(g[0].status, Status::Invalid);
        assert!(g[0].note.contains("observable reference"), "{}", g[0].note);
        assert_eq!(g[1].status, Fail);
        // The older rules still hold beside it.
        let g = judged(&names, [Fail, Fail, Fail, Fail, Pass]);
        assert!(g.iter().all(|g| g.status == Status::Invalid));
        let g = judged(&names, [Pass, Fail, Pass, Fail, Pass]);
        assert!(g.iter().all(|g| g.status == Status::Invalid));
    }
}
