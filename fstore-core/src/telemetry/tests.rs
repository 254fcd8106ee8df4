use std::collections::BTreeMap;
use std::time::Duration;

use chrono::{TimeZone, Utc};
use metrics_util::MetricKind as UtilKind;
use metrics_util::debugging::{DebugValue, DebuggingRecorder};

use super::*;
use crate::store::{FeatureSelection, MaterializeOptions, OnlineRequest, PushTarget};
use crate::testkit::{entity_batch, feature_batch, test_definitions};
use crate::{FeatureStore, ValueType};

/// `name{label=value,…}` with labels sorted, so assertions do not depend on label order.
fn render(key: &Key) -> String {
    let mut labels: Vec<String> = key
        .labels()
        .map(|l| format!("{}={}", l.key(), l.value()))
        .collect();
    labels.sort();
    format!("{}{{{}}}", key.name(), labels.join(","))
}

#[derive(Debug, Default)]
struct Seen {
    counters: BTreeMap<String, u64>,
    gauges: BTreeMap<String, f64>,
    /// Number of observations per histogram series.
    histograms: BTreeMap<String, usize>,
}

fn collect(rec: &DebuggingRecorder) -> Seen {
    let mut out = Seen::default();
    for (ck, _, _, v) in rec.snapshotter().snapshot().into_vec() {
        let name = render(ck.key());
        match (ck.kind(), v) {
            (UtilKind::Counter, DebugValue::Counter(n)) => {
                out.counters.insert(name, n);
            }
            (UtilKind::Gauge, DebugValue::Gauge(g)) => {
                out.gauges.insert(name, g.into_inner());
            }
            (UtilKind::Histogram, DebugValue::Histogram(h)) => {
                out.histograms.insert(name, h.len());
            }
            (k, v) => panic!("metric {name}: kind {k:?} with value {v:?}"),
        }
    }
    out
}

/// A known sequence of facade calls on the in-memory stores, then the exact
/// metric series and counts it must have produced.
#[tokio::test(flavor = "current_thread")]
async fn recorder_sees_documented_metrics_with_exact_counts() {
    let rec = DebuggingRecorder::new();
    let _guard = metrics::set_default_local_recorder(&rec);

    let store = FeatureStore::in_memory();
    let (defs, _) = test_definitions("tm_view", None);
    store.apply(&defs, Default::default()).await.unwrap();
    // Three users at t=2s (created 2s), offline and online.
    let t = 2_000_000;
    store
        .push(
            "tm_view",
            &feature_batch(&[(1, t, t, Some(1.0)), (2, t, t, Some(2.0)), (3, t, t, None)]),
            PushTarget::Both,
        )
        .await
        .unwrap();
    // An older row for user 1, online only: skipped by newest-wins.
    store
        .push(
            "tm_view",
            &feature_batch(&[(1, 1_000_000, 1_000_000, Some(9.0))]),
            PushTarget::Online,
        )
        .await
        .unwrap();
    let end = Utc.timestamp_opt(10, 0).unwrap();
    let report = store
        .materialize(&["tm_view"], None, end, &MaterializeOptions::default())
        .await
        .unwrap();
    assert_eq!(report.views[0].rows_read, 3);
    store
        .get_online_features(
            &OnlineRequest::new(
                FeatureSelection::refs(["tm_view:score"]).unwrap(),
                entity_batch(&[1, 2, 3, 99]),
            )
            .with_now(end),
        )
        .await
        .unwrap();
    // Breaking: a feature changes type. Refused without force.
    let mut breaking = defs.clone();
    breaking
        .feature_views
        .get_mut("tm_view")
        .unwrap()
        .features
        .iter_mut()
        .find(|f| f.name == "count")
        .unwrap()
        .value_type = ValueType::String;
    store
        .apply(&breaking, Default::default())
        .await
        .unwrap_err();
    store
        .freshness("tm_view", end, Duration::from_secs(3600))
        .await
        .unwrap();

    let seen = collect(&rec);
    let c = |k: &str| seen.counters.get(k).copied();
    assert_eq!(
        c("fstore_offline_rows_written_total{backend=memory,view=tm_view}"),
        Some(3)
    );
    // 3 pushed + 3 rewritten by materialize (equal versions are rewritten).
    assert_eq!(
        c("fstore_online_rows_written_total{backend=memory,view=tm_view}"),
        Some(6)
    );
    assert_eq!(
        c("fstore_online_rows_skipped_total{backend=memory,view=tm_view}"),
        Some(1)
    );
    assert_eq!(
        c("fstore_materialized_rows_total{backend=memory,view=tm_view}"),
        Some(3)
    );
    assert_eq!(
        seen.gauges
            .get("fstore_freshness_lag_seconds{view=tm_view}"),
        Some(&8.0)
    );

    // users 1, 2: values; 3: a null value; 99: no row
    assert_eq!(
        c("fstore_features_served_total{status=Present,view=tm_view}"),
        Some(2)
    );
    assert_eq!(
        c("fstore_features_served_total{status=NullValue,view=tm_view}"),
        Some(1)
    );
    assert_eq!(
        c("fstore_features_served_total{status=NotFound,view=tm_view}"),
        Some(1)
    );

    let h = |k: &str| seen.histograms.get(k).copied();
    assert_eq!(
        h("fstore_operation_duration_seconds{operation=apply,outcome=ok}"),
        Some(1)
    );
    assert_eq!(
        h("fstore_operation_duration_seconds{operation=apply,outcome=error}"),
        Some(1)
    );
    assert_eq!(
        h("fstore_operation_duration_seconds{operation=push,outcome=ok}"),
        Some(2)
    );
    assert_eq!(
        h("fstore_operation_duration_seconds{operation=materialize,outcome=ok}"),
        Some(1)
    );
    assert_eq!(
        h("fstore_operation_duration_seconds{operation=online,outcome=ok}"),
        Some(1)
    );
    assert_eq!(
        h("fstore_store_call_duration_seconds{backend=memory,operation=online.write,outcome=ok}"),
        Some(3),
        "two pushes and one materialization chunk"
    );
    assert_eq!(
        h("fstore_store_call_duration_seconds{backend=memory,operation=online.read,outcome=ok}"),
        Some(1)
    );
    assert_eq!(
        h("fstore_store_call_duration_seconds{backend=memory,operation=offline.write,outcome=ok}"),
        Some(1)
    );
    assert_eq!(
        h("fstore_store_call_duration_seconds{backend=memory,operation=offline.scan,outcome=ok}"),
        Some(2),
        "materialize and freshness"
    );
    assert_eq!(
        h(
            "fstore_store_call_duration_seconds{backend=memory,operation=registry.commit,outcome=ok}"
        ),
        Some(1),
        "only the first apply commits"
    );

    // Every emitted series is a documented metric with its documented labels.
    let names: Vec<&String> = seen
        .counters
        .keys()
        .chain(seen.gauges.keys())
        .chain(seen.histograms.keys())
        .collect();
    assert!(!names.is_empty());
    for series in names {
        let name = series.split('{').next().unwrap();
        let def = METRICS
            .iter()
            .find(|m| m.name == name)
            .unwrap_or_else(|| panic!("{series} is not in METRICS"));
        let labels: Vec<&str> = series
            .split('{')
            .nth(1)
            .unwrap()
            .trim_end_matches('}')
            .split(',')
            .map(|kv| kv.split('=').next().unwrap())
            .collect();
        let mut want: Vec<&str> = def.labels.to_vec();
        want.sort_unstable();
        assert_eq!(labels, want, "labels of {series}");
    }
}

