//! Mapping of fred's errors into fstore's categories (the one place that
//! decides what is retryable).

use fred::error::{Error as FredError, ErrorKind};
use fstore_core::Error;

use crate::config::BACKEND;

/// Maps a fred error to fstore's categories: timeouts → [`Error::Timeout`];
/// I/O, cancelled (connection dropped), cluster-down, loading, backpressure →
/// [`Error::Unavailable`]; everything else → [`Error::Backend`] with the source.
pub(crate) fn map_err(e: FredError, what: &str) -> Error {
    let d = e.details();
    let transient_reply = ["LOADING", "TRYAGAIN", "CLUSTERDOWN", "MASTERDOWN", "BUSY "]
        .iter()
        .any(|p| d.starts_with(p));
    match e.kind() {
        ErrorKind::Timeout => Error::Timeout {
            backend: BACKEND,
            message: format!("{what}: {d}"),
        },
        ErrorKind::IO | ErrorKind::Canceled | ErrorKind::Backpressure => Error::Unavailable {
            backend: BACKEND,
            message: format!("{what}: {:?}: {d}", e.kind()),
        },
        _ if transient_reply => Error::Unavailable {
            backend: BACKEND,
            message: format!("{what}: {d}"),
        },
        _ => Error::backend(BACKEND, what.to_owned(), e),
    }
}
