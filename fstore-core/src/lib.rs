//! fstore-core: the model, traits and pure point-in-time join of fstore.
#![cfg_attr(docsrs, feature(doc_cfg))]

mod error;
pub mod pit;
pub mod time;

pub use error::{BoxError, Error, Result};
pub use arrow_array;
pub use arrow_schema;
