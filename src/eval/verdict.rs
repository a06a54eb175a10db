//! The verdict an engineer reads first: per phase transition, PASS / FAIL / INVALID with
//! its count of gates, the gates that did not pass with value against threshold, and
//! whether the gates were shown able to go both ways. The report opens with it
//! ([`blocks`]); `ssmkit eval` and `ssmkit run` print it ([`Verdict::lines`]).

use super::gates::{Gate, Status, invalid_reason};
use super::report::{Block, Mark};

/// One phase transition's gates, judged together.
#[derive(Clone, Debug)]
pub struct PhaseVerdict {
    /// The gates' `phase` ("0→1", "1→2", "0 contract").
    pub phase: String,
    pub status: Status,
    pub passed: usize,
    pub gates: usize,
    /// The gates that did not pass, in the report's order.
    pub open: Vec<Gate>,
}

#[derive(Clone, Debug)]
pub struct Verdict {
    pub phases: Vec<PhaseVerdict>,
    /// Canaries passing at 20 dB, of seven (`None`: no canary planted).
    pub canaries: Option<usize>,
    /// The quality gates measured and checked against the reference systems (0: the
    /// references were not computed).
    pub checked: usize,
    /// The gates that read INVALID, with the reason.
    pub invalid: Vec<(String, String)>,
}

impl Verdict {
    /// The verdict of `gates` (in their report order); `references_checked`: the gates'
    /// validity was computed on the reference systems.
    pub fn new(gates: &[Gate], references_checked: bool) -> Verdict {
        let mut phases: Vec<PhaseVerdict> = Vec::new();
        for g in gates {
            let at = match phases.iter().position(|p| p.phase == g.phase) {
                Some(i) => i,
                None => {
                    phases.push(PhaseVerdict {
                        phase: g.phase.clone(),
                        status: Status::Pass,
                        passed: 0,
                        gates: 0,
                        open: Vec::new(),
                    });
                    phases.len() - 1
                }
            };
            let p = &mut phases[at];
            p.gates += 1;
            if g.passed() {
                p.passed += 1;
            } else {
                p.open.push(g.clone());
            }
        }
        for p in &mut phases {
            p.status = phase_status(p.open.iter().map(|g| g.status));
        }
        let canaries = gates
            .iter()
            .find(|g| g.name.starts_with("canaries "))
            .and_then(|g| g.value)
            .map(|v| v as usize);
        let checked = if references_checked {
            gates
                .iter()
                .filter(|g| g.judges_quality && g.status != Status::NotMeasured)
                .count()
        } else {
            0
        };
        let invalid = gates
            .iter()
            .filter(|g| g.status == Status::Invalid)
            .map(|g| {
                let why = invalid_reason(g).unwrap_or("see the validity matrix");
                (g.name.clone(), why.to_string())
            })
            .collect();
        Verdict {
            phases,
            canaries,
            checked,
            invalid,
        }
    }

    /// A phase's headline: "Phase 0→1: FAIL, 2 of 6 gates pass (canaries 2/7 at 20 dB)".
    fn headline(&self, p: &PhaseVerdict) -> String {
        let canaries = match self.canaries {
            Some(n) if p.phase == "0→1" => format!(" (canaries {n}/7 at 20 dB)"),
            _ => String::new(),
        };
        format!(
            "Phase {}: {}, {} of {} gates pass{canaries}",
            p.phase, p.status, p.passed, p.gates
        )
    }

    /// The one line on whether the verdict can be trusted.
    pub fn validity(&self) -> String {
        if self.checked == 0 && self.invalid.is_empty() {
            return "Validity: not checked (no reference system was computed).".into();
        }
        if self.invalid.is_empty() {
            return format!(
                "Validity: each of the {} measured quality gates was shown able to go both ways on this data (the oracle passes it; random, a constant scorer and a label memorizer fail it; the observable reference passes every canary gate).",
                self.checked
            );
        }
        let names: Vec<String> = self
            .invalid
            .iter()
            .map(|(name, why)| format!("{name} ({why})"))
            .collect();
        format!(
            "Validity: {} of {} quality gates INVALID on this data, so the verdict cannot pass: {}.",
            self.invalid.len(),
            self.checked.max(self.invalid.len()),
            names.join("; ")
        )
    }

