//! The identity-keyed event log: what the user's earlier turns wrote under each memory id
//! and each entity id. After every turn, each shown candidate writes one event (was it
//! relevant, which entities were focal, was its own entity focal, its age, the turn's
//! time of the week) under its memory and under its entity; a memory keeps its last
//! [`MEMORY_EVENTS`] events and an entity its last [`ENTITY_EVENTS`].
//!
//! A candidate reads, before its turn, the events under its own memory and its own
//! entity, each as [`EVENT_DIM`] numbers relative to the turn being scored (does the
//! event's focal set meet the current one, is it the same memory, how many days its time
//! of the week lies before the turn's, as their contexts say) and its age in days. The
//! ages come from the timestamps, the phases in the week from the contexts: a turn moved
//! in the week (a probe edits its context) moves every phase it reads.
//! The model's keyed state ([`crate::model::ModelConfig::keyed_modes`]) folds these
//! through learned decaying and oscillating modes; training, `eval` and the runtime call
//! the same code, so what they read agrees exactly.

use crate::IdMap;
use crate::features::feat;

/// Events a memory keeps.
pub const MEMORY_EVENTS: usize = 8;
/// Events an entity keeps (over all its memories).
pub const ENTITY_EVENTS: usize = 16;
/// Events a candidate reads: its memory's, then its entity's, newest first in each.
pub const EVENTS: usize = MEMORY_EVENTS + ENTITY_EVENTS;

/// What the keyed read divides a source's sums by: √L for the memory's L places (source
/// 0), and for the entity's (source 1) the `held` places that hold an event, at least 1,
/// so that the entity's read is a mean that does not grow with its record.
pub fn read_divisor(source: usize, places: usize, held: usize) -> f32 {
    if source == 0 {
        (places as f32).sqrt()
    } else {
        held.max(1) as f32
    }
}

/// What a candidate reads of one event, in this order (all 0 for an empty place).
pub const EVENT_NAMES: [&str; 12] = [
    "shown",
    "relevant",
    "focal_match",
    "relevant_focal_match",
    "same_memory",
    "relevant_same_memory",
    "entity_was_focal",
    "log_age",
    "relevant_log_age",
    "age_match",
    "relevant_age_match",
    "week_apart",
];
pub const EVENT_DIM: usize = EVENT_NAMES.len();

/// The event number that says how many days the event's time of the week lies before the
/// turn's, in `[0, 7)`, as their contexts give them: the phase the oscillating modes and
/// the attention peer's week and day encodings read.
pub const WEEK_APART: usize = 11;

/// The numbers of an event the keyed state's read sums and its selective step reads: all
/// but [`WEEK_APART`], which is a phase (a number of days that wraps at 7 would read as a
/// sawtooth in the week).
pub const VALUE_DIM: usize = WEEK_APART;
const _: () = assert!(
    WEEK_APART + 1 == EVENT_DIM,
    "week_apart is an event's last number"
);

/// The fastest an oscillating mode's envelope may decay (per day, after the selective
/// step): a weekly mode must still remember the week before, or it becomes one more
/// short-memory channel (trained without this bound, they decayed at 0.2–0.3 a day).
pub const CYCLE_MAX_RATE: f32 = 0.1;

/// Numbers an event's time interval is encoded as, for the attention peer
/// ([`interval`]).
pub const INTERVAL_DIM: usize = 5;

/// Width of one event as the attention peer's keys and values read it: its numbers, a
/// flag for the memory's own places, its interval.
pub const ATTN_EVENT_DIM: usize = EVENT_DIM + 1 + INTERVAL_DIM;

/// Heads of the attention peer.
pub const ATTN_HEADS: usize = 2;

/// An event's interval as the attention peer reads it: log1p of its age in `days`, then
/// the cosine and sine of its phase over a day and over a week, from its [`WEEK_APART`]
/// number `apart`.
pub fn interval(days: f32, apart: f32) -> [f32; INTERVAL_DIM] {
    let day = apart * std::f32::consts::TAU;
    let week = apart * (std::f32::consts::TAU / 7.0);
    [days.ln_1p(), day.cos(), day.sin(), week.cos(), week.sin()]
}

