//! The [`FeatureStore`] facade: one object a host application holds.

mod historical;
#[cfg(feature = "datafusion")]
mod historical_to;
mod materialize;
mod resilience;
mod serving;

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use arrow_array::RecordBatch;

use crate::adapter::{normalize_batch, to_online_rows};
use crate::error::{Error, Result};
use crate::memory::{InMemoryOfflineStore, InMemoryOnlineStore, InMemoryRegistry};
use crate::model::{Definitions, FeatureRef, ResolvedView};
use crate::offline::{DynOfflineStore, OfflineWriteSummary};
use crate::ondemand::OnDemandFunction;
use crate::online::{DynOnlineStore, WriteOptions, WriteSummary};
use crate::registry::{DynRegistry, Plan, RegistrySnapshot, plan, validate};
use crate::telemetry::{self, InstrumentedOffline, InstrumentedOnline, InstrumentedRegistry};

pub use historical::{HistoricalRequest, HistoricalResult};
#[cfg(feature = "datafusion")]
pub use historical_to::{HistoricalToRequest, HistoricalToResult};
pub use materialize::{
    MaterializeOptions, MaterializeProgress, MaterializeReport, ViewMaterializeReport,
};
pub use serving::{
    DEFAULT_MAX_ONLINE_ENTITIES, DenseBlock, DenseColumn, DenseValues, FeatureMetadata,
    FeatureStatus, OnlineRequest, OnlineResponse, PreparedRequest,
};

/// Which features a request wants.
///
/// Cheap to clone (a reference count): a service builds its selection once
/// and clones it into each [`OnlineRequest`]; the prepared-request cache of
/// [`FeatureStore::get_online_features`] then recognizes it by pointer.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum FeatureSelection {
    /// Explicit references, in output order.
    Refs(Arc<[FeatureRef]>),
    /// The features of a feature service.
    Service(String),
}

impl From<Vec<FeatureRef>> for FeatureSelection {
    fn from(v: Vec<FeatureRef>) -> Self {
        Self::Refs(v.into())
    }
}

impl FeatureSelection {
    /// Parses `view:feature` strings.
    ///
    /// # Errors
    /// [`Error::InvalidInput`] naming a malformed reference.
    pub fn refs<I, S>(refs: I) -> Result<Self>
    where
        I: IntoIterator<Item = S>,
        S: AsRef<str>,
    {
        Ok(Self::Refs(
            refs.into_iter()
                .map(|s| s.as_ref().parse())
                .collect::<Result<Vec<_>>>()?
                .into(),
        ))
    }

    /// The features of service `name`.
    pub fn service(name: impl Into<String>) -> Self {
        Self::Service(name.into())
    }

    pub(crate) fn resolve(&self, defs: &Definitions) -> Result<Vec<FeatureRef>> {
        let refs = match self {
            Self::Refs(r) => r.to_vec(),
            Self::Service(s) => defs
                .feature_services
                .get(s)
                .ok_or_else(|| Error::not_found("feature service", s))?
                .features
                .clone(),
        };
        if refs.is_empty() {
            return Err(Error::invalid("no features requested"));
        }
        for r in &refs {
            if !defs.has_feature(r) {
                return Err(Error::not_found("feature", r.to_string()));
            }
        }
        Ok(refs)
    }
}

/// Options of [`FeatureStore::apply`].
#[derive(Debug, Clone, Copy, Default)]
#[non_exhaustive]
pub struct ApplyOptions {
    /// Apply even if the plan has breaking changes.
    pub force: bool,
}

impl ApplyOptions {
    /// Sets `force`.
    pub fn with_force(mut self, force: bool) -> Self {
        self.force = force;
        self
    }
}

/// Outcome of [`FeatureStore::apply`].
#[derive(Debug, Clone)]
pub struct ApplyResult {
    /// Registry version after the apply (unchanged when the plan was empty).
    pub version: u64,
    /// What changed.
    pub plan: Plan,
}

/// Where [`FeatureStore::push`] writes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PushTarget {
    /// Only the online store.
    Online,
    /// Only the offline store.
    Offline,
    /// Offline first, then online.
    Both,
}

/// Outcome of [`FeatureStore::push`].
#[derive(Debug, Clone, Copy, Default)]
pub struct PushSummary {
    /// Offline append, if the target included it.
    pub offline: Option<OfflineWriteSummary>,
    /// Online upsert, if the target included it.
    pub online: Option<WriteSummary>,
}

