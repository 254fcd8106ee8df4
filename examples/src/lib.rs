//! Runnable examples for fstore; see the `examples/` directory.

pub mod agg_args;
#[cfg(feature = "datafusion")]
pub mod ballista_args;
pub mod engine_args;
pub mod parquet_io;
