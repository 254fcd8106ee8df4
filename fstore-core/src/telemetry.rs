//! Tracing spans and metrics ([semantics §13](crate::docs::semantics)).
//!
//! fstore reports what it does through two facades; the host application
//! chooses where it goes:
//!
//! * **[`tracing`] spans.** Every store call runs in a span named
//!   `fstore.<store>.<call>` (`fstore.online.read`, `fstore.offline.scan`,
//!   `fstore.registry.commit`, …, level `DEBUG`) with the fields `backend`,
//!   `view` (when one view is concerned), `keys`/`rows`, and at the end
//!   `outcome` (`ok` / `error`) and `error` (the error's message). Facade
//!   operations run in `INFO` spans (`fstore.apply`, `fstore.push`,
//!   `fstore.materialize`, `fstore.materialize_incremental`) with the views
//!   and row counts. Install any subscriber (`tracing-subscriber`, OpenTelemetry)
//!   to see them; without one the cost is a static interest check.
//! * **[`metrics`] facade.** Install a recorder (Prometheus, StatsD, …) before
//!   building the store; [`describe_metrics`] registers the units and
//!   descriptions below. Without a recorder every call is a no-op: the store
//!   call wrappers hold pre-built metric keys, so the read path does not
//!   allocate or format anything for metrics.
//!
//! The store calls are instrumented by wrappers that
//! [`FeatureStoreBuilder::build`](crate::FeatureStoreBuilder::build) puts around
//! the registry, offline and online stores, so adapters need no code of their
//! own.
//!
//! # Metrics
//!
//! The one table of every metric fstore emits ([`METRICS`] holds the same
//! rows; a test keeps this table, the README's and the code in sync):
//!
//! | name | kind | unit | labels | what |
//! |------|------|------|--------|------|
//! | `fstore_store_call_duration_seconds` | histogram | seconds | `operation`, `backend`, `outcome` | latency of one call to the registry, offline or online store (`operation` = `online.read`, `online.write`, `offline.scan`, `registry.commit`, …) |
//! | `fstore_operation_duration_seconds` | histogram | seconds | `operation`, `outcome` | latency of a facade operation (`apply`, `push`, `materialize`, `materialize_incremental`, `historical`, `online`) |
//! | `fstore_store_call_errors_total` | counter | calls | `operation`, `backend`, `kind` | failed store calls by error kind (`timeout`, `throttled`, `unavailable`, `conflict`, `not_found`, `invalid_input`, `backend`, `other`) |
//! | `fstore_online_rows_written_total` | counter | rows | `view`, `backend` | rows stored by online writes (push and materialization) |
//! | `fstore_online_rows_skipped_total` | counter | rows | `view`, `backend` | rows an online write skipped because a newer row was stored (newest-wins) |
//! | `fstore_offline_rows_written_total` | counter | rows | `view`, `backend` | rows appended to the offline store |
//! | `fstore_materialized_rows_total` | counter | rows | `view`, `backend` | rows read from the offline store by a materialization and written or skipped online (`backend` = online backend) |
//! | `fstore_features_served_total` | counter | values | `view`, `status` | feature values served online, by status (`Present`, `NullValue`, `NotFound`, `Expired`, `Stale`, `Unavailable`), counted by `get_online_features` |
//! | `fstore_imputations_total` | counter | values | `view` | values replaced by a `Default` fallback when served |
//! | `fstore_deprecated_reads_total` | counter | reads | `view` | online or historical requests that read a deprecated view |
//! | `fstore_circuit_breaker_open` | gauge | boolean | `backend` | 1 while the online read circuit breaker is open, else 0 |
//! | `fstore_freshness_lag_seconds` | gauge | seconds | `view` | age of the view's newest offline event at the last freshness check |

use std::future::Future;
use std::sync::Arc;
use std::time::Instant;

use arrow_array::RecordBatch;
use async_trait::async_trait;
use metrics::{Key, Label, Unit};
use tracing::Instrument;
use tracing::field::Empty;

