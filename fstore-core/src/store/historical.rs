//! Training sets: `get_historical_features`.

use std::collections::BTreeMap;
use std::sync::Arc;

use arrow_array::{ArrayRef, RecordBatch};
use arrow_schema::{Field, Schema};

use super::{FeatureSelection, FeatureStore, RequestPlan, check_unique_names, output_name};
use crate::codec::{cast_column, cast_key_column};
use crate::error::{Error, Result};
use crate::model::{FeatureField, FeatureRef, JoinKey, ResolvedView};
use crate::offline::{ScanRequest, TimeRange};
use crate::ondemand::input_batch;
use crate::pit::{PitOptions, PitView, point_in_time_join};
use crate::time::{duration_micros, from_micros, timestamp_micros};

/// A request for a point-in-time-correct training set.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct HistoricalRequest {
    /// The spine: join-key columns, a timestamp column, and any other columns
    /// (labels…), which are kept.
    pub spine: Vec<RecordBatch>,
    /// The spine's timestamp column.
    pub timestamp_column: String,
    /// The features.
    pub features: FeatureSelection,
    /// Name output columns `view__feature`.
    pub full_feature_names: bool,
    /// Exclude rows created after the spine time (no backfill leakage).
    pub created_cutoff: bool,
    /// Treat naive timestamps as UTC instead of rejecting them.
    pub assume_utc: bool,
    /// Read these views at these offline versions (reproduce an earlier set).
    pub view_versions: BTreeMap<String, u64>,
    /// Use the definitions of this registry version.
    pub registry_version: Option<u64>,
}

impl HistoricalRequest {
    /// A request with default options.
    pub fn new(
        spine: Vec<RecordBatch>,
        timestamp_column: impl Into<String>,
        features: FeatureSelection,
    ) -> Self {
        Self {
            spine,
            timestamp_column: timestamp_column.into(),
            features,
            full_feature_names: false,
            created_cutoff: false,
            assume_utc: false,
            view_versions: BTreeMap::new(),
            registry_version: None,
        }
    }
    /// Sets `full_feature_names`.
    pub fn with_full_feature_names(mut self, v: bool) -> Self {
        self.full_feature_names = v;
        self
    }
    /// Sets `created_cutoff`.
    pub fn with_created_cutoff(mut self, v: bool) -> Self {
        self.created_cutoff = v;
        self
    }
    /// Sets `assume_utc`.
    pub fn with_assume_utc(mut self, v: bool) -> Self {
        self.assume_utc = v;
        self
    }
    /// Pins the offline versions (from an earlier [`HistoricalResult`]).
    pub fn with_view_versions(mut self, v: BTreeMap<String, u64>) -> Self {
        self.view_versions = v;
        self
    }
    /// Pins the registry version.
    pub fn with_registry_version(mut self, v: u64) -> Self {
        self.registry_version = Some(v);
        self
    }
}

/// A training set and what it was built from.
#[derive(Debug, Clone)]
pub struct HistoricalResult {
    /// One row per spine row, in spine order: spine columns, then features.
    pub batch: RecordBatch,
    /// Registry version whose definitions were used.
    pub registry_version: u64,
    /// Offline version read per view (versioned stores), to reproduce the set.
    pub view_versions: BTreeMap<String, u64>,
    /// Rows the offline store returned per view (pushdown effectiveness).
    pub rows_scanned: BTreeMap<String, u64>,
}

/// Casts the spine's join-key columns to the declared key types.
fn cast_spine_keys(spine: &[RecordBatch], keys: &[JoinKey]) -> Result<Vec<RecordBatch>> {
    spine
        .iter()
        .map(|b| {
            let schema = b.schema();
            let mut fields: Vec<Field> =
                schema.fields().iter().map(|f| f.as_ref().clone()).collect();
            let mut cols: Vec<ArrayRef> = b.columns().to_vec();
            for k in keys {
                let (i, _) = schema.column_with_name(&k.name).ok_or_else(|| {
                    Error::invalid(format!("spine is missing join key column '{}'", k.name))
                })?;
                let target = k.value_type.to_arrow();
                if cols[i].data_type() != &target {
                    cols[i] = cast_key_column(&cols[i], &k.name, &k.value_type).map_err(|_| {
                        Error::invalid(format!(
                            "spine join key column '{}' has type {}, the entity declares {}",
                            k.name,
                            b.column(i).data_type(),
                            k.value_type
                        ))
                    })?;
                    fields[i] = Field::new(&k.name, target, fields[i].is_nullable());
                }
            }
            Ok(RecordBatch::try_new(Arc::new(Schema::new(fields)), cols)?)
        })
        .collect()
}

