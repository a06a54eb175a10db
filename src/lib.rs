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
pub mod features;
pub mod history;
pub mod model;
pub mod pipeline;
pub mod relative;
pub mod runtime;
mod simd;
pub mod train;