use crate::error::{Error, Result};
use crate::model::ResolvedView;
use crate::offline::{
    DynOfflineStore, OfflineCapabilities, OfflineStore, OfflineWriteSummary, ScanRequest,
    ScanResult,
};
use crate::online::{
    DynOnlineStore, OnlineCapabilities, OnlineKey, OnlineRow, OnlineStore, ReadOptions, Tile,
    TileMergeFn, TileWrite, WriteOptions, WriteSummary,
};
use crate::registry::{DynRegistry, Registry, RegistrySnapshot, RegistryState};

/// Histogram: latency of one store call (`operation`, `backend`, `outcome`).
pub const STORE_CALL_DURATION: &str = "fstore_store_call_duration_seconds";
/// Histogram: latency of a facade operation (`operation`, `outcome`).
pub const OPERATION_DURATION: &str = "fstore_operation_duration_seconds";
/// Counter: failed store calls (`operation`, `backend`, `kind`).
pub const STORE_CALL_ERRORS: &str = "fstore_store_call_errors_total";
/// Counter: rows stored by online writes (`view`, `backend`).
pub const ONLINE_ROWS_WRITTEN: &str = "fstore_online_rows_written_total";
/// Counter: rows skipped by online writes under newest-wins (`view`, `backend`).
pub const ONLINE_ROWS_SKIPPED: &str = "fstore_online_rows_skipped_total";
/// Counter: rows appended offline (`view`, `backend`).
pub const OFFLINE_ROWS_WRITTEN: &str = "fstore_offline_rows_written_total";
/// Counter: rows materialized (`view`, `backend`).
pub const MATERIALIZED_ROWS: &str = "fstore_materialized_rows_total";
/// Counter: feature values served online (`view`, `status`).
pub const FEATURES_SERVED: &str = "fstore_features_served_total";
/// Counter: values imputed by `Default` fallbacks (`view`).
pub const IMPUTATIONS: &str = "fstore_imputations_total";
/// Counter: requests that read a deprecated view (`view`).
pub const DEPRECATED_READS: &str = "fstore_deprecated_reads_total";
/// Gauge: 1 while the online circuit breaker is open (`backend`).
pub const CIRCUIT_BREAKER_OPEN: &str = "fstore_circuit_breaker_open";
/// Gauge: age of a view's newest offline event at the last check (`view`).
pub const FRESHNESS_LAG: &str = "fstore_freshness_lag_seconds";

/// The kind of a metric.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MetricKind {
    /// Monotonic count.
    Counter,
    /// Last value.
    Gauge,
    /// Distribution of observations.
    Histogram,
}

impl MetricKind {
    /// `counter`, `gauge` or `histogram`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Counter => "counter",
            Self::Gauge => "gauge",
            Self::Histogram => "histogram",
        }
    }
}

/// One row of the metrics table.
#[derive(Debug, Clone, Copy)]
pub struct MetricDef {
    /// Metric name.
    pub name: &'static str,
    /// Counter, gauge or histogram.
    pub kind: MetricKind,
    /// Unit as written in the table (`seconds`, `rows`, …).
    pub unit: &'static str,
    /// Label names.
    pub labels: &'static [&'static str],
    /// What it measures.
    pub description: &'static str,
}

impl MetricDef {
    fn metrics_unit(&self) -> Option<Unit> {
        match self.unit {
            "seconds" => Some(Unit::Seconds),
            "boolean" => None,
            _ => Some(Unit::Count),
        }
    }
}

