//! Online store conformance cases.

use std::sync::Arc;
use std::time::Duration;

use arrow_array::Array;
use arrow_array::cast::AsArray;
use arrow_array::types::Float64Type;

use super::fixtures::{base_micros, entity_batch, feature_batch, test_definitions, unique_name};
use crate::adapter::{encode_entity_key, to_online_rows};
use crate::memory::{InMemoryOfflineStore, InMemoryRegistry};
use crate::model::{ResolvedView, Value};
use crate::online::{DynOnlineStore, OnlineKey, OnlineRow, ReadOptions, WriteOptions};
use crate::store::{FeatureSelection, FeatureStatus, FeatureStore, OnlineRequest, PushTarget};
use crate::time::from_micros;

fn key(id: i64) -> Vec<u8> {
    encode_entity_key(&[("user_id", Value::Int64(id))]).expect("int64 key encodes")
}

fn okey(view: &str, id: i64) -> OnlineKey {
    OnlineKey {
        view: view.to_owned(),
        entity_key: key(id),
    }
}

fn rows(rv: &ResolvedView, data: &[(i64, i64, i64, Option<f64>)]) -> Vec<OnlineRow> {
    to_online_rows(rv, &feature_batch(data)).expect("fixture rows convert")
}

async fn read(store: &DynOnlineStore, keys: &[OnlineKey]) -> Vec<Option<OnlineRow>> {
    let out = store
        .read(keys, &ReadOptions::default())
        .await
        .unwrap_or_else(|e| panic!("[{}] read failed: {e}", store.backend()));
    assert_eq!(
        out.len(),
        keys.len(),
        "[{}] read must align with the request",
        store.backend()
    );
    out
}

async fn write(
    store: &DynOnlineStore,
    rv: &ResolvedView,
    r: Vec<OnlineRow>,
) -> crate::online::WriteSummary {
    store
        .write(rv, r, &WriteOptions::default())
        .await
        .unwrap_or_else(|e| panic!("[{}] write failed: {e}", store.backend()))
}

async fn cleanup(store: &DynOnlineStore, view: &str) {
    store
        .delete_view(view)
        .await
        .unwrap_or_else(|e| panic!("[{}] delete_view failed: {e}", store.backend()));
}

/// Rows written are read back byte for byte.
pub async fn online_roundtrip(store: &DynOnlineStore) {
    let b = store.backend();
    let view = unique_name("tk_rt");
    let (_, rv) = test_definitions(&view, None);
    let t = base_micros();
    let written = rows(
        &rv,
        &[
            (1, t, t + 1, Some(0.5)),
            (2, t + 5, t + 6, None),
            (3, t - 9, t, Some(-1.25)),
        ],
    );
    let s = write(store, &rv, written.clone()).await;
    assert_eq!(
        (s.written, s.skipped),
        (3, 0),
        "[{b}] roundtrip: all rows are new"
    );
    let got = read(store, &[okey(&view, 3), okey(&view, 1), okey(&view, 2)]).await;
    assert_eq!(
        got[0].as_ref(),
        Some(&written[2]),
        "[{b}] roundtrip: entity 3"
    );
    assert_eq!(
        got[1].as_ref(),
        Some(&written[0]),
        "[{b}] roundtrip: entity 1"
    );
    assert_eq!(
        got[2].as_ref(),
        Some(&written[1]),
        "[{b}] roundtrip: entity 2 (null features)"
    );
    cleanup(store, &view).await;
}

/// Unknown keys and unknown views read as `None`, aligned with found ones;
/// duplicate keys in a request are answered for every position.
pub async fn online_missing_keys(store: &DynOnlineStore) {
    let b = store.backend();
    let view = unique_name("tk_miss");
    let (_, rv) = test_definitions(&view, None);
    let t = base_micros();
    write(store, &rv, rows(&rv, &[(1, t, t, Some(1.0))])).await;
    let other_view = unique_name("tk_nothing");
    let got = read(
        store,
        &[
            okey(&view, 404),
            okey(&view, 1),
            okey(&other_view, 1),
            okey(&view, 1),
            okey(&view, 405),
        ],
    )
    .await;
    assert!(got[0].is_none(), "[{b}] missing key must be None");
    assert!(
        got[1].is_some() && got[3].is_some(),
        "[{b}] duplicate keys are both answered"
    );
    assert_eq!(got[1], got[3], "[{b}] duplicate keys read the same row");
    assert!(got[2].is_none(), "[{b}] a key of another view must be None");
    assert!(got[4].is_none(), "[{b}] missing key must be None");
    assert!(read(store, &[]).await.is_empty(), "[{b}] empty read");
    cleanup(store, &view).await;
}

