//! The pure point-in-time join (DESIGN §5): no I/O, deterministic, independent of
//! batch boundaries and input row order.

use std::time::Duration;

use arrow_array::RecordBatch;
use arrow_schema::Field;

use crate::error::{Error, Result};

/// One feature view's input to [`point_in_time_join`].
#[derive(Debug, Clone)]
pub struct PitView<'a> {
    /// View name (used for `view__feature` output names and in errors).
    pub name: String,
    /// Join-key column names. Each must exist, with the same type, in the spine and
    /// in every feature batch. Keys are compared by typed value.
    pub join_keys: Vec<String>,
    /// Event-timestamp column of the feature batches.
    pub event_timestamp_column: String,
    /// Optional created-timestamp column of the feature batches (tie-break, cutoff).
    pub created_timestamp_column: Option<String>,
    /// Lookback window; `None` = unbounded. Inclusive at both ends.
    pub ttl: Option<Duration>,
    /// The requested features, in output order, with their output types.
    /// Every feature batch must carry each of these columns with this type.
    pub features: Vec<Field>,
    /// The feature rows. Row order across the slice (batch 0 first) is the
    /// "write order" used as the last tie-break.
    pub batches: &'a [RecordBatch],
}

/// Options of [`point_in_time_join`].
#[derive(Debug, Clone, Default)]
#[non_exhaustive]
pub struct PitOptions {
    /// Name output columns `view__feature` instead of `feature`.
    pub full_feature_names: bool,
    /// Only rows with `created_ts <= t` are candidates (no backfill leakage).
    /// Views without a created-timestamp column are unaffected.
    pub created_cutoff: bool,
    /// Interpret naive timestamp columns as UTC instead of rejecting them.
    pub assume_utc: bool,
}

impl PitOptions {
    /// Sets [`PitOptions::full_feature_names`].
    pub fn with_full_feature_names(mut self, v: bool) -> Self {
        self.full_feature_names = v;
        self
    }
    /// Sets [`PitOptions::created_cutoff`].
    pub fn with_created_cutoff(mut self, v: bool) -> Self {
        self.created_cutoff = v;
        self
    }
    /// Sets [`PitOptions::assume_utc`].
    pub fn with_assume_utc(mut self, v: bool) -> Self {
        self.assume_utc = v;
        self
    }
}

/// Joins each spine row with, per view, the latest feature row at or before the
/// spine row's timestamp (DESIGN §5).
///
/// For spine row r with key k and time t, and view v with ttl T: candidates are v's
/// rows with key k and `event_ts <= t` and, if T is set, `event_ts >= t - T`; with
/// [`PitOptions::created_cutoff`] also `created_ts <= t`. The chosen row has the
/// greatest `(event_ts, created_ts)`, ties going to the row written last. No
/// candidate, or a null key in the spine, gives nulls.
///
/// Output: one batch, exactly one row per spine row in spine order, every spine
/// column (as given), then each view's requested features in order.
///
/// # Errors
/// [`Error::InvalidInput`] naming the column for: an empty `spine` slice, a missing
/// column, a key type mismatch (naming both types), naive or null timestamps
/// (DESIGN §3), a feature column whose type differs from the declared one, an
/// output name clash.
pub fn point_in_time_join(
    spine: &[RecordBatch],
    spine_timestamp_column: &str,
    views: &[PitView<'_>],
    options: &PitOptions,
) -> Result<RecordBatch> {
    let _ = (spine, spine_timestamp_column, views, options);
    Err(Error::invalid("point_in_time_join: not implemented yet"))
}
