//! The frequency response of a system to the time of the week (M2Rec's frequency check).

use std::f64::consts::TAU;

use serde::Serialize;

use super::mean;
use super::probe::{Edit, ProbeScorer, Probes, Version};
use super::sites::{identified, score_versions};
use crate::canary::Rules;
use crate::data::Dataset;
use crate::eval::split::Case;

/// Points per day of the frequency-response sweep.
const SWEEP_PER_DAY: usize = 12;

/// The response of a system's log-relevance of the temporal-cycle memories to the time of
/// the week (M2Rec's frequency check): the probed turn swept over one week starting at the
/// user's planted peak, the mean curve over the probe sites (each centred; days after the
/// peak), and the share of its spectral power (DC excluded)
/// at the weekly and the daily period.
#[derive(Clone, Debug, Serialize)]
pub struct FrequencyResponse {
    pub sites: usize,
    /// (position in the week in days, mean centred log-relevance).
    pub curve: Vec<(f64, f64)>,
    pub weekly_share: f64,
    pub daily_share: f64,
    /// Where in the week the curve peaks, in days after the user's planted peak.
    pub peak_day: f64,
}

pub fn frequency_response(
    scorer: &dyn ProbeScorer,
    data: &Dataset,
    probes: &Probes,
    rules: &Rules,
    sites: usize,
) -> FrequencyResponse {
    let n = 7 * SWEEP_PER_DAY;
    let chosen: Vec<(Case, usize)> = probes.cycle.iter().take(sites).copied().collect();
    let versions: Vec<Version> = chosen
        .iter()
        .flat_map(|&(case, cand)| {
            let peak = rules.cycle_peak_of(data.users[case.user].cycle_peak);
            (0..n).map(move |i| Version {
                case,
                cand,
                edit: Edit::week(peak + i as f64 / SWEEP_PER_DAY as f64),
            })
        })
        .collect();
    let scores = score_versions(&[scorer], data, &versions, None, 0).remove(0);
    let values: Vec<f64> = versions
        .iter()
        .zip(&scores)
        .map(|(v, sc)| identified(&data.users[v.case.user], v.case.turn, v.cand, data.k, sc))
        .collect();
    let mut curve = vec![0.0; n];
    for site in values.chunks(n) {
        let m = mean(site);
        for (c, v) in curve.iter_mut().zip(site) {
            *c += (v - m) / chosen.len().max(1) as f64;
        }
    }
    // Power of the discrete Fourier transform at 1..n/2 cycles per week.
    let power: Vec<f64> = (1..=n / 2)
        .map(|f| {
            let (mut re, mut im) = (0.0, 0.0);
            for (i, v) in curve.iter().enumerate() {
                let a = TAU * (f * i) as f64 / n as f64;
                re += v * a.cos();
                im -= v * a.sin();
            }
            re * re + im * im
        })
        .collect();
    let total: f64 = power.iter().sum::<f64>().max(1e-300);
    let peak = curve
        .iter()
        .enumerate()
        .max_by(|a, b| a.1.total_cmp(b.1))
        .map_or(0, |(i, _)| i);
    FrequencyResponse {
        sites: chosen.len(),
        curve: curve
            .iter()
            .enumerate()
            .map(|(i, v)| (i as f64 / SWEEP_PER_DAY as f64, *v))
            .collect(),
        weekly_share: power[0] / total,
        daily_share: power[7 - 1] / total,
        peak_day: peak as f64 / SWEEP_PER_DAY as f64,
    }
}