impl FeatureStore {
    /// Builds a point-in-time-correct training set ([semantics §5](crate::docs::semantics)).
    ///
    /// Per view, only `[min(t) - ttl, max(t)]` is read from the offline store,
    /// projected to the requested features; then the pure join runs
    /// ([`crate::pit::point_in_time_join`]) and on-demand views are applied.
    ///
    /// # Errors
    /// [`Error::InvalidInput`] naming the column for spine problems (missing
    /// keys, naive/null timestamps, uncastable keys) and name clashes;
    /// [`Error::NotFound`] for unknown features or pinned versions; backend
    /// failures.
    pub async fn get_historical_features(
        &self,
        req: &HistoricalRequest,
    ) -> Result<HistoricalResult> {
        let span = tracing::info_span!(
            "fstore.historical",
            spine_rows = req.spine.iter().map(RecordBatch::num_rows).sum::<usize>(),
            outcome = tracing::field::Empty,
            error = tracing::field::Empty,
        );
        crate::telemetry::operation("historical", span, self.historical_inner(req)).await
    }

    async fn historical_inner(&self, req: &HistoricalRequest) -> Result<HistoricalResult> {
        // 1. Definitions and the request plan.
        let snap = match req.registry_version {
            Some(v) => self.registry.snapshot_at(v).await?,
            None => self.snapshot().await?,
        };
        let defs = &snap.state.definitions;
        let plan = RequestPlan::new(defs, &req.features)?;
        self.note_deprecated(defs, &plan.view_names());
        // 2. The spine: its time bounds, its keys in the declared types.
        let (min, max) = spine_time_bounds(req)?;
        let spine = cast_spine_keys(&req.spine, &plan_join_keys(&plan))?;
        // 3. Per view, the offline rows the join can use.
        let mut scanned = self.scan_views(&plan, req, min, max).await?;
        // 4. The pure join, then on-demand views over its output.
        let pit_views: Vec<PitView<'_>> = plan
            .views
            .iter()
            .zip(&scanned.data)
            .map(|((rv, feats), batches)| pit_view(rv, feats, batches))
            .collect();
        let opts = PitOptions::default()
            .with_full_feature_names(true)
            .with_created_cutoff(req.created_cutoff)
            .with_assume_utc(req.assume_utc);
        let joined = point_in_time_join(&spine, &req.timestamp_column, &pit_views, &opts)?;
        drop(pit_views);
        // Aggregation features over the event history ([semantics §11](crate::docs::semantics)).
        let mut extra = self
            .aggregate_views(&plan, req, &spine, (min, max), &mut scanned)
            .await?;
        extra.extend(self.run_on_demand(&plan, &joined)?);
        // 5. Spine columns, then the requested features in request order.
        let n_spine = spine.first().map_or(0, |b| b.num_columns());
        let batch = assemble_output(&plan, &joined, n_spine, &extra, req.full_feature_names)?;
        Ok(HistoricalResult {
            batch,
            registry_version: snap.version,
            view_versions: scanned.view_versions,
            rows_scanned: scanned.rows_scanned,
        })
    }