/// Memories (and, separately, entities) the log keeps per user. Past it, the least
/// recently written are forgotten, an eighth at a time.
pub const MAX_KEYS: usize = 4096;

/// Bytes one event takes in a saved log.
pub const EVENT_BYTES: usize = 8 + 8 + 8 + 8 + 1 + 1 + 4 + 4;

/// One shown candidate of one turn.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Event {
    pub ts: i64,
    pub memory: u64,
    /// The turn's focal entity ids (−1: none).
    pub focal: [i64; 2],
    pub relevant: bool,
    /// Whether the candidate's own entity was focal at that turn.
    pub entity_was_focal: bool,
    /// The candidate's observed `log_age` feature at that turn.
    pub log_age: f32,
    /// The turn's position in the week (days from Monday 00:00, in `[0, 7)`) as its
    /// context gave it ([`crate::features::week_position`]).
    pub week: f32,
}

impl Event {
    /// What an unwritten place of a [`Slot`] holds.
    const NONE: Event = Event {
        ts: 0,
        memory: 0,
        focal: [-1, -1],
        relevant: false,
        entity_was_focal: false,
        log_age: 0.0,
        week: 0.0,
    };
}

/// The last `N` events under one key, held in place (a ring: one allocation less to
/// follow per read than a queue on the heap), and the turn they were last written.
#[derive(Clone, Debug)]
struct Slot<const N: usize> {
    written: u32,
    /// Events held, at most `N`.
    len: usize,
    /// The newest event's place.
    head: usize,
    ring: [Event; N],
}

impl<const N: usize> Default for Slot<N> {
    fn default() -> Self {
        Slot {
            written: 0,
            len: 0,
            head: N - 1,
            ring: [Event::NONE; N],
        }
    }
}

impl<const N: usize> Slot<N> {
    /// Adds the newest event; past `N`, the oldest is forgotten.
    fn push(&mut self, e: Event) {
        self.head = (self.head + 1) % N;
        self.ring[self.head] = e;
        self.len = (self.len + 1).min(N);
    }

    /// The events, newest first.
    fn events(&self) -> impl ExactSizeIterator<Item = &Event> {
        (0..self.len).map(move |i| &self.ring[(self.head + N - i) % N])
    }
}

/// Equal when they hold the same events (whatever the ring's places hold past them).
impl<const N: usize> PartialEq for Slot<N> {
    fn eq(&self, other: &Self) -> bool {
        self.written == other.written && self.events().eq(other.events())
    }
}

/// A user's keyed log.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Log {
    /// Turns folded in so far.
    pub turns: u32,
    memory: IdMap<Slot<MEMORY_EVENTS>>,
    entity: IdMap<Slot<ENTITY_EVENTS>>,
}

/// One shown candidate, as [`Log::observe`] takes it.
#[derive(Clone, Copy, Debug)]
pub struct Shown {
    pub memory: u64,
    pub entity: u64,
    pub relevant: bool,
    pub log_age: f32,
}

fn push<const N: usize>(map: &mut IdMap<Slot<N>>, key: u64, turn: u32, e: Event) {
    let slot = map.entry(key).or_default();
    slot.written = turn;
    slot.push(e);
}

fn forget<const N: usize>(map: &mut IdMap<Slot<N>>) {
    if map.len() <= MAX_KEYS {
        return;
    }
    let mut order: Vec<(u32, u64)> = map.iter().map(|(k, s)| (s.written, *k)).collect();
    let n = map.len() - (MAX_KEYS - MAX_KEYS / 8);
    order.select_nth_unstable(n - 1);
    for (_, k) in &order[..n] {
        map.remove(k);
    }
}

