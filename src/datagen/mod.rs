//! `ssmkit gen`: the world simulator with planted ground truth, streamed to Parquet.
//!
//! Users are simulated in batches, in parallel; each user draws from its own random
//! streams derived from the seed and its id, so the output does not depend on the batch
//! size or the number of threads. Per-column noise scales come from the clean variance of
//! the first `noise.calibration_users` users and are recorded in the manifest.

pub mod calendar;
pub mod import;
pub mod noise;
pub mod persistence;
pub mod poc;
pub mod schedule;
pub mod sim;
pub mod tables;
pub mod world;
pub mod writer;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use indicatif::{ProgressBar, ProgressStyle};
use rand::{RngExt, SeedableRng};
use rand_chacha::ChaCha8Rng;
use rayon::prelude::*;
use serde_json::{Value, json};

use crate::atomic::StagedDir;
use crate::canary::{Role, Selector};
use crate::config::{Config, Preset};
use crate::error::Result;
use crate::features::{Canary, FEATURE_DIM, HardNegative};
use crate::manifest::{self, FileRecord, Manifest, NoiseRecord, Source};
use schedule::UserSpec;
use tables::{Append, Tables};
use writer::TableWriter;

/// Independent random streams of a user.
#[derive(Clone, Copy)]
pub enum Stream {
    Spec = 1,
    World = 2,
    Sim = 3,
    Noise = 4,
    /// Per-user canary parameters (the cycle's peak).
    Roles = 5,
    /// Label flips (the feature noise is [`Stream::Noise`], drawn again when read).
    Labels = 6,
}

/// The random stream `stream` of user `user` under `seed`.
pub fn rng_for(seed: u64, user: u32, stream: Stream) -> ChaCha8Rng {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    rng.set_stream(((user as u64) << 8) | stream as u64);
    rng
}

/// Options of one `gen` invocation that are not part of the config.
#[derive(Clone, Debug, Default)]
pub struct GenOptions {
    pub out: PathBuf,
    pub force: bool,
    pub quiet: bool,
    /// Store the observed (noisy) feature columns and `mask`. Without it they are left
    /// out (Phase 0's candidates table: 5.1 GB instead of 18), and readers rebuild them
    /// from the clean columns ([`noise::observe`]).
    pub materialize: bool,
}

/// What a finished `gen` reports.
#[derive(Clone, Debug)]
pub struct Summary {
    pub out: PathBuf,
    pub users: u64,
    pub turns: u64,
    pub candidates: u64,
    /// Imported timestamped turns without a `user_id`: each became a user of one turn.
    pub anonymous: u64,
}

/// Splits users among curriculum stages (largest remainder, then a seeded shuffle) and
/// draws each user's length.
pub fn user_specs(config: &Config) -> Vec<UserSpec> {
    let n = config.world.users as usize;
    let cur = &config.curriculum;
    let mut stage_of = vec![0u8; n];
    if cur.enabled {
        let quotas: Vec<f64> = cur.stages.iter().map(|s| s.share * n as f64).collect();
        let mut counts: Vec<usize> = quotas.iter().map(|q| q.floor() as usize).collect();
        let mut order: Vec<usize> = (0..counts.len()).collect();
        order.sort_by(|&a, &b| {
            (quotas[b] - quotas[b].floor()).total_cmp(&(quotas[a] - quotas[a].floor()))
        });
        let left = n - counts.iter().sum::<usize>();
        for &i in order.iter().cycle().take(left) {
            counts[i] += 1;
        }
        let mut ids: Vec<usize> = (0..n).collect();
        let mut rng = rng_for(config.seed, u32::MAX, Stream::Spec);
        for i in (1..n).rev() {
            let j = rng.random_range(0..=i);
            ids.swap(i, j);
        }
        let mut it = ids.into_iter();
        for (s, &c) in counts.iter().enumerate() {
            for id in it.by_ref().take(c) {
                stage_of[id] = s as u8 + 1;
            }
        }
    }
    (0..n as u32)
        .map(|u| {
            let stage = stage_of[u as usize];
            let mut rng = rng_for(config.seed, u, Stream::Spec);
            let (range, hard) = if stage == 0 {
                (config.timeline.turns, config.candidates.hard_negative_share)
            } else {
                let s = &cur.stages[stage as usize - 1];
                (s.turns, s.hard_negative_share)
            };
            let turns = match config.preset {
                Preset::World | Preset::Persistence => rng.random_range(range[0]..=range[1]),
                Preset::Poc => 1,
            };
            UserSpec {
                user_id: u,
                stage,
                turns,
                hard_negative_share: hard,
            }
        })
        .collect()
}