    /// Reads, per planned view, `[min - ttl, max]` projected to the requested
    /// features (at the pinned version, if any). The views are scanned
    /// concurrently (a backend that decodes on its own tasks uses every core).
    async fn scan_views(
        &self,
        plan: &RequestPlan,
        req: &HistoricalRequest,
        min: i64,
        max: i64,
    ) -> Result<Scanned> {
        let scans = plan.views.iter().map(|(rv, feats)| async move {
            let name = rv.name().to_owned();
            if min > max {
                return Ok((name, None, Vec::new()));
            }
            let start = rv
                .view
                .ttl
                .map(|t| from_micros(min.saturating_sub(duration_micros(t))));
            let range = TimeRange::inclusive(start, from_micros(max));
            let scan = self
                .offline
                .scan(
                    rv,
                    &ScanRequest::new(range)
                        .with_features(feats.clone())
                        .with_as_of_version(req.view_versions.get(&name).copied()),
                )
                .await?;
            let version = scan.version;
            Ok::<_, Error>((name, version, scan.collect().await?))
        });
        let mut out = Scanned::default();
        for (name, version, batches) in futures::future::try_join_all(scans).await? {
            if let Some(v) = version {
                out.view_versions.insert(name.clone(), v);
            }
            out.rows_scanned
                .insert(name, batches.iter().map(|b| b.num_rows() as u64).sum());
            out.data.push(batches);
        }
        Ok(out)
    }

    /// Per planned aggregation view, scans the event history the widest window
    /// needs (`floor_r(min − W) >= min − W − r`) and computes the features per
    /// spine row; returns their columns under their full output names.
    async fn aggregate_views(
        &self,
        plan: &RequestPlan,
        req: &HistoricalRequest,
        spine: &[RecordBatch],
        (min, max): (i64, i64),
        scanned: &mut Scanned,
    ) -> Result<Vec<(String, ArrayRef)>> {
        let mut extra: Vec<(String, ArrayRef)> = Vec::new();
        for (rv, names) in &plan.aggs {
            let name = rv.name().to_owned();
            let aggs: Vec<&crate::model::Aggregation> = names
                .iter()
                .filter_map(|n| rv.view.aggregation(n))
                .collect();
            let batches = if min > max {
                Vec::new()
            } else {
                let lookback = aggs.iter().try_fold(0i64, |acc, a| {
                    a.window.map(|w| {
                        acc.max(
                            duration_micros(w).saturating_add(duration_micros(a.effective_hop())),
                        )
                    })
                });
                let start = lookback.map(|l| from_micros(min.saturating_sub(l)));
                let mut cols: Vec<String> = Vec::new();
                for a in &aggs {
                    if !cols.contains(&a.column) {
                        cols.push(a.column.clone());
                    }
                }
                let scan = self
                    .offline
                    .scan(
                        rv,
                        &ScanRequest::new(TimeRange::inclusive(start, from_micros(max)))
                            .with_features(cols)
                            .with_as_of_version(req.view_versions.get(&name).copied()),
                    )
                    .await?;
                if let Some(v) = scan.version {
                    scanned.view_versions.insert(name.clone(), v);
                }
                scan.collect().await?
            };
            *scanned.rows_scanned.entry(name).or_insert(0) +=
                batches.iter().map(|b| b.num_rows() as u64).sum::<u64>();
            let view = crate::agg::AggView::from_view(rv, names, &batches)?;
            let opts = crate::agg::AggOptions::default()
                .with_created_cutoff(req.created_cutoff)
                .with_assume_utc(req.assume_utc);
            let cols = crate::agg::aggregate(spine, &req.timestamp_column, &view, &opts)?;
            for (n, col) in names.iter().zip(cols) {
                extra.push((output_name(&FeatureRef::new(rv.name(), n), true), col));
            }
        }
        Ok(extra)
    }

    /// Runs the planned on-demand views over the join output; returns their
    /// columns under their full output names.
    fn run_on_demand(
        &self,
        plan: &RequestPlan,
        joined: &RecordBatch,
    ) -> Result<Vec<(String, ArrayRef)>> {
        let mut extra: Vec<(String, ArrayRef)> = Vec::new();
        for o in &plan.on_demand {
            let f = self.on_demand_fn(&o.name)?;
            let mut inputs = Vec::new();
            for r in &o.inputs {
                let col = joined
                    .column_by_name(&output_name(r, true))
                    .ok_or_else(|| {
                        Error::invalid(format!("on-demand view '{}': input '{r}' missing", o.name))
                    })?;
                inputs.push((r.feature.clone(), Arc::clone(col)));
            }
            for rf in &o.request_fields {
                let col = joined.column_by_name(&rf.name).ok_or_else(|| {
                    Error::invalid(format!(
                        "on-demand view '{}' needs request field '{}' in the spine",
                        o.name, rf.name
                    ))
                })?;
                inputs.push((
                    rf.name.clone(),
                    cast_column(col, &rf.name, &rf.value_type.to_arrow())?,
                ));
            }
            let input = input_batch(inputs, joined.num_rows())?;
            for (field, col) in o.outputs.iter().zip(f.run(o, &input)?) {
                extra.push((
                    output_name(&FeatureRef::new(&o.name, &field.name), true),
                    col,
                ));
            }
        }
        Ok(extra)
    }
}

