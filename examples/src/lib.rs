//! Runnable examples for fstore; see the `examples/` directory.