/// Every metric fstore emits (the table in the [module docs](self)).
pub const METRICS: &[MetricDef] = &[
    MetricDef {
        name: STORE_CALL_DURATION,
        kind: MetricKind::Histogram,
        unit: "seconds",
        labels: &["operation", "backend", "outcome"],
        description: "latency of one call to the registry, offline or online store",
    },
    MetricDef {
        name: OPERATION_DURATION,
        kind: MetricKind::Histogram,
        unit: "seconds",
        labels: &["operation", "outcome"],
        description: "latency of a facade operation",
    },
    MetricDef {
        name: STORE_CALL_ERRORS,
        kind: MetricKind::Counter,
        unit: "calls",
        labels: &["operation", "backend", "kind"],
        description: "failed store calls by error kind",
    },
    MetricDef {
        name: ONLINE_ROWS_WRITTEN,
        kind: MetricKind::Counter,
        unit: "rows",
        labels: &["view", "backend"],
        description: "rows stored by online writes",
    },
    MetricDef {
        name: ONLINE_ROWS_SKIPPED,
        kind: MetricKind::Counter,
        unit: "rows",
        labels: &["view", "backend"],
        description: "rows an online write skipped because a newer row was stored",
    },
    MetricDef {
        name: OFFLINE_ROWS_WRITTEN,
        kind: MetricKind::Counter,
        unit: "rows",
        labels: &["view", "backend"],
        description: "rows appended to the offline store",
    },
    MetricDef {
        name: MATERIALIZED_ROWS,
        kind: MetricKind::Counter,
        unit: "rows",
        labels: &["view", "backend"],
        description: "rows read by a materialization and written or skipped online",
    },
    MetricDef {
        name: FEATURES_SERVED,
        kind: MetricKind::Counter,
        unit: "values",
        labels: &["view", "status"],
        description: "feature values served online, by status",
    },
    MetricDef {
        name: IMPUTATIONS,
        kind: MetricKind::Counter,
        unit: "values",
        labels: &["view"],
        description: "values replaced by a Default fallback when served",
    },
    MetricDef {
        name: DEPRECATED_READS,
        kind: MetricKind::Counter,
        unit: "reads",
        labels: &["view"],
        description: "requests that read a deprecated view",
    },
    MetricDef {
        name: CIRCUIT_BREAKER_OPEN,
        kind: MetricKind::Gauge,
        unit: "boolean",
        labels: &["backend"],
        description: "1 while the online read circuit breaker is open, else 0",
    },
    MetricDef {
        name: FRESHNESS_LAG,
        kind: MetricKind::Gauge,
        unit: "seconds",
        labels: &["view"],
        description: "age of the view's newest offline event at the last freshness check",
    },
];

/// Registers unit and description of every metric in [`METRICS`] with the
/// installed recorder. Call once after installing it (optional: metrics are
/// emitted either way).
pub fn describe_metrics() {
    metrics::with_recorder(|r| {
        for m in METRICS {
            let unit = m.metrics_unit();
            let name = metrics::KeyName::from_const_str(m.name);
            let desc = metrics::SharedString::const_str(m.description);
            match m.kind {
                MetricKind::Counter => r.describe_counter(name, unit, desc),
                MetricKind::Gauge => r.describe_gauge(name, unit, desc),
                MetricKind::Histogram => r.describe_histogram(name, unit, desc),
            }
        }
    });
}

static METADATA: metrics::Metadata<'static> =
    metrics::Metadata::new(module_path!(), metrics::Level::INFO, Some(module_path!()));

/// The error kind label of [`STORE_CALL_ERRORS`].
pub fn error_kind(e: &Error) -> &'static str {
    match e {
        Error::Timeout { .. } => "timeout",
        Error::Throttled { .. } => "throttled",
        Error::Unavailable { .. } => "unavailable",
        Error::Conflict(_) => "conflict",
        Error::NotFound { .. } => "not_found",
        Error::InvalidInput(_) => "invalid_input",
        Error::Backend { .. } => "backend",
        _ => "other",
    }
}

/// Adds `n` to counter `name` with labels `view` and `backend`.
pub(crate) fn count_view_backend(name: &'static str, view: &str, backend: &'static str, n: u64) {
    if n == 0 {
        return;
    }
    let key = Key::from_parts(
        name,
        vec![
            Label::new("view", view.to_owned()),
            Label::from_static_parts("backend", backend),
        ],
    );
    metrics::with_recorder(|r| r.register_counter(&key, &METADATA).increment(n));
}

/// Adds `n` to counter `name` with the one label `view`.
pub(crate) fn count_view(name: &'static str, view: &str, n: u64) {
    if n == 0 {
        return;
    }
    let key = Key::from_parts(name, vec![Label::new("view", view.to_owned())]);
    metrics::with_recorder(|r| r.register_counter(&key, &METADATA).increment(n));
}