/// What [`FeatureStore::scan_views`] read, per planned view (in plan order).
#[derive(Default)]
struct Scanned {
    data: Vec<Vec<RecordBatch>>,
    view_versions: BTreeMap<String, u64>,
    rows_scanned: BTreeMap<String, u64>,
}

/// The smallest and largest spine time, in UTC microseconds (`min > max` for
/// an empty spine).
fn spine_time_bounds(req: &HistoricalRequest) -> Result<(i64, i64)> {
    if req.spine.is_empty() {
        return Err(Error::invalid("the spine has no batches"));
    }
    let ts = &req.timestamp_column;
    let (mut min, mut max) = (i64::MAX, i64::MIN);
    for b in &req.spine {
        let col = b
            .column_by_name(ts)
            .ok_or_else(|| Error::invalid(format!("spine is missing timestamp column '{ts}'")))?;
        for t in timestamp_micros(col.as_ref(), ts, req.assume_utc)? {
            min = min.min(t);
            max = max.max(t);
        }
    }
    Ok((min, max))
}

/// The join keys of every planned view, each once, in first-seen order.
fn plan_join_keys(plan: &RequestPlan) -> Vec<JoinKey> {
    let mut keys: Vec<JoinKey> = Vec::new();
    for (v, _) in plan.views.iter().chain(&plan.aggs) {
        for k in &v.join_keys {
            if !keys.iter().any(|x| x.name == k.name) {
                keys.push(k.clone());
            }
        }
    }
    keys
}

/// The one mapping of a resolved view (and the requested features) to the
/// pure join's input.
pub(crate) fn pit_view<'a>(
    rv: &ResolvedView,
    features: &[String],
    batches: &'a [RecordBatch],
) -> PitView<'a> {
    PitView {
        name: rv.name().to_owned(),
        join_keys: rv.join_keys.iter().map(|k| k.name.clone()).collect(),
        event_timestamp_column: rv.view.event_timestamp_column.clone(),
        created_timestamp_column: rv.view.created_timestamp_column.clone(),
        ttl: rv.view.ttl,
        features: features
            .iter()
            .filter_map(|f| rv.view.feature(f).map(FeatureField::to_arrow))
            .collect(),
        batches,
    }
}

/// The output: the spine's columns, then each requested feature (from the
/// join or an on-demand view) under its output name.
fn assemble_output(
    plan: &RequestPlan,
    joined: &RecordBatch,
    n_spine: usize,
    extra: &[(String, ArrayRef)],
    full_feature_names: bool,
) -> Result<RecordBatch> {
    let js = joined.schema();
    let mut fields: Vec<Field> = js
        .fields()
        .iter()
        .take(n_spine)
        .map(|f| f.as_ref().clone())
        .collect();
    let mut cols: Vec<ArrayRef> = joined.columns().iter().take(n_spine).cloned().collect();
    for r in &plan.refs {
        let full = output_name(r, true);
        let col = joined
            .column_by_name(&full)
            .cloned()
            .or_else(|| {
                extra
                    .iter()
                    .find(|(n, _)| *n == full)
                    .map(|(_, c)| Arc::clone(c))
            })
            .ok_or_else(|| Error::invalid(format!("feature '{r}' missing from the join output")))?;
        fields.push(Field::new(
            output_name(r, full_feature_names),
            col.data_type().clone(),
            true,
        ));
        cols.push(col);
    }
    check_unique_names(fields.iter().map(|f| f.name().as_str()))?;
    Ok(RecordBatch::try_new_with_options(
        Arc::new(Schema::new(fields)),
        cols,
        &arrow_array::RecordBatchOptions::new().with_row_count(Some(joined.num_rows())),
    )?)
}
