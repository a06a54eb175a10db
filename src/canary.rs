//! The seven contract canaries' planted rules, written once: the generator draws
//! relevance from them and `eval`'s oracle reads them back off the inputs it sees.
//!
//! Which entity or memory plays a role is drawn per user (the ids are scrambled at
//! write time), so a model can only pass a canary by learning its pattern: a candidate's
//! role is the `canary_role` column of `candidates.parquet`, and the selector entities of
//! a user are the `selector_*` columns of `turns.parquet`.

use std::f64::consts::TAU;

use serde::Deserialize;

use crate::config::CanaryConfig;
use crate::error::{Error, Result};
use crate::features::Canary;
use crate::manifest::Manifest;

/// The part a candidate memory plays in a contract canary (`candidates.canary_role`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum Role {
    None = 0,
    /// 1: a memory of the weekly-cycle entity X.
    Cycle = 1,
    /// 2: a memory of the decaying entity R.
    Recency = 2,
    /// 3: a memory Y, relevant when the selector Z is focal.
    Selectivity = 3,
    /// 4: the supersession chain, oldest (A), middle (B), newest (C) version.
    ChainOldest = 4,
    ChainMiddle = 5,
    ChainNewest = 6,
    /// 6: a memory of Q, relevant when P is focal.
    Dependency = 7,
    /// 7: a memory of V (cycle × selector T × recency).
    Combined = 8,
}

impl Role {
    pub const ALL: [Role; 9] = [
        Role::None,
        Role::Cycle,
        Role::Recency,
        Role::Selectivity,
        Role::ChainOldest,
        Role::ChainMiddle,
        Role::ChainNewest,
        Role::Dependency,
        Role::Combined,
    ];

    pub fn from_code(code: u8) -> Option<Role> {
        Role::ALL.get(code as usize).copied()
    }

    pub fn code(self) -> u8 {
        self as u8
    }

    pub fn name(self) -> &'static str {
        match self {
            Role::None => "none",
            Role::Cycle => "cycle",
            Role::Recency => "recency",
            Role::Selectivity => "selectivity",
            Role::ChainOldest => "chain_oldest",
            Role::ChainMiddle => "chain_middle",
            Role::ChainNewest => "chain_newest",
            Role::Dependency => "dependency",
            Role::Combined => "combined",
        }
    }

    pub fn is_chain(self) -> bool {
        matches!(
            self,
            Role::ChainOldest | Role::ChainMiddle | Role::ChainNewest
        )
    }
}

/// The selector entities of a user, in the order of the `selector_*` columns.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Selector {
    /// Z: selects the Y memories.
    Z = 0,
    /// W: the contrast entity of the selectivity canary.
    W = 1,
    /// P: activates Q's memories.
    P = 2,
    /// T: the combined canary's selector.
    T = 3,
}

impl Selector {
    pub const ALL: [Selector; 4] = [Selector::Z, Selector::W, Selector::P, Selector::T];

    pub fn column(self) -> &'static str {
        match self {
            Selector::Z => "selector_z",
            Selector::W => "selector_w",
            Selector::P => "selector_p",
            Selector::T => "selector_t",
        }
    }
}

/// What a rule reads at one turn for one candidate.
#[derive(Clone, Copy, Debug)]
pub struct Inputs {
    /// Position in the week in days, Monday 00:00 = 0.
    pub week_position: f64,
    /// Where in the week the user's cycle entity X peaks (days from Monday 00:00; drawn
    /// per user, the `cycle_peak` column of `turns.parquet`).
    pub cycle_peak: f64,
    /// The candidate memory's age in days.
    pub age_days: f64,
    /// Which selectors are focal at the turn.
    pub focal: [bool; 4],
}