/// The SNR of a user: its curriculum stage's, or the dataset's.
pub fn user_snr(config: &Config, spec: &UserSpec) -> Option<f64> {
    match spec.stage {
        0 => config.noise.snr_db,
        s => Some(config.curriculum.stages[s as usize - 1].snr_db),
    }
}

fn simulate_user(config: &Config, spec: &UserSpec) -> Tables {
    let mut world_rng = rng_for(config.seed, spec.user_id, Stream::World);
    let mut rng = rng_for(config.seed, spec.user_id, Stream::Sim);
    match config.preset {
        Preset::World => sim::simulate(config, spec, &mut world_rng, &mut rng),
        Preset::Poc => poc::simulate(config, spec, &mut rng),
        Preset::Persistence => persistence::simulate(config, spec, &mut rng),
    }
}

fn progress(n: u64, quiet: bool, what: &str) -> ProgressBar {
    if quiet {
        return ProgressBar::hidden();
    }
    let bar = ProgressBar::new(n);
    bar.set_style(
        ProgressStyle::with_template(
            "{msg} [{elapsed_precise}] {wide_bar} {pos}/{len} {per_sec} eta {eta}",
        )
        .expect("valid template"),
    );
    bar.set_message(what.to_string());
    bar
}

/// Running counts for the manifest.
#[derive(Default)]
struct Counts {
    turns: u64,
    candidates: u64,
    memories: u64,
    paths: u64,
    relevant: u64,
    clean_relevant: u64,
    hard: [u64; 5],
    canary_rows: [u64; 14],
    noise: noise::NoiseCounts,
}

impl Counts {
    fn add(&mut self, t: &Tables) {
        let c = &t.candidates;
        self.turns += t.turns.user_id.len() as u64;
        self.candidates += c.user_id.len() as u64;
        self.memories += t.memories.user_id.len() as u64;
        self.paths += t.paths.user_id.len() as u64;
        self.relevant += c.label.iter().map(|&l| l as u64).sum::<u64>();
        self.clean_relevant += c.clean_label.iter().map(|&l| l as u64).sum::<u64>();
        for &h in &c.hard_negative {
            self.hard[h as usize] += 1;
        }
        for &m in &c.canary {
            for (i, n) in self.canary_rows.iter_mut().enumerate() {
                *n += ((m >> i) & 1) as u64;
            }
        }
    }
}