#[derive(Debug, Default)]
struct Metrics {
    imputations: AtomicU64,
    deprecated_reads: Mutex<BTreeMap<String, u64>>,
}

/// The facade: definitions (registry), history (offline store) and serving
/// (online store) behind one object. Cheap to share (`Arc<FeatureStore>`).
///
/// ```
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> fstore_core::Result<()> {
/// use fstore_core::{Definitions, Entity, FeatureStore, FeatureView, ValueType};
/// let store = FeatureStore::in_memory();
/// let defs = Definitions::new()
///     .with_entity(Entity::new("driver", "driver_id", ValueType::Int64))
///     .with_feature_view(FeatureView::new("driver_stats", ["driver"]).with_feature("trips", ValueType::Int64));
/// let applied = store.apply(&defs, Default::default()).await?;
/// assert_eq!(applied.version, 1);
/// # Ok(()) }
/// ```
#[derive(Debug)]
pub struct FeatureStore {
    registry: Arc<DynRegistry>,
    offline: Arc<DynOfflineStore>,
    online: Arc<DynOnlineStore>,
    on_demand: HashMap<String, OnDemandFunction>,
    online_timeout: Duration,
    /// The online store ends reads at their `ReadOptions::timeout` itself
    /// ([`crate::OnlineCapabilities::enforces_read_timeout`]): no second timer.
    online_enforces_timeout: bool,
    registry_ttl: Duration,
    cache: Arc<SnapshotCache>,
    /// A background registry refresh is running (serving never waits for one).
    refreshing: Arc<AtomicBool>,
    prepared: serving::PreparedCache,
    max_online_entities: usize,
    metrics: Metrics,
    lkg: Option<resilience::LastKnownGood>,
    breaker: Option<resilience::CircuitBreaker>,
}

/// Builds a [`FeatureStore`]. Unset parts default to the in-memory backends.
#[derive(Debug, Default)]
pub struct FeatureStoreBuilder {
    registry: Option<Arc<DynRegistry>>,
    offline: Option<Arc<DynOfflineStore>>,
    online: Option<Arc<DynOnlineStore>>,
    on_demand: Vec<OnDemandFunction>,
    online_timeout: Option<Duration>,
    registry_ttl: Option<Duration>,
    lkg_capacity: Option<usize>,
    breaker: Option<(u32, Duration)>,
    max_online_entities: Option<usize>,
}

/// A snapshot and when it was read.
type CachedSnapshot = Option<(Instant, Arc<RegistrySnapshot>)>;

/// The cached registry snapshot. Its version and age are mirrored in atomics
/// so that a serving request whose prepared plan is current learns so with
/// two loads: no lock and no reference count written to memory every request
/// shares (on several cores those writes, not the work, cap throughput).
#[derive(Debug)]
struct SnapshotCache {
    slot: Mutex<CachedSnapshot>,
    base: Instant,
    /// When the cached snapshot was stored, in nanoseconds after `base`
    /// (`u64::MAX`: nothing cached).
    at: AtomicU64,
    /// Its version (meaningful while `at` is set).
    version: AtomicU64,
}

impl Default for SnapshotCache {
    fn default() -> Self {
        Self {
            slot: Mutex::new(None),
            base: Instant::now(),
            at: AtomicU64::new(u64::MAX),
            version: AtomicU64::new(0),
        }
    }
}

impl SnapshotCache {
    fn lock(&self) -> std::sync::LockResult<std::sync::MutexGuard<'_, CachedSnapshot>> {
        self.slot.lock()
    }

    /// Mirrors `c` in the atomics (called with the lock held). The version is
    /// stored before the time, so a reader that sees a time sees a version at
    /// least as new as the one stored with it.
    fn publish(&self, c: &CachedSnapshot) {
        match c {
            Some((at, s)) => {
                let nanos = at.saturating_duration_since(self.base).as_nanos();
                self.version.store(s.version, Ordering::Relaxed);
                self.at.store(
                    u64::try_from(nanos).unwrap_or(u64::MAX - 1),
                    Ordering::Release,
                );
            }
            None => self.at.store(u64::MAX, Ordering::Release),
        }
    }

    /// The version of the cached snapshot while it is younger than `ttl`
    /// (`None`: nothing cached, or stale; ask [`FeatureStore::snapshot`]).
    fn fresh_version(&self, ttl: Duration) -> Option<u64> {
        let at = self.at.load(Ordering::Acquire);
        if at == u64::MAX {
            return None;
        }
        let age = self.base.elapsed().saturating_sub(Duration::from_nanos(at));
        (age < ttl).then(|| self.version.load(Ordering::Relaxed))
    }
}

