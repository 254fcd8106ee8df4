//! Runnable examples for fstore; see the `examples/` directory.

#[cfg(feature = "datafusion")]
pub mod ballista_args;
pub mod engine_args;
