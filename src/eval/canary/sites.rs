//! The values a system gives each canary's probe sites: every site's versions (the
//! edits a canary's probe makes), scored by every system, reduced to one value (or a few)
//! per site.

use std::ops::Range;

use super::probe::Edit;
use super::probe::{Version, combined_edit, noise_turn};
use super::{AGES, ProbeScorer, Probes, SiteValues, apply_edit, mean, noise_sigma};
use crate::canary::{Role, Rules, Selector};
use crate::data::{Dataset, UserSeq};
use crate::eval::split::Case;
use crate::features::{Canary, FEATURE_DIM};
use crate::metrics::case_metrics;
use crate::model::batch::slice_user;

/// Scores `versions` with every scorer: `[scorer][version][candidate]`. Each site's
/// history (through the probed turn, features at the noise level) is built once and
/// copied for its versions, then each version's edit is applied and its turn's noise
/// redrawn from the edited clean features with the same draws; the sequences are built
/// in chunks and shared by all scorers.
pub(super) fn score_versions(
    scorers: &[&dyn ProbeScorer],
    data: &Dataset,
    versions: &[Version],
    sigma: Option<&[f64; FEATURE_DIM]>,
    seed: u64,
) -> Vec<Vec<Vec<f64>>> {
    let k = data.k;
    let mut out = vec![Vec::with_capacity(versions.len()); scorers.len()];
    for chunk in versions.chunks(64) {
        let mut seqs: Vec<UserSeq> = Vec::with_capacity(chunk.len());
        let mut base: Option<(Case, UserSeq)> = None;
        for v in chunk {
            if base.as_ref().is_none_or(|b| b.0 != v.case) {
                let u = &data.users[v.case.user];
                let mut s = slice_user(
                    u,
                    0,
                    v.case.turn + 1,
                    k,
                    data.embedding_dim,
                    crate::model::batch::Prefix::NONE,
                );
                for t in 0..s.turns {
                    noise_turn(&mut s, t, k, sigma, seed);
                }
                base = Some((v.case, s));
            }
            let mut s = base.as_ref().expect("base sequence").1.clone();
            apply_edit(&mut s, v.case.turn, v.cand, k, v.edit);
            noise_turn(&mut s, v.case.turn, k, sigma, seed);
            seqs.push(s);
        }
        for (o, scorer) in out.iter_mut().zip(scorers) {
            o.extend(scorer.score(&seqs, k));
        }
    }
    out
}

/// The candidate's log-relevance minus the mean over the turn's reference candidates,
/// which removes a listwise model's per-turn constant. References are the valid
/// candidates without a contract-canary role: no probe edit changes their planted
/// relevance (ordinary relevance, the PoC rules and the burst rule read neither the
/// weekday, nor the selector slot, nor another memory's age).
pub(super) fn identified(u: &UserSeq, t: usize, cand: usize, k: usize, scores: &[f64]) -> f64 {
    let refs: Vec<f64> = (0..k)
        .filter(|&j| {
            j != cand && u.valid[t * k + j] == 1.0 && u.role[t * k + j] == Role::None.code()
        })
        .map(|j| scores[j])
        .collect();
    let reference = if refs.is_empty() { 0.0 } else { mean(&refs) };
    scores[cand] - reference
}

/// Collects each probe site's values at one noise level for every scorer (one
/// [`SiteValues`] per scorer; the probe sequences are built once and shared).
pub fn site_values(
    scorers: &[&dyn ProbeScorer],
    data: &Dataset,
    probes: &Probes,
    rules: &Rules,
    snr_db: Option<f64>,
    seed: u64,
) -> Vec<SiteValues> {
    let sigma = snr_db.map(|db| noise_sigma(data, db));
    let (versions, spans) = versions(data, probes, rules);
    let scores = score_versions(scorers, data, &versions, sigma.as_ref(), seed);
    scores
        .iter()
        .map(|sc| values(data, &versions, &spans, sc))
        .collect()
}