/// Keeps `s` unless a newer snapshot is already cached.
fn remember_in(cache: &SnapshotCache, s: &Arc<RegistrySnapshot>) {
    if let Ok(mut c) = cache.lock() {
        let newer = c.as_ref().is_none_or(|(_, old)| old.version <= s.version);
        if newer {
            *c = Some((Instant::now(), Arc::clone(s)));
            cache.publish(&c);
        }
    }
}

impl FeatureStoreBuilder {
    /// Sets the registry.
    pub fn with_registry(mut self, r: Arc<DynRegistry>) -> Self {
        self.registry = Some(r);
        self
    }
    /// Sets the offline store.
    pub fn with_offline(mut self, s: Arc<DynOfflineStore>) -> Self {
        self.offline = Some(s);
        self
    }
    /// Sets the online store.
    pub fn with_online(mut self, s: Arc<DynOnlineStore>) -> Self {
        self.online = Some(s);
        self
    }
    /// Registers the implementation of an on-demand view.
    pub fn with_on_demand(mut self, f: OnDemandFunction) -> Self {
        self.on_demand.push(f);
        self
    }
    /// Deadline of every online read (default 1 s).
    pub fn with_online_timeout(mut self, t: Duration) -> Self {
        self.online_timeout = Some(t);
        self
    }
    /// How long a registry snapshot is reused before re-checking (default 1 s;
    /// this process's own `apply` refreshes it at once).
    pub fn with_registry_cache_ttl(mut self, t: Duration) -> Self {
        self.registry_ttl = Some(t);
        self
    }

    /// Keeps the last row read per (view, entity) — up to `capacity` entries —
    /// and serves it, with status [`FeatureStatus::Stale`], when an online read
    /// fails or the circuit breaker is open. Off by default.
    pub fn with_last_known_good_cache(mut self, capacity: usize) -> Self {
        self.lkg_capacity = Some(capacity);
        self
    }
    /// After `failures` consecutive failed online reads, stop calling the
    /// backend for `cooldown` (fail fast with [`Error::Unavailable`], or serve
    /// the last-known-good cache), then try again. Off by default.
    pub fn with_circuit_breaker(mut self, failures: u32, cooldown: Duration) -> Self {
        self.breaker = Some((failures, cooldown));
        self
    }
    /// The most entities (rows) one online request may carry (default
    /// [`DEFAULT_MAX_ONLINE_ENTITIES`]); larger requests fail with
    /// [`Error::InvalidInput`] naming the count and the limit, before any
    /// backend call. Bounds what one caller can ask of the backend in one
    /// round trip.
    pub fn with_max_online_entities(mut self, n: usize) -> Self {
        self.max_online_entities = Some(n);
        self
    }

    /// Builds the store. The registry, offline and online stores are wrapped
    /// in [`telemetry`](crate::telemetry) instrumentation (spans and metrics
    /// for every call); the accessors return the wrapped stores.
    ///
    /// # Errors
    /// [`Error::InvalidInput`] when two on-demand functions share a name.
    pub fn build(self) -> Result<FeatureStore> {
        let mut on_demand = HashMap::new();
        for f in self.on_demand {
            if on_demand.insert(f.name().to_owned(), f.clone()).is_some() {
                return Err(Error::invalid(format!(
                    "on-demand function '{}' registered twice",
                    f.name()
                )));
            }
        }
        let online = InstrumentedOnline::wrap(
            self.online
                .unwrap_or_else(|| Arc::new(InMemoryOnlineStore::new())),
        );
        let online_backend = online.backend();
        let online_enforces_timeout = online.capabilities().enforces_read_timeout;
        Ok(FeatureStore {
            registry: InstrumentedRegistry::wrap(
                self.registry
                    .unwrap_or_else(|| Arc::new(InMemoryRegistry::new())),
            ),
            offline: InstrumentedOffline::wrap(
                self.offline
                    .unwrap_or_else(|| Arc::new(InMemoryOfflineStore::new())),
            ),
            online,
            on_demand,
            online_timeout: self.online_timeout.unwrap_or(Duration::from_secs(1)),
            online_enforces_timeout,
            registry_ttl: self.registry_ttl.unwrap_or(Duration::from_secs(1)),
            cache: Arc::default(),
            refreshing: Arc::default(),
            prepared: Default::default(),
            max_online_entities: self
                .max_online_entities
                .unwrap_or(DEFAULT_MAX_ONLINE_ENTITIES),
            metrics: Metrics::default(),
            lkg: self.lkg_capacity.map(resilience::LastKnownGood::new),
            breaker: self
                .breaker
                .map(|(n, d)| resilience::CircuitBreaker::new(online_backend, n, d)),
        })
    }
}