    /// The verdict for a terminal: a headline per phase, then its gates that did not pass.
    pub fn lines(&self) -> Vec<String> {
        let mut out = Vec::new();
        for p in &self.phases {
            out.push(format!(
                "{} {}",
                Mark::of_status(p.status).symbol(),
                self.headline(p)
            ));
            for g in &p.open {
                out.push(format!(
                    "    {} {}: {}",
                    Mark::of_status(g.status).symbol(),
                    g.name,
                    measured(g)
                ));
            }
        }
        out.push(self.validity());
        out
    }
}

/// A phase fails when a gate fails; otherwise it is INVALID when a gate is, NOT MEASURED
/// when one is not measured, and passes only when every gate does.
fn phase_status(open: impl Iterator<Item = Status>) -> Status {
    let open: Vec<Status> = open.collect();
    [Status::Fail, Status::Invalid, Status::NotMeasured]
        .into_iter()
        .find(|s| open.contains(s))
        .unwrap_or(Status::Pass)
}

fn num(v: f64) -> String {
    if v.fract() == 0.0 && v.abs() < 1e6 {
        format!("{v:.0}")
    } else {
        format!("{v:.4}")
    }
}

/// "0.4123 [0.4012, 0.4231] against 0.6; failing: recency": what a gate measured, its
/// interval, its threshold, and its note (for an INVALID gate, why it is).
fn measured(g: &Gate) -> String {
    let Some(v) = g.value else {
        return format!("not measured ({})", g.note);
    };
    let ci = match (g.ci_low, g.ci_high) {
        (Some(lo), Some(hi)) => format!(" [{}, {}]", num(lo), num(hi)),
        _ => String::new(),
    };
    let detail = match invalid_reason(g) {
        Some(why) => format!("; {why}"),
        None if g.note.is_empty() => String::new(),
        None => format!("; {}", g.note),
    };
    format!("{}{ci} against {}{detail}", num(v), num(g.threshold))
}

