//! The JSONL importer: the PoC's scenario format and real exported sessions,
//! into the same Parquet layout, so `train` and `eval` run on them unchanged.
//!
//! Each line is one JSON object with `features` (n vectors of 17 or 24 numbers) and
//! `labels` (n numbers in [0, 1]):
//! - a PoC scenario (`{"features": …, "labels": …, "name": …}`) becomes one user with one
//!   turn;
//! - an exported turn also has `user_id` and `timestamp` (Unix seconds), and optionally
//!   `session_id`, `memory_ids` and `entity_ids`; a user's turns are ordered by timestamp.
//!   A file's `user_id`s are all strings or all numbers.
//! - either line may carry content embeddings: `content` (n vectors of E numbers, one per
//!   candidate) and optionally `query` (E numbers; zeros without). Either every line has
//!   `content` or none has; E is the same on every line and the manifest records it as
//!   `embedding_dim`. Content belongs to a memory: a memory id shown twice in a user's
//!   turns must carry the same vector.
//!
//! Vectors of 17 numbers get the path features (dims 17–23) marked missing in `mask`.
//! Imported data has no clean truth: `clean_*` equal the observed values and `relevance`
//! is the graded label; a candidate is relevant (`label` 1) when its label exceeds 0.5,
//! as the PoC counts a hit. `name` is kept as the turn's `name` column. Either every line
//! has a timestamp (sessions: split in time) or none has (scenarios: the manifest says
//! `"time_axis": false` and the queries are split at random).

use std::collections::HashMap;
use std::io::{BufRead, BufReader};
use std::path::Path;

use serde::Deserialize;

use super::tables::Tables;
use super::{GenOptions, Summary, Writers};
use crate::atomic::StagedDir;
use crate::error::{Error, Result};
use crate::features::{BASE_DIM, FEATURE_DIM, FEATURE_NAMES, feat};
use crate::layout::sha256_file;
use crate::manifest::{Counts, IMPORT_MEMORY_SLOTS, InputFile, Manifest, Source};

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Line {
    features: Vec<Vec<f64>>,
    labels: Vec<f64>,
    /// The scenario's name: the turn's `name` column.
    #[serde(default)]
    name: Option<String>,
    #[serde(default)]
    user_id: Option<serde_json::Value>,
    #[serde(default)]
    session_id: Option<serde_json::Value>,
    #[serde(default)]
    timestamp: Option<f64>,
    #[serde(default)]
    memory_ids: Option<Vec<u32>>,
    #[serde(default)]
    entity_ids: Option<Vec<u32>>,
    #[serde(default)]
    content: Option<Vec<Vec<f64>>>,
    #[serde(default)]
    query: Option<Vec<f64>>,
    #[serde(default, rename = "turn")]
    _turn: Option<u64>,
}

struct ParsedTurn {
    line: usize,
    name: String,
    timed: bool,
    session: String,
    timestamp: i64,
    features: Vec<[f32; FEATURE_DIM]>,
    mask: u32,
    labels: Vec<f64>,
    memory_ids: Option<Vec<u32>>,
    entity_ids: Option<Vec<u32>>,
    /// One content vector per candidate, each of the same width.
    content: Option<Vec<Vec<f32>>>,
    query: Option<Vec<f32>>,
}

/// The widest content embedding an import takes (as `[world] embedding_dim`).
const MAX_CONTENT_DIM: usize = 1024;

/// `v` as 32-bit numbers, each finite (`what` names the vector in the error).
fn finite_vector(v: &[f64], what: &str) -> std::result::Result<Vec<f32>, String> {
    v.iter()
        .enumerate()
        .map(|(d, &x)| {
            let y = x as f32;
            if y.is_finite() {
                Ok(y)
            } else {
                Err(format!(
                    "value {d} of {what} is {x}: not a finite 32-bit number"
                ))
            }
        })
        .collect()
}