impl FeatureStore {
    /// A builder.
    pub fn builder() -> FeatureStoreBuilder {
        FeatureStoreBuilder::default()
    }

    /// A store on the in-memory registry, offline and online stores.
    pub fn in_memory() -> Self {
        Self {
            registry: InstrumentedRegistry::wrap(Arc::new(InMemoryRegistry::new())),
            offline: InstrumentedOffline::wrap(Arc::new(InMemoryOfflineStore::new())),
            online: InstrumentedOnline::wrap(Arc::new(InMemoryOnlineStore::new())),
            on_demand: HashMap::new(),
            online_timeout: Duration::from_secs(1),
            online_enforces_timeout: false,
            registry_ttl: Duration::from_secs(1),
            cache: Arc::default(),
            refreshing: Arc::default(),
            prepared: Default::default(),
            max_online_entities: DEFAULT_MAX_ONLINE_ENTITIES,
            metrics: Metrics::default(),
            lkg: None,
            breaker: None,
        }
    }

    /// The registry.
    pub fn registry(&self) -> &Arc<DynRegistry> {
        &self.registry
    }
    /// The offline store.
    pub fn offline_store(&self) -> &Arc<DynOfflineStore> {
        &self.offline
    }
    /// The online store.
    pub fn online_store(&self) -> &Arc<DynOnlineStore> {
        &self.online
    }

    /// The registry snapshot, cached for the configured ttl.
    ///
    /// # Errors
    /// Registry failures.
    pub async fn snapshot(&self) -> Result<Arc<RegistrySnapshot>> {
        if let Ok(c) = self.cache.lock()
            && let Some((at, s)) = c.as_ref()
            && at.elapsed() < self.registry_ttl
        {
            return Ok(Arc::clone(s));
        }
        let s = self.registry.snapshot().await?;
        self.remember(&s);
        Ok(s)
    }

    fn remember(&self, s: &Arc<RegistrySnapshot>) {
        remember_in(&self.cache, s);
    }

    fn forget(&self) {
        if let Ok(mut c) = self.cache.lock() {
            *c = None;
            self.cache.publish(&c);
        }
    }

    /// The pure diff between the registry and `desired` (the complete set of
    /// definitions), after validating `desired`.
    ///
    /// # Errors
    /// [`Error::InvalidInput`] from validation; registry failures.
    pub async fn plan(&self, desired: &Definitions) -> Result<Plan> {
        validate(desired)?;
        let current = self.registry.snapshot().await?;
        Ok(plan(&current.state.definitions, desired))
    }

    /// Validates `desired`, plans, and commits it as the new registry version
    /// (compare-and-swap: a concurrent apply makes this one fail with
    /// [`Error::Conflict`], nothing lost). Watermarks of removed views are dropped.
    ///
    /// # Errors
    /// [`Error::InvalidInput`], [`Error::BreakingChange`] (without `force`),
    /// [`Error::OnDemandVersionMismatch`] (a registered function with another
    /// version), [`Error::Conflict`].
    pub async fn apply(&self, desired: &Definitions, opts: ApplyOptions) -> Result<ApplyResult> {
        let span = tracing::info_span!(
            "fstore.apply",
            registry = self.registry.backend(),
            force = opts.force,
            changes = tracing::field::Empty,
            version = tracing::field::Empty,
            outcome = tracing::field::Empty,
            error = tracing::field::Empty,
        );
        let res =
            telemetry::operation("apply", span.clone(), self.apply_inner(desired, opts)).await;
        if let Ok(r) = &res {
            span.record("changes", r.plan.changes.len());
            span.record("version", r.version);
        }
        res
    }

