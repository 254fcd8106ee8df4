//! Runnable examples for fstore; see the `examples/` directory.

pub mod agg_args;
