//! In-memory reference backends: the executable specification of each trait
//! and the embedded defaults (no server needed).

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex, RwLock};

use arrow_array::{ArrayRef, BooleanArray, RecordBatch, new_null_array};
use arrow_schema::{Schema, SchemaRef};
use async_trait::async_trait;
use chrono::Utc;

use crate::error::{Error, Result};
use crate::model::ResolvedView;
use crate::offline::{
    OfflineCapabilities, OfflineStore, OfflineWriteSummary, ScanRequest, ScanResult, TimeRange,
};
use crate::online::{
    OnlineCapabilities, OnlineKey, OnlineRow, OnlineStore, ReadOptions, Tile, TileMergeFn,
    TileWrite, WriteOptions, WriteSummary,
};
use crate::registry::{Registry, RegistrySnapshot, RegistryState};
use crate::time::timestamp_micros;

const BACKEND: &str = "memory";

fn poisoned<T>(_: T) -> Error {
    Error::backend_msg(BACKEND, "lock poisoned by a panicking thread")
}

/// An [`OnlineStore`] in a hash map.
#[derive(Debug, Default)]
pub struct InMemoryOnlineStore {
    id: String,
    rows: RwLock<HashMap<String, HashMap<Vec<u8>, OnlineRow>>>,
    tiles: RwLock<HashMap<String, HashMap<Vec<u8>, EntityTiles>>>,
}

/// An entity's tiles by (feature, start): (expires_at, state).
type EntityTiles = BTreeMap<(String, i64), (i64, Vec<u8>)>;

fn expire(t: &mut EntityTiles, before: i64) {
    t.retain(|_, (exp, _)| *exp > before);
}

impl InMemoryOnlineStore {
    /// An empty store.
    pub fn new() -> Self {
        use std::sync::atomic::{AtomicU64, Ordering};
        static N: AtomicU64 = AtomicU64::new(0);
        Self {
            id: format!(
                "memory:{}:{}",
                std::process::id(),
                N.fetch_add(1, Ordering::Relaxed)
            ),
            rows: RwLock::default(),
            tiles: RwLock::default(),
        }
    }
}

#[async_trait]
impl OnlineStore for InMemoryOnlineStore {
    fn backend(&self) -> &'static str {
        BACKEND
    }

    fn store_id(&self) -> String {
        self.id.clone()
    }

    fn capabilities(&self) -> OnlineCapabilities {
        OnlineCapabilities::default().with_tiles(true)
    }

    async fn write(
        &self,
        view: &ResolvedView,
        rows: Vec<OnlineRow>,
        _opts: &WriteOptions,
    ) -> Result<WriteSummary> {
        let mut all = self.rows.write().map_err(poisoned)?;
        let table = all.entry(view.name().to_owned()).or_default();
        let mut s = WriteSummary::default();
        for row in rows {
            match table.get(&row.entity_key) {
                Some(stored) if !row.supersedes(stored) => s.skipped += 1,
                _ => {
                    table.insert(row.entity_key.clone(), row);
                    s.written += 1;
                }
            }
        }
        Ok(s)
    }

    async fn read(
        &self,
        keys: &[OnlineKey],
        _opts: &ReadOptions,
    ) -> Result<Vec<Option<OnlineRow>>> {
        let all = self.rows.read().map_err(poisoned)?;
        Ok(keys
            .iter()
            .map(|k| all.get(&k.view).and_then(|t| t.get(&k.entity_key)).cloned())
            .collect())
    }

    async fn delete_view(&self, view: &str) -> Result<()> {
        self.rows.write().map_err(poisoned)?.remove(view);
        self.tiles.write().map_err(poisoned)?.remove(view);
        Ok(())
    }

    async fn write_tiles(
        &self,
        view: &ResolvedView,
        writes: Vec<TileWrite>,
        _opts: &WriteOptions,
    ) -> Result<()> {
        let mut all = self.tiles.write().map_err(poisoned)?;
        let table = all.entry(view.name().to_owned()).or_default();
        for w in writes {
            let t = table.entry(w.entity_key).or_default();
            for tile in w.tiles {
                t.insert((tile.feature, tile.start), (tile.expires_at, tile.state));
            }
            expire(t, w.expire_before);
        }
        Ok(())
    }

    async fn merge_tiles(
        &self,
        view: &ResolvedView,
        writes: Vec<TileWrite>,
        merge: &TileMergeFn,
        _opts: &WriteOptions,
    ) -> Result<()> {
        // One write lock for the whole call: merges are atomic per entity
        // (and across entities), so concurrent pushers lose nothing.
        let mut all = self.tiles.write().map_err(poisoned)?;
        let table = all.entry(view.name().to_owned()).or_default();
        // Merge everything first, then store: a failed merge writes nothing.
        let mut out = Vec::with_capacity(writes.len());
        for w in writes {
            let stored = table.get(&w.entity_key);
            let mut merged = Vec::with_capacity(w.tiles.len());
            for tile in w.tiles {
                let key = (tile.feature, tile.start);
                let state = match stored.and_then(|s| s.get(&key)) {
                    Some((_, old)) => merge(&key.0, old, &tile.state)?,
                    None => tile.state,
                };
                merged.push((key, (tile.expires_at, state)));
            }
            out.push((w.entity_key, merged, w.expire_before));
        }
        for (key, merged, before) in out {
            let t = table.entry(key).or_default();
            t.extend(merged);
            expire(t, before);
        }
        Ok(())
    }

    async fn read_tiles(&self, keys: &[OnlineKey], _opts: &ReadOptions) -> Result<Vec<Vec<Tile>>> {
        let all = self.tiles.read().map_err(poisoned)?;
        Ok(keys
            .iter()
            .map(|k| {
                all.get(&k.view)
                    .and_then(|t| t.get(&k.entity_key))
                    .map(|t| {
                        t.iter()
                            .map(|((feature, start), (exp, state))| Tile {
                                feature: feature.clone(),
                                start: *start,
                                expires_at: *exp,
                                state: state.clone(),
                            })
                            .collect()
                    })
                    .unwrap_or_default()
            })
            .collect())
    }
}