    async fn apply_inner(&self, desired: &Definitions, opts: ApplyOptions) -> Result<ApplyResult> {
        validate(desired)?;
        for (name, def) in &desired.on_demand_views {
            if let Some(f) = self.on_demand.get(name) {
                f.check(def)?;
            }
        }
        let current = self.registry.snapshot().await?;
        let p = plan(&current.state.definitions, desired);
        if p.is_empty() {
            return Ok(ApplyResult {
                version: current.version,
                plan: p,
            });
        }
        if p.is_breaking() && !opts.force {
            return Err(Error::BreakingChange {
                changes: p.breaking(),
            });
        }
        let mut state = current.state.clone();
        state.definitions = desired.clone();
        state
            .watermarks
            .retain(|v, _| desired.feature_views.contains_key(v));
        let version = self.registry.commit(current.version, state).await?;
        self.forget();
        Ok(ApplyResult { version, plan: p })
    }

    /// Resolves the view `name` from the current registry.
    ///
    /// # Errors
    /// [`Error::NotFound`].
    pub async fn resolve_view(&self, name: &str) -> Result<ResolvedView> {
        self.snapshot().await?.state.definitions.resolve_view(name)
    }

    /// Validates `batch` against view `view` and writes it to the online store,
    /// the offline store, or both (offline first).
    ///
    /// # Errors
    /// [`Error::InvalidInput`] naming the column/row at fault ([semantics §3](crate::docs::semantics) time
    /// rules included); backend failures.
    pub async fn push(
        &self,
        view: &str,
        batch: &RecordBatch,
        target: PushTarget,
    ) -> Result<PushSummary> {
        let span = tracing::info_span!(
            "fstore.push",
            view,
            rows = batch.num_rows(),
            target = ?target,
            outcome = tracing::field::Empty,
            error = tracing::field::Empty,
        );
        telemetry::operation("push", span, self.push_inner(view, batch, target)).await
    }

    async fn push_inner(
        &self,
        view: &str,
        batch: &RecordBatch,
        target: PushTarget,
    ) -> Result<PushSummary> {
        let rv = self.resolve_view(view).await?;
        let batch = normalize_batch(&rv, batch, false)?;
        let mut out = PushSummary::default();
        // Tiles are built before anything is written: bad input (an int64 sum
        // overflowing within the batch) writes nothing.
        let online = matches!(target, PushTarget::Online | PushTarget::Both);
        let tiles = if online && !rv.view.aggregations.is_empty() {
            let aggs = crate::agg::OnlineAgg::of_view(&rv, None)?;
            let writes = crate::agg::build_tile_writes(
                &rv,
                &aggs,
                std::slice::from_ref(&batch),
                None,
                None,
                None,
            )?;
            Some((aggs, writes))
        } else {
            None
        };
        if matches!(target, PushTarget::Offline | PushTarget::Both) {
            out.offline = Some(self.offline.write(&rv, batch.clone()).await?);
        }
        if matches!(target, PushTarget::Online | PushTarget::Both) {
            if let Some((aggs, writes)) = tiles
                && !writes.is_empty()
            {
                let merge = crate::agg::tile_merger(&aggs);
                self.online
                    .merge_tiles(&rv, writes, &merge, &WriteOptions::default())
                    .await?;
            }
            let rows = to_online_rows(&rv, &batch)?;
            out.online = Some(
                self.online
                    .write(&rv, rows, &WriteOptions::default())
                    .await?,
            );
        }
        Ok(out)
    }

    /// Appends history to the offline store (same as `push(.., Offline)`).
    ///
    /// # Errors
    /// As [`FeatureStore::push`].
    pub async fn write_history(
        &self,
        view: &str,
        batch: &RecordBatch,
    ) -> Result<OfflineWriteSummary> {
        let s = self.push(view, batch, PushTarget::Offline).await?;
        s.offline
            .ok_or_else(|| Error::backend_msg("fstore", "offline write reported nothing"))
    }

    /// Number of values imputed by `Default` fallbacks since the store was built.
    pub fn imputation_count(&self) -> u64 {
        self.metrics.imputations.load(Ordering::Relaxed)
    }

    /// Reads of deprecated views since the store was built, per view.
    pub fn deprecated_reads(&self) -> BTreeMap<String, u64> {
        self.metrics
            .deprecated_reads
            .lock()
            .map(|m| m.clone())
            .unwrap_or_default()
    }