/// `fstore_features_served_total` per (view, status) equals the tally of the
/// responses' own statuses: two views read in an interleaved selection, with
/// present, null, missing and expired rows, and requests whose columns have
/// no null at all (counted per view, not per feature).
#[tokio::test(flavor = "current_thread")]
async fn features_served_counts_equal_the_response_statuses() {
    let rec = DebuggingRecorder::new();
    let _guard = metrics::set_default_local_recorder(&rec);

    let store = FeatureStore::in_memory();
    let (defs, _) = test_definitions("sv_a", None);
    let (defs_b, _) = test_definitions("sv_b", Some(Duration::from_secs(5)));
    let defs = defs.with_feature_view(defs_b.feature_views["sv_b"].clone());
    store.apply(&defs, Default::default()).await.unwrap();
    let t = 8_000_000;
    for (view, rows) in [
        (
            "sv_a",
            vec![(1, t, t, Some(1.0)), (2, t, t, None), (3, t, t, Some(3.0))],
        ),
        // user 1 is expired at `now` (ttl 5s), user 3 fresh
        (
            "sv_b",
            vec![(1, 1_000_000, 1_000_000, Some(4.0)), (3, t, t, Some(5.0))],
        ),
    ] {
        store
            .push(view, &feature_batch(&rows), PushTarget::Online)
            .await
            .unwrap();
    }
    let now = Utc.timestamp_opt(10, 0).unwrap();
    let interleaved = FeatureSelection::refs([
        "sv_a:score",
        "sv_b:score",
        "sv_a:count",
        "sv_b:label",
        "sv_a:emb",
    ])
    .unwrap();
    let plain_a = FeatureSelection::refs(["sv_a:score", "sv_a:count"]).unwrap();
    let mut want: BTreeMap<String, u64> = BTreeMap::new();
    for (sel, ids) in [
        (&interleaved, &[1, 2, 3, 4][..]),
        (&interleaved, &[3][..]),
        (&plain_a, &[1, 3, 1][..]),
    ] {
        let resp = store
            .get_online_features(
                &OnlineRequest::new(sel.clone(), entity_batch(ids))
                    .with_now(now)
                    .with_full_feature_names(true),
            )
            .await
            .unwrap();
        for f in resp.features() {
            for st in f.statuses() {
                let key = format!(
                    "fstore_features_served_total{{status={st},view={}}}",
                    f.feature().view
                );
                *want.entry(key).or_default() += 1;
            }
        }
    }
    let got: BTreeMap<String, u64> = collect(&rec)
        .counters
        .into_iter()
        .filter(|(k, v)| k.starts_with("fstore_features_served_total") && *v > 0)
        .collect();
    assert_eq!(got, want);
    // the fixture reaches every status it means to
    for st in ["Present", "NullValue", "NotFound", "Expired"] {
        assert!(want.keys().any(|k| k.contains(st)), "{st}: {want:?}");
    }
}

