//! `ssmkit predict`'s line format: one JSON object per turn in, one per turn out.
//!
//! In: `{"timestamp": unix seconds?, "context": [6 numbers], "query": [content_dim
//! numbers]?, "focal": [a, b]?, "candidates": [{"features": [24 numbers or null],
//! "memory_slot": n, "memory_id": n?, "entity": n, "content": [content_dim numbers]?,
//! "hops": [[5 numbers], …]?}, …], "labels": [K]?}`. Models with history features need
//! `timestamp` and each candidate's `memory_id` (the key of the user's history).
//! A `null` feature is missing. `labels` (the turn's outcome, 1 = the memory was used) is
//! folded into the state after the turn is scored. Out: `{"turn": i, "scores": [K]}`.

use serde::Deserialize;

use super::{Candidate, Turn};
use ssmkit_format::features::{CONTEXT_DIM, CONTEXT_NAMES, FEATURE_DIM, HOP_FEATURE_NAMES};

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct InCandidate {
    features: Vec<Option<f32>>,
    #[serde(default)]
    memory_slot: u32,
    #[serde(default)]
    memory_id: Option<u64>,
    #[serde(default)]
    entity: u32,
    #[serde(default)]
    content: Vec<f32>,
    #[serde(default)]
    hops: Vec<Vec<f32>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct InTurn {
    #[serde(default)]
    timestamp: Option<i64>,
    context: Vec<f32>,
    #[serde(default)]
    query: Vec<f32>,
    #[serde(default = "no_focal")]
    focal: [i32; 2],
    candidates: Vec<InCandidate>,
    #[serde(default)]
    labels: Option<Vec<f32>>,
}

fn no_focal() -> [i32; 2] {
    [-1, -1]
}

/// Reads `value` as a `T`, naming the field of a wrong type or value (serde names only
/// what it expected): the field at fault is the one whose removal changes the error.
pub fn from_value_named<T: serde::de::DeserializeOwned>(
    value: serde_json::Value,
) -> Result<T, String> {
    let err = match serde_json::from_value::<T>(value.clone()) {
        Ok(t) => return Ok(t),
        Err(e) => e.to_string(),
    };
    let Some(object) = value.as_object().filter(|_| err.starts_with("invalid")) else {
        return Err(err);
    };
    let at_fault = object.keys().find(|k| {
        let mut rest = object.clone();
        rest.remove(*k);
        let without = serde_json::from_value::<T>(serde_json::Value::Object(rest));
        without.map_err(|e| e.to_string()).err().as_ref() != Some(&err)
    });
    Err(match at_fault {
        Some(field) => format!("`{field}`: {err}"),
        None => err,
    })
}

/// A JSON value, read in one pass that refuses a key given twice in one object (a plain
/// parse into a value settles it silently: the last one wins).
struct NoKeyTwice(serde_json::Value);

impl<'de> Deserialize<'de> for NoKeyTwice {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(NoKeyTwiceVisitor)
    }
}

struct NoKeyTwiceVisitor;

impl<'de> serde::de::Visitor<'de> for NoKeyTwiceVisitor {
    type Value = NoKeyTwice;

    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("a JSON value")
    }

    fn visit_bool<E>(self, b: bool) -> Result<NoKeyTwice, E> {
        Ok(NoKeyTwice(b.into()))
    }

    fn visit_i64<E>(self, n: i64) -> Result<NoKeyTwice, E> {
        Ok(NoKeyTwice(n.into()))
    }

    fn visit_u64<E>(self, n: u64) -> Result<NoKeyTwice, E> {
        Ok(NoKeyTwice(n.into()))
    }

    fn visit_f64<E>(self, x: f64) -> Result<NoKeyTwice, E> {
        Ok(NoKeyTwice(x.into()))
    }

    fn visit_str<E>(self, s: &str) -> Result<NoKeyTwice, E> {
        Ok(NoKeyTwice(s.into()))
    }

    fn visit_unit<E>(self) -> Result<NoKeyTwice, E> {
        Ok(NoKeyTwice(serde_json::Value::Null))
    }

    fn visit_seq<A: serde::de::SeqAccess<'de>>(self, mut seq: A) -> Result<NoKeyTwice, A::Error> {
        let mut items = Vec::new();
        while let Some(NoKeyTwice(v)) = seq.next_element()? {
            items.push(v);
        }
        Ok(NoKeyTwice(serde_json::Value::Array(items)))
    }

    fn visit_map<A: serde::de::MapAccess<'de>>(self, mut map: A) -> Result<NoKeyTwice, A::Error> {
        let mut object = serde_json::Map::new();
        while let Some(key) = map.next_key::<String>()? {
            if object.contains_key(&key) {
                return Err(serde::de::Error::custom(format!("`{key}` is given twice")));
            }
            let NoKeyTwice(value) = map.next_value()?;
            object.insert(key, value);
        }
        Ok(NoKeyTwice(serde_json::Value::Object(object)))
    }
}