/// The report's verdict section: a callout per phase, the validity line, then `about`
/// (what was evaluated).
pub fn blocks(v: &Verdict, about: Vec<Block>) -> Vec<Block> {
    let mut blocks: Vec<Block> = v
        .phases
        .iter()
        .map(|p| Block::Callout {
            mark: Mark::of_status(p.status),
            title: v.headline(p),
            items: p
                .open
                .iter()
                .map(|g| {
                    format!(
                        "{} **{}**: {}",
                        Mark::of_status(g.status).symbol(),
                        g.name,
                        measured(g)
                    )
                })
                .collect(),
        })
        .collect();
    blocks.push(Block::Para(v.validity()));
    blocks.extend(about);
    blocks
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::eval::gates::check_validity;

    fn gate(name: &str, phase: &str, status: Status) -> Gate {
        Gate {
            name: name.into(),
            phase: phase.into(),
            value: (status != Status::NotMeasured).then_some(0.25),
            ci_low: Some(0.2),
            ci_high: Some(0.3),
            threshold: 0.6,
            status,
            note: if name.starts_with("canaries") {
                "failing: recency, cycle".into()
            } else {
                "paired test".into()
            },
            judges_quality: true,
        }
    }

    #[test]
    fn a_phase_fails_on_one_failing_gate_and_passes_only_when_all_pass() {
        use Status::{Fail, Invalid, NotMeasured, Pass};
        let mut canary = gate("canaries 7/7 pass at 20 dB", "0→1", Fail);
        canary.value = Some(5.0);
        canary.threshold = 7.0;
        let gates = vec![
            canary,
            gate("HR@5 ≥ 0.60", "0→1", Pass),
            gate("HR@10 > xattn + 3%", "1→2", Invalid),
            gate("latency", "1→2", NotMeasured),
            gate("mean detection", "0 contract", Pass),
            gate("no cliff", "0 contract", NotMeasured),
            gate("dual error", "0 contract", Pass),
        ];
        let v = Verdict::new(&gates, true);
        let got: Vec<(&str, Status, usize, usize, usize)> = v
            .phases
            .iter()
            .map(|p| (&p.phase[..], p.status, p.passed, p.gates, p.open.len()))
            .collect();
        assert_eq!(
            got,
            [
                ("0→1", Fail, 1, 2, 1),
                ("1→2", Invalid, 0, 2, 2),
                ("0 contract", NotMeasured, 2, 3, 1),
            ]
        );
        assert_eq!(v.canaries, Some(5));
        let lines = v.lines().join("\n");
        assert!(
            lines.contains("✗ Phase 0→1: FAIL, 1 of 2 gates pass (canaries 5/7 at 20 dB)"),
            "{lines}"
        );
        assert!(
            lines.contains(
                "✗ canaries 7/7 pass at 20 dB: 5 [0.2000, 0.3000] against 7; failing: recency, cycle"
            ),
            "{lines}"
        );
        // Every gate that did not pass is named; none that passed is.
        for g in gates.iter().filter(|g| !g.passed()) {
            assert!(lines.contains(&g.name), "{} missing:\n{lines}", g.name);
        }
        assert!(!lines.contains("HR@5"), "{lines}");
        // Every gate passing: every phase passes.
        let all: Vec<Gate> = gates
            .iter()
            .map(|g| gate(&g.name, &g.phase, Pass))
            .collect();
        let v = Verdict::new(&all, true);
        assert!(
            v.phases
                .iter()
                .all(|p| p.status == Pass && p.open.is_empty())
        );
        assert!(v.validity().contains("each of the 7"), "{}", v.validity());
    }

    #[test]
    fn the_validity_line_names_each_invalid_gate_and_why() {
        use Status::{Fail, Pass};
        let mut gates = vec![
            gate("HR@5 ≥ 0.60", "0→1", Fail),
            gate("DCG@10 over the heuristic", "0→1", Fail),
        ];
        let refs = |oracle: [Status; 2], random: [Status; 2]| -> Vec<Vec<Gate>> {
            let mk = |s: [Status; 2]| {
                s.iter()
                    .zip(["HR@5 ≥ 0.60", "DCG@10 over the heuristic"])
                    .map(|(&s, n)| gate(n, "0→1", s))
                    .collect::<Vec<_>>()
            };
            vec![mk(oracle), mk(random), mk([Fail; 2]), mk([Fail; 2])]
        };
        check_validity(&mut gates, &refs([Pass, Fail], [Fail, Pass]));
        let v = Verdict::new(&gates, true);
        assert_eq!(
            v.invalid,
            [(
                "DCG@10 over the heuristic".to_string(),
                "the oracle does not pass it; random passes it".to_string()
            )]
        );
        let line = v.validity();
        assert!(
            line.contains("1 of 2 quality gates INVALID")
                && line.contains(
                    "DCG@10 over the heuristic (the oracle does not pass it; random passes it)"
                ),
            "{line}"
        );
        // The failing gate still fails the phase; the INVALID one is listed with its reason.
        assert_eq!(v.phases[0].status, Fail);
        let lines = v.lines().join("\n");
        assert!(
            lines.contains("⚠ DCG@10 over the heuristic: 0.2500 [0.2000, 0.3000] against 0.6000; the oracle does not pass it"),
            "{lines}"
        );
        assert!(Verdict::new(&gates, false).validity().contains("INVALID"));
        let unchecked = Verdict::new(&[gate("x", "0→1", Fail)], false);
        assert!(unchecked.validity().contains("not checked"));
    }
}