/// Newest `(event_ts, created_ts)` wins whatever the arrival order; equal
/// versions: the later write wins; older rows are skipped and counted.
pub async fn online_newest_wins(store: &DynOnlineStore) {
    let b = store.backend();
    let view = unique_name("tk_nw");
    let (_, rv) = test_definitions(&view, None);
    let t = base_micros();
    // newer first, then older: the older one is skipped
    let s = write(store, &rv, rows(&rv, &[(1, t + 10, t, Some(10.0))])).await;
    assert_eq!(s.written, 1, "[{b}] first write");
    let s = write(store, &rv, rows(&rv, &[(1, t + 5, t + 99, Some(5.0))])).await;
    assert_eq!(
        (s.written, s.skipped),
        (0, 1),
        "[{b}] an older event must be skipped"
    );
    // same event, newer created: replaces
    let s = write(store, &rv, rows(&rv, &[(1, t + 10, t + 1, Some(11.0))])).await;
    assert_eq!(
        (s.written, s.skipped),
        (1, 0),
        "[{b}] same event, newer created replaces"
    );
    // same event, older created: skipped
    let s = write(store, &rv, rows(&rv, &[(1, t + 10, t - 1, Some(9.0))])).await;
    assert_eq!(
        (s.written, s.skipped),
        (0, 1),
        "[{b}] same event, older created is skipped"
    );
    // identical version: the later write wins (idempotent rewrite)
    let s = write(store, &rv, rows(&rv, &[(1, t + 10, t + 1, Some(12.0))])).await;
    assert_eq!(
        (s.written, s.skipped),
        (1, 0),
        "[{b}] equal version: later write wins"
    );
    let got = read(store, &[okey(&view, 1)]).await;
    let expect = rows(&rv, &[(1, t + 10, t + 1, Some(12.0))]);
    assert_eq!(
        got[0].as_ref(),
        Some(&expect[0]),
        "[{b}] newest-wins final state"
    );

    // within one call, rows apply in order: out-of-order and duplicate rows
    let s = write(
        store,
        &rv,
        rows(
            &rv,
            &[
                (2, t + 3, t, Some(3.0)),
                (2, t + 1, t, Some(1.0)),
                (2, t + 3, t, Some(3.5)),
                (2, t + 2, t, Some(2.0)),
            ],
        ),
    )
    .await;
    // t+3 written; t+1 older: skipped; t+3 again (equal version, later): written;
    // t+2 older: skipped
    assert_eq!(
        (s.written, s.skipped),
        (2, 2),
        "[{b}] in one call: two rows written (the later of equal versions too), \
         the two older rows skipped: {s:?}"
    );
    let got = read(store, &[okey(&view, 2)]).await;
    let expect = rows(&rv, &[(2, t + 3, t, Some(3.5))]);
    assert_eq!(
        got[0].as_ref(),
        Some(&expect[0]),
        "[{b}] in-call newest-wins (later of equal versions)"
    );
    cleanup(store, &view).await;
}

/// Writes and reads of more rows than the backend's per-call limits.
pub async fn online_batch_limits(store: &DynOnlineStore) {
    let b = store.backend();
    let caps = store.capabilities();
    let n_write = caps.max_write_batch.map_or(1_000, |m| m * 2 + 7).min(5_000) as i64;
    let n_read = caps.max_read_batch.map_or(1_000, |m| m * 2 + 7).min(5_000) as i64;
    let n = n_write.max(n_read);
    let view = unique_name("tk_lim");
    let (_, rv) = test_definitions(&view, None);
    let t = base_micros();
    let data: Vec<_> = (0..n).map(|i| (i, t + i, t, Some(i as f64))).collect();
    let written = rows(&rv, &data);
    let s = write(store, &rv, written.clone()).await;
    assert_eq!(
        (s.written, s.skipped),
        (n as u64, 0),
        "[{b}] {n} rows written"
    );
    let keys: Vec<OnlineKey> = (0..n_read + 3).map(|i| okey(&view, i)).collect();
    let got = read(store, &keys).await;
    for i in 0..n_read as usize {
        assert_eq!(
            got[i].as_ref(),
            Some(&written[i]),
            "[{b}] batch read row {i}"
        );
    }
    if n_read < n {
        // keys past n_read exist too
        assert!(got[n_read as usize].is_some(), "[{b}] row {n_read}");
    }
    cleanup(store, &view).await;
}

