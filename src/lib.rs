//! ssmkit: train and validate small state-space models that predict what an agent's
//! memory system should surface next.
//!
//! The data flows `gen → train → eval → export → runtime`; each stage is a module.

pub mod atomic;
pub mod backend;
pub mod bench;
pub mod canary;
pub mod config;
pub mod data;
pub mod datagen;
pub mod error;
pub mod eval;
pub mod export;
pub mod layout;
pub mod lock;
pub mod manifest;
pub mod metrics;
pub mod model;
pub mod pipeline;
pub mod run;
pub mod train;

// The contract layer and the runtime are crates of their own, so that a service can load
// models without Burn or polars; their modules read here as ours.
pub use ssmkit_format::{features, history, keyed, relative};
pub use ssmkit_runtime as runtime;