/// The planted parameters (from the config in `gen`, from the manifest in `eval`).
#[derive(Clone, Debug, PartialEq)]
pub struct Rules {
    pub cycle_mean: f64,
    pub cycle_amplitude: f64,
    /// X's peak for every user (days from Monday 00:00), for datasets written before the
    /// peak was drawn per user; `None`: each user's own ([`Inputs::cycle_peak`]).
    pub cycle_peak: Option<f64>,
    pub recency_p0: f64,
    pub recency_lambda: f64,
    pub selectivity_on: f64,
    pub selectivity_off: f64,
    /// Newest, middle, oldest version.
    pub chain_levels: [f64; 3],
    pub dependency_on: f64,
    pub dependency_off: f64,
    pub combined_floor: f64,
    pub combined_weekday: f64,
    pub combined_lambda: f64,
}

impl Rules {
    pub fn from_config(c: &CanaryConfig) -> Rules {
        Rules {
            cycle_mean: c.cycle_mean,
            cycle_amplitude: c.cycle_amplitude,
            cycle_peak: None,
            recency_p0: c.recency_p0,
            recency_lambda: c.recency_lambda,
            selectivity_on: c.selectivity_on,
            selectivity_off: c.selectivity_off,
            chain_levels: c.supersession_levels,
            dependency_on: c.dependency_on,
            dependency_off: c.dependency_off,
            combined_floor: c.combined_floor,
            combined_weekday: c.combined_weekday as f64,
            combined_lambda: c.combined_lambda,
        }
    }

    /// The parameters a dataset's manifest records (`None`: it planted no canaries); a
    /// manifest with some of the seven canaries but not all, or a record without one of
    /// its numbers, is an error.
    pub fn from_manifest(m: &Manifest) -> Result<Option<Rules>> {
        #[derive(Deserialize)]
        struct Cycle {
            mean: f64,
            amplitude: f64,
        }
        #[derive(Deserialize)]
        struct Decay {
            p0: f64,
            lambda_per_day: f64,
        }
        #[derive(Deserialize)]
        struct OnOff {
            relevance_on: f64,
            relevance_off: f64,
        }
        #[derive(Deserialize)]
        struct Chain {
            levels_newest_first: [f64; 3],
        }
        #[derive(Deserialize)]
        struct Combined {
            floor: f64,
            weekday: f64,
            lambda_per_day: f64,
        }
        fn needed<T: serde::de::DeserializeOwned>(m: &Manifest, c: Canary) -> Result<T> {
            m.canary(c.name())?.ok_or_else(|| {
                Error::dataset(
                    crate::layout::MANIFEST.as_ref(),
                    format!(
                        "canaries.{} is missing beside canaries.{}",
                        c.name(),
                        Canary::TemporalCycle.name()
                    ),
                )
            })
        }
        let Some(cycle) = m.canary::<Cycle>(Canary::TemporalCycle.name())? else {
            return Ok(None);
        };
        let decay: Decay = needed(m, Canary::RecencyDecay)?;
        let selectivity: OnOff = needed(m, Canary::EntitySelectivity)?;
        let chain: Chain = needed(m, Canary::SupersessionChain)?;
        let dependency: OnOff = needed(m, Canary::CrossEntityDependency)?;
        let combined: Combined = needed(m, Canary::Combined)?;
        Ok(Some(Rules {
            cycle_mean: cycle.mean,
            cycle_amplitude: cycle.amplitude,
            cycle_peak: None,
            recency_p0: decay.p0,
            recency_lambda: decay.lambda_per_day,
            selectivity_on: selectivity.relevance_on,
            selectivity_off: selectivity.relevance_off,
            chain_levels: chain.levels_newest_first,
            dependency_on: dependency.relevance_on,
            dependency_off: dependency.relevance_off,
            combined_floor: combined.floor,
            combined_weekday: combined.weekday,
            combined_lambda: combined.lambda_per_day,
        }))
    }