/// Every version of every canary's probe sites, in canary order, and each canary's range
/// among them.
fn versions(data: &Dataset, probes: &Probes, rules: &Rules) -> (Vec<Version>, Vec<Range<usize>>) {
    // Every version of every canary, in canary order; `spans` marks each canary's range.
    let mut versions: Vec<Version> = Vec::new();
    let mut spans = Vec::new();
    let mut push = |vs: Vec<Version>, versions: &mut Vec<Version>| {
        let start = versions.len();
        versions.extend(vs);
        spans.push(start..versions.len());
    };
    let pairs = |sites: &[(Case, usize)], a: Edit, b: Edit| -> Vec<Version> {
        sites
            .iter()
            .flat_map(|&(case, cand)| [a, b].map(|edit| Version { case, cand, edit }))
            .collect()
    };
    let unedited = |cases: &[Case]| -> Vec<Version> {
        cases
            .iter()
            .map(|&case| Version {
                case,
                cand: 0,
                edit: Edit::default(),
            })
            .collect()
    };
    // Cycle: the user's own peak against three days later.
    push(
        probes
            .cycle
            .iter()
            .flat_map(|&(case, cand)| {
                let peak = rules.cycle_peak_of(data.users[case.user].cycle_peak);
                [Edit::week(peak), Edit::week(peak + 3.0)].map(|edit| Version { case, cand, edit })
            })
            .collect(),
        &mut versions,
    );
    push(
        probes
            .recency
            .iter()
            .flat_map(|&(case, cand)| {
                AGES.iter().map(move |&a| Version {
                    case,
                    cand,
                    edit: Edit::age(a),
                })
            })
            .collect(),
        &mut versions,
    );
    push(
        pairs(
            &probes.selectivity,
            Edit::selector(Some(Selector::Z)),
            Edit::selector(Some(Selector::W)),
        ),
        &mut versions,
    );
    push(unedited(&probes.chain), &mut versions);
    push(unedited(&probes.burst), &mut versions);
    push(
        pairs(
            &probes.dependency,
            Edit::selector(Some(Selector::P)),
            Edit::selector(Some(Selector::T)),
        ),
        &mut versions,
    );
    // Combined: per signal, a pair differing in that signal only.
    push(
        probes
            .combined
            .iter()
            .flat_map(|site| {
                (0..3).flat_map(move |signal| {
                    [true, false].map(|on| {
                        let mut set = [false; 3];
                        let mut others = site.others[signal].iter();
                        for (i, v) in set.iter_mut().enumerate() {
                            *v = if i == signal {
                                on
                            } else {
                                *others.next().expect("two other signals")
                            };
                        }
                        Version {
                            case: site.case,
                            cand: site.cand,
                            edit: combined_edit(rules, set),
                        }
                    })
                })
            })
            .collect(),
        &mut versions,
    );
    (versions, spans)
}

/// One scorer's site values, from its scores `sc` of every version: per canary, the
/// difference its edit makes to the probed candidate's identified value (cycle,
/// selectivity, dependency, each signal of combined), the recency slope over the ages, the
/// supersession chain's margins, the burst memories' recall.
fn values(
    data: &Dataset,
    versions: &[Version],
    spans: &[Range<usize>],
    sc: &[Vec<f64>],
) -> SiteValues {
    let k = data.k;
    // Identified value of each version's probed candidate.
    let value = |i: usize| -> f64 {
        let v = &versions[i];
        identified(&data.users[v.case.user], v.case.turn, v.cand, k, &sc[i])
    };
    let diffs = |span: &std::ops::Range<usize>| -> Vec<Vec<f64>> {
        span.clone()
            .step_by(2)
            .map(|i| vec![value(i) - value(i + 1)])
            .collect()
    };
    let age_mean = mean(&AGES);
    let sxx: f64 = AGES.iter().map(|a| (a - age_mean).powi(2)).sum();
    let recency: Vec<Vec<f64>> = spans[1]
        .clone()
        .step_by(AGES.len())
        .map(|start| {
            let ys: Vec<f64> = (start..start + AGES.len()).map(value).collect();
            let y_mean = mean(&ys);
            vec![
                AGES.iter()
                    .zip(&ys)
                    .map(|(a, y)| (a - age_mean) * (y - y_mean))
                    .sum::<f64>()
                    / sxx,
            ]
        })
        .collect();
    // Supersession: the score margin of each adjacent pair of the chain versions
    // present, newer minus older (a missing pair counts as ordered).
    let chain: Vec<Vec<f64>> = spans[3]
        .clone()
        .map(|i| {
            let c = versions[i].case;
            let u = &data.users[c.user];
            let t = c.turn;
            let mut members: Vec<(u8, f64)> = (0..k)
                .filter(|&j| {
                    u.valid[t * k + j] == 1.0
                        && Role::from_code(u.role[t * k + j]).is_some_and(Role::is_chain)
                })
                .map(|j| (u.role[t * k + j], sc[i][j]))
                .collect();
            members.sort_by_key(|m| m.0);
            let mut margins: Vec<f64> = members.windows(2).map(|w| w[1].1 - w[0].1).collect();
            margins.resize(2, f64::INFINITY);
            margins
        })
        .collect();
    // Burst: Recall@10 of the burst memories on post-burst test cases.
    let burst: Vec<Vec<f64>> = spans[4]
        .clone()
        .map(|i| {
            let c = versions[i].case;
            let u = &data.users[c.user];
            let t = c.turn;
            let slot = |j: usize| t * k + j;
            let labels: Vec<f64> = (0..k)
                .map(|j| {
                    (u.valid[slot(j)] == 1.0 && u.canary[slot(j)] & Canary::Burst.bit() != 0) as u8
                        as f64
                })
                .collect();
            let masked: Vec<f64> = (0..k)
                .map(|j| {
                    if u.valid[slot(j)] == 1.0 {
                        sc[i][j]
                    } else {
                        f64::NEG_INFINITY
                    }
                })
                .collect();
            vec![case_metrics(&masked, &labels, 10).recall]
        })
        .collect();
    let combined: Vec<Vec<f64>> = spans[6]
        .clone()
        .step_by(6)
        .map(|start| {
            (0..3)
                .map(|s| value(start + 2 * s) - value(start + 2 * s + 1))
                .collect()
        })
        .collect();
    vec![
        diffs(&spans[0]),
        recency,
        diffs(&spans[2]),
        chain,
        burst,
        diffs(&spans[5]),
        combined,
    ]
}