/// Generates the dataset described by `config` into `opts.out`.
pub fn generate(config: &Config, opts: &GenOptions) -> Result<Summary> {
    config.validate()?;
    let staged = StagedDir::new(&opts.out, opts.force)?;
    let compression = config.output.parquet_compression()?;
    let specs = user_specs(config);
    let n = specs.len();
    let dim = config.world.embedding_dim as usize;
    let bar = progress(n as u64, opts.quiet, "gen");
    let mut counts = Counts::default();
    let calibration = (config.noise.calibration_users as usize).min(n);
    let batch = (config.output.users_per_batch as usize).max(1);
    let mut variance = [0.0; FEATURE_DIM];
    // A writer thread encodes and compresses batch i while batch i + 1 is simulated.
    let (send, recv) = std::sync::mpsc::sync_channel::<Vec<Tables>>(1);
    let files = std::thread::scope(|scope| -> Result<BTreeMap<String, FileRecord>> {
        let dir = staged.tmp.clone();
        let writer = scope.spawn(move || -> Result<BTreeMap<String, FileRecord>> {
            let mut out = Writers::new(&dir, compression, opts.materialize);
            for users in recv {
                out.write(&users, dim)?;
            }
            out.finish(dim)
        });
        let mut start = 0;
        while start < n {
            let end = if start == 0 {
                batch.max(calibration)
            } else {
                start + batch
            }
            .min(n);
            let mut users: Vec<Tables> = specs[start..end]
                .par_iter()
                .map(|s| simulate_user(config, s))
                .collect();
            if start == 0 {
                variance =
                    noise::column_variance(users[..calibration].iter().map(|t| &t.candidates));
            }
            let noise_counts: Vec<noise::NoiseCounts> = users
                .par_iter_mut()
                .zip(&specs[start..end])
                .map(|(t, spec)| {
                    let sigma = noise::sigma_for(&variance, user_snr(config, spec));
                    let streams = [
                        &mut rng_for(config.seed, spec.user_id, Stream::Noise),
                        &mut rng_for(config.seed, spec.user_id, Stream::Labels),
                    ];
                    let features = opts.materialize;
                    noise::apply(&mut t.candidates, &sigma, &config.noise, features, streams)
                })
                .collect();
            for (t, nc) in users.iter().zip(noise_counts) {
                counts.add(t);
                counts.noise += nc;
            }
            if send.send(users).is_err() {
                break; // the writer failed; its error is returned below
            }
            bar.inc((end - start) as u64);
            start = end;
        }
        drop(send);
        writer.join().expect("writer thread panicked")
    })?;
    bar.finish_and_clear();
    let observed_at_read = !opts.materialize;
    manifest(config, &specs, &variance, &counts, files, observed_at_read).write(&staged.tmp)?;
    let path = staged.tmp.join("config.toml");
    std::fs::write(&path, config.to_toml()).map_err(|e| crate::error::Error::io(&path, e))?;
    let out = staged.commit()?;
    Ok(Summary {
        out,
        users: n as u64,
        turns: counts.turns,
        candidates: counts.candidates,
        anonymous: 0,
    })
}

/// Appends one table of every user in `parts` to `writer`: the users' rows merged in order,
/// made a frame by `frame`.
fn write_merged<T: Append>(
    writer: &mut TableWriter,
    parts: &[Tables],
    table: fn(&Tables) -> &T,
    frame: impl FnOnce(T) -> polars::prelude::PolarsResult<polars::prelude::DataFrame>,
) -> Result<()> {
    writer.write(&frame(T::merged(parts.iter().map(table)))?)
}

/// The four table writers of a dataset.
pub struct Writers {
    turns: TableWriter,
    candidates: TableWriter,
    memories: TableWriter,
    paths: TableWriter,
    /// Whether the candidates' observed features and `mask` are stored.
    observed: bool,
}

impl Writers {
    pub fn new(
        dir: &Path,
        compression: polars::prelude::ParquetCompression,
        observed: bool,
    ) -> Writers {
        Writers {
            observed,
            turns: TableWriter::new(dir.join(crate::layout::TURNS), compression),
            candidates: TableWriter::new(dir.join(crate::layout::CANDIDATES), compression),
            memories: TableWriter::new(dir.join(crate::layout::MEMORIES), compression),
            paths: TableWriter::new(dir.join(crate::layout::PATHS), compression),
        }
    }

    /// Appends the rows of `parts` (users in id order) to the four tables. Each table is
    /// merged, encoded and written beside the others, on the thread pool: one thread
    /// writing the tables one after another was what `gen` waited on.
    pub fn write(&mut self, parts: &[Tables], dim: usize) -> Result<()> {
        let observed = self.observed;
        let ((c, t), (m, p)) = rayon::join(
            || {
                rayon::join(
                    || {
                        write_merged(
                            &mut self.candidates,
                            parts,
                            |t| &t.candidates,
                            |c| c.into_frame(observed),
                        )
                    },
                    || write_merged(&mut self.turns, parts, |t| &t.turns, |t| t.into_frame(dim)),
                )
            },
            || {
                rayon::join(
                    || {
                        write_merged(
                            &mut self.memories,
                            parts,
                            |t| &t.memories,
                            |m| m.into_frame(dim),
                        )
                    },
                    || write_merged(&mut self.paths, parts, |t| &t.paths, |p| p.into_frame()),
                )
            },
        );
        c.and(t).and(m).and(p)
    }

