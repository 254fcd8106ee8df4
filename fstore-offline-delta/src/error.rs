//! The adapter's private error type and its mapping onto [`fstore_core::Error`].

use deltalake::DeltaTableError;
use deltalake::kernel::transaction::TransactionError;

use crate::config::BACKEND;

/// Failures of the Delta adapter, mapped to the core categories by `From`.
#[derive(Debug)]
pub(crate) enum Error {
    /// delta-rs failed while `what` was being done.
    Delta {
        what: String,
        source: DeltaTableError,
    },
    /// The object store failed.
    Store {
        what: String,
        source: object_store::Error,
    },
    /// Parquet decoding failed.
    Parquet {
        what: String,
        source: parquet::errors::ParquetError,
    },
    /// The Delta log is not what fstore wrote (corrupt JSON, missing commit).
    Log(String),
}

fn delta_is_transient(e: &DeltaTableError) -> bool {
    match e {
        DeltaTableError::ObjectStore { source } => store_is_transient(source),
        DeltaTableError::Transaction { source } => matches!(
            source,
            TransactionError::VersionAlreadyExists(_) | TransactionError::MaxCommitAttempts(_)
        ),
        DeltaTableError::VersionAlreadyExists(_) => true,
        _ => false,
    }
}

fn delta_is_conflict(e: &DeltaTableError) -> bool {
    matches!(
        e,
        DeltaTableError::Transaction {
            source: TransactionError::CommitConflict(_)
                | TransactionError::VersionAlreadyExists(_)
                | TransactionError::MaxCommitAttempts(_)
        } | DeltaTableError::VersionAlreadyExists(_)
    )
}

fn store_is_transient(e: &object_store::Error) -> bool {
    // object_store already retried with backoff; a generic error that reached us
    // from the HTTP layer is a connection/timeout problem.
    matches!(e, object_store::Error::Generic { .. })
        && e.to_string().to_ascii_lowercase().contains("timed out")
}

impl Error {
    pub(crate) fn delta(what: impl Into<String>) -> impl FnOnce(DeltaTableError) -> Self {
        let what = what.into();
        move |source| Self::Delta { what, source }
    }

    pub(crate) fn store(what: impl Into<String>) -> impl FnOnce(object_store::Error) -> Self {
        let what = what.into();
        move |source| Self::Store { what, source }
    }

    pub(crate) fn parquet(
        what: impl Into<String>,
    ) -> impl FnOnce(parquet::errors::ParquetError) -> Self {
        let what = what.into();
        move |source| Self::Parquet { what, source }
    }

    /// True for a commit that lost an optimistic-concurrency race.
    pub(crate) fn is_conflict(&self) -> bool {
        matches!(self, Self::Delta { source, .. } if delta_is_conflict(source))
    }
}

impl From<Error> for fstore_core::Error {
    fn from(e: Error) -> Self {
        match e {
            Error::Delta { what, source } if delta_is_conflict(&source) => {
                Self::Conflict(format!("{BACKEND}: {what}: {source}"))
            }
            Error::Delta { what, source } if delta_is_transient(&source) => Self::Unavailable {
                backend: BACKEND,
                message: format!("{what}: {source}"),
            },
            Error::Delta { what, source } => Self::backend(BACKEND, what, source),
            Error::Store { what, source } if store_is_transient(&source) => Self::Unavailable {
                backend: BACKEND,
                message: format!("{what}: {source}"),
            },
            Error::Store { what, source } => Self::backend(BACKEND, what, source),
            Error::Parquet { what, source } => Self::backend(BACKEND, what, source),
            Error::Log(msg) => Self::backend_msg(BACKEND, msg),
        }
    }
}