/// Counts `n` values of `view` served with `status` ([`FEATURES_SERVED`]).
pub fn record_served(view: &str, status: &'static str, n: u64) {
    if n == 0 {
        return;
    }
    let key = Key::from_parts(
        FEATURES_SERVED,
        vec![
            Label::new("view", view.to_owned()),
            Label::from_static_parts("status", status),
        ],
    );
    metrics::with_recorder(|r| r.register_counter(&key, &METADATA).increment(n));
}

/// Counts `n` values of `view` imputed by a `Default` fallback ([`IMPUTATIONS`]).
pub fn record_imputations(view: &str, n: u64) {
    count_view(IMPUTATIONS, view, n);
}

/// Counts one read of the deprecated view `view` ([`DEPRECATED_READS`]).
pub fn record_deprecated_read(view: &str) {
    count_view(DEPRECATED_READS, view, 1);
}

/// Sets the circuit breaker gauge of `backend` ([`CIRCUIT_BREAKER_OPEN`]).
pub fn record_breaker_open(backend: &'static str, open: bool) {
    let key = Key::from_parts(
        CIRCUIT_BREAKER_OPEN,
        vec![Label::from_static_parts("backend", backend)],
    );
    metrics::with_recorder(|r| {
        r.register_gauge(&key, &METADATA)
            .set(if open { 1.0 } else { 0.0 });
    });
}

/// Sets the freshness lag gauge of `view` ([`FRESHNESS_LAG`]).
pub fn record_freshness_lag(view: &str, lag: std::time::Duration) {
    let key = Key::from_parts(FRESHNESS_LAG, vec![Label::new("view", view.to_owned())]);
    metrics::with_recorder(|r| r.register_gauge(&key, &METADATA).set(lag.as_secs_f64()));
}

