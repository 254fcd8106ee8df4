//! Classification of DynamoDB call failures and their mapping to
//! [`fstore_core::Error`].

use std::fmt::Debug;

use aws_sdk_dynamodb::error::{DisplayErrorContext, ProvideErrorMetadata, SdkError};
use fstore_core::{BoxError, Error};

use crate::config::BACKEND;

/// Why a transient failure happened: decides the error a caller sees once
/// the retry budget is spent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum TransientKind {
    /// The attempt hit its deadline.
    Timeout,
    /// Connection failures and 5xx answers.
    Unavailable,
}

/// The outcome of one failed low-level call.
#[derive(Debug)]
pub(crate) enum CallError {
    /// DynamoDB asked us to slow down (ProvisionedThroughputExceeded,
    /// ThrottlingException, RequestLimitExceeded). Retried with backoff.
    Throttled(String),
    /// A conditional write's condition was false: a newer row is stored.
    ConditionFailed,
    /// Worth retrying (timeouts, dropped connections, 5xx).
    Transient {
        kind: TransientKind,
        message: String,
    },
    /// Not worth retrying (validation errors, missing table, bad credentials).
    Fatal {
        message: String,
        source: Option<BoxError>,
    },
}

/// DynamoDB error codes that mean "slow down".
const THROTTLING_CODES: &[&str] = &[
    "ProvisionedThroughputExceededException",
    "ThrottlingException",
    "RequestLimitExceeded",
    "Throttling",
];

/// DynamoDB error codes for server-side trouble that is worth retrying.
const TRANSIENT_CODES: &[&str] = &[
    "InternalServerError",
    "ServiceUnavailable",
    "InternalFailure",
];

impl CallError {
    /// True when the retry loops should try again.
    pub(crate) fn is_retryable(&self) -> bool {
        matches!(self, Self::Throttled(_) | Self::Transient { .. })
    }

    /// Classifies an SDK error of operation `op` on `table`.
    pub(crate) fn from_sdk<E, R>(op: &'static str, table: &str, err: SdkError<E, R>) -> Self
    where
        E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
        R: Debug + Send + Sync + 'static,
    {
        let detail = DisplayErrorContext(&err).to_string();
        match &err {
            SdkError::TimeoutError(_) => Self::Transient {
                kind: TransientKind::Timeout,
                message: format!("{op} on table '{table}' timed out: {detail}"),
            },
            SdkError::DispatchFailure(d) => {
                let kind = if d.is_timeout() {
                    TransientKind::Timeout
                } else {
                    TransientKind::Unavailable
                };
                Self::Transient {
                    kind,
                    message: format!("{op} on table '{table}' could not be sent: {detail}"),
                }
            }
            SdkError::ResponseError(_) => Self::Transient {
                kind: TransientKind::Unavailable,
                message: format!("{op} on table '{table}': unreadable response: {detail}"),
            },
            SdkError::ServiceError(se) => {
                let code = se.err().code().unwrap_or_default().to_owned();
                // The service's own words, not the whole HTTP exchange.
                let detail = format!("{code}: {}", se.err().message().unwrap_or_default());
                if code == "ConditionalCheckFailedException" {
                    Self::ConditionFailed
                } else if THROTTLING_CODES.contains(&code.as_str()) {
                    Self::Throttled(format!("{op} on table '{table}': {code}"))
                } else if TRANSIENT_CODES.contains(&code.as_str()) {
                    Self::Transient {
                        kind: TransientKind::Unavailable,
                        message: format!("{op} on table '{table}': {detail}"),
                    }
                } else if code == "ResourceNotFoundException" {
                    Self::Fatal {
                        message: format!(
                            "{op}: table '{table}' does not exist (create it with DynamoOnlineStore::ensure_tables)"
                        ),
                        source: Some(Box::new(err)),
                    }
                } else {
                    Self::Fatal {
                        message: format!("{op} on table '{table}' failed: {detail}"),
                        source: Some(Box::new(err)),
                    }
                }
            }
            _ => Self::Fatal {
                message: format!("{op} on table '{table}' failed: {detail}"),
                source: Some(Box::new(err)),
            },
        }
    }

    /// Prefixes the message of a non-retryable failure with `context`
    /// (e.g. the entity and view of a rejected put).
    pub(crate) fn with_context(self, context: impl FnOnce() -> String) -> Self {
        match self {
            Self::Fatal { message, source } => Self::Fatal {
                message: format!("{}: {message}", context()),
                source,
            },
            other => other,
        }
    }

    /// The caller-facing error after `retries` retries.
    pub(crate) fn into_error(self, retries: u32) -> Error {
        match self {
            Self::Throttled(m) => Error::Throttled {
                backend: BACKEND,
                message: format!(
                    "{m}; still throttled after {retries} retries (retry budget spent)"
                ),
            },
            Self::ConditionFailed => {
                Error::backend_msg(BACKEND, "unexpected conditional check failure")
            }
            Self::Transient {
                kind: TransientKind::Timeout,
                message,
                ..
            } => Error::Timeout {
                backend: BACKEND,
                message: format!("{message} (after {retries} retries)"),
            },
            Self::Transient {
                kind: TransientKind::Unavailable,
                message,
                ..
            } => Error::Unavailable {
                backend: BACKEND,
                message: format!("{message} (after {retries} retries)"),
            },
            Self::Fatal { message, source } => Error::Backend {
                backend: BACKEND,
                message,
                source,
            },
        }
    }
}
