//! The adapter's own failures and their mapping onto [`fstore_core::Error`].

use scylla::errors::{
    DbError, ExecutionError, NewSessionError, NextPageError, NextRowError, PagerExecutionError,
    PrepareError, RequestAttemptError, RequestError,
};

use crate::config::BACKEND;

/// Everything that can go wrong inside this crate.
#[derive(Debug, thiserror::Error)]
pub(crate) enum Error {
    /// Only the TLS setup builds it (feature `tls`).
    #[cfg_attr(not(feature = "tls"), allow(dead_code))]
    #[error("invalid configuration: {0}")]
    Config(String),
    #[error("could not connect to {contact_points}: {source}")]
    Connect {
        contact_points: String,
        #[source]
        source: NewSessionError,
    },
    #[error("connecting to {contact_points} did not finish within {timeout:?}")]
    ConnectTimeout {
        contact_points: String,
        timeout: std::time::Duration,
    },
    #[error(
        "preparing `{statement}` failed (does the table exist? run ensure_schema or create it): {source}"
    )]
    Prepare {
        statement: String,
        #[source]
        source: PrepareError,
    },
    #[error("{what}: {source}")]
    Execute {
        what: String,
        #[source]
        source: ExecutionError,
    },
    #[error("{what}: {source}")]
    Pager {
        what: String,
        #[source]
        source: PagerExecutionError,
    },
    #[error("{what}: {source}")]
    NextRow {
        what: String,
        #[source]
        source: NextRowError,
    },
    #[error("{what}: unexpected result: {message}")]
    Result { what: String, message: String },
    #[error("{what} did not finish within {timeout:?}")]
    Deadline {
        what: String,
        timeout: std::time::Duration,
    },
}

/// Transient server-side conditions, by category.
enum Kind {
    Timeout,
    Throttled,
    Unavailable,
    Other,
}

fn db_kind(e: &DbError) -> Kind {
    match e {
        DbError::ReadTimeout { .. } | DbError::WriteTimeout { .. } => Kind::Timeout,
        DbError::Overloaded | DbError::RateLimitReached { .. } => Kind::Throttled,
        DbError::Unavailable { .. } | DbError::IsBootstrapping | DbError::ServerError => {
            Kind::Unavailable
        }
        _ => Kind::Other,
    }
}

fn attempt_kind(e: &RequestAttemptError) -> Kind {
    match e {
        RequestAttemptError::DbError(db, _) => db_kind(db),
        RequestAttemptError::BrokenConnectionError(_)
        | RequestAttemptError::UnableToAllocStreamId => Kind::Unavailable,
        _ => Kind::Other,
    }
}

fn exec_kind(e: &ExecutionError) -> Kind {
    match e {
        ExecutionError::RequestTimeout(_) => Kind::Timeout,
        ExecutionError::LastAttemptError(a) => attempt_kind(a),
        ExecutionError::ConnectionPoolError(_) | ExecutionError::EmptyPlan => Kind::Unavailable,
        _ => Kind::Other,
    }
}

fn request_kind(e: &RequestError) -> Kind {
    match e {
        RequestError::RequestTimeout(_) => Kind::Timeout,
        RequestError::LastAttemptError(a) => attempt_kind(a),
        RequestError::ConnectionPoolError(_) | RequestError::EmptyPlan => Kind::Unavailable,
        _ => Kind::Other,
    }
}

fn prepare_kind(e: &PrepareError) -> Kind {
    match e {
        PrepareError::ConnectionPoolError(_) => Kind::Unavailable,
        PrepareError::AllAttemptsFailed { first_attempt } => attempt_kind(first_attempt),
        _ => Kind::Other,
    }
}

impl From<Error> for fstore_core::Error {
    fn from(e: Error) -> Self {
        let kind = match &e {
            Error::Config(m) => {
                return Self::invalid(format!("{BACKEND}: {m}"));
            }
            Error::Connect { .. } => Kind::Unavailable,
            Error::ConnectTimeout { .. } | Error::Deadline { .. } => Kind::Timeout,
            Error::Prepare { source, .. } => prepare_kind(source),
            Error::Execute { source, .. } => exec_kind(source),
            Error::Pager { source, .. } => match source {
                PagerExecutionError::NextPageError(NextPageError::RequestFailure(r)) => {
                    request_kind(r)
                }
                _ => Kind::Other,
            },
            Error::NextRow { .. } | Error::Result { .. } => Kind::Other,
        };
        let message = e.to_string();
        match kind {
            Kind::Timeout => Self::Timeout {
                backend: BACKEND,
                message,
            },
            Kind::Throttled => Self::Throttled {
                backend: BACKEND,
                message,
            },
            Kind::Unavailable => Self::Unavailable {
                backend: BACKEND,
                message,
            },
            Kind::Other => Self::backend(BACKEND, message, e),
        }
    }
}