/// Parses one line into a turn and its optional outcome; the error names the problem.
pub fn parse_turn(line: &str) -> Result<(Turn, Option<Vec<f32>>), String> {
    // Candidates are read one by one, so an error says which one.
    let NoKeyTwice(mut v) = serde_json::from_str(line).map_err(|e| e.to_string())?;
    let raw = match v.get_mut("candidates").map(serde_json::Value::take) {
        Some(serde_json::Value::Array(c)) => c,
        Some(_) => return Err("`candidates` is not a list".into()),
        None => return Err("no `candidates`".into()),
    };
    let in_candidates = raw
        .into_iter()
        .enumerate()
        .map(|(i, c)| from_value_named::<InCandidate>(c).map_err(|e| format!("candidate {i}: {e}")))
        .collect::<Result<Vec<_>, _>>()?;
    v["candidates"] = serde_json::Value::Array(Vec::new());
    let mut t: InTurn = from_value_named(v)?;
    t.candidates = in_candidates;
    if t.context.len() != CONTEXT_DIM {
        return Err(format!(
            "context has {} values, expected {CONTEXT_DIM} ({})",
            t.context.len(),
            CONTEXT_NAMES.join(", ")
        ));
    }
    let mut candidates = Vec::with_capacity(t.candidates.len());
    for (i, c) in t.candidates.into_iter().enumerate() {
        if c.features.len() != FEATURE_DIM {
            return Err(format!(
                "candidate {i} has {} features, expected {FEATURE_DIM}",
                c.features.len()
            ));
        }
        let mut features = [0f32; FEATURE_DIM];
        let mut missing = [0f32; FEATURE_DIM];
        for (d, v) in c.features.iter().enumerate() {
            match v {
                Some(x) if x.is_finite() => features[d] = *x,
                Some(x) => return Err(format!("candidate {i}: feature {d} is {x}")),
                None => missing[d] = 1.0,
            }
        }
        let mut hops = Vec::with_capacity(c.hops.len());
        for (h, hop) in c.hops.iter().enumerate() {
            let hop: [f32; HOP_FEATURE_NAMES.len()] = hop.as_slice().try_into().map_err(|_| {
                format!(
                    "candidate {i}, hop {h}: {} values, expected {} ({})",
                    hop.len(),
                    HOP_FEATURE_NAMES.len(),
                    HOP_FEATURE_NAMES.join(", ")
                )
            })?;
            hops.push(hop);
        }
        candidates.push(Candidate {
            features,
            missing,
            memory_slot: c.memory_slot,
            memory_id: c.memory_id,
            entity: c.entity,
            content: c.content,
            hops,
        });
    }
    if let Some(l) = &t.labels
        && l.iter().any(|x| !(0.0..=1.0).contains(x))
    {
        return Err("labels are outcomes in [0, 1] (1: the memory was used)".into());
    }
    if let Some(l) = &t.labels
        && l.len() != candidates.len()
    {
        return Err(format!(
            "labels has {} values for {} candidates",
            l.len(),
            candidates.len()
        ));
    }
    Ok((
        Turn {
            timestamp: t.timestamp,
            context: t.context.try_into().expect("checked width"),
            query: t.query,
            focal: t.focal,
            candidates,
        },
        t.labels,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A turn of two candidates, as JSON text, with `extra` spliced in before `context`.
    fn line(extra: &str, candidate_extra: &str) -> String {
        let features = vec!["0.5"; FEATURE_DIM].join(", ");
        let candidate = format!("{{{candidate_extra}\"features\": [{features}], \"entity\": 1}}");
        format!(
            "{{\"timestamp\": 100, {extra}\"context\": [0, 0, 0, 0, 0, 0], \"candidates\": [{candidate}, {candidate}]}}"
        )
    }

    #[test]
    fn a_key_given_twice_is_refused_wherever_it_is() {
        let (turn, labels) = parse_turn(&line("", "")).expect("a valid line");
        assert_eq!((turn.candidates.len(), labels), (2, None));
        let err = parse_turn(&line("\"timestamp\": 200, ", "")).err().unwrap();
        assert!(err.contains("`timestamp` is given twice"), "{err}");
        let err = parse_turn(&line("", "\"entity\": 2, ")).err().unwrap();
        assert!(err.contains("`entity` is given twice"), "{err}");
    }
}