#[tokio::test(flavor = "current_thread")]
async fn imputations_are_counted_per_view() {
    let rec = DebuggingRecorder::new();
    let _guard = metrics::set_default_local_recorder(&rec);
    let store = FeatureStore::in_memory();
    let (mut defs, _) = test_definitions("im_view", None);
    let v = defs.feature_views.get_mut("im_view").unwrap();
    let f = v.features.iter_mut().find(|f| f.name == "score").unwrap();
    f.fallback = crate::Fallback::Default(crate::Value::Float64(-1.0));
    store.apply(&defs, Default::default()).await.unwrap();
    store
        .push(
            "im_view",
            &feature_batch(&[(1, 1_000_000, 1_000_000, Some(1.0))]),
            PushTarget::Online,
        )
        .await
        .unwrap();
    let resp = store
        .get_online_features(
            &OnlineRequest::new(
                FeatureSelection::refs(["im_view:score"]).unwrap(),
                entity_batch(&[1, 2, 3]),
            )
            .with_now(Utc.timestamp_opt(10, 0).unwrap()),
        )
        .await
        .unwrap();
    assert_eq!(resp.imputed, 2);
    let seen = collect(&rec);
    assert_eq!(
        seen.counters.get("fstore_imputations_total{view=im_view}"),
        Some(&2)
    );
}

#[tokio::test(flavor = "current_thread")]
async fn failed_store_call_counts_error_kind() {
    let rec = DebuggingRecorder::new();
    let _guard = metrics::set_default_local_recorder(&rec);
    let store = FeatureStore::in_memory();
    let err = store.registry().snapshot_at(7).await.unwrap_err();
    assert!(matches!(err, Error::NotFound { .. }), "{err}");
    let seen = collect(&rec);
    assert_eq!(
        seen.counters.get(
            "fstore_store_call_errors_total{backend=memory,kind=not_found,operation=registry.snapshot_at}"
        ),
        Some(&1)
    );
    assert_eq!(
        seen.histograms.get(
            "fstore_store_call_duration_seconds{backend=memory,operation=registry.snapshot_at,outcome=error}"
        ),
        Some(&1)
    );
}

/// Rows `| \`name\` | kind | unit | labels | … |` of a markdown table.
fn table_rows(text: &str) -> Vec<(String, String, String, Vec<String>)> {
    text.lines()
        .map(|l| l.trim_start_matches("//!").trim())
        .filter(|l| l.starts_with("| `fstore_"))
        .map(|l| {
            let cols: Vec<&str> = l.split('|').map(str::trim).collect();
            let labels = cols[4]
                .split(',')
                .map(|s| s.trim().trim_matches('`').to_owned())
                .filter(|s| !s.is_empty())
                .collect();
            (
                cols[1].trim_matches('`').to_owned(),
                cols[2].to_owned(),
                cols[3].to_owned(),
                labels,
            )
        })
        .collect()
}

fn expected_rows() -> Vec<(String, String, String, Vec<String>)> {
    METRICS
        .iter()
        .map(|m| {
            (
                m.name.to_owned(),
                m.kind.as_str().to_owned(),
                m.unit.to_owned(),
                m.labels.iter().map(|s| (*s).to_owned()).collect(),
            )
        })
        .collect()
}

#[test]
fn module_doc_table_matches_metrics() {
    assert_eq!(table_rows(include_str!("../telemetry.rs")), expected_rows());
}

#[test]
fn readme_table_matches_metrics() {
    assert_eq!(
        table_rows(include_str!("../../../README.md")),
        expected_rows()
    );
}

#[test]
fn metric_names_are_unique_and_prometheus_style() {
    let mut names: Vec<&str> = METRICS.iter().map(|m| m.name).collect();
    names.sort_unstable();
    names.dedup();
    assert_eq!(names.len(), METRICS.len());
    for m in METRICS {
        assert!(m.name.starts_with("fstore_"), "{}", m.name);
        assert!(
            m.name.chars().all(|c| c.is_ascii_lowercase() || c == '_'),
            "{}",
            m.name
        );
        if m.kind == MetricKind::Counter {
            assert!(m.name.ends_with("_total"), "{}", m.name);
        }
    }
}
