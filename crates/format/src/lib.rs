//! The contract between ssmkit's trainer and its runtime: what an exported file holds
//! ([`meta`], [`names`], [`quant`]), the model it describes ([`model`]), and the feature
//! layout both sides compute ([`features`], [`history`], [`keyed`], [`relative`]). It depends on
//! nothing heavy, so a service that loads models pulls in neither Burn nor polars.

pub mod features;
pub mod history;
pub mod keyed;
pub mod meta;
pub mod model;
pub mod names;
pub mod quant;
pub mod relative;
pub mod simd;

/// A map from a memory's or an entity's id, as a user's history table and keyed log keep
/// them: looked up once per candidate per turn, so hashed with foldhash rather than
/// SipHash (still seeded at random per process, so ids chosen to collide cannot be).
pub type IdMap<V> = std::collections::HashMap<u64, V, foldhash::fast::RandomState>;