/// Runs a facade operation: records [`OPERATION_DURATION`] and the span's
/// `outcome` / `error` fields. `span` must declare `outcome` and `error`.
pub(crate) async fn operation<T, F>(op: &'static str, span: tracing::Span, fut: F) -> Result<T>
where
    F: Future<Output = Result<T>>,
{
    let start = Instant::now();
    let res = fut.instrument(span.clone()).await;
    finish_span(&span, &res);
    let key = operation_key(op, res.is_ok());
    let secs = start.elapsed().as_secs_f64();
    metrics::with_recorder(|r| r.register_histogram(&key, &METADATA).record(secs));
    res
}

/// The [`OPERATION_DURATION`] key of `op` and an outcome: static (no
/// allocation) for the facade's operations, the serving path among them.
fn operation_key(op: &'static str, ok: bool) -> Key {
    macro_rules! keys {
        ($($name:literal),*) => {
            match (op, ok) {
                $(
                    ($name, true) => {
                        const L: &[Label] = &[
                            Label::from_static_parts("operation", $name),
                            Label::from_static_parts("outcome", "ok"),
                        ];
                        Key::from_static_parts(OPERATION_DURATION, L)
                    }
                    ($name, false) => {
                        const L: &[Label] = &[
                            Label::from_static_parts("operation", $name),
                            Label::from_static_parts("outcome", "error"),
                        ];
                        Key::from_static_parts(OPERATION_DURATION, L)
                    }
                )*
                _ => Key::from_parts(
                    OPERATION_DURATION,
                    vec![
                        Label::from_static_parts("operation", op),
                        Label::from_static_parts("outcome", if ok { "ok" } else { "error" }),
                    ],
                ),
            }
        };
    }
    keys!(
        "online",
        "historical",
        "apply",
        "push",
        "materialize",
        "materialize_incremental"
    )
}

/// The six [`FEATURES_SERVED`] keys of `view`, one per status (in
/// `FeatureStatus` order), built once per prepared request.
pub(crate) fn served_keys(view: &str, statuses: [&'static str; 6]) -> [Key; 6] {
    statuses.map(|st| {
        Key::from_parts(
            FEATURES_SERVED,
            vec![
                Label::new("view", view.to_owned()),
                Label::from_static_parts("status", st),
            ],
        )
    })
}

/// Adds `n` to a pre-built counter key.
pub(crate) fn add_to(key: &Key, n: u64) {
    if n > 0 {
        metrics::with_recorder(|r| r.register_counter(key, &METADATA).increment(n));
    }
}

fn finish_span<T>(span: &tracing::Span, res: &Result<T>) {
    if span.is_disabled() {
        return;
    }
    match res {
        Ok(_) => {
            span.record("outcome", "ok");
        }
        Err(e) => {
            span.record("outcome", "error");
            span.record("error", tracing::field::display(e));
        }
    }
}

/// Pre-built metric keys of one store call (`ok` / `error` outcomes), so the
/// hot path neither allocates nor formats for metrics.
#[derive(Debug)]
struct CallKeys {
    ok: Key,
    err: Key,
    op: &'static str,
    backend: &'static str,
}

impl CallKeys {
    fn new(op: &'static str, backend: &'static str) -> Self {
        let k = |o: &'static str| {
            Key::from_parts(
                STORE_CALL_DURATION,
                vec![
                    Label::from_static_parts("operation", op),
                    Label::from_static_parts("backend", backend),
                    Label::from_static_parts("outcome", o),
                ],
            )
        };
        Self {
            ok: k("ok"),
            err: k("error"),
            op,
            backend,
        }
    }

    async fn run<T, F>(&self, span: tracing::Span, fut: F) -> Result<T>
    where
        F: Future<Output = Result<T>>,
    {
        let start = Instant::now();
        let res = fut.instrument(span.clone()).await;
        let secs = start.elapsed().as_secs_f64();
        finish_span(&span, &res);
        let key = if res.is_ok() { &self.ok } else { &self.err };
        metrics::with_recorder(|r| {
            r.register_histogram(key, &METADATA).record(secs);
            if let Err(e) = &res {
                let ek = Key::from_parts(
                    STORE_CALL_ERRORS,
                    vec![
                        Label::from_static_parts("operation", self.op),
                        Label::from_static_parts("backend", self.backend),
                        Label::from_static_parts("kind", error_kind(e)),
                    ],
                );
                r.register_counter(&ek, &METADATA).increment(1);
            }
        });
        res
    }
}

macro_rules! store_span {
    ($name:literal, $backend:expr $(, $($field:tt)*)?) => {
        tracing::debug_span!($name, backend = $backend, $($($field)*,)? outcome = Empty, error = Empty)
    };
}

/// An [`OnlineStore`] that forwards every call to `inner` inside a span and
/// records [`STORE_CALL_DURATION`], [`STORE_CALL_ERRORS`],
/// [`ONLINE_ROWS_WRITTEN`] and [`ONLINE_ROWS_SKIPPED`].
#[derive(Debug)]
pub(crate) struct InstrumentedOnline {
    inner: Arc<DynOnlineStore>,
    read: CallKeys,
    write: CallKeys,
    delete: CallKeys,
}

impl InstrumentedOnline {
    pub(crate) fn wrap(inner: Arc<DynOnlineStore>) -> Arc<DynOnlineStore> {
        let b = inner.backend();
        Arc::new(Self {
            inner,
            read: CallKeys::new("online.read", b),
            write: CallKeys::new("online.write", b),
            delete: CallKeys::new("online.delete_view", b),
        })
    }
}

#[deny(clippy::missing_trait_methods)]
#[async_trait]
impl OnlineStore for InstrumentedOnline {
    fn backend(&self) -> &'static str {
        self.inner.backend()
    }

    fn store_id(&self) -> String {
        self.inner.store_id()
    }

    fn capabilities(&self) -> OnlineCapabilities {
        self.inner.capabilities()
    }

    async fn write(
        &self,
        view: &ResolvedView,
        rows: Vec<OnlineRow>,
        opts: &WriteOptions,
    ) -> Result<WriteSummary> {
        let b = self.inner.backend();
        let span = store_span!(
            "fstore.online.write",
            b,
            view = view.name(),
            rows = rows.len(),
            written = Empty,
            skipped = Empty
        );
        let res = self
            .write
            .run(span.clone(), self.inner.write(view, rows, opts))
            .await;
        if let Ok(s) = &res {
            span.record("written", s.written);
            span.record("skipped", s.skipped);
            count_view_backend(ONLINE_ROWS_WRITTEN, view.name(), b, s.written);
            count_view_backend(ONLINE_ROWS_SKIPPED, view.name(), b, s.skipped);
        }
        res
    }

    async fn read(&self, keys: &[OnlineKey], opts: &ReadOptions) -> Result<Vec<Option<OnlineRow>>> {
        let span = store_span!(
            "fstore.online.read",
            self.inner.backend(),
            keys = keys.len()
        );
        self.read.run(span, self.inner.read(keys, opts)).await
    }

    async fn delete_view(&self, view: &str) -> Result<()> {
        let span = store_span!(
            "fstore.online.delete_view",
            self.inner.backend(),
            view = view
        );
        self.delete.run(span, self.inner.delete_view(view)).await
    }

    // Aggregation tiles: forwarded in a span (no per-call metrics yet).
    async fn write_tiles(
        &self,
        view: &ResolvedView,
        writes: Vec<TileWrite>,
        opts: &WriteOptions,
    ) -> Result<()> {
        let span = store_span!(
            "fstore.online.write_tiles",
            self.inner.backend(),
            view = view.name(),
            entities = writes.len()
        );
        self.inner
            .write_tiles(view, writes, opts)
            .instrument(span)
            .await
    }

    async fn merge_tiles(
        &self,
        view: &ResolvedView,
        writes: Vec<TileWrite>,
        merge: &TileMergeFn,
        opts: &WriteOptions,
    ) -> Result<()> {
        let span = store_span!(
            "fstore.online.merge_tiles",
            self.inner.backend(),
            view = view.name(),
            entities = writes.len()
        );
        self.inner
            .merge_tiles(view, writes, merge, opts)
            .instrument(span)
            .await
    }

    async fn read_tiles(&self, keys: &[OnlineKey], opts: &ReadOptions) -> Result<Vec<Vec<Tile>>> {
        let span = store_span!(
            "fstore.online.read_tiles",
            self.inner.backend(),
            keys = keys.len()
        );
        self.inner.read_tiles(keys, opts).instrument(span).await
    }
}

