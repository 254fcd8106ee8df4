//! The one error type of fstore.

/// Result alias used throughout fstore.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Boxed source error carried by [`Error::Backend`].
pub type BoxError = Box<dyn std::error::Error + Send + Sync + 'static>;

/// Every error fstore returns. Variants are things a caller can act on.
///
/// Backends map their driver errors into this enum (usually [`Error::Backend`],
/// or [`Error::Timeout`] / [`Error::Throttled`] / [`Error::Unavailable`] for
/// transient conditions, see [`Error::is_retryable`]).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The caller's input is wrong. The message names the column, feature, row or key.
    #[error("invalid input: {0}")]
    InvalidInput(String),

    /// A named definition or object does not exist.
    #[error("{kind} not found: {name}")]
    NotFound {
        /// What was looked up (`"feature view"`, `"entity"`, `"registry version"`, …).
        kind: &'static str,
        /// Its name.
        name: String,
    },

    /// A compare-and-swap lost a race (registry commit) or a write conflicted.
    /// Re-read and retry.
    #[error("conflict: {0}")]
    Conflict(String),

    /// `apply` was asked to commit a plan with breaking changes without `force`.
    #[error("plan has breaking changes (use force to apply anyway): {}", changes.join("; "))]
    BreakingChange {
        /// One line per breaking change.
        changes: Vec<String>,
    },

    /// A feature with the `Required` fallback policy had no usable value.
    #[error("required feature '{feature}' has no value for request row {row} ({status})")]
    RequiredFeatureMissing {
        /// `view:feature`.
        feature: String,
        /// Index of the entity row in the request.
        row: usize,
        /// Why there was no value (`NotFound`, `Expired`, `NullValue`).
        status: String,
    },

    /// An on-demand view's registered function differs from the registry's definition.
    #[error(
        "on-demand view '{name}': this process registered version '{local}' but the registry has '{registry}'"
    )]
    OnDemandVersionMismatch {
        /// On-demand view name.
        name: String,
        /// Version of the function registered in this process.
        local: String,
        /// Version recorded in the registry.
        registry: String,
    },

    /// Stored aggregation tiles were written under another definition of the
    /// aggregation feature (column, type, function, window or hop changed):
    /// re-materialize the view. The same guard as [`Error::OnDemandVersionMismatch`].
    #[error(
        "aggregation feature '{feature}': stored tiles were written by another definition (fingerprint {stored:016x}, current {current:016x}); re-materialize the view"
    )]
    AggregationDefinitionMismatch {
        /// `view:feature`.
        feature: String,
        /// Fingerprint found in the stored tile.
        stored: u64,
        /// Fingerprint of the current definition.
        current: u64,
    },

    /// The backend does not implement this operation (see its capabilities).
    #[error("{operation} not supported by {backend}")]
    NotSupported {
        /// Backend id.
        backend: &'static str,
        /// The operation.
        operation: &'static str,
    },

    /// A configuration key is not known to this backend.
    #[error("unknown configuration key for {backend}: '{key}'")]
    UnknownConfigKey {
        /// Backend id.
        backend: &'static str,
        /// The key as given.
        key: String,
    },

    /// A backend call took longer than its deadline. Retryable.
    #[error("{backend}: timed out: {message}")]
    Timeout {
        /// Backend id.
        backend: &'static str,
        /// What timed out.
        message: String,
    },

    /// The backend asked us to slow down and the retry budget is spent. Retryable.
    #[error("{backend}: throttled: {message}")]
    Throttled {
        /// Backend id.
        backend: &'static str,
        /// What was throttled.
        message: String,
    },

    /// The backend cannot be reached (connection refused, circuit open). Retryable.
    #[error("{backend}: unavailable: {message}")]
    Unavailable {
        /// Backend id.
        backend: &'static str,
        /// Details.
        message: String,
    },

    /// Any other backend failure, with the backend's own error as source.
    #[error("{backend}: {message}")]
    Backend {
        /// Backend id.
        backend: &'static str,
        /// What fstore was doing.
        message: String,
        /// The driver's error.
        #[source]
        source: Option<BoxError>,
    },
}

impl Error {
    /// Build [`Error::InvalidInput`].
    pub fn invalid(msg: impl Into<String>) -> Self {
        Self::InvalidInput(msg.into())
    }

    /// Build [`Error::NotFound`].
    pub fn not_found(kind: &'static str, name: impl Into<String>) -> Self {
        Self::NotFound {
            kind,
            name: name.into(),
        }
    }

    /// Build [`Error::Backend`] with a source error.
    pub fn backend(
        backend: &'static str,
        message: impl Into<String>,
        source: impl Into<BoxError>,
    ) -> Self {
        Self::Backend {
            backend,
            message: message.into(),
            source: Some(source.into()),
        }
    }

    /// Build [`Error::Backend`] without a source error.
    pub fn backend_msg(backend: &'static str, message: impl Into<String>) -> Self {
        Self::Backend {
            backend,
            message: message.into(),
            source: None,
        }
    }

    /// True for transient conditions worth retrying (timeout, throttling,
    /// unavailability, CAS conflicts).
    pub fn is_retryable(&self) -> bool {
        matches!(
            self,
            Self::Timeout { .. }
                | Self::Throttled { .. }
                | Self::Unavailable { .. }
                | Self::Conflict(_)
        )
    }
}

impl From<arrow_schema::ArrowError> for Error {
    fn from(e: arrow_schema::ArrowError) -> Self {
        Self::backend("arrow", "arrow compute failed", e)
    }
}
