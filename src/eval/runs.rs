//! The runs given to `eval`: each checked against the dataset (its content width, the
//! dataset it was trained on, its split), grouped by system, and the primary system
//! chosen among them.

use std::collections::BTreeMap;
use std::path::PathBuf;

use super::options::EvalOptions;
use crate::data::DatasetReader;
use crate::data::split::Cutoffs;
use crate::error::{Error, Result};
use crate::model::scorer::Variant;
use crate::run::{RunState, dataset_fingerprint, read_run_state};

/// The runs given to eval, each checked against the dataset, and the split their test
/// cases come from.
pub(super) struct Runs {
    pub(super) states: Vec<(PathBuf, RunState)>,
    /// The dataset's candidates SHA-256.
    pub(super) sha: String,
    /// The dataset's own split (at the default quantiles).
    pub(super) own_split: Cutoffs,
    /// The split of the test cases: the runs' (which all share it), or with `transfer`
    /// the dataset's own.
    pub(super) split: Cutoffs,
    /// Runs grouped by system: the model and its departures from the defaults
    /// (`mamba+d_state=4`), the datasets mixed into its training (`mamba+mix=1a2b3c4d`,
    /// TSTR's synthetic + real arm), and for TSTR the dataset it was trained on
    /// (`mamba@1a2b3c4d` is a mamba trained on another dataset).
    pub(super) groups: BTreeMap<String, Vec<usize>>,
}

impl Runs {
    /// Every run must come from this dataset and share one test cut-off; with `transfer`
    /// (TSTR) runs trained on other datasets are evaluated on this one's own test split.
    pub(super) fn check(reader: &DatasetReader, opts: &EvalOptions) -> Result<Runs> {
        let outline = &reader.outline;
        let sha = dataset_fingerprint(outline);
        let mut states: Vec<(PathBuf, RunState)> = Vec::new();
        let own_split = crate::data::split::own_cutoffs(outline);
        for run in &opts.runs {
            let st = read_run_state(run)?;
            // Trained elsewhere with this dataset mixed in: its turns reached training under
            // another split than the one evaluated here.
            if st.dataset_sha != sha && st.mixed.iter().any(|m| m.dataset_sha == sha) {
                return Err(Error::Mismatch(format!(
                    "{}: {} was mixed into its training; evaluate it on its own dataset or another one",
                    run.display(),
                    opts.data.display()
                )));
            }
            if st.model.reads_content() && st.model.content_dim != outline.embedding_dim {
                return Err(Error::Mismatch(format!(
                    "{}: the model reads {}-dimensional content embeddings, {} has {}: train it on data of that width ({})",
                    run.display(),
                    st.model.content_dim,
                    opts.data.display(),
                    outline.embedding_dim,
                    crate::config::content_width_remedy(outline.embedding_dim)
                )));
            }
            if st.dataset_sha != sha {
                if !opts.transfer {
                    return Err(Error::Mismatch(format!(
                        "{}: trained on another dataset (candidates SHA-256 {}…, {} has {}…); pass --transfer to evaluate it on this one (TSTR)",
                        run.display(),
                        &st.dataset_sha.get(..12).unwrap_or(""),
                        opts.data.display(),
                        &sha.get(..12).unwrap_or("")
                    )));
                }
            } else if opts.transfer
                && (st.cutoffs.test != own_split.test || st.cutoffs.random != own_split.random)
            {
                return Err(Error::Mismatch(format!(
                    "{}: its test split is not this dataset's own (90th percentile, or its random partition)",
                    run.display()
                )));
            }
            if !opts.transfer
                && let Some((r0, first)) = states.first()
                && first.cutoffs != st.cutoffs
            {
                return Err(Error::Mismatch(format!(
                    "{} and {} use different split cut-offs: the test cases would differ",
                    r0.display(),
                    run.display()
                )));
            }
            states.push((run.clone(), st));
        }
        let split = if opts.transfer {
            own_split
        } else {
            states[0].1.cutoffs
        };
        let mut groups: BTreeMap<String, Vec<usize>> = BTreeMap::new();
        for (i, (_, st)) in states.iter().enumerate() {
            let mut name = st.train.system_name();
            for m in &st.mixed {
                name += &format!("+mix={}", m.dataset_sha.get(..8).unwrap_or(""));
                // Another share is another system.
                if m.share != crate::config::MIX_SHARE {
                    name += &format!(":{}", m.share);
                }
            }
            if st.dataset_sha != sha {
                name += &format!("@{}", st.dataset_sha.get(..8).unwrap_or(""));
            }
            groups.entry(name).or_default().push(i);
        }
        Ok(Runs {
            states,
            sha,
            own_split,
            split,
            groups,
        })
    }

    /// The primary system's name and its model: the one named, else the model asked for
    /// (Mamba, else the first temporal model given): its runs at their defaults trained
    /// on this dataset if there are any, else the first group of it trained here (with
    /// other settings), else the first group trained elsewhere.
    pub(super) fn primary(&self, opts: &EvalOptions) -> Result<(String, Variant)> {
        let states = &self.states;
        let groups = &self.groups;
        if let Some(n) = &opts.primary_system
            && !groups.contains_key(n)
        {
            return Err(Error::Usage(format!(
                "--primary-system {n}: no run of that system was given (systems: {})",
                groups.keys().cloned().collect::<Vec<_>>().join(", ")
            )));
        }
        let named = opts.primary_system.as_ref();
        let wanted = match (named, opts.primary) {
            (Some(n), _) => states[groups[n][0]].1.model.variant,
            (None, Some(v)) => v,
            (None, None) => {
                let has = |v: Variant| states.iter().any(|(_, st)| st.model.variant == v);
                if has(Variant::Mamba) {
                    Variant::Mamba
                } else {
                    Variant::ALL
                        .into_iter()
                        .find(|&v| v.is_temporal() && has(v))
                        .unwrap_or(states[0].1.model.variant)
                }
            }
        };
        let of_wanted = |k: &&String| states[groups[*k][0]].1.model.variant == wanted;
        // Trained on this dataset alone: neither a transfer nor a mixed arm.
        let here = |k: &&String| !k.contains('@') && !k.contains("+mix=");
        if let Some(n) = named {
            return Ok((n.clone(), wanted));
        }
        if groups.contains_key(wanted.name()) {
            return Ok((wanted.name().to_string(), wanted));
        }
        match groups
            .keys()
            .filter(of_wanted)
            .find(here)
            .or_else(|| groups.keys().find(of_wanted))
        {
            Some(k) => Ok((k.clone(), wanted)),
            None => Err(Error::Usage(format!(
                "--primary {}: no run of that model was given",
                wanted.name()
            ))),
        }
    }

    /// The validation and training turns of this dataset: the cut-offs of a run trained
    /// on it, else (only transfer runs) its own percentiles.
    pub(super) fn training_cutoffs(&self) -> Cutoffs {
        self.states
            .iter()
            .find(|(_, st)| st.dataset_sha == self.sha)
            .map(|(_, st)| st.cutoffs)
            .unwrap_or(self.own_split)
    }
}
