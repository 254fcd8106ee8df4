//! Registry conformance cases.

use std::future::Future;
use std::sync::Arc;

use super::fixtures::{test_definitions, unique_name};
use crate::error::Error;
use crate::memory::{InMemoryOfflineStore, InMemoryOnlineStore};
use crate::model::{FeatureRef, FeatureService, ValueType};
use crate::registry::{DynRegistry, RegistryState};
use crate::store::{ApplyOptions, FeatureStore};

fn state_with(view: &str) -> RegistryState {
    RegistryState {
        definitions: test_definitions(view, None).0,
        watermarks: Default::default(),
    }
}

/// Commit, read back every version, and a stale commit gets `Conflict` and
/// changes nothing.
pub async fn registry_commit_history_and_conflict(reg: &DynRegistry) {
    let b = reg.backend();
    let s0 = reg
        .snapshot()
        .await
        .unwrap_or_else(|e| panic!("[{b}] snapshot: {e}"));
    assert_eq!(s0.version, 0, "[{b}] a new registry is at version 0");
    assert!(
        s0.state.definitions.feature_views.is_empty(),
        "[{b}] and empty"
    );
    let v1 = reg
        .commit(0, state_with("a"))
        .await
        .unwrap_or_else(|e| panic!("[{b}] commit 1: {e}"));
    assert_eq!(v1, 1, "[{b}] first commit is version 1");
    let v2 = reg
        .commit(1, state_with("b"))
        .await
        .unwrap_or_else(|e| panic!("[{b}] commit 2: {e}"));
    assert_eq!(v2, 2, "[{b}] second commit is version 2");
    match reg.commit(1, state_with("stale")).await {
        Err(Error::Conflict(_)) => {}
        other => panic!("[{b}] a stale commit must be a Conflict, got {other:?}"),
    }
    let latest = reg
        .snapshot()
        .await
        .unwrap_or_else(|e| panic!("[{b}] snapshot: {e}"));
    assert_eq!(latest.version, 2, "[{b}] the conflict changed nothing");
    assert!(
        latest.state.definitions.feature_views.contains_key("b"),
        "[{b}] latest state"
    );
    let old = reg
        .snapshot_at(1)
        .await
        .unwrap_or_else(|e| panic!("[{b}] snapshot_at(1): {e}"));
    assert!(
        old.state.definitions.feature_views.contains_key("a"),
        "[{b}] version 1 stays readable"
    );
    assert!(old.committed_at.is_some(), "[{b}] commit time recorded");
    assert_eq!(
        reg.versions()
            .await
            .unwrap_or_else(|e| panic!("[{b}] versions: {e}")),
        vec![1, 2],
        "[{b}] versions"
    );
    match reg.snapshot_at(99).await {
        Err(Error::NotFound { .. }) => {}
        other => panic!("[{b}] an unknown version must be NotFound, got {other:?}"),
    }
}

/// Two handles on one registry race: per version exactly one commit wins, the
/// loser gets `Conflict`, and no winner's state is lost.
pub async fn registry_racing_writers(a: Arc<DynRegistry>, c: Arc<DynRegistry>) {
    let b = a.backend();
    for round in 0..8u64 {
        let (a2, c2) = (Arc::clone(&a), Arc::clone(&c));
        let expected = round;
        let ha =
            tokio::spawn(
                async move { a2.commit(expected, state_with(&format!("a{round}"))).await },
            );
        let hc =
            tokio::spawn(
                async move { c2.commit(expected, state_with(&format!("c{round}"))).await },
            );
        let ra = ha.await.unwrap_or_else(|e| panic!("[{b}] task: {e}"));
        let rc = hc.await.unwrap_or_else(|e| panic!("[{b}] task: {e}"));
        let wins = [&ra, &rc].iter().filter(|r| r.is_ok()).count();
        assert_eq!(
            wins, 1,
            "[{b}] round {round}: exactly one writer wins: {ra:?} / {rc:?}"
        );
        for r in [&ra, &rc] {
            if let Err(e) = r {
                assert!(
                    matches!(e, Error::Conflict(_)),
                    "[{b}] the loser gets Conflict, got {e}"
                );
            }
        }
        let winner = if ra.is_ok() {
            format!("a{round}")
        } else {
            format!("c{round}")
        };
        for h in [&a, &c] {
            let s = h
                .snapshot()
                .await
                .unwrap_or_else(|e| panic!("[{b}] snapshot: {e}"));
            assert_eq!(
                s.version,
                round + 1,
                "[{b}] both handles see version {}",
                round + 1
            );
            assert!(
                s.state.definitions.feature_views.contains_key(&winner),
                "[{b}] the winner's state is stored"
            );
        }
    }
    for v in 1..=8u64 {
        a.snapshot_at(v)
            .await
            .unwrap_or_else(|e| panic!("[{b}] version {v} must stay readable: {e}"));
    }
}