/// Two concurrent writers interleaving old and new versions: the newest wins.
pub async fn online_concurrent_writers(store: Arc<DynOnlineStore>) {
    let b = store.backend();
    let view = unique_name("tk_cc");
    let (_, rv) = test_definitions(&view, None);
    let t = base_micros();
    let ids: Vec<i64> = (0..50).collect();
    let mk = |offs: Vec<i64>| -> Vec<OnlineRow> {
        let data: Vec<_> = offs
            .iter()
            .flat_map(|o| ids.iter().map(move |i| (*i, t + o, t, Some(*o as f64))))
            .collect();
        to_online_rows(&rv, &feature_batch(&data)).expect("rows")
    };
    let (a, c) = (
        mk((0..=20).rev().step_by(2).collect()),
        mk((1..20).step_by(2).collect()),
    );
    let (s1, s2, rv1, rv2) = (
        Arc::clone(&store),
        Arc::clone(&store),
        rv.clone(),
        rv.clone(),
    );
    let h1 = tokio::spawn(async move { s1.write(&rv1, a, &WriteOptions::default()).await });
    let h2 = tokio::spawn(async move { s2.write(&rv2, c, &WriteOptions::default()).await });
    for h in [h1, h2] {
        h.await
            .unwrap_or_else(|e| panic!("[{b}] writer task panicked: {e}"))
            .unwrap_or_else(|e| panic!("[{b}] concurrent write failed: {e}"));
    }
    let keys: Vec<OnlineKey> = ids.iter().map(|i| okey(&view, *i)).collect();
    let got = read(store.as_ref(), &keys).await;
    for (i, g) in got.iter().enumerate() {
        let g = g
            .as_ref()
            .unwrap_or_else(|| panic!("[{b}] entity {i} missing after concurrent writes"));
        assert_eq!(
            g.event_ts,
            t + 20,
            "[{b}] entity {i}: the newest version (offset 20) must win"
        );
    }
    cleanup(store.as_ref(), &view).await;
}

/// `delete_view` removes the view's rows and only them.
pub async fn online_delete_view(store: &DynOnlineStore) {
    let b = store.backend();
    let (v1, v2) = (unique_name("tk_del"), unique_name("tk_keep"));
    let (_, rv1) = test_definitions(&v1, None);
    let (_, rv2) = test_definitions(&v2, None);
    let t = base_micros();
    write(store, &rv1, rows(&rv1, &[(1, t, t, Some(1.0))])).await;
    write(store, &rv2, rows(&rv2, &[(1, t, t, Some(2.0))])).await;
    cleanup(store, &v1).await;
    let got = read(store, &[okey(&v1, 1), okey(&v2, 1)]).await;
    assert!(got[0].is_none(), "[{b}] deleted view must read None");
    assert!(
        got[1].is_some(),
        "[{b}] other views must survive delete_view"
    );
    cleanup(store, &v2).await;
}

/// Through the facade: Present, NullValue, NotFound and Expired.
pub async fn online_statuses(store: Arc<DynOnlineStore>) {
    let b = store.backend();
    let view = unique_name("tk_st");
    let (defs, _) = test_definitions(&view, Some(Duration::from_secs(3_600)));
    let fs = FeatureStore::builder()
        .with_registry(Arc::new(InMemoryRegistry::new()))
        .with_offline(Arc::new(InMemoryOfflineStore::new()))
        .with_online(Arc::clone(&store))
        .with_online_timeout(Duration::from_secs(10))
        .build()
        .unwrap_or_else(|e| panic!("[{b}] build: {e}"));
    fs.apply(&defs, Default::default())
        .await
        .unwrap_or_else(|e| panic!("[{b}] apply: {e}"));
    let t = base_micros();
    let hour = 3_600_000_000;
    let batch = feature_batch(&[
        (1, t, t, Some(1.5)),
        (2, t, t, None),
        (3, t - 2 * hour, t, Some(3.0)),
    ]);
    fs.push(&view, &batch, PushTarget::Online)
        .await
        .unwrap_or_else(|e| panic!("[{b}] push: {e}"));
    let req = OnlineRequest::new(
        FeatureSelection::refs([format!("{view}:score")]).expect("refs"),
        entity_batch(&[1, 2, 3, 4]),
    )
    .with_now(from_micros(t + 60_000_000));
    let resp = fs
        .get_online_features(&req)
        .await
        .unwrap_or_else(|e| panic!("[{b}] get_online_features: {e}"));
    let m = resp
        .feature("score")
        .unwrap_or_else(|| panic!("[{b}] no score metadata"));
    assert_eq!(
        m.statuses(),
        vec![
            FeatureStatus::Present,
            FeatureStatus::NullValue,
            FeatureStatus::Expired,
            FeatureStatus::NotFound
        ],
        "[{b}] statuses"
    );
    let col = resp
        .batch()
        .column_by_name("score")
        .unwrap_or_else(|| panic!("[{b}] no score column"))
        .as_primitive::<Float64Type>();
    assert_eq!(col.value(0), 1.5, "[{b}] present value");
    assert!(
        col.is_null(1) && col.is_null(2) && col.is_null(3),
        "[{b}] null/expired/missing values are null"
    );
    assert_eq!(
        m.event_timestamp(0),
        Some(from_micros(t)),
        "[{b}] event time of a present value"
    );
    cleanup(store.as_ref(), &view).await;
}

/// Runs every online case of the registry ([`super::online_cases`]),
/// including the parity proptest. Needs a multi-threaded tokio runtime
/// (`#[tokio::test(flavor = "multi_thread")]`). For a store that lacks a
/// capability, use [`super::OnlineSuite`].
pub async fn run_online_suite(store: Arc<DynOnlineStore>) {
    super::OnlineSuite::new(store).run().await;
}
