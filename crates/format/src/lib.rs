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