/// An append-only [`OfflineStore`] in memory, with a change log (each write is
/// a version) and time travel. Each table gets a new generation id when it is
/// created (first write after creation or [`OfflineStore::delete_view`]),
/// reported by [`OfflineStore::table_id`].
#[derive(Debug, Default)]
pub struct InMemoryOfflineStore {
    tables: RwLock<HashMap<String, MemTable>>,
}

#[derive(Debug, Clone)]
struct MemTable {
    generation: String,
    log: Vec<RecordBatch>,
}

impl MemTable {
    fn new() -> Self {
        use std::sync::atomic::{AtomicU64, Ordering};
        static GENERATION: AtomicU64 = AtomicU64::new(0);
        Self {
            generation: format!(
                "memory:{}:{}",
                std::process::id(),
                GENERATION.fetch_add(1, Ordering::Relaxed)
            ),
            log: Vec::new(),
        }
    }
}

impl InMemoryOfflineStore {
    /// An empty store.
    pub fn new() -> Self {
        Self::default()
    }
}

/// Rows of `batch` whose `event_ts` lies in `range`, projected to the canonical
/// columns of `view` with `features` (features absent from the stored batch, i.e.
/// added later, read as null).
pub(crate) fn filter_project(
    view: &ResolvedView,
    batch: &RecordBatch,
    range: &TimeRange,
    features: &[String],
) -> Result<RecordBatch> {
    let ev_name = &view.view.event_timestamp_column;
    let ev_col = batch
        .column_by_name(ev_name)
        .ok_or_else(|| Error::invalid(format!("stored batch lacks column '{ev_name}'")))?;
    let ev = timestamp_micros(ev_col.as_ref(), ev_name, false)?;
    let mask = BooleanArray::from(
        ev.iter()
            .map(|t| range.contains_micros(*t))
            .collect::<Vec<_>>(),
    );
    let full = view.arrow_schema();
    let mut fields = Vec::new();
    let mut cols: Vec<ArrayRef> = Vec::new();
    for name in view.key_and_time_columns() {
        let (_, f) = full
            .column_with_name(name)
            .ok_or_else(|| Error::invalid(format!("column '{name}' not in view schema")))?;
        let col = batch
            .column_by_name(name)
            .ok_or_else(|| Error::invalid(format!("stored batch lacks column '{name}'")))?;
        fields.push(f.clone());
        cols.push(Arc::clone(col));
    }
    for name in features {
        let f = view.view.feature(name).ok_or_else(|| {
            Error::invalid(format!(
                "feature view '{}' has no feature '{name}'",
                view.name()
            ))
        })?;
        let af = f.to_arrow();
        let col = match batch.column_by_name(name) {
            Some(c) if c.data_type() == af.data_type() => Arc::clone(c),
            Some(c) => {
                return Err(Error::invalid(format!(
                    "stored column '{name}' has type {}, the view declares {}",
                    c.data_type(),
                    f.value_type
                )));
            }
            None => new_null_array(af.data_type(), batch.num_rows()),
        };
        fields.push(af);
        cols.push(col);
    }
    let schema: SchemaRef = Arc::new(Schema::new(fields));
    let projected = RecordBatch::try_new(schema, cols)?;
    Ok(arrow_select::filter::filter_record_batch(
        &projected, &mask,
    )?)
}

/// The feature names a scan request asks for.
pub(crate) fn requested_features(view: &ResolvedView, req: &ScanRequest) -> Vec<String> {
    req.features
        .clone()
        .unwrap_or_else(|| view.view.features.iter().map(|f| f.name.clone()).collect())
}