/// How near an event's memory was, in observed `log_age`, to the age the reading
/// candidate has now: `exp(−2 |then − now|)`, 1 for the same age, 0.14 a factor e apart
/// in 1 + days (a day old against four). Summed over an entity's events under the
/// relevant flag beside it, it says how often the entity's memories were relevant at the
/// candidate's age (its fresh ones and its old ones read apart), which no sum of the
/// event's own numbers says. [`Log::read`] writes it for the entity's places only.
pub fn age_match(then: f32, now: f32) -> f32 {
    let d = (then - now).abs();
    if d.is_finite() { (-2.0 * d).exp() } else { 0.0 }
}

fn meets(a: [i64; 2], b: [i64; 2]) -> bool {
    a.iter().any(|&x| x >= 0 && b.contains(&x))
}

/// A turn's position in the week as the log keeps it: [`crate::features::week_position`]
/// of its `context` in `[0, 7)` (0 for a context that encodes no angle).
pub fn week_of(context: &[f32]) -> f32 {
    let w = crate::features::week_position(context) as f32;
    if (0.0..7.0).contains(&w) { w } else { 0.0 }
}

impl Log {
    /// Memories with at least one event.
    pub fn memories(&self) -> usize {
        self.memory.len()
    }

    /// Folds in a turn at `ts`, in the week at `week` ([`crate::features::week_position`]),
    /// with focal entities `focal` whose candidates were `shown`.
    pub fn observe(
        &mut self,
        ts: i64,
        week: f32,
        focal: [i64; 2],
        shown: impl IntoIterator<Item = Shown>,
    ) {
        self.turns = self.turns.saturating_add(1);
        let turn = self.turns;
        for s in shown {
            let e = Event {
                ts,
                memory: s.memory,
                focal,
                relevant: s.relevant,
                entity_was_focal: focal.contains(&(s.entity as i64)),
                log_age: s.log_age,
                week,
            };
            push(&mut self.memory, s.memory, turn, e);
            push(&mut self.entity, s.entity, turn, e);
        }
        forget(&mut self.memory);
        forget(&mut self.entity);
    }

    /// What a candidate (`memory` of `entity`, its observed `log_age` now) of a turn at
    /// `now`, in the week at `week`, with focal entities `focal` reads: `events` gets
    /// `[EVENTS, EVENT_DIM]` numbers and `days` `[EVENTS]` ages in days (≥ 0); empty
    /// places read 0.
    #[allow(clippy::too_many_arguments)]
    pub fn read(
        &self,
        now: i64,
        week: f32,
        focal: [i64; 2],
        memory: u64,
        entity: u64,
        log_age: f32,
        events: &mut [f32],
        days: &mut [f32],
    ) {
        events[..EVENTS * EVENT_DIM].fill(0.0);
        days[..EVENTS].fill(0.0);
        let own = self.memory.get(&memory).map(|s| s.events());
        let ent = self.entity.get(&entity).map(|s| s.events());
        let places = own.into_iter().flatten().enumerate().chain(
            ent.into_iter()
                .flatten()
                .enumerate()
                .map(|(i, e)| (MEMORY_EVENTS + i, e)),
        );
        for (at, e) in places {
            let r = e.relevant as u8 as f32;
            let m = meets(e.focal, focal) as u8 as f32;
            let same = (e.memory == memory) as u8 as f32;
            // Only the entity's places: a memory's own earlier showings always match less
            // as it ages, which its days already say.
            let age = if at >= MEMORY_EVENTS {
                age_match(e.log_age, log_age)
            } else {
                0.0
            };
            // Both in [0, 7): `rem_euclid(7.0)` of their difference, without its call.
            let apart = week - e.week;
            let apart = if apart < 0.0 { apart + 7.0 } else { apart };
            events[at * EVENT_DIM..(at + 1) * EVENT_DIM].copy_from_slice(&[
                1.0,
                r,
                m,
                r * m,
                same,
                r * same,
                e.entity_was_focal as u8 as f32,
                e.log_age,
                r * e.log_age,
                age,
                r * age,
                if apart < 7.0 { apart } else { 0.0 },
            ]);
            days[at] = (now.saturating_sub(e.ts).max(0) as f64 / 86_400.0) as f32;
        }
    }