/// The line's content vectors and query, checked: one vector per candidate, all of one
/// width in 1..=[`MAX_CONTENT_DIM`], the query of that width; no query without content.
#[allow(clippy::type_complexity)]
fn content_of(
    line: &Line,
    n: usize,
) -> std::result::Result<(Option<Vec<Vec<f32>>>, Option<Vec<f32>>), String> {
    let Some(content) = &line.content else {
        return match line.query {
            Some(_) => Err(
                "`query` without `content`: a query embedding needs the candidates' content".into(),
            ),
            None => Ok((None, None)),
        };
    };
    if content.len() != n {
        return Err(format!(
            "{} content vectors for {n} feature vectors",
            content.len()
        ));
    }
    let width = content[0].len();
    if width == 0 || width > MAX_CONTENT_DIM {
        return Err(format!(
            "content vectors have {width} numbers; expected 1 to {MAX_CONTENT_DIM}"
        ));
    }
    let mut vectors = Vec::with_capacity(n);
    for (i, v) in content.iter().enumerate() {
        if v.len() != width {
            return Err(format!(
                "content vector {i} has {} numbers, vector 0 has {width}",
                v.len()
            ));
        }
        vectors.push(finite_vector(v, &format!("content vector {i}"))?);
    }
    let query = match &line.query {
        Some(q) if q.len() != width => {
            return Err(format!(
                "`query` has {} numbers, the content vectors {width}",
                q.len()
            ));
        }
        Some(q) => Some(finite_vector(q, "`query`")?),
        None => None,
    };
    Ok((Some(vectors), query))
}

impl ParsedTurn {
    /// Candidate `i`'s memory id: as given, else its place in the turn.
    fn memory_id(&self, i: usize) -> u32 {
        self.memory_ids.as_ref().map_or(i as u32, |m| m[i])
    }

    /// Candidate `i`'s entity id: as given, else 0.
    fn entity_id(&self, i: usize) -> u32 {
        self.entity_ids.as_ref().map_or(0, |e| e[i])
    }
}

