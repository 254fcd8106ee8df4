//! The registry ([semantics §8](crate::docs::semantics)): definitions plus materialization watermarks,
//! versioned, committed by compare-and-swap.

mod checks;
mod file;
mod plan;

use std::collections::BTreeMap;
use std::fmt::Debug;
use std::sync::Arc;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::model::Definitions;

pub use file::FileRegistry;
pub use plan::{Change, ChangeKind, FieldChange, ObjectKind, Plan, plan, validate};

/// Alias used everywhere a registry is held (`Arc<DynRegistry>`).
pub type DynRegistry = dyn Registry;

/// How far a view has been materialized into one online store.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Watermark {
    /// Every row with `event_ts <= event_end` (as of `offline_version`) is online.
    pub event_end: DateTime<Utc>,
    /// The offline table version read (stores with a change log).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub offline_version: Option<u64>,
    /// Identity of the offline table that was read
    /// ([`crate::OfflineStore::table_id`]). When the table is deleted and
    /// re-created its identity changes, and the next incremental run starts over
    /// instead of trusting event times and versions of a table that is gone.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub table_id: Option<String>,
    /// When the run that set it finished.
    pub updated_at: DateTime<Utc>,
}

/// Everything the registry stores.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct RegistryState {
    /// The definitions.
    #[serde(default)]
    pub definitions: Definitions,
    /// Watermarks: view → online store id → watermark.
    #[serde(default)]
    pub watermarks: BTreeMap<String, BTreeMap<String, Watermark>>,
}

/// One committed version of the registry.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RegistrySnapshot {
    /// Monotonic version; 0 is the implicit empty registry.
    pub version: u64,
    /// Commit time (`None` for version 0).
    pub committed_at: Option<DateTime<Utc>>,
    /// The state.
    pub state: RegistryState,
}

impl RegistrySnapshot {
    /// The implicit empty version 0.
    pub fn empty() -> Self {
        Self {
            version: 0,
            committed_at: None,
            state: RegistryState::default(),
        }
    }

    /// The watermark of (view, store), if any.
    pub fn watermark(&self, view: &str, store_id: &str) -> Option<&Watermark> {
        self.state.watermarks.get(view)?.get(store_id)
    }
}

/// The JSON document a registry stores for `snap`, checked to parse back
/// identical before anything is published ([semantics §10](crate::docs::semantics): nothing committed may
/// leave the registry unreadable for the next process).
///
/// Every [`Registry`] implementation that persists snapshots should write these
/// bytes and read them back with [`parse_registry_document`].
///
/// # Errors
/// [`Error::InvalidInput`] naming the first definition (or watermark) that does
/// not survive the round trip; nothing has been written.
pub fn registry_document(snap: &RegistrySnapshot) -> Result<Vec<u8>> {
    let bytes = serde_json::to_vec_pretty(snap).map_err(|e| {
        Error::invalid(format!(
            "registry version {} cannot be serialised: {e}; nothing was committed",
            snap.version
        ))
    })?;
    let back: RegistrySnapshot = serde_json::from_slice(&bytes).map_err(|e| {
        Error::invalid(format!(
            "registry version {} would not parse back ({e}); nothing was committed",
            snap.version
        ))
    })?;
    if &back != snap {
        return Err(Error::invalid(format!(
            "registry version {} would not read back identical ({}); nothing was committed",
            snap.version,
            first_difference(snap, &back)
        )));
    }
    Ok(bytes)
}

/// Parses a document written by [`registry_document`]; `what` names the file
/// or object in the error.
///
/// # Errors
/// [`Error::InvalidInput`] naming `what` for bytes that are not a snapshot.
pub fn parse_registry_document(bytes: &[u8], what: &str) -> Result<RegistrySnapshot> {
    serde_json::from_slice(bytes)
        .map_err(|e| Error::invalid(format!("corrupt registry document {what}: {e}")))
}

fn first_difference(a: &RegistrySnapshot, b: &RegistrySnapshot) -> String {
    fn diff<T: PartialEq>(
        kind: &str,
        x: &BTreeMap<String, T>,
        y: &BTreeMap<String, T>,
    ) -> Option<String> {
        x.iter()
            .find(|(k, v)| y.get(*k) != Some(*v))
            .map(|(k, _)| format!("{kind} '{k}' changes"))
    }
    let (da, db) = (&a.state.definitions, &b.state.definitions);
    diff("entity", &da.entities, &db.entities)
        .or_else(|| diff("feature view", &da.feature_views, &db.feature_views))
        .or_else(|| diff("on-demand view", &da.on_demand_views, &db.on_demand_views))
        .or_else(|| {
            diff(
                "feature service",
                &da.feature_services,
                &db.feature_services,
            )
        })
        .or_else(|| {
            diff(
                "watermarks of view",
                &a.state.watermarks,
                &b.state.watermarks,
            )
        })
        .unwrap_or_else(|| "snapshot header changes".to_owned())
}

/// A versioned store of [`RegistryState`] with compare-and-swap commits.
///
/// # Contract
///
/// * `snapshot()` returns the latest committed version (version 0, empty, when
///   nothing was committed).
/// * `commit(expected, state)` succeeds only if the latest version is still
///   `expected`; it then stores `state` as version `expected + 1` and returns
///   it. Otherwise it fails with [`crate::Error::Conflict`] and changes nothing.
///   Two writers racing on the same `expected` → exactly one wins.
/// * Every committed version stays readable through `snapshot_at` (audit
///   history); `versions` lists them in ascending order.
#[async_trait]
pub trait Registry: Send + Sync + Debug + 'static {
    /// Backend id (`"file"`, `"memory"`, `"delta"`…).
    fn backend(&self) -> &'static str;

    /// The latest committed snapshot.
    ///
    /// # Errors
    /// Backend failures, corrupt data.
    async fn snapshot(&self) -> Result<Arc<RegistrySnapshot>>;

    /// The snapshot at `version`.
    ///
    /// # Errors
    /// [`crate::Error::NotFound`] for a version never committed.
    async fn snapshot_at(&self, version: u64) -> Result<Arc<RegistrySnapshot>>;

    /// Commits `state` as version `expected + 1` if the latest is `expected`.
    ///
    /// # Errors
    /// [`crate::Error::Conflict`] when another writer committed first.
    async fn commit(&self, expected: u64, state: RegistryState) -> Result<u64>;

    /// All committed versions (ascending, without the implicit 0).
    ///
    /// # Errors
    /// Backend failures.
    async fn versions(&self) -> Result<Vec<u64>>;
}