    /// Appends the log to `out` (`turns u32 | n u32 | n × (key u64, written u32, count
    /// u8, events) | the same for entities`, little-endian, keys in order).
    pub fn write(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(&self.turns.to_le_bytes());
        write_slots(&self.memory, out);
        write_slots(&self.entity, out);
    }

    /// Parses [`Log::write`]'s bytes, which must fill `b` exactly.
    pub fn read_bytes(b: &[u8]) -> Result<Log, String> {
        let mut c = Cursor { b, at: 0 };
        let turns = c.u32()?;
        let memory = read_slots(&mut c, turns)?;
        let entity = read_slots(&mut c, turns)?;
        if c.at != b.len() {
            return Err(format!(
                "a keyed log of {} bytes is followed by {} more",
                c.at,
                b.len() - c.at
            ));
        }
        Ok(Log {
            turns,
            memory,
            entity,
        })
    }
}

/// One map of the log as [`Log::write`] lays it out.
fn write_slots<const N: usize>(map: &IdMap<Slot<N>>, out: &mut Vec<u8>) {
    out.extend_from_slice(&(map.len() as u32).to_le_bytes());
    let mut keys: Vec<&u64> = map.keys().collect();
    keys.sort_unstable();
    for key in keys {
        let s = &map[key];
        out.extend_from_slice(&key.to_le_bytes());
        out.extend_from_slice(&s.written.to_le_bytes());
        out.push(s.len as u8);
        for e in s.events() {
            out.extend_from_slice(&e.ts.to_le_bytes());
            out.extend_from_slice(&e.memory.to_le_bytes());
            out.extend_from_slice(&e.focal[0].to_le_bytes());
            out.extend_from_slice(&e.focal[1].to_le_bytes());
            out.push(e.relevant as u8);
            out.push(e.entity_was_focal as u8);
            out.extend_from_slice(&e.log_age.to_le_bytes());
            out.extend_from_slice(&e.week.to_le_bytes());
        }
    }
}

/// One map of [`Log::write`]'s bytes (of slots of at most `N` events), in a log of `turns`.
fn read_slots<const N: usize>(c: &mut Cursor, turns: u32) -> Result<IdMap<Slot<N>>, String> {
    let n = c.u32()? as usize;
    if n > MAX_KEYS {
        return Err(format!("a keyed log of {n} keys is over {MAX_KEYS}"));
    }
    let mut map = IdMap::with_capacity_and_hasher(n, Default::default());
    for _ in 0..n {
        let key = c.u64()?;
        let written = c.u32()?;
        let count = c.take(1)?[0] as usize;
        if count == 0 || count > N || written > turns {
            return Err(format!("keyed log entry {key} is inconsistent"));
        }
        let mut events = Vec::with_capacity(count);
        for _ in 0..count {
            let (ts, memory) = (c.u64()? as i64, c.u64()?);
            let focal = [c.u64()? as i64, c.u64()? as i64];
            let flags = c.take(2)?;
            let (relevant, entity_was_focal) = (flags[0], flags[1]);
            let log_age = f32::from_le_bytes(c.take(4)?.try_into().expect("4"));
            let week = f32::from_le_bytes(c.take(4)?.try_into().expect("4"));
            if !log_age.is_finite()
                || !(0.0..7.0).contains(&week)
                || relevant > 1
                || entity_was_focal > 1
            {
                return Err(format!("keyed log entry {key} is inconsistent"));
            }
            events.push(Event {
                ts,
                memory,
                focal,
                relevant: relevant == 1,
                entity_was_focal: entity_was_focal == 1,
                log_age,
                week,
            });
        }
        // Written newest first: pushed oldest first.
        let mut slot = Slot::<N> {
            written,
            ..Slot::default()
        };
        for e in events.into_iter().rev() {
            slot.push(e);
        }
        if map.insert(key, slot).is_some() {
            return Err(format!("keyed log key {key} appears twice"));
        }
    }
    Ok(map)
}

