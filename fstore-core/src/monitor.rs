//! Monitors ([semantics §9](crate::docs::semantics)): freshness, fill rate, drift (PSI and KS) and
//! online/offline skew.
//!
//! The statistics are pure functions over Arrow arrays; the store-level checks
//! are methods on [`FeatureStore`].

use std::sync::Arc;
use std::time::Duration;

use arrow_array::{
    Array, ArrayRef, RecordBatch, TimestampMicrosecondArray, cast::AsArray, types::*,
};
use arrow_schema::{DataType, Field, Schema};
use chrono::{DateTime, Utc};
use futures::StreamExt;

use crate::error::{Error, Result};
use crate::offline::{ScanRequest, TimeRange};
use crate::store::{
    FeatureSelection, FeatureStatus, FeatureStore, HistoricalRequest, OnlineRequest,
};
use crate::time::{UTC, from_micros, timestamp_micros, timestamp_type, to_micros};

/// Fraction of non-null values per column of `batch` (1.0 for an empty batch).
pub fn fill_rate(batch: &RecordBatch) -> Vec<(String, f64)> {
    let n = batch.num_rows();
    batch
        .schema()
        .fields()
        .iter()
        .zip(batch.columns())
        .map(|(f, c)| {
            let rate = if n == 0 {
                1.0
            } else {
                (n - c.null_count()) as f64 / n as f64
            };
            (f.name().clone(), rate)
        })
        .collect()
}

/// The non-null values of a numeric column as `f64`.
///
/// # Errors
/// [`Error::InvalidInput`] for a non-numeric column.
pub fn numeric_values(array: &dyn Array) -> Result<Vec<f64>> {
    fn collect<T: ArrowPrimitiveType>(a: &dyn Array, f: impl Fn(T::Native) -> f64) -> Vec<f64> {
        a.as_primitive::<T>().iter().flatten().map(f).collect()
    }
    Ok(match array.data_type() {
        DataType::Int32 => collect::<Int32Type>(array, f64::from),
        DataType::Int64 => collect::<Int64Type>(array, |v| v as f64),
        DataType::Float32 => collect::<Float32Type>(array, f64::from),
        DataType::Float64 => collect::<Float64Type>(array, |v| v),
        DataType::Boolean => array
            .as_boolean()
            .iter()
            .flatten()
            .map(|b| if b { 1.0 } else { 0.0 })
            .collect(),
        other => {
            return Err(Error::invalid(format!(
                "drift needs a numeric column, got {other}"
            )));
        }
    })
}

fn finite_sorted(v: &[f64], what: &str) -> Result<Vec<f64>> {
    let mut s: Vec<f64> = v.iter().copied().filter(|x| x.is_finite()).collect();
    if s.is_empty() {
        return Err(Error::invalid(format!(
            "{what} sample has no finite values"
        )));
    }
    s.sort_by(f64::total_cmp);
    Ok(s)
}

/// The largest bin count [`psi`] accepts. More bins than this only measure
/// sampling noise, and the edges are allocated up front.
pub const MAX_PSI_BINS: usize = 10_000;

/// Population stability index of `actual` against `expected`, with `bins`
/// quantile bins of `expected` (typically 10). 0 = identical; > 0.25 is usually
/// read as a significant shift. Empty bins are smoothed with 1e-4.
///
/// # Errors
/// [`Error::InvalidInput`] for an empty sample (or one with no finite value),
/// or `bins` outside `2..=`[`MAX_PSI_BINS`].
pub fn psi(expected: &[f64], actual: &[f64], bins: usize) -> Result<f64> {
    if !(2..=MAX_PSI_BINS).contains(&bins) {
        return Err(Error::invalid(format!(
            "psi bins = {bins}: use between 2 and {MAX_PSI_BINS} bins"
        )));
    }
    let e = finite_sorted(expected, "expected")?;
    let a = finite_sorted(actual, "actual")?;
    // u128: `i * len` cannot overflow whatever the sample size.
    let quantile = |i: usize| -> usize {
        let q = (i as u128 * e.len() as u128 / bins as u128) as usize;
        q.min(e.len() - 1)
    };
    let mut edges: Vec<f64> = (1..bins).map(|i| e[quantile(i)]).collect();
    edges.dedup();
    let hist = |s: &[f64]| -> Vec<f64> {
        let mut h = vec![0usize; edges.len() + 1];
        for x in s {
            h[edges.partition_point(|edge| edge <= x)] += 1;
        }
        h.iter()
            .map(|c| (*c as f64 / s.len() as f64).max(1e-4))
            .collect()
    };
    let (he, ha) = (hist(&e), hist(&a));
    Ok(he
        .iter()
        .zip(&ha)
        .map(|(pe, pa)| (pa - pe) * (pa / pe).ln())
        .sum())
}