#[async_trait]
impl OfflineStore for InMemoryOfflineStore {
    fn backend(&self) -> &'static str {
        BACKEND
    }

    fn capabilities(&self) -> OfflineCapabilities {
        OfflineCapabilities::versioned()
    }

    async fn write(&self, view: &ResolvedView, batch: RecordBatch) -> Result<OfflineWriteSummary> {
        let expected = view.arrow_schema();
        if batch.schema().fields() != expected.fields() {
            return Err(Error::invalid(format!(
                "feature view '{}': batch is not in the canonical schema (normalize it with adapter::normalize_batch): got {:?}",
                view.name(),
                batch
                    .schema()
                    .fields()
                    .iter()
                    .map(|f| f.name())
                    .collect::<Vec<_>>()
            )));
        }
        let rows = batch.num_rows() as u64;
        let mut t = self.tables.write().map_err(poisoned)?;
        let log = &mut t
            .entry(view.name().to_owned())
            .or_insert_with(MemTable::new)
            .log;
        log.push(batch);
        Ok(OfflineWriteSummary {
            rows,
            version: Some(log.len() as u64),
        })
    }

    async fn scan(&self, view: &ResolvedView, req: &ScanRequest) -> Result<ScanResult> {
        let log = self
            .tables
            .read()
            .map_err(poisoned)?
            .get(view.name())
            .map(|t| t.log.clone())
            .unwrap_or_default();
        let latest = log.len() as u64;
        let upto = req.as_of_version.unwrap_or(latest);
        if upto > latest {
            return Err(Error::not_found(
                "table version",
                format!(
                    "{} of feature view '{}' (latest is {latest})",
                    upto,
                    view.name()
                ),
            ));
        }
        let from = req.since_version.unwrap_or(0);
        let features = requested_features(view, req);
        let mut out = Vec::new();
        for (i, b) in log.iter().enumerate() {
            let v = i as u64 + 1;
            if v <= from || v > upto {
                continue;
            }
            let b = filter_project(view, b, &req.range, &features)?;
            if b.num_rows() > 0 {
                out.push(Ok(b));
            }
        }
        Ok(ScanResult {
            version: Some(upto),
            stream: Box::pin(futures::stream::iter(out)),
        })
    }

    async fn latest_version(&self, view: &ResolvedView) -> Result<Option<u64>> {
        Ok(self
            .tables
            .read()
            .map_err(poisoned)?
            .get(view.name())
            .map(|t| t.log.len() as u64))
    }

    async fn delete_view(&self, view: &ResolvedView) -> Result<()> {
        self.tables.write().map_err(poisoned)?.remove(view.name());
        Ok(())
    }

    async fn table_id(&self, view: &ResolvedView) -> Result<Option<String>> {
        Ok(self
            .tables
            .read()
            .map_err(poisoned)?
            .get(view.name())
            .map(|t| t.generation.clone()))
    }
}

/// A [`Registry`] in memory, keeping every version.
#[derive(Debug)]
pub struct InMemoryRegistry {
    versions: Mutex<Vec<Arc<RegistrySnapshot>>>,
}

impl Default for InMemoryRegistry {
    fn default() -> Self {
        Self::new()
    }
}

impl InMemoryRegistry {
    /// An empty registry (version 0).
    pub fn new() -> Self {
        Self {
            versions: Mutex::new(vec![Arc::new(RegistrySnapshot::empty())]),
        }
    }
}

#[async_trait]
impl Registry for InMemoryRegistry {
    fn backend(&self) -> &'static str {
        BACKEND
    }

    async fn snapshot(&self) -> Result<Arc<RegistrySnapshot>> {
        let v = self.versions.lock().map_err(poisoned)?;
        v.last()
            .cloned()
            .ok_or_else(|| Error::backend_msg(BACKEND, "registry has no version 0"))
    }

    async fn snapshot_at(&self, version: u64) -> Result<Arc<RegistrySnapshot>> {
        let v = self.versions.lock().map_err(poisoned)?;
        usize::try_from(version)
            .ok()
            .and_then(|i| v.get(i))
            .cloned()
            .ok_or_else(|| Error::not_found("registry version", version.to_string()))
    }

    async fn commit(&self, expected: u64, state: RegistryState) -> Result<u64> {
        let mut v = self.versions.lock().map_err(poisoned)?;
        let latest = v.len() as u64 - 1;
        if latest != expected {
            return Err(Error::Conflict(format!(
                "in-memory registry is at version {latest}, expected {expected}"
            )));
        }
        let next = expected.checked_add(1).ok_or_else(|| {
            Error::Conflict(format!(
                "in-memory registry cannot go past version {expected}"
            ))
        })?;
        let snap = RegistrySnapshot {
            version: next,
            committed_at: Some(Utc::now()),
            state,
        };
        // Same rule as the persistent registries: only states that read back.
        crate::registry::registry_document(&snap)?;
        v.push(Arc::new(snap));
        Ok(next)
    }

    async fn versions(&self) -> Result<Vec<u64>> {
        Ok((1..self.versions.lock().map_err(poisoned)?.len() as u64).collect())
    }
}