fn key(v: &serde_json::Value) -> String {
    match v {
        serde_json::Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

/// One line: its user (the key, and whether the id was a string) and its turn.
fn parse_line(
    path: &Path,
    line_no: usize,
    text: &str,
) -> Result<(Option<(String, bool)>, ParsedTurn)> {
    let err = |msg: String| Error::Jsonl {
        path: path.to_path_buf(),
        line: line_no,
        msg,
    };
    let not_valid = |e: String| err(format!("not a valid record: {e}"));
    let value = serde_json::from_str(text).map_err(|e| not_valid(e.to_string()))?;
    let line: Line = crate::runtime::jsonl::from_value_named(value).map_err(not_valid)?;
    let n = line.features.len();
    if n == 0 {
        return Err(err("`features` is empty".into()));
    }
    if n > 256 {
        return Err(err(format!("{n} candidates; at most 256 per turn")));
    }
    if line.labels.len() != n {
        return Err(err(format!(
            "{} labels for {n} feature vectors",
            line.labels.len()
        )));
    }
    let width = line.features[0].len();
    if width != BASE_DIM && width != FEATURE_DIM {
        return Err(err(format!(
            "feature vectors have {width} numbers; expected {BASE_DIM} or {FEATURE_DIM}"
        )));
    }
    let mut features = Vec::with_capacity(n);
    for (i, v) in line.features.iter().enumerate() {
        if v.len() != width {
            return Err(err(format!(
                "feature vector {i} has {} numbers, vector 0 has {width}",
                v.len()
            )));
        }
        let mut x = [0f32; FEATURE_DIM];
        for (d, &val) in v.iter().enumerate() {
            if !(val as f32).is_finite() {
                return Err(err(format!(
                    "feature {} of vector {i} is {val}: not a finite 32-bit number",
                    FEATURE_NAMES[d]
                )));
            }
            x[d] = val as f32;
        }
        features.push(x);
    }
    for (i, &l) in line.labels.iter().enumerate() {
        if !(0.0..=1.0).contains(&l) {
            return Err(err(format!("label {i} is {l}, not in [0, 1]")));
        }
    }
    // The layout counts a turn's relevant candidates in one byte.
    let relevant = line.labels.iter().filter(|&&l| l > 0.5).count();
    if relevant > u8::MAX as usize {
        return Err(err(format!(
            "{relevant} relevant candidates (label > 0.5); at most {} per turn",
            u8::MAX
        )));
    }
    for (what, ids) in [
        ("memory_ids", &line.memory_ids),
        ("entity_ids", &line.entity_ids),
    ] {
        if let Some(ids) = ids
            && ids.len() != n
        {
            return Err(err(format!("{} {what} for {n} feature vectors", ids.len())));
        }
    }
    let (content, query) = content_of(&line, n).map_err(err)?;
    let mask = if width == BASE_DIM {
        ((1u32 << FEATURE_DIM) - 1) & !((1u32 << BASE_DIM) - 1)
    } else {
        0
    };
    if let Some(ts) = line.timestamp
        && !(ts.is_finite() && ts.abs() < 1e13)
    {
        return Err(err(format!("timestamp {ts} is not Unix seconds")));
    }
    let user = match (&line.user_id, line.timestamp) {
        // `1.0` or `1e0` beside `1` would otherwise read as another user.
        (Some(serde_json::Value::Number(n)), Some(_)) if !(n.is_u64() || n.is_i64()) => {
            return Err(err(format!(
                "`user_id` is {n}: a numeric user id must be a whole number"
            )));
        }
        (Some(u @ (serde_json::Value::String(_) | serde_json::Value::Number(_))), Some(_)) => {
            Some((key(u), u.is_string()))
        }
        (Some(u), Some(_)) => {
            return Err(err(format!(
                "`user_id` is {u}: expected a string or a number"
            )));
        }
        (Some(_), None) => return Err(err("`user_id` given without `timestamp`".into())),
        (None, _) => None,
    };
    Ok((
        user,
        ParsedTurn {
            line: line_no,
            name: line.name.clone().unwrap_or_default(),
            timed: line.timestamp.is_some(),
            session: line.session_id.as_ref().map(key).unwrap_or_default(),
            timestamp: line.timestamp.unwrap_or(0.0) as i64,
            features,
            mask,
            labels: line.labels,
            memory_ids: line.memory_ids,
            entity_ids: line.entity_ids,
            content,
            query,
        },
    ))
}

/// Refuses a `user_id` that is a string (`string`) where an earlier one was a number, or
/// the reverse: `"7"` and `7` would otherwise read as one user. `first` is the first id's
/// type and line number.
fn one_id_type(
    path: &Path,
    line: usize,
    string: bool,
    first: &mut Option<(bool, usize)>,
) -> Result<()> {
    let name = |s: bool| if s { "a string" } else { "a number" };
    match *first {
        None => *first = Some((string, line)),
        Some((s, at)) if s != string => {
            return Err(Error::Jsonl {
                path: path.to_path_buf(),
                line,
                msg: format!(
                    "`user_id` is {} but {} on line {at}: a file uses one type of user id",
                    name(string),
                    name(s)
                ),
            });
        }
        Some(_) => {}
    }
    Ok(())
}

/// Imports `input` into a dataset at `opts.out`.
pub fn import(input: &Path, opts: &GenOptions) -> Result<Summary> {
    // Parse everything first: a bad line fails before anything is written.
    let (mut users, anonymous) = read_users(input)?;
    let time_axis = time_axis(input, &users)?;
    let dim = content_width(input, &users)?;
    let named = users
        .iter()
        .flat_map(|(_, t)| t)
        .any(|t| !t.name.is_empty());
    let staged = StagedDir::new(&opts.out, opts.force)?;
    let mut t = Tables::default();
    let mut max_k = 0;
    let mut turns = 0u64;
    for (u, (_, user_turns)) in users.iter_mut().enumerate() {
        user_turns.sort_by_key(|t| (t.timestamp, t.line));
        let mut sessions: HashMap<String, u32> = HashMap::new();
        let mut memories = HashMap::new();
        let mut prev_ts = None;
        for (ti, turn) in user_turns.iter().enumerate() {
            let n_sessions = sessions.len() as u32;
            let session = *sessions.entry(turn.session.clone()).or_insert(n_sessions);
            max_k = max_k.max(turn.features.len());
            turns += 1;
            push_turn(&mut t, (u as u32, ti as u32, session), turn, prev_ts, named);
            push_memories(input, &mut t, u as u32, turn, dim, &mut memories)?;
            prev_ts = Some(turn.timestamp);
        }
    }
    let candidates = t.candidates.user_id.len() as u64;
    let memories = t.memories.user_id.len() as u64;
    let path_hops = t.paths.user_id.len() as u64;
    let mut writers = Writers::new(
        &staged.tmp,
        polars::prelude::ParquetCompression::Zstd(None),
        true,
    );
    writers.write(std::slice::from_ref(&t), dim)?;
    let files = writers.finish(dim)?;
    let counts = Counts {
        memories: Some(memories),
        path_hops: Some(path_hops),
        ..Counts::of(users.len() as u64, turns, candidates)
    };
    // An import's random split (without a time axis) uses seed 0.
    let manifest = Manifest {
        time_axis,
        graded_labels: true,
        input: Some(InputFile {
            path: input.display().to_string(),
            sha256: sha256_file(input)?,
        }),
        ..Manifest::new(Source::Jsonl, 0, max_k, dim, counts, files)
    };
    manifest.write(&staged.tmp)?;
    let out = staged.commit()?;
    Ok(Summary {
        out,
        users: users.len() as u64,
        turns,
        candidates,
        anonymous,
    })
}

/// Every line of `input` as a turn of its user (a line without `user_id` is a user of
/// its own), users in the order they first appear; and how many timestamped lines had no
/// `user_id`.
#[allow(clippy::type_complexity)]
fn read_users(input: &Path) -> Result<(Vec<(String, Vec<ParsedTurn>)>, u64)> {
    let file = std::fs::File::open(input).map_err(|e| Error::io(input, e))?;
    let mut users: Vec<(String, Vec<ParsedTurn>)> = Vec::new();
    let mut index: HashMap<String, usize> = HashMap::new();
    let mut id_type = None;
    let mut anonymous = 0;
    for (i, text) in BufReader::new(file).lines().enumerate() {
        let text = text.map_err(|e| Error::io(input, e))?;
        if text.trim().is_empty() {
            continue;
        }
        let (user, turn) = parse_line(input, i + 1, &text)?;
        if let Some((_, string)) = &user {
            one_id_type(input, i + 1, *string, &mut id_type)?;
        }
        anonymous += (user.is_none() && turn.timed) as u64;
        let user = user.map_or_else(|| format!("scenario-{}", i + 1), |(key, _)| key);
        let slot = *index.entry(user.clone()).or_insert_with(|| {
            users.push((user, Vec::new()));
            users.len() - 1
        });
        users[slot].1.push(turn);
    }
    if users.is_empty() {
        return Err(Error::dataset(input, "no records"));
    }
    Ok((users, anonymous))
}

/// Whether the file's turns have a time axis: either every line has a timestamp
/// (sessions, split in time) or none has (scenarios, split at random); a mix has no split
/// that means anything.
fn time_axis(input: &Path, users: &[(String, Vec<ParsedTurn>)]) -> Result<bool> {
    let all = users.iter().flat_map(|(_, t)| t);
    let timed = all.clone().find(|t| t.timed);
    let untimed = all.clone().find(|t| !t.timed);
    if let (Some(a), Some(b)) = (timed, untimed) {
        return Err(Error::Jsonl {
            path: input.to_path_buf(),
            line: b.line,
            msg: format!(
                "no `timestamp`, but line {} has one: a file holds either timestamped sessions or untimed scenarios",
                a.line
            ),
        });
    }
    Ok(timed.is_some())
}

/// The width of the file's content embeddings (0: none): every line has `content` of
/// that width, or none has.
fn content_width(input: &Path, users: &[(String, Vec<ParsedTurn>)]) -> Result<usize> {
    let all = || users.iter().flat_map(|(_, t)| t);
    let width = |t: &ParsedTurn| t.content.as_ref().map_or(0, |c| c[0].len());
    let Some(first) = all().min_by_key(|t| t.line) else {
        return Ok(0);
    };
    let dim = width(first);
    match all().filter(|t| width(t) != dim).min_by_key(|t| t.line) {
        None => Ok(dim),
        Some(other) => Err(Error::Jsonl {
            path: input.to_path_buf(),
            line: other.line,
            msg: format!(
                "{}, but line {} has {}: every line has `content` of one width, or none has",
                match width(other) {
                    0 => "no `content`".to_string(),
                    w => format!("content vectors of {w} numbers"),
                },
                first.line,
                match dim {
                    0 => "none".to_string(),
                    w => format!("{w} numbers"),
                }
            ),
        }),
    }
}

/// Appends a memories row for each memory of `turn` that user `u` has not shown before,
/// with its content (`dim` numbers); `seen` maps each memory id to its content and line.
/// A memory shown again must carry the same content.
fn push_memories(
    input: &Path,
    t: &mut Tables,
    u: u32,
    turn: &ParsedTurn,
    dim: usize,
    seen: &mut HashMap<u32, (Vec<f32>, usize)>,
) -> Result<()> {
    let Some(content) = &turn.content else {
        return Ok(());
    };
    for (i, v) in content.iter().enumerate() {
        let memory = turn.memory_id(i);
        if let Some((earlier, line)) = seen.get(&memory) {
            if earlier != v {
                return Err(Error::Jsonl {
                    path: input.to_path_buf(),
                    line: turn.line,
                    msg: format!(
                        "memory {memory} has other content than on line {line}: content belongs to a memory{}",
                        if turn.memory_ids.is_none() {
                            " (without `memory_ids`, a candidate's memory is its place in the turn: give `memory_ids`)"
                        } else {
                            ""
                        }
                    ),
                });
            }
            continue;
        }
        seen.insert(memory, (v.clone(), turn.line));
        let m = &mut t.memories;
        m.user_id.push(u);
        m.memory_id.push(memory);
        m.entity_id.push(turn.entity_id(i));
        m.aspect.push(0);
        m.attribute.push(0);
        m.created.push(turn.timestamp);
        m.importance.push(turn.features[i][feat::IMPORTANCE]);
        m.pinned.push(0);
        m.superseded_at.push(None);
        m.supersedes.push(None);
        m.community.push(0);
        debug_assert_eq!(v.len(), dim);
        m.embedding.extend_from_slice(v);
    }
    Ok(())
}

/// Appends turn `ti` of user `u` (in session `session`) to the turns table and its
/// candidates to the candidates table.
fn push_turn(
    t: &mut Tables,
    (u, ti, session): (u32, u32, u32),
    turn: &ParsedTurn,
    prev_ts: Option<i64>,
    named: bool,
) {
    let tr = &mut t.turns;
    tr.user_id.push(u);
    tr.turn_index.push(ti);
    tr.session_index.push(session);
    tr.turn_in_session.push(0);
    tr.timestamp.push(turn.timestamp);
    tr.stage.push(0);
    tr.log_dt
        .push(prev_ts.map_or(0.0, |p: i64| ((turn.timestamp - p).max(0) as f32).ln_1p()));
    let x0 = &turn.features[0];
    tr.tod_sin.push(x0[3]);
    tr.tod_cos.push(x0[4]);
    tr.dow_sin.push(x0[5]);
    tr.dow_cos.push(x0[6]);
    tr.log_session_age.push(0.0);
    tr.focal_0.push(-1);
    tr.focal_1.push(-1);
    for col in &mut tr.selectors {
        col.push(-1);
    }
    tr.cycle_peak.push(-1.0);
    tr.canary.push(0);
    // At most 255: `parse_line` refuses more.
    let relevant = turn.labels.iter().filter(|&&l| l > 0.5).count();
    tr.n_relevant.push(relevant as u8);
    tr.negative_slots.push(0);
    match (&turn.query, &turn.content) {
        (Some(q), _) => tr.query.extend_from_slice(q),
        (None, Some(c)) => tr.query.extend(std::iter::repeat_n(0.0, c[0].len())),
        (None, None) => {}
    }
    if named {
        tr.name.push(turn.name.clone());
    }
    let c = &mut t.candidates;
    for (i, x) in turn.features.iter().enumerate() {
        let memory = turn.memory_id(i);
        c.user_id.push(u);
        c.turn_index.push(ti);
        c.cand_index.push(i as u8);
        c.memory_id.push(memory);
        c.entity_id.push(turn.entity_id(i));
        c.memory_slot.push(memory % IMPORT_MEMORY_SLOTS);
        c.path_id.push(u32::MAX);
        c.canary_role.push(0);
        c.push_features(x);
        c.mask.push(turn.mask);
        let label = (turn.labels[i] > 0.5) as u8;
        c.label.push(label);
        c.clean_label.push(label);
        c.relevance.push(turn.labels[i] as f32);
        c.canary.push(0);
        c.hard_negative.push(0);
    }
}
