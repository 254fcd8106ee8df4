//! Runnable examples for fstore; see the `examples/` directory.

pub mod agg_args;
pub mod engine_args;
pub mod parquet_io;