/// Through the facade: apply, plan (no-op, additive, breaking), breaking refused
/// without force, forced apply.
pub async fn registry_plan_apply(reg: Arc<DynRegistry>) {
    let b = reg.backend();
    let fs = FeatureStore::builder()
        .with_registry(Arc::clone(&reg))
        .with_offline(Arc::new(InMemoryOfflineStore::new()))
        .with_online(Arc::new(InMemoryOnlineStore::new()))
        .build()
        .unwrap_or_else(|e| panic!("[{b}] build: {e}"));
    let view = unique_name("tk_reg");
    let (defs, _) = test_definitions(&view, None);
    let defs = defs.with_feature_service(FeatureService::new(
        "svc",
        [FeatureRef::new(&view, "score")],
    ));
    let r = fs
        .apply(&defs, ApplyOptions::default())
        .await
        .unwrap_or_else(|e| panic!("[{b}] apply: {e}"));
    assert_eq!(r.version, 1, "[{b}] first apply");
    assert!(
        fs.plan(&defs)
            .await
            .unwrap_or_else(|e| panic!("[{b}] plan: {e}"))
            .is_empty(),
        "[{b}] no-op plan"
    );
    let noop = fs
        .apply(&defs, ApplyOptions::default())
        .await
        .unwrap_or_else(|e| panic!("[{b}] apply: {e}"));
    assert_eq!(noop.version, 1, "[{b}] a no-op apply commits nothing");

    let mut additive = defs.clone();
    if let Some(v) = additive.feature_views.get_mut(&view) {
        v.features
            .push(crate::model::FeatureField::new("extra", ValueType::Int64));
    }
    let p = fs
        .plan(&additive)
        .await
        .unwrap_or_else(|e| panic!("[{b}] plan: {e}"));
    assert!(
        !p.is_breaking() && p.changes.len() == 1,
        "[{b}] adding a feature is a safe change: {p}"
    );
    assert_eq!(
        fs.apply(&additive, ApplyOptions::default())
            .await
            .map(|r| r.version)
            .ok(),
        Some(2),
        "[{b}] additive apply"
    );

    let mut breaking = additive.clone();
    if let Some(v) = breaking.feature_views.get_mut(&view) {
        v.features.retain(|f| f.name != "score");
    }
    breaking.feature_services.clear();
    match fs.apply(&breaking, ApplyOptions::default()).await {
        Err(Error::BreakingChange { changes }) => {
            assert!(
                changes.iter().any(|c| c.contains("svc")),
                "[{b}] names the service: {changes:?}"
            )
        }
        other => panic!("[{b}] removing a served feature must be refused, got {other:?}"),
    }
    let forced = fs
        .apply(&breaking, ApplyOptions::default().with_force(true))
        .await
        .unwrap_or_else(|e| panic!("[{b}] forced apply: {e}"));
    assert_eq!(forced.version, 3, "[{b}] forced apply commits");
    let snap = reg
        .snapshot_at(2)
        .await
        .unwrap_or_else(|e| panic!("[{b}] history: {e}"));
    assert!(
        snap.state.definitions.feature_services.contains_key("svc"),
        "[{b}] history keeps version 2"
    );
}

/// Runs every registry case; `open(ns)` must return a handle on the registry
/// named `ns` (empty when new); calling it twice with one `ns` gives two
/// handles on the same registry.
pub async fn run_registry_suite<F, Fut>(open: F)
where
    F: Fn(String) -> Fut,
    Fut: Future<Output = Arc<DynRegistry>>,
{
    let ns = unique_name("tk_reg_a");
    registry_commit_history_and_conflict(open(ns).await.as_ref()).await;
    let ns = unique_name("tk_reg_b");
    registry_racing_writers(open(ns.clone()).await, open(ns).await).await;
    registry_plan_apply(open(unique_name("tk_reg_c")).await).await;
}
