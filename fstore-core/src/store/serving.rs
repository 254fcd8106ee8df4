//! Serving: `get_online_features`.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use arrow_array::{Array, ArrayRef, BooleanArray, RecordBatch, Scalar};
use arrow_schema::{Field, Schema};
use chrono::{DateTime, Utc};

use super::{FeatureSelection, FeatureStore, RequestPlan, check_unique_names, output_name};
use crate::codec::{ColumnBuilder, PayloadDecoder, cast_column, encode_entity_keys};
use crate::error::{Error, Result};
use crate::model::{Fallback, FeatureField, FeatureRef};
use crate::ondemand::input_batch;
use crate::online::{OnlineKey, OnlineRow, ReadOptions};
use crate::time::{duration_micros, from_micros, to_micros};

/// Why a served value is what it is (DESIGN §6).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum FeatureStatus {
    /// A stored, unexpired, non-null value.
    Present,
    /// The row exists but this feature's value is null.
    NullValue,
    /// No row for this entity.
    NotFound,
    /// The row is older than the view's ttl at `now`; value withheld.
    Expired,
    /// The online backend failed (or its circuit breaker is open) and this is
    /// the last-known-good value from the local cache.
    Stale,
    /// The online backend failed and no cached value exists; value null.
    Unavailable,
}

impl std::fmt::Display for FeatureStatus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        std::fmt::Debug::fmt(self, f)
    }
}

/// A request for online features.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct OnlineRequest {
    /// The features.
    pub features: FeatureSelection,
    /// One row per entity: the join-key columns (cast to the declared types)
    /// and any request fields on-demand views need.
    pub entities: RecordBatch,
    /// The serving time for TTL checks (default: now).
    pub now: Option<DateTime<Utc>>,
    /// Name output columns `view__feature`.
    pub full_feature_names: bool,
}

impl OnlineRequest {
    /// A request at the current time with short names.
    pub fn new(features: FeatureSelection, entities: RecordBatch) -> Self {
        Self {
            features,
            entities,
            now: None,
            full_feature_names: false,
        }
    }
    /// Sets the serving time.
    pub fn with_now(mut self, now: DateTime<Utc>) -> Self {
        self.now = Some(now);
        self
    }
    /// Sets `full_feature_names`.
    pub fn with_full_feature_names(mut self, v: bool) -> Self {
        self.full_feature_names = v;
        self
    }
}

/// Per-feature metadata of an online response, aligned with the rows.
#[derive(Debug, Clone)]
pub struct FeatureMetadata {
    /// Output column name.
    pub name: String,
    /// The feature.
    pub feature: FeatureRef,
    /// Status per row.
    pub statuses: Vec<FeatureStatus>,
    /// Event time of the stored row per row (`None` when not found; on-demand
    /// outputs have none).
    pub event_timestamps: Vec<Option<DateTime<Utc>>>,
}

/// Online features: the request's columns, then one column per feature.
#[derive(Debug, Clone)]
pub struct OnlineResponse {
    /// Values.
    pub batch: RecordBatch,
    /// Status and event time per feature column.
    pub metadata: Vec<FeatureMetadata>,
    /// Values imputed by `Default` fallbacks in this response.
    pub imputed: u64,
}

impl OnlineResponse {
    /// The metadata of output column `name`.
    pub fn feature(&self, name: &str) -> Option<&FeatureMetadata> {
        self.metadata.iter().find(|m| m.name == name)
    }
}

struct Served {
    col: ArrayRef,
    statuses: Vec<FeatureStatus>,
    event_ts: Vec<Option<DateTime<Utc>>>,
}

fn impute(
    col: &ArrayRef,
    field: &FeatureField,
    default: &crate::model::Value,
    statuses: &[FeatureStatus],
) -> Result<(ArrayRef, u64)> {
    let mask: Vec<bool> = statuses
        .iter()
        .map(|s| *s != FeatureStatus::Present)
        .collect();
    let n = mask.iter().filter(|m| **m).count() as u64;
    if n == 0 {
        return Ok((Arc::clone(col), 0));
    }
    let mut b = ColumnBuilder::new(&field.value_type);
    b.push_value(default);
    let d = b.finish();
    let out = arrow_select::zip::zip(&BooleanArray::from(mask), &Scalar::new(d), col)?;
    Ok((out, n))
}