    /// Counts a read of each of the deprecated views `views`.
    fn note_deprecated_names(&self, views: &[String]) {
        for v in views {
            tracing::warn!(view = %v, "read of deprecated feature view");
        }
        if let Ok(mut m) = self.metrics.deprecated_reads.lock() {
            for v in views {
                *m.entry(v.clone()).or_default() += 1;
            }
        }
    }

    fn note_deprecated(&self, defs: &Definitions, views: &[String]) {
        for v in views {
            if let Some(d) = defs
                .feature_views
                .get(v)
                .and_then(|fv| fv.deprecation.as_ref())
            {
                tracing::warn!(
                    view = %v,
                    tombstone = %d.tombstone,
                    replacement = ?d.replacement,
                    "read of deprecated feature view"
                );
                telemetry::record_deprecated_read(v);
                if let Ok(mut m) = self.metrics.deprecated_reads.lock() {
                    *m.entry(v.clone()).or_default() += 1;
                }
            }
        }
    }

    fn on_demand_fn(&self, name: &str) -> Result<&OnDemandFunction> {
        self.on_demand.get(name).ok_or_else(|| {
            Error::invalid(format!(
                "on-demand view '{name}' has no function registered in this process (FeatureStoreBuilder::on_demand)"
            ))
        })
    }
}

/// The plan of a request: per view, the features to read; per on-demand view,
/// its definition. `refs` is the output order.
#[derive(Debug)]
pub(crate) struct RequestPlan {
    pub(crate) refs: Vec<FeatureRef>,
    /// (view, features) in first-use order; includes hidden on-demand inputs.
    pub(crate) views: Vec<(ResolvedView, Vec<String>)>,
    /// (view, aggregation features) in first-use order.
    pub(crate) aggs: Vec<(ResolvedView, Vec<String>)>,
    pub(crate) on_demand: Vec<crate::model::OnDemandView>,
}

impl RequestPlan {
    pub(crate) fn new(defs: &Definitions, sel: &FeatureSelection) -> Result<Self> {
        let refs = sel.resolve(defs)?;
        let mut views: Vec<(ResolvedView, Vec<String>)> = Vec::new();
        let mut on_demand: Vec<crate::model::OnDemandView> = Vec::new();
        let mut aggs: Vec<(ResolvedView, Vec<String>)> = Vec::new();
        let add = |views: &mut Vec<(ResolvedView, Vec<String>)>, r: &FeatureRef| -> Result<()> {
            match views.iter_mut().find(|(v, _)| v.name() == r.view) {
                Some((_, fs)) => {
                    if !fs.contains(&r.feature) {
                        fs.push(r.feature.clone());
                    }
                }
                None => views.push((defs.resolve_view(&r.view)?, vec![r.feature.clone()])),
            }
            Ok(())
        };
        for r in &refs {
            if let Some(o) = defs.on_demand_views.get(&r.view) {
                if !on_demand.iter().any(|x| x.name == o.name) {
                    on_demand.push(o.clone());
                }
            } else if defs.aggregation(r).is_some() {
                add(&mut aggs, r)?;
            } else {
                add(&mut views, r)?;
            }
        }
        for o in &on_demand {
            for r in &o.inputs {
                add(&mut views, r)?;
            }
        }
        Ok(Self {
            refs,
            views,
            aggs,
            on_demand,
        })
    }

    pub(crate) fn view_names(&self) -> Vec<String> {
        let mut names: Vec<String> = self
            .views
            .iter()
            .map(|(v, _)| v.name().to_owned())
            .collect();
        for (v, _) in &self.aggs {
            if !names.iter().any(|n| n == v.name()) {
                names.push(v.name().to_owned());
            }
        }
        names
    }
}

/// Output column name of a feature.
pub(crate) fn output_name(r: &FeatureRef, full: bool) -> String {
    if full {
        format!("{}__{}", r.view, r.feature)
    } else {
        r.feature.clone()
    }
}

/// Fails on duplicate output names, naming the clash.
pub(crate) fn check_unique_names<'a>(names: impl IntoIterator<Item = &'a str>) -> Result<()> {
    let mut seen = std::collections::HashSet::new();
    for n in names {
        if !seen.insert(n) {
            return Err(Error::invalid(format!(
                "output column '{n}' appears twice; request full feature names (view__feature) to disambiguate"
            )));
        }
    }
    Ok(())
}

#[cfg(test)]
mod hardening_tests;
#[cfg(test)]
mod tests;