/// Reads little-endian numbers off the front of a byte string.
struct Cursor<'a> {
    b: &'a [u8],
    at: usize,
}

impl<'a> Cursor<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], String> {
        let s = self
            .b
            .get(self.at..self.at + n)
            .ok_or_else(|| format!("{} bytes is too short for a keyed log", self.b.len()))?;
        self.at += n;
        Ok(s)
    }

    fn u32(&mut self) -> Result<u32, String> {
        Ok(u32::from_le_bytes(self.take(4)?.try_into().expect("4")))
    }

    fn u64(&mut self) -> Result<u64, String> {
        Ok(u64::from_le_bytes(self.take(8)?.try_into().expect("8")))
    }
}

/// Folds one turn of a stored sequence into `log`: its K slots' `valid` flags, observed
/// `labels`, `memory` and `entity` ids and observed `log_age` (a slot counts when valid,
/// relevant when its label is > 0).
#[allow(clippy::too_many_arguments)]
pub fn observe_slots(
    log: &mut Log,
    ts: i64,
    week: f32,
    focal: [i64; 2],
    valid: &[f32],
    labels: &[f32],
    memory: &[u32],
    entity: &[u32],
    log_age: impl Fn(usize) -> f32,
) {
    let shown = (0..valid.len())
        .filter(|&j| valid[j] == 1.0)
        .map(|j| Shown {
            memory: memory[j] as u64,
            entity: entity[j] as u64,
            relevant: labels[j] > 0.0,
            log_age: log_age(j),
        });
    log.observe(ts, week, focal, shown);
}

/// A stored sequence of `K`-candidate turns, as [`sequence_reads`] reads it.
pub struct Sequence<'a> {
    pub timestamp: &'a [i64],
    /// `[T, CONTEXT_DIM]` each turn's context.
    pub context: &'a [f32],
    /// `[T, 2]`, −1 for none.
    pub focal: &'a [i32],
    /// `[T, K]` each.
    pub valid: &'a [f32],
    pub labels: &'a [f32],
    pub memory: &'a [u32],
    pub entity: &'a [u32],
    /// `[T, K, feature_dim]` observed features (`log_age` is column [`feat::LOG_AGE`]).
    pub features: &'a [f32],
    pub feature_dim: usize,
    pub k: usize,
}

impl Sequence<'_> {
    fn focal(&self, t: usize) -> [i64; 2] {
        [self.focal[2 * t] as i64, self.focal[2 * t + 1] as i64]
    }

    /// The observed `log_age` of candidate slot `slot` (`t · K + j`).
    fn log_age(&self, slot: usize) -> f32 {
        self.features[slot * self.feature_dim + feat::LOG_AGE]
    }

    fn week(&self, t: usize) -> f32 {
        let c = crate::features::CONTEXT_DIM;
        week_of(&self.context[t * c..(t + 1) * c])
    }

    fn fold(&self, log: &mut Log, t: usize) {
        let s = t * self.k..(t + 1) * self.k;
        let base = t * self.k;
        observe_slots(
            log,
            self.timestamp[t],
            self.week(t),
            self.focal(t),
            &self.valid[s.clone()],
            &self.labels[s.clone()],
            &self.memory[s.clone()],
            &self.entity[s],
            |j| self.log_age(base + j),
        );
    }
}

