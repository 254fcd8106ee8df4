//! Conformance suites every backend runs against its real server
//! (feature `testkit`). **Not semver-stable.**
//!
//! ```no_run
//! # async fn f(store: std::sync::Arc<fstore_core::DynOnlineStore>) {
//! // in an adapter's tests/conformance.rs, under #[tokio::test(flavor = "multi_thread")]
//! fstore_core::testkit::run_online_suite(store).await;
//! # }
//! ```
//!
//! The cases live in one registry ([`online_cases`], [`offline_cases`],
//! [`registry_cases`]), each declaring the [`Capability`]s it needs; the
//! `run_*` functions run every case the store allows, so a new case reaches
//! every adapter. A stand-in server that lacks a capability declares it with
//! [`OnlineSuite::without`].
//!
//! Every case creates its own randomly named views (or registry namespace) and
//! removes them afterwards, so suites can run in parallel against one server.
//! Cases panic with messages naming the backend and the case.
//!
//! A suite whose server is missing fails ([`server_url`]) unless
//! `FSTORE_TEST_ALLOW_SKIP=1` allows the skip explicitly;
//! `FSTORE_TEST_REQUIRE_SERVERS=1` (the project's `scripts/test.sh` sets it)
//! makes it fail even then. `FSTORE_TEST_PARITY_CASES` changes the number of
//! property cases (0 is refused).

mod agg;
pub mod bench;
mod cases;
mod deadline;
mod env;
mod fixtures;
mod fuzz;
mod offline;
mod online;
mod parity;
mod poison;
mod registry;
mod stress;

pub use agg::{
    agg_concurrent_push, agg_parity, agg_tiles_idempotent_expiring_guarded, run_agg_suite,
};
pub use cases::{
    Capability, Case, OnlineSuite, RegistryCase, offline_cases, online_cases, registry_cases,
    run_offline_cases, run_registry_cases,
};
pub use deadline::{FreezableProxy, online_read_deadline};
pub(crate) use env::parity_cases;
pub use env::server_url;
pub use fixtures::{
    entity_batch, feature_batch, online_key, online_row, online_view, test_definitions, unique_name,
};
pub use fuzz::{DECODER_CASES, decoder_never_panics};
pub use offline::{
    offline_append_and_scan, offline_historical_matches_reference, offline_schema_evolution,
    offline_time_range, offline_versions, run_offline_suite,
};
pub use online::{
    online_batch_limits, online_concurrent_writers, online_delete_view, online_missing_keys,
    online_newest_wins, online_roundtrip, online_statuses, run_online_suite,
};
pub use parity::online_parity;
pub use poison::registry_refuses_unreadable_states;
pub use registry::{
    racing_apply_child, registry_commit_history_and_conflict, registry_plan_apply,
    registry_racing_applies, registry_racing_applies_across_processes, registry_racing_writers,
    run_registry_suite,
};
pub use stress::{STRESS_ENTITIES, STRESS_ROUNDS, STRESS_WRITERS, online_concurrent_pushers};

/// Runs an async property `check` for `cases` generated cases (with
/// shrinking) from inside an async test: the proptest runner is synchronous, so
/// it runs in `block_in_place` and drives each case on the current runtime.
///
/// # Panics
/// Outside a multi-threaded tokio runtime, or with `failure` and the minimal
/// failing case when the property does not hold.
pub(crate) fn run_async_proptest<S, F, Fut>(
    what: &str,
    failure: &str,
    cases: u32,
    strategy: S,
    check: F,
) where
    S: proptest::strategy::Strategy,
    F: Fn(S::Value) -> Fut,
    Fut: std::future::Future<Output = Result<(), proptest::test_runner::TestCaseError>>,
{
    assert!(
        cases > 0,
        "{what}: 0 cases would pass the property without checking it"
    );
    let handle = tokio::runtime::Handle::current();
    assert!(
        handle.runtime_flavor() == tokio::runtime::RuntimeFlavor::MultiThread,
        "{what} needs a multi-threaded runtime: use #[tokio::test(flavor = \"multi_thread\")]"
    );
    let result = tokio::task::block_in_place(|| {
        let mut runner = proptest::test_runner::TestRunner::new(proptest::test_runner::Config {
            cases,
            failure_persistence: None,
            ..proptest::test_runner::Config::default()
        });
        runner.run(&strategy, |v| handle.block_on(check(v)))
    });
    if let Err(e) = result {
        panic!("{failure}: {e}");
    }
}

#[cfg(test)]
mod tests {
    //! The suites on the in-memory reference backends and the file registry.
    use std::sync::Arc;

    use crate::memory::{InMemoryOfflineStore, InMemoryOnlineStore, InMemoryRegistry};
    use crate::registry::{DynRegistry, FileRegistry};

    /// A case needing a capability the store lacks is skipped; every other
    /// case of the registry runs.
    #[tokio::test(flavor = "multi_thread")]
    async fn suite_runs_every_allowed_case_of_the_registry() {
        let ran = super::OnlineSuite::new(Arc::new(InMemoryOnlineStore::new()))
            .without(super::Capability::ConcurrentNewestWins)
            .with_parity_cases(4)
            .run()
            .await;
        let expected: Vec<&str> = super::online_cases()
            .iter()
            .filter(|c| !c.needs.contains(&super::Capability::ConcurrentNewestWins))
            .map(|c| c.name)
            .collect();
        assert_eq!(ran, expected);
        assert!(!ran.contains(&"online_concurrent_writers"));
        assert!(ran.contains(&"online_roundtrip") && ran.contains(&"online_parity"));
    }

    #[tokio::test(flavor = "multi_thread")]
    async fn memory_online_suite() {
        super::run_online_suite(Arc::new(InMemoryOnlineStore::new())).await;
    }

    #[tokio::test(flavor = "multi_thread")]
    async fn memory_online_parity_many_cases() {
        super::online_parity(
            Arc::new(InMemoryOnlineStore::new()),
            super::parity_cases(256),
        )
        .await;
    }

    #[tokio::test(flavor = "multi_thread")]
    async fn memory_agg_suite_many_cases() {
        super::run_agg_suite(
            Arc::new(InMemoryOnlineStore::new()),
            super::parity_cases(256),
        )
        .await;
    }

    #[tokio::test(flavor = "multi_thread")]
    async fn memory_offline_suite() {
        super::run_offline_suite(Arc::new(InMemoryOfflineStore::new())).await;
    }

    #[tokio::test(flavor = "multi_thread")]
    async fn memory_registry_suite() {
        // one process-wide map of namespaces, so open(ns) twice shares a registry
        let regs: Arc<std::sync::Mutex<std::collections::HashMap<String, Arc<DynRegistry>>>> =
            Arc::default();
        super::run_registry_suite(|ns| {
            let regs = Arc::clone(&regs);
            async move {
                let mut m = regs.lock().expect("lock");
                Arc::clone(
                    m.entry(ns)
                        .or_insert_with(|| Arc::new(InMemoryRegistry::new())),
                )
            }
        })
        .await;
    }

    #[tokio::test(flavor = "multi_thread")]
    async fn file_registry_suite() {
        let dir = std::env::temp_dir().join(super::unique_name("fstore_file_registry"));
        let d = dir.clone();
        // every open() is a separate handle (as two processes would have)
        super::run_registry_suite(move |ns| {
            let path = d.join(ns);
            async move {
                Arc::new(FileRegistry::open(path).expect("open file registry")) as Arc<DynRegistry>
            }
        })
        .await;
        let _ = std::fs::remove_dir_all(dir);
    }
}