type ReadOutcome = (Vec<Option<OnlineRow>>, Option<Vec<bool>>);

impl FeatureStore {
    /// Serves the aggregation features of a request: one `read_tiles` call for
    /// every view and entity, then each feature's window(now) merged.
    async fn serve_aggregations(
        &self,
        plan: &RequestPlan,
        entities: &RecordBatch,
        now: i64,
    ) -> Result<HashMap<FeatureRef, Served>> {
        let n = entities.num_rows();
        let mut keys: Vec<OnlineKey> = Vec::new();
        let mut slots: Vec<Vec<usize>> = Vec::with_capacity(plan.aggs.len());
        for (rv, _) in &plan.aggs {
            let encoded = encode_entity_keys(entities, &rv.join_keys)?;
            let mut dedup: HashMap<Vec<u8>, usize> = HashMap::with_capacity(n);
            let mut s = Vec::with_capacity(n);
            for k in encoded {
                let idx = *dedup.entry(k).or_insert_with_key(|k| {
                    keys.push(OnlineKey {
                        view: rv.name().to_owned(),
                        entity_key: k.clone(),
                    });
                    keys.len() - 1
                });
                s.push(idx);
            }
            slots.push(s);
        }
        let backend = self.online.backend();
        let opts = ReadOptions::default().with_timeout(self.online_timeout);
        let tiles =
            match tokio::time::timeout(self.online_timeout, self.online.read_tiles(&keys, &opts))
                .await
            {
                Ok(Ok(t)) if t.len() == keys.len() => t,
                Ok(Ok(t)) => {
                    return Err(Error::backend_msg(
                        backend,
                        format!(
                            "read_tiles returned {} entries for {} keys",
                            t.len(),
                            keys.len()
                        ),
                    ));
                }
                Ok(Err(e)) => return Err(e),
                Err(_) => {
                    return Err(Error::Timeout {
                        backend,
                        message: format!(
                            "tile read of {} keys exceeded {:?}",
                            keys.len(),
                            self.online_timeout
                        ),
                    });
                }
            };
        let mut served = HashMap::new();
        for ((rv, names), slot) in plan.aggs.iter().zip(&slots) {
            for a in crate::agg::OnlineAgg::of_view(rv, Some(names))? {
                let mut values = Vec::with_capacity(n);
                let mut statuses = Vec::with_capacity(n);
                for &i in slot {
                    let v = a.value_at(&tiles[i], now)?;
                    statuses.push(match (&v, tiles[i].is_empty()) {
                        (_, true) => FeatureStatus::NotFound,
                        (Some(_), false) => FeatureStatus::Present,
                        (None, false) => FeatureStatus::NullValue,
                    });
                    values.push(v);
                }
                served.insert(
                    FeatureRef::new(rv.name(), &a.agg.name),
                    Served {
                        col: crate::agg::column_of(&a, &values),
                        statuses,
                        event_ts: vec![None; n],
                    },
                );
            }
        }
        Ok(served)
    }

    /// One online read with timeout, circuit breaker and last-known-good
    /// fallback. The second value, when the cache answered, says per key
    /// whether the cache had it.
    async fn read_online(&self, keys: &[OnlineKey]) -> Result<ReadOutcome> {
        let backend = self.online.backend();
        let allowed = self.breaker.as_ref().is_none_or(|b| b.allow());
        let err = if allowed {
            let opts = ReadOptions::default().with_timeout(self.online_timeout);
            let res = match tokio::time::timeout(self.online_timeout, self.online.read(keys, &opts))
                .await
            {
                Ok(Ok(rows)) if rows.len() == keys.len() => Ok(rows),
                Ok(Ok(rows)) => Err(Error::backend_msg(
                    backend,
                    format!("read returned {} rows for {} keys", rows.len(), keys.len()),
                )),
                Ok(Err(e)) => Err(e),
                Err(_) => Err(Error::Timeout {
                    backend,
                    message: format!(
                        "online read of {} keys exceeded {:?}",
                        keys.len(),
                        self.online_timeout
                    ),
                }),
            };
            match res {
                Ok(rows) => {
                    if let Some(b) = &self.breaker {
                        b.success();
                    }
                    if let Some(c) = &self.lkg {
                        c.remember(keys, &rows);
                    }
                    return Ok((rows, None));
                }
                Err(e) => {
                    if let Some(b) = &self.breaker {
                        b.failure();
                    }
                    e
                }
            }
        } else {
            Error::Unavailable {
                backend,
                message: "circuit breaker open after repeated online read failures".into(),
            }
        };
        match &self.lkg {
            Some(c) if err.is_retryable() => {
                tracing::warn!(backend, error = %err, "online read failed; serving last-known-good values");
                let cached = c.lookup(keys);
                let hit = cached.iter().map(Option::is_some).collect();
                Ok((cached.into_iter().map(Option::flatten).collect(), Some(hit)))
            }
            _ => Err(err),
        }
    }

