//! Runnable examples for fstore; see the `examples/` directory.

pub mod parquet_io;