/// An [`OfflineStore`] wrapper: spans, [`STORE_CALL_DURATION`],
/// [`STORE_CALL_ERRORS`], [`OFFLINE_ROWS_WRITTEN`].
#[derive(Debug)]
pub(crate) struct InstrumentedOffline {
    inner: Arc<DynOfflineStore>,
    write: CallKeys,
    scan: CallKeys,
    latest: CallKeys,
    delete: CallKeys,
    table_id: CallKeys,
}

impl InstrumentedOffline {
    pub(crate) fn wrap(inner: Arc<DynOfflineStore>) -> Arc<DynOfflineStore> {
        let b = inner.backend();
        Arc::new(Self {
            inner,
            write: CallKeys::new("offline.write", b),
            scan: CallKeys::new("offline.scan", b),
            latest: CallKeys::new("offline.latest_version", b),
            delete: CallKeys::new("offline.delete_view", b),
            table_id: CallKeys::new("offline.table_id", b),
        })
    }
}

#[deny(clippy::missing_trait_methods)]
#[async_trait]
impl OfflineStore for InstrumentedOffline {
    fn backend(&self) -> &'static str {
        self.inner.backend()
    }

    fn capabilities(&self) -> OfflineCapabilities {
        self.inner.capabilities()
    }

    async fn write(&self, view: &ResolvedView, batch: RecordBatch) -> Result<OfflineWriteSummary> {
        let b = self.inner.backend();
        let span = store_span!(
            "fstore.offline.write",
            b,
            view = view.name(),
            rows = batch.num_rows(),
            version = Empty
        );
        let res = self
            .write
            .run(span.clone(), self.inner.write(view, batch))
            .await;
        if let Ok(s) = &res {
            if let Some(v) = s.version {
                span.record("version", v);
            }
            count_view_backend(OFFLINE_ROWS_WRITTEN, view.name(), b, s.rows);
        }
        res
    }

    async fn scan(&self, view: &ResolvedView, req: &ScanRequest) -> Result<ScanResult> {
        let span = store_span!(
            "fstore.offline.scan",
            self.inner.backend(),
            view = view.name(),
            as_of_version = req.as_of_version,
            since_version = req.since_version,
            version = Empty
        );
        let res = self
            .scan
            .run(span.clone(), self.inner.scan(view, req))
            .await;
        if let Ok(ScanResult {
            version: Some(v), ..
        }) = &res
        {
            span.record("version", *v);
        }
        res
    }

    async fn latest_version(&self, view: &ResolvedView) -> Result<Option<u64>> {
        let span = store_span!(
            "fstore.offline.latest_version",
            self.inner.backend(),
            view = view.name()
        );
        self.latest.run(span, self.inner.latest_version(view)).await
    }

    async fn delete_view(&self, view: &ResolvedView) -> Result<()> {
        let span = store_span!(
            "fstore.offline.delete_view",
            self.inner.backend(),
            view = view.name()
        );
        self.delete.run(span, self.inner.delete_view(view)).await
    }

    async fn table_id(&self, view: &ResolvedView) -> Result<Option<String>> {
        let span = store_span!(
            "fstore.offline.table_id",
            self.inner.backend(),
            view = view.name()
        );
        self.table_id.run(span, self.inner.table_id(view)).await
    }

    #[cfg(feature = "datafusion")]
    async fn historical_to(
        &self,
        views: &[(ResolvedView, Vec<String>)],
        refs: &[crate::model::FeatureRef],
        req: &crate::HistoricalToRequest,
        sink: &std::path::Path,
    ) -> Result<crate::HistoricalToResult> {
        self.inner.historical_to(views, refs, req, sink).await
    }
}