/// The keyed reads of turns `from..to` of `seq`, each from every turn before it:
/// `([T', K, EVENTS, EVENT_DIM], [T', K, EVENTS])` with T' = to − from.
pub fn sequence_reads(seq: &Sequence, from: usize, to: usize) -> (Vec<f32>, Vec<f32>) {
    let k = seq.k;
    let n = to.saturating_sub(from);
    let mut events = vec![0f32; n * k * EVENTS * EVENT_DIM];
    let mut days = vec![0f32; n * k * EVENTS];
    let mut log = Log::default();
    for t in 0..to {
        if t >= from {
            let (focal, week) = (seq.focal(t), seq.week(t));
            for j in 0..k {
                let slot = t * k + j;
                if seq.valid[slot] != 1.0 {
                    continue;
                }
                let at = (t - from) * k + j;
                log.read(
                    seq.timestamp[t],
                    week,
                    focal,
                    seq.memory[slot] as u64,
                    seq.entity[slot] as u64,
                    seq.log_age(slot),
                    &mut events[at * EVENTS * EVENT_DIM..(at + 1) * EVENTS * EVENT_DIM],
                    &mut days[at * EVENTS..(at + 1) * EVENTS],
                );
            }
        }
        seq.fold(&mut log, t);
    }
    (events, days)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::features::context_at;

    const DAY: i64 = 86_400;

    fn shown(memory: u64, entity: u64, relevant: bool) -> Shown {
        Shown {
            memory,
            entity,
            relevant,
            log_age: 0.5,
        }
    }

    #[test]
    fn a_candidate_reads_its_memory_then_its_entity_newest_first() {
        let mut log = Log::default();
        // Day 0, entity 3 focal: memory 7 (entity 3) relevant, memory 8 (entity 3) not.
        // (Monday noon).
        log.observe(0, 0.5, [3, -1], [shown(7, 3, true), shown(8, 3, false)]);
        // Day 2, entity 5 focal: memory 7 shown, not relevant (Wednesday 06:00).
        log.observe(2 * DAY, 2.25, [5, -1], [shown(7, 3, false)]);
        let mut ev = vec![9.0; EVENTS * EVENT_DIM];
        let mut days = vec![9.0; EVENTS];
        // Memory 7 read on day 3 with entity 3 focal again (Thursday noon).
        log.read(3 * DAY, 3.5, [-1, 3], 7, 3, 0.5, &mut ev, &mut days);
        let row = |i: usize| &ev[i * EVENT_DIM..(i + 1) * EVENT_DIM];
        // Memory places: day 2 (no match, not relevant, 1¼ days earlier in the week),
        // then day 0 (match, relevant, 3 days earlier in the week); no age match.
        assert_eq!(
            row(0),
            &[1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.5, 0.0, 0.0, 0.0, 1.25]
        );
        assert_eq!(
            row(1),
            &[1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 0.5, 0.5, 0.0, 0.0, 3.0]
        );
        assert_eq!(row(2), &[0.0; EVENT_DIM]);
        assert_eq!(&days[..3], &[1.0, 3.0, 0.0]);
        // Entity places: day 2 (memory 7), day 0 memory 8 then memory 7 (pushed in order).
        let e = MEMORY_EVENTS;
        assert_eq!(row(e)[4], 1.0);
        assert_eq!(row(e + 1)[..8], [1.0, 0.0, 1.0, 0.0, 0.0, 0.0, 1.0, 0.5]);
        assert_eq!(row(e + 2)[..6], [1.0, 1.0, 1.0, 1.0, 1.0, 1.0]);
        assert_eq!(&days[e..e + 4], &[1.0, 3.0, 3.0, 0.0]);
        // A candidate a factor e older in 1 + days than the entity's events' memories were
        // (log_age 1.5 against 0.5) matches each at e⁻², under the relevant flag where it
        // was relevant; its memory's own places match nothing, and an age not a number
        // matches nothing.
        log.read(3 * DAY, 3.5, [-1, 3], 7, 3, 1.5, &mut ev, &mut days);
        let far = (-2.0f32).exp();
        let matched = |ev: &[f32], i: usize| ev[i * EVENT_DIM + 9..i * EVENT_DIM + 11].to_vec();
        assert_eq!(matched(&ev, e), [far, 0.0]);
        assert_eq!(matched(&ev, e + 2), [far, far]);
        assert_eq!(matched(&ev, 1), [0.0, 0.0]);
        log.read(3 * DAY, 3.5, [-1, 3], 7, 3, f32::NAN, &mut ev, &mut days);
        assert_eq!(matched(&ev, e + 2), [0.0, 0.0]);
        // Read on Monday 06:00 (0.25), the Wednesday 06:00 event lies 5 days before it in
        // the week.
        log.read(3 * DAY, 0.25, [-1, 3], 7, 3, 0.5, &mut ev, &mut days);
        assert_eq!(ev[WEEK_APART], 5.0);
        // A memory never shown of an unknown entity reads nothing.
        log.read(3 * DAY, 0.0, [3, -1], 99, 42, 0.5, &mut ev, &mut days);
        assert!(ev.iter().chain(&days).all(|&v| v == 0.0));
    }

    #[test]
    fn a_memory_keeps_its_last_events_only() {
        let mut log = Log::default();
        for t in 0..(MEMORY_EVENTS + 3) as i64 {
            log.observe(t * DAY, 0.0, [-1, -1], [shown(1, 2, t % 2 == 0)]);
        }
        let mut ev = vec![0.0; EVENTS * EVENT_DIM];
        let mut days = vec![0.0; EVENTS];
        let now = (MEMORY_EVENTS + 3) as i64 * DAY;
        log.read(now, 0.0, [-1, -1], 1, 2, 0.5, &mut ev, &mut days);
        let want: Vec<f32> = (1..=MEMORY_EVENTS).map(|d| d as f32).collect();
        assert_eq!(&days[..MEMORY_EVENTS], &want[..]);
        // The entity keeps more of the same events.
        assert_eq!(
            days[MEMORY_EVENTS + MEMORY_EVENTS + 2],
            (MEMORY_EVENTS + 3) as f32
        );
    }

    #[test]
    fn sequence_reads_see_only_earlier_turns_and_agree_with_a_window() {
        // Three turns of two candidates; turn 2's labels must not reach its reads.
        let ts = [0, DAY, 2 * DAY];
        let focal = [4, -1, 5, -1, 4, 5];
        let valid = [1.0; 6];
        let labels = [1.0, 0.0, 0.0, 1.0, 1.0, 1.0];
        let memory = [7, 8, 7, 9, 7, 8];
        let entity = [4, 4, 4, 6, 4, 4];
        let features = [0.25; 6];
        let context: Vec<f32> = [0.5, 1.5, 2.75].into_iter().flat_map(context_at).collect();
        let seq = Sequence {
            timestamp: &ts,
            context: &context,
            focal: &focal,
            valid: &valid,
            labels: &labels,
            memory: &memory,
            entity: &entity,
            features: &features,
            feature_dim: 1,
            k: 2,
        };
        let (ev, days) = sequence_reads(&seq, 0, 3);
        assert!(ev[..2 * EVENTS * EVENT_DIM].iter().all(|&v| v == 0.0));
        let mut flipped = labels;
        flipped[4] = 0.0;
        flipped[5] = 0.0;
        let seq2 = Sequence {
            labels: &flipped,
            ..seq
        };
        assert_eq!(sequence_reads(&seq2, 0, 3), (ev.clone(), days.clone()));
        // The window of the last turn reads what the whole sequence reads there.
        let (w, wd) = sequence_reads(&seq, 2, 3);
        let per = 2 * EVENTS * EVENT_DIM;
        assert_eq!(&w[..], &ev[2 * per..]);
        assert_eq!(&wd[..], &days[2 * 2 * EVENTS..]);
        // Turn 2, memory 7 (focal 4 and 5): newest event day 1 (focal 5, not relevant).
        let at = 4 * EVENTS * EVENT_DIM;
        assert_eq!(ev[at..at + 4], [1.0, 0.0, 1.0, 0.0]);
        assert_eq!(days[4 * EVENTS], 1.0);
        // The event's time of the week (turn 1, 1.5) lies 1¼ days before turn 2's (2.75).
        assert!((ev[at + WEEK_APART] - 1.25).abs() < 1e-5);
        // Moving turn 2 in the week moves only its reads' days apart in the week.
        let mut moved = context.clone();
        moved[2 * 6..].copy_from_slice(&context_at(5.25));
        let seq3 = Sequence {
            context: &moved,
            ..seq
        };
        let (ev3, days3) = sequence_reads(&seq3, 0, 3);
        assert_eq!(days3, days);
        for (i, (a, b)) in ev.iter().zip(&ev3).enumerate() {
            let col = i % EVENT_DIM;
            if i < at || col != WEEK_APART {
                assert_eq!(a, b, "place {i}");
            }
        }
        // 5.25 − 1.5 days.
        assert!((ev3[at + WEEK_APART] - 3.75).abs() < 1e-5);
    }

    #[test]
    fn extreme_timestamps_read_without_overflow() {
        let mut log = Log::default();
        log.observe(i64::MIN, 0.0, [1, -1], [shown(1, 2, true)]);
        log.observe(i64::MAX, 0.0, [1, -1], [shown(1, 2, true)]);
        let mut ev = vec![0.0; EVENTS * EVENT_DIM];
        let mut days = vec![0.0; EVENTS];
        for now in [i64::MIN, 0, i64::MAX] {
            log.read(now, 0.0, [1, -1], 1, 2, 0.5, &mut ev, &mut days);
            assert!(days.iter().all(|d| d.is_finite() && *d >= 0.0));
        }
        let mut h = crate::history::Table::default();
        h.observe(i64::MIN, [(1, true)]);
        h.observe(i64::MAX, [(1, true)]);
        for now in [i64::MIN, i64::MAX] {
            assert!(h.features(now, 1).iter().all(|v| v.is_finite()));
            assert!(h.decayed_relevant(now, 1).is_finite());
        }
    }

    #[test]
    fn log_bytes_round_trip_and_refuse_damage() {
        let mut log = Log::default();
        log.observe(
            5,
            6.5,
            [1, -1],
            [shown(1, 2, true), shown(u64::MAX, 3, false)],
        );
        log.observe(9, 0.0, [-1, -1], [shown(1, 2, false)]);
        let mut b = Vec::new();
        log.write(&mut b);
        assert_eq!(Log::read_bytes(&b).unwrap(), log);
        assert!(Log::read_bytes(&b[..b.len() - 1]).is_err());
        let mut longer = b.clone();
        longer.push(0);
        assert!(Log::read_bytes(&longer).is_err());
        let mut bad = b.clone();
        bad[8 + 8] = 200; // the first memory's last written turn past the log's turns
        assert!(Log::read_bytes(&bad).is_err());
        // The first memory's newest event is its last bytes before the second key: a week
        // position of 7 is out of range.
        let mut bad = b.clone();
        let week_at = 4 + 4 + 8 + 4 + 1 + EVENT_BYTES - 4;
        assert_eq!(b[week_at..week_at + 4], 0f32.to_le_bytes());
        bad[week_at..week_at + 4].copy_from_slice(&7f32.to_le_bytes());
        assert!(Log::read_bytes(&bad).is_err());
    }

    #[test]
    fn the_least_recently_written_keys_are_forgotten_first() {
        let mut log = Log::default();
        for m in 0..=MAX_KEYS as u64 {
            log.observe(m as i64, 0.0, [-1, -1], [shown(m, 0, false)]);
        }
        assert_eq!(log.memories(), MAX_KEYS - MAX_KEYS / 8);
        let mut ev = vec![0.0; EVENTS * EVENT_DIM];
        let mut days = vec![0.0; EVENTS];
        log.read(0, 0.0, [-1, -1], 0, 1, 0.5, &mut ev, &mut days);
        assert_eq!(ev[0], 0.0);
        log.read(
            0,
            0.0,
            [-1, -1],
            MAX_KEYS as u64,
            1,
            0.5,
            &mut ev,
            &mut days,
        );
        assert_eq!(ev[0], 1.0);
    }
}
