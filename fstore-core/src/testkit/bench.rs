//! The data shape and the statistics every serving benchmark shares (core's
//! in-memory bench and each adapter's), so their figures compare: one entity
//! `id` (int64), views of `n` float64 features named `{view}_f{i}`, a 30-day
//! ttl, deterministic values, entities picked by a fixed xorshift sequence.

use std::ops::Range;
use std::sync::Arc;
use std::time::Duration;

use arrow_array::{ArrayRef, Float64Array, Int64Array, RecordBatch, TimestampMicrosecondArray};
use arrow_schema::{DataType, Field, Schema, TimeUnit};

use crate::model::{Definitions, Entity, FeatureView, ResolvedView, ValueType};

/// The `p` quantile (0.0–1.0, nearest rank) of `samples`, which it sorts.
/// Panics on an empty slice (a benchmark that measured nothing).
pub fn percentile(samples: &mut [Duration], p: f64) -> Duration {
    samples.sort_unstable();
    let i = ((samples.len() as f64 - 1.0) * p).round() as usize;
    samples[i]
}

/// A duration in microseconds, for printing.
pub fn micros(d: Duration) -> f64 {
    d.as_secs_f64() * 1e6
}

/// One entity (`entity`, join key `id`, int64) and, per name in `views`, a
/// view on it with `n_features` float64 features `{view}_f{i}` and a 30-day ttl.
pub fn float_definitions(entity: &str, n_features: usize, views: &[&str]) -> Definitions {
    let mut d = Definitions::new().with_entity(Entity::new(entity, "id", ValueType::Int64));
    for v in views {
        let mut fv = FeatureView::new(*v, [entity]);
        for f in 0..n_features {
            fv = fv.with_feature(format!("{v}_f{f}"), ValueType::Float64);
        }
        d = d.with_feature_view(fv.with_ttl(Duration::from_secs(30 * 86_400)));
    }
    d
}

/// History rows for entities `ids`, all at `event_us` (µs since the epoch,
/// UTC): columns `id`, `event_timestamp`, then each named feature with value
/// `id * 0.5 + position`.
pub fn float_history<S: AsRef<str>>(features: &[S], ids: Range<i64>, event_us: i64) -> RecordBatch {
    let n = ids.clone().count();
    let ts = DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into()));
    let mut fields = vec![
        Field::new("id", DataType::Int64, false),
        Field::new("event_timestamp", ts, false),
    ];
    let mut cols: Vec<ArrayRef> = vec![
        Arc::new(Int64Array::from_iter_values(ids.clone())),
        Arc::new(TimestampMicrosecondArray::from(vec![event_us; n]).with_timezone("UTC")),
    ];
    for (j, f) in features.iter().enumerate() {
        fields.push(Field::new(f.as_ref(), DataType::Float64, true));
        cols.push(Arc::new(Float64Array::from_iter_values(
            ids.clone().map(|i| (i as f64) * 0.5 + j as f64),
        )));
    }
    RecordBatch::try_new(Arc::new(Schema::new(fields)), cols)
        .expect("columns built to the schema above")
}

/// [`float_history`] for every feature of `view`.
pub fn view_history(view: &ResolvedView, ids: Range<i64>, event_us: i64) -> RecordBatch {
    let names: Vec<&str> = view.view.features.iter().map(|f| f.name.as_str()).collect();
    float_history(&names, ids, event_us)
}

/// An entity batch: one non-null int64 column `id`.
pub fn id_batch(ids: &[i64]) -> RecordBatch {
    RecordBatch::try_new(
        Arc::new(Schema::new(vec![Field::new("id", DataType::Int64, false)])),
        vec![Arc::new(Int64Array::from(ids.to_vec()))],
    )
    .expect("one int64 column")
}

/// A tiny deterministic PRNG (xorshift64) for picking entities; the seed must
/// not be zero.
#[derive(Debug, Clone)]
pub struct XorShift(pub u64);

impl XorShift {
    /// The next pick in `0..n` (`n > 0`).
    pub fn next_below(&mut self, n: i64) -> i64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        (self.0 % n as u64) as i64
    }
}