    /// Closes the files; returns each file's rows, bytes and SHA-256.
    pub fn finish(self, dim: usize) -> Result<BTreeMap<String, FileRecord>> {
        let empty = Tables::default();
        let written = [
            self.turns.finish(&empty.turns.clone().into_frame(dim)?)?,
            self.candidates
                .finish(&empty.candidates.clone().into_frame(self.observed)?)?,
            self.memories
                .finish(&empty.memories.clone().into_frame(dim)?)?,
            self.paths.finish(&empty.paths.into_frame()?)?,
        ];
        Ok(crate::layout::TABLES
            .iter()
            .zip(written)
            .map(|(name, w)| {
                let record = FileRecord {
                    rows: w.rows,
                    bytes: w.bytes,
                    sha256: w.sha256,
                };
                (name.to_string(), record)
            })
            .collect())
    }
}

/// The planted patterns' parameters, from which `eval` builds probes.
pub fn canary_manifest(config: &Config) -> BTreeMap<String, Value> {
    let rules = &config.canaries;
    let p = &config.patterns;
    let mut m = BTreeMap::new();
    let mut put = |c: Canary, v: Value| {
        let mut v = v;
        v["bit"] = json!(c.bit());
        m.insert(c.name().to_string(), v);
    };
    if rules.enabled && config.preset == Preset::World {
        put(
            Canary::TemporalCycle,
            json!({
                "role": Role::Cycle.code(), "memories": "3 per user",
                "peak": "per user: turns.cycle_peak, days from Monday 00:00 (weekday uniform, hour uniform in peak_hours)",
                "peak_hours": rules.cycle_peak_hours,
                "relevance": "mean * (1 + amplitude * cos(2π (w - peak) / 7)), w = position in the week in days",
                "mean": rules.cycle_mean, "amplitude": rules.cycle_amplitude,
                "criterion": "relevance(X at the user's peak) > 2 x relevance(X three days later)",
            }),
        );
        put(
            Canary::RecencyDecay,
            json!({
                "role": Role::Recency.code(), "memories": "every memory of the entity (new ones appear at session starts)",
                "relevance": "p0 * exp(-lambda * age_days)", "lambda_per_day": rules.recency_lambda, "p0": rules.recency_p0,
                "criterion": "decay rate fitted to predictions within 20% of lambda",
            }),
        );
        put(
            Canary::EntitySelectivity,
            json!({
                "role": Role::Selectivity.code(), "memories": "2 per user", "selector": Selector::Z.column(),
                "contrast": Selector::W.column(), "relevance_on": rules.selectivity_on, "relevance_off": rules.selectivity_off,
                "focal_prob": rules.selectivity_focal_prob,
                "criterion": "relevance(Y | Z focal) > 3 x relevance(Y | W focal)",
            }),
        );
        put(
            Canary::SupersessionChain,
            json!({
                "roles_oldest_to_newest": [Role::ChainOldest.code(), Role::ChainMiddle.code(), Role::ChainNewest.code()], "levels_newest_first": rules.supersession_levels,
                "created": "A before the timeline, B at 30% and C at 60% of the user's turns",
                "criterion": "relevance C > B > A at all test points",
            }),
        );
        put(
            Canary::Burst,
            json!({
                "burst_prob_per_turn": p.burst_prob_per_turn, "burst_turns": p.burst_turns,
                "post_burst_turns": rules.post_burst_turns, "relevance": rules.burst_relevance,
                "entity": "drawn per burst; turns tagged with this bit are the post-burst queries",
                "criterion": "Recall@10 on post-burst queries > 0.8",
            }),
        );
        put(
            Canary::CrossEntityDependency,
            json!({
                "active": Selector::P.column(), "role": Role::Dependency.code(), "memories": "3 per user",
                "relevance_on": rules.dependency_on, "relevance_off": rules.dependency_off, "focal_prob": rules.dependency_focal_prob,
                "criterion": "correlation(P focal, relevance of Q's memories) > 0.7",
            }),
        );
        put(
            Canary::Combined,
            json!({
                "role": Role::Combined.code(), "selector": Selector::T.column(), "weekday": rules.combined_weekday,
                "floor": rules.combined_floor, "lambda_per_day": rules.combined_lambda, "focal_prob": rules.combined_focal_prob,
                "relevance": "0.95 * cycle * selector * recency, each factor in [floor, 1]",
                "criterion": "removing any one signal drops accuracy by more than 10%",
            }),
        );
    }
    if config.preset == Preset::Poc {
        for (c, rule) in Canary::POC.iter().zip(poc::PATTERN_RULES) {
            put(
                *c,
                json!({
                    "rule": rule, "label_if_rule": 1.0, "label_otherwise": 0.0,
                    "share_of_turns": config.poc.pattern_share / 7.0,
                }),
            );
        }
    } else if config.preset == Preset::World && rules.poc_share > 0.0 {
        for (c, rule) in Canary::POC.iter().zip(poc::RULES) {
            put(
                *c,
                json!({
                    "rule": rule, "relevance_if_rule": poc::RULE_ON, "relevance_otherwise": poc::RULE_OFF,
                    "share_of_turns": rules.poc_share / 7.0,
                }),
            );
        }
    }
    m
}