/// Two-sample Kolmogorov–Smirnov statistic: the largest distance between the
/// empirical CDFs (0 = identical, 1 = disjoint).
///
/// # Errors
/// [`Error::InvalidInput`] for an empty sample.
pub fn ks_statistic(a: &[f64], b: &[f64]) -> Result<f64> {
    let a = finite_sorted(a, "first")?;
    let b = finite_sorted(b, "second")?;
    let (mut i, mut j, mut d) = (0usize, 0usize, 0f64);
    while i < a.len() && j < b.len() {
        let x = if a[i] <= b[j] { a[i] } else { b[j] };
        while i < a.len() && a[i] <= x {
            i += 1;
        }
        while j < b.len() && b[j] <= x {
            j += 1;
        }
        d = d.max((i as f64 / a.len() as f64 - j as f64 / b.len() as f64).abs());
    }
    Ok(d)
}

/// Drift of one feature between an offline sample and online reads.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct DriftReport {
    /// Population stability index (10 bins).
    pub psi: f64,
    /// Kolmogorov–Smirnov statistic.
    pub ks: f64,
}

/// PSI and KS between two numeric columns (nulls ignored).
///
/// # Errors
/// As [`psi`] and [`numeric_values`].
pub fn drift(offline: &dyn Array, online: &dyn Array) -> Result<DriftReport> {
    let (e, a) = (numeric_values(offline)?, numeric_values(online)?);
    Ok(DriftReport {
        psi: psi(&e, &a, 10)?,
        ks: ks_statistic(&e, &a)?,
    })
}

/// Age of a view's newest data.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Freshness {
    /// Newest event time in the offline store within the lookback.
    pub newest_event: Option<DateTime<Utc>>,
    /// `now - newest_event`.
    pub age: Option<Duration>,
    /// Materialization watermark for this store's online store, if any.
    pub watermark: Option<DateTime<Utc>>,
}

/// Online vs point-in-time values for one feature.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FeatureSkew {
    /// The feature's output column.
    pub feature: String,
    /// Entities compared.
    pub compared: usize,
    /// Entities whose online value differs from the join's (nulls equal nulls;
    /// `Expired`/`NotFound` count as null).
    pub mismatches: usize,
    /// Row index of the first mismatch.
    pub first_mismatch: Option<usize>,
}

impl FeatureStore {
    /// The newest event time of `view` in the offline store within
    /// `[now - lookback, now]`, its age, and the online watermark.
    ///
    /// # Errors
    /// Unknown view; backend failures.
    pub async fn freshness(
        &self,
        view: &str,
        now: DateTime<Utc>,
        lookback: Duration,
    ) -> Result<Freshness> {
        let rv = self.resolve_view(view).await?;
        let start =
            from_micros(to_micros(now).saturating_sub(crate::time::duration_micros(lookback)));
        let scan = self
            .offline_store()
            .scan(
                &rv,
                &ScanRequest::new(TimeRange::inclusive(Some(start), now)).with_features(Vec::new()),
            )
            .await?;
        let mut stream = scan.stream;
        let mut newest: Option<i64> = None;
        let col = &rv.view.event_timestamp_column;
        while let Some(b) = stream.next().await {
            let b = b?;
            let c = b
                .column_by_name(col)
                .ok_or_else(|| Error::invalid(format!("scan lacks column '{col}'")))?;
            if let Some(m) = timestamp_micros(c.as_ref(), col, false)?.into_iter().max() {
                newest = Some(newest.map_or(m, |n| n.max(m)));
            }
        }
        let newest_event = newest.map(from_micros);
        if let Some(age) = newest_event.and_then(|n| (now - n).to_std().ok()) {
            crate::telemetry::record_freshness_lag(view, age);
        }
        let snap = self.snapshot().await?;
        Ok(Freshness {
            newest_event,
            age: newest_event.and_then(|n| (now - n).to_std().ok()),
            watermark: snap
                .watermark(view, &self.online_store().store_id())
                .map(|w| w.event_end),
        })
    }