    /// Serves the latest features of many entities from the online store, in as
    /// few backend round trips as the backend allows (one `read` call for every
    /// view and entity; duplicate entities are read once).
    ///
    /// TTL is enforced by event time at `now`; fallbacks are applied
    /// (`Default` imputes and is counted, `Required` fails); on-demand views run
    /// on the raw (not imputed) values, as in training.
    ///
    /// # Errors
    /// [`Error::InvalidInput`] naming a missing or uncastable key column or a
    /// name clash; [`Error::RequiredFeatureMissing`]; [`Error::Timeout`] past the
    /// store's online timeout; [`Error::Unavailable`] while the circuit breaker
    /// is open; backend failures. With a last-known-good cache, retryable
    /// failures are answered from the cache instead (statuses `Stale` /
    /// `Unavailable`).
    pub async fn get_online_features(&self, req: &OnlineRequest) -> Result<OnlineResponse> {
        let snap = self.snapshot().await?;
        let defs = &snap.state.definitions;
        let plan = RequestPlan::new(defs, &req.features)?;
        self.note_deprecated(defs, &plan.view_names());
        let n = req.entities.num_rows();
        let now = to_micros(req.now.unwrap_or_else(Utc::now));

        let mut keys: Vec<OnlineKey> = Vec::new();
        let mut slots: Vec<Vec<usize>> = Vec::with_capacity(plan.views.len());
        for (rv, _) in &plan.views {
            let encoded = encode_entity_keys(&req.entities, &rv.join_keys)?;
            let mut dedup: HashMap<&[u8], usize> = HashMap::with_capacity(n);
            let mut s = Vec::with_capacity(n);
            for k in &encoded {
                let idx = *dedup.entry(k.as_slice()).or_insert_with(|| {
                    keys.push(OnlineKey {
                        view: rv.name().to_owned(),
                        entity_key: k.clone(),
                    });
                    keys.len() - 1
                });
                s.push(idx);
            }
            slots.push(s);
        }
        let (rows, from_cache) = self.read_online(&keys).await?;
        let mut served: HashMap<FeatureRef, Served> = HashMap::new();
        let mut present = Vec::new();
        for ((rv, feats), slot) in plan.views.iter().zip(&slots) {
            let fields: Vec<FeatureField> = feats
                .iter()
                .filter_map(|f| rv.view.feature(f).cloned())
                .collect();
            let cutoff = rv.view.ttl.map(|t| now.saturating_sub(duration_micros(t)));
            let mut dec = PayloadDecoder::new(&fields);
            let mut statuses: Vec<Vec<FeatureStatus>> = vec![Vec::with_capacity(n); fields.len()];
            let mut event_ts: Vec<Option<DateTime<Utc>>> = Vec::with_capacity(n);
            for &i in slot {
                let cached = from_cache.as_ref().map(|c| c[i]);
                let row = rows[i].as_ref();
                let expired = match (row, cutoff) {
                    (Some(r), Some(c)) => r.event_ts < c,
                    _ => false,
                };
                let payload = if expired {
                    None
                } else {
                    row.map(|r| r.payload.as_slice())
                };
                dec.push(payload, &mut present).map_err(|e| {
                    crate::codec::payload_context(e, rv.name(), &keys[i].entity_key)
                })?;
                event_ts.push(row.map(|r| from_micros(r.event_ts)));
                for (fi, p) in present.iter().enumerate() {
                    statuses[fi].push(match (cached, row, expired, p) {
                        (Some(false), _, _, _) => FeatureStatus::Unavailable,
                        (_, None, _, _) => FeatureStatus::NotFound,
                        (_, Some(_), true, _) => FeatureStatus::Expired,
                        (Some(true), Some(_), false, true) => FeatureStatus::Stale,
                        (_, Some(_), false, true) => FeatureStatus::Present,
                        (_, Some(_), false, false) => FeatureStatus::NullValue,
                    });
                }
            }
            for ((f, col), st) in fields.iter().zip(dec.columns).zip(statuses) {
                served.insert(
                    FeatureRef::new(rv.name(), &f.name),
                    Served {
                        col: col.finish(),
                        statuses: st,
                        event_ts: event_ts.clone(),
                    },
                );
            }
        }

        if !plan.aggs.is_empty() {
            served.extend(self.serve_aggregations(&plan, &req.entities, now).await?);
        }

        for o in &plan.on_demand {
            let f = self.on_demand_fn(&o.name)?;
            let mut inputs = Vec::new();
            for r in &o.inputs {
                let s = served.get(r).ok_or_else(|| {
                    Error::invalid(format!("on-demand view '{}': input '{r}' missing", o.name))
                })?;
                inputs.push((r.feature.clone(), Arc::clone(&s.col)));
            }
            for rf in &o.request_fields {
                let col = req.entities.column_by_name(&rf.name).ok_or_else(|| {
                    Error::invalid(format!(
                        "on-demand view '{}' needs request field '{}' in the request",
                        o.name, rf.name
                    ))
                })?;
                inputs.push((
                    rf.name.clone(),
                    cast_column(col, &rf.name, &rf.value_type.to_arrow())?,
                ));
            }
            let input = input_batch(inputs, n)?;
            for (field, col) in o.outputs.iter().zip(f.run(o, &input)?) {
                let statuses = (0..n)
                    .map(|i| {
                        if col.is_null(i) {
                            FeatureStatus::NullValue
                        } else {
                            FeatureStatus::Present
                        }
                    })
                    .collect();
                served.insert(
                    FeatureRef::new(&o.name, &field.name),
                    Served {
                        col,
                        statuses,
                        event_ts: vec![None; n],
                    },
                );
            }
        }

        let schema = req.entities.schema();
        let mut fields: Vec<Field> = schema.fields().iter().map(|f| f.as_ref().clone()).collect();
        let mut cols: Vec<ArrayRef> = req.entities.columns().to_vec();
        let mut metadata = Vec::with_capacity(plan.refs.len());
        let mut imputed = 0u64;
        for r in &plan.refs {
            let s = served
                .get(r)
                .ok_or_else(|| Error::invalid(format!("feature '{r}' was not served")))?;
            let mut col = Arc::clone(&s.col);
            // aggregation features have no fallback policy (null = no value)
            let field = defs.field(r);
            if field.is_none() && defs.aggregation(r).is_none() {
                return Err(Error::not_found("feature", r.to_string()));
            }
            match field.map_or(&Fallback::Null, |f| &f.fallback) {
                Fallback::Null => {}
                Fallback::Default(d) => {
                    let field = field.ok_or_else(|| Error::not_found("feature", r.to_string()))?;
                    let (c, k) = impute(&col, field, d, &s.statuses)?;
                    col = c;
                    imputed += k;
                }
                Fallback::Required => {
                    if let Some(row) = s
                        .statuses
                        .iter()
                        .position(|st| *st != FeatureStatus::Present)
                    {
                        return Err(Error::RequiredFeatureMissing {
                            feature: r.to_string(),
                            row,
                            status: s.statuses[row].to_string(),
                        });
                    }
                }
            }
            let name = output_name(r, req.full_feature_names);
            fields.push(Field::new(&name, col.data_type().clone(), true));
            cols.push(col);
            metadata.push(FeatureMetadata {
                name,
                feature: r.clone(),
                statuses: s.statuses.clone(),
                event_timestamps: s.event_ts.clone(),
            });
        }
        check_unique_names(fields.iter().map(|f| f.name().as_str()))?;
        self.metrics
            .imputations
            .fetch_add(imputed, Ordering::Relaxed);
        let batch = RecordBatch::try_new_with_options(
            Arc::new(Schema::new(fields)),
            cols,
            &arrow_array::RecordBatchOptions::new().with_row_count(Some(n)),
        )?;
        Ok(OnlineResponse {
            batch,
            metadata,
            imputed,
        })
    }
}