fn manifest(
    config: &Config,
    specs: &[UserSpec],
    variance: &[f64; FEATURE_DIM],
    counts: &Counts,
    files: BTreeMap<String, FileRecord>,
    observed_at_read: bool,
) -> Manifest {
    let mut stage_users = vec![0u64; config.curriculum.stages.len() + 1];
    for s in specs {
        stage_users[s.stage as usize] += 1;
    }
    let mut sigma = BTreeMap::new();
    for (i, users) in stage_users.iter().enumerate() {
        if *users > 0 {
            let spec = UserSpec {
                user_id: 0,
                stage: i as u8,
                turns: 0,
                hard_negative_share: 0.0,
            };
            sigma.insert(
                i.to_string(),
                noise::sigma_for(variance, user_snr(config, &spec)).to_vec(),
            );
        }
    }
    let hard = HardNegative::KINDS
        .iter()
        .map(|k| (k.name().to_string(), counts.hard[*k as usize]))
        .collect();
    let canary_rows = Canary::all()
        .map(|c| (c.name().to_string(), counts.canary_rows[c as usize]))
        .collect();
    let counted = manifest::Counts {
        users: specs.len() as u64,
        turns: counts.turns,
        candidates: counts.candidates,
        users_by_stage: Some(stage_users),
        memories: Some(counts.memories),
        path_hops: Some(counts.paths),
        relevant_labels: Some(counts.relevant),
        clean_relevant_labels: Some(counts.clean_relevant),
        hard_negatives: Some(hard),
        canary_rows: Some(canary_rows),
    };
    let poc = config.preset == Preset::Poc;
    Manifest {
        // The poc preset's queries have no order in time: they are split at random.
        time_axis: !poc,
        // The poc preset's relevance column holds its graded labels.
        graded_labels: poc,
        chance_names: if poc {
            vec![poc::RANDOM_NAME.to_string()]
        } else {
            Vec::new()
        },
        config: Some(config.clone()),
        canaries: canary_manifest(config),
        noise: Some(NoiseRecord {
            snr_db: config.noise.snr_db,
            column_variance: variance.to_vec(),
            calibration_users: (config.noise.calibration_users as usize).min(specs.len()),
            sigma_by_stage: sigma,
            label_flip: config.noise.label_flip,
            corruption: config.noise.corruption,
            missing: config.noise.missing,
            applied: counts.noise,
            observed_at_read,
        }),
        ..Manifest::new(
            Source::World,
            config.seed,
            config.candidates.k as usize,
            config.world.embedding_dim as usize,
            counted,
            files,
        )
    }
}