/// A [`Registry`] wrapper: spans, [`STORE_CALL_DURATION`], [`STORE_CALL_ERRORS`].
#[derive(Debug)]
pub(crate) struct InstrumentedRegistry {
    inner: Arc<DynRegistry>,
    snapshot: CallKeys,
    snapshot_at: CallKeys,
    commit: CallKeys,
    versions: CallKeys,
}

impl InstrumentedRegistry {
    pub(crate) fn wrap(inner: Arc<DynRegistry>) -> Arc<DynRegistry> {
        let b = inner.backend();
        Arc::new(Self {
            inner,
            snapshot: CallKeys::new("registry.snapshot", b),
            snapshot_at: CallKeys::new("registry.snapshot_at", b),
            commit: CallKeys::new("registry.commit", b),
            versions: CallKeys::new("registry.versions", b),
        })
    }
}

#[deny(clippy::missing_trait_methods)]
#[async_trait]
impl Registry for InstrumentedRegistry {
    fn backend(&self) -> &'static str {
        self.inner.backend()
    }

    async fn snapshot(&self) -> Result<Arc<RegistrySnapshot>> {
        let span = store_span!("fstore.registry.snapshot", self.inner.backend());
        self.snapshot.run(span, self.inner.snapshot()).await
    }

    async fn snapshot_at(&self, version: u64) -> Result<Arc<RegistrySnapshot>> {
        let span = store_span!(
            "fstore.registry.snapshot_at",
            self.inner.backend(),
            version = version
        );
        self.snapshot_at
            .run(span, self.inner.snapshot_at(version))
            .await
    }

    async fn commit(&self, expected: u64, state: RegistryState) -> Result<u64> {
        let span = store_span!(
            "fstore.registry.commit",
            self.inner.backend(),
            expected = expected
        );
        self.commit
            .run(span, self.inner.commit(expected, state))
            .await
    }

    async fn versions(&self) -> Result<Vec<u64>> {
        let span = store_span!("fstore.registry.versions", self.inner.backend());
        self.versions.run(span, self.inner.versions()).await
    }
}

#[cfg(test)]
mod tests;