    /// A weekly cosine peaking at `peak` (days from Monday 00:00):
    /// `mean · (1 + amplitude · cos)`.
    pub fn cycle(mean: f64, amplitude: f64, peak: f64, week_position: f64) -> f64 {
        mean * (1.0 + amplitude * (TAU * (week_position - peak) / 7.0).cos())
    }

    /// Where X peaks at a user whose drawn peak is `own` (see [`Rules::cycle_peak`]).
    pub fn cycle_peak_of(&self, own: f64) -> f64 {
        self.cycle_peak.unwrap_or(own)
    }

    /// The combined canary's peak: noon of its weekday, the same for every user.
    pub fn combined_peak(&self) -> f64 {
        self.combined_weekday + 0.5
    }

    /// The combined canary's three factors, each in [floor, 1]: weekly cycle, selector,
    /// recency.
    pub fn combined_factors(&self, x: &Inputs) -> [f64; 3] {
        let f = self.combined_floor;
        let cyc =
            f + (1.0 - f) * 0.5 * Self::cycle(1.0, 1.0, self.combined_peak(), x.week_position);
        let sel = if x.focal[Selector::T as usize] {
            1.0
        } else {
            f
        };
        let rec = f + (1.0 - f) * (-self.combined_lambda * x.age_days).exp();
        [cyc, sel, rec]
    }

    /// The planted relevance of a candidate in `role` (`None` for an ordinary memory).
    pub fn relevance(&self, role: Role, x: &Inputs) -> Option<f64> {
        Some(match role {
            Role::None => return None,
            Role::Cycle => Self::cycle(
                self.cycle_mean,
                self.cycle_amplitude,
                self.cycle_peak_of(x.cycle_peak),
                x.week_position,
            ),
            Role::Recency => self.recency_p0 * (-self.recency_lambda * x.age_days).exp(),
            Role::Selectivity => {
                if x.focal[Selector::Z as usize] {
                    self.selectivity_on
                } else {
                    self.selectivity_off
                }
            }
            Role::ChainNewest => self.chain_levels[0],
            Role::ChainMiddle => self.chain_levels[1],
            Role::ChainOldest => self.chain_levels[2],
            Role::Dependency => {
                if x.focal[Selector::P as usize] {
                    self.dependency_on
                } else {
                    self.dependency_off
                }
            }
            Role::Combined => 0.95 * self.combined_factors(x).iter().product::<f64>(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn roles_round_trip_through_their_codes() {
        for r in Role::ALL {
            assert_eq!(Role::from_code(r.code()), Some(r));
        }
        assert_eq!(Role::from_code(9), None);
    }

    #[test]
    fn manifest_rules_equal_config_rules() {
        let config = crate::config::Config::default();
        let counts = crate::manifest::Counts::of(0, 0, 0);
        let mut manifest = Manifest::new(
            crate::manifest::Source::World,
            0,
            40,
            0,
            counts,
            Default::default(),
        );
        assert_eq!(Rules::from_manifest(&manifest).unwrap(), None);
        manifest.canaries = crate::datagen::canary_manifest(&config);
        assert_eq!(
            Rules::from_manifest(&manifest).unwrap(),
            Some(Rules::from_config(&config.canaries))
        );
        manifest.canaries.remove(Canary::Combined.name());
        let err = Rules::from_manifest(&manifest).unwrap_err().to_string();
        assert!(err.contains("canaries.combined is missing"), "{err}");
    }

    #[test]
    fn cycle_peaks_at_noon_of_its_weekday() {
        let r = Rules::from_config(&CanaryConfig::default());
        let peak = 3.6;
        let at = |w: f64| {
            r.relevance(
                Role::Cycle,
                &Inputs {
                    week_position: w,
                    cycle_peak: peak,
                    age_days: 0.0,
                    focal: [false; 4],
                },
            )
            .unwrap()
        };
        assert!(at(peak) > at(peak + 0.5) && at(peak) > at(peak - 0.5));
        assert!(at(peak) >= 3.4 * at(peak + 3.0));
    }
}