    /// Compares, for the given entities, the online values at `now` with the
    /// point-in-time join at `now` — training/serving skew, per feature. With a
    /// correctly materialized store every mismatch count is 0.
    ///
    /// # Errors
    /// As [`FeatureStore::get_online_features`] and
    /// [`FeatureStore::get_historical_features`].
    pub async fn skew(
        &self,
        features: FeatureSelection,
        entities: &RecordBatch,
        now: DateTime<Utc>,
    ) -> Result<Vec<FeatureSkew>> {
        let online = self
            .get_online_features(
                &OnlineRequest::new(features.clone(), entities.clone()).with_now(now),
            )
            .await?;
        let n = entities.num_rows();
        let ts_name = "__fstore_skew_ts";
        let mut fields: Vec<Field> = entities
            .schema()
            .fields()
            .iter()
            .map(|f| f.as_ref().clone())
            .collect();
        fields.push(Field::new(ts_name, timestamp_type(), false));
        let mut cols: Vec<ArrayRef> = entities.columns().to_vec();
        cols.push(Arc::new(
            TimestampMicrosecondArray::from(vec![to_micros(now); n]).with_timezone(UTC),
        ));
        let spine = RecordBatch::try_new(Arc::new(Schema::new(fields)), cols)?;
        let hist = self
            .get_historical_features(&HistoricalRequest::new(vec![spine], ts_name, features))
            .await?;
        let mut out = Vec::new();
        for m in online.features() {
            let (Some(a), Some(b)) = (
                online.batch().column_by_name(m.name()),
                hist.batch.column_by_name(m.name()),
            ) else {
                continue;
            };
            let mut mismatches = 0;
            let mut first = None;
            for i in 0..n {
                let served_null = matches!(
                    m.status(i),
                    FeatureStatus::NotFound | FeatureStatus::Expired
                );
                let same = if served_null {
                    b.is_null(i)
                } else {
                    a.slice(i, 1).as_ref() == b.slice(i, 1).as_ref()
                };
                if !same {
                    mismatches += 1;
                    first.get_or_insert(i);
                }
            }
            out.push(FeatureSkew {
                feature: m.name().to_owned(),
                compared: n,
                mismatches,
                first_mismatch: first,
            });
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow_array::Int64Array;

    #[test]
    fn psi_and_ks_detect_shift() {
        let a: Vec<f64> = (0..1000).map(|i| i as f64 / 1000.0).collect();
        let same = a.clone();
        let shifted: Vec<f64> = a.iter().map(|x| x + 0.5).collect();
        assert!(psi(&a, &same, 10).unwrap() < 1e-9);
        assert!(psi(&a, &shifted, 10).unwrap() > 0.25);
        assert_eq!(ks_statistic(&a, &same).unwrap(), 0.0);
        let ks = ks_statistic(&a, &shifted).unwrap();
        assert!((ks - 0.5).abs() < 0.01, "{ks}");
        assert!(psi(&[], &a, 10).is_err());
        // Bin counts outside 2..=MAX_PSI_BINS are refused by name, not overflowed.
        for bins in [0, 1, MAX_PSI_BINS + 1, usize::MAX / 2, usize::MAX] {
            let err = psi(&a, &same, bins).unwrap_err();
            assert!(
                matches!(&err, Error::InvalidInput(m) if m.contains("bins")),
                "{bins}: {err}"
            );
        }
        assert!(psi(&a, &shifted, MAX_PSI_BINS).unwrap().is_finite());
        assert!(ks_statistic(&a, &[f64::NAN]).is_err());
    }

    #[test]
    fn fill_rate_counts_nulls() {
        let b = RecordBatch::try_new(
            Arc::new(Schema::new(vec![Field::new("x", DataType::Int64, true)])),
            vec![Arc::new(Int64Array::from(vec![
                Some(1),
                None,
                None,
                Some(4),
            ]))],
        )
        .unwrap();
        assert_eq!(fill_rate(&b), vec![("x".to_owned(), 0.5)]);
    }
}
