//! The one registry of conformance cases, each declaring the capabilities it
//! needs (the opendal pattern). A runner runs every case the store under test
//! allows, so a case added here reaches every adapter without editing any
//! adapter's tests.

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use crate::offline::DynOfflineStore;
use crate::online::DynOnlineStore;
use crate::registry::DynRegistry;

/// A capability a case may need beyond the store trait's contract.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Capability {
    /// Writers racing on one key are ordered by version on the server
    /// (newest wins whatever the arrival order). Every real online backend
    /// has it; a stand-in test server may not (kassandra ignores
    /// `USING TIMESTAMP`).
    ConcurrentNewestWins,
    /// Offline: `since_version` scans (`OfflineCapabilities::change_log`).
    ChangeLog,
    /// Offline: `as_of_version` scans (`OfflineCapabilities::time_travel`).
    TimeTravel,
}

type Run<S> = fn(Arc<S>, u32) -> Pin<Box<dyn Future<Output = ()> + Send>>;

/// One conformance case of a store of type `S`.
pub struct Case<S: ?Sized> {
    /// Name (the function in `fstore_core::testkit`).
    pub name: &'static str,
    /// Capabilities the case needs; it is skipped (and listed as skipped)
    /// when the store lacks one.
    pub needs: &'static [Capability],
    /// Runs the case; the `u32` is the number of property cases (ignored by
    /// example-based cases).
    run: Run<S>,
}

impl<S: ?Sized> fmt::Debug for Case<S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Case")
            .field("name", &self.name)
            .field("needs", &self.needs)
            .finish_non_exhaustive()
    }
}

macro_rules! case {
    ($name:ident, $needs:expr, |$s:ident, $n:ident| $body:expr) => {
        Case {
            name: stringify!($name),
            needs: $needs,
            run: |$s, $n| {
                let _ = $n;
                Box::pin(async move { $body })
            },
        }
    };
}

/// Every online case.
pub fn online_cases() -> &'static [Case<DynOnlineStore>] {
    use super::{online, parity, stress};
    use Capability::ConcurrentNewestWins;
    const CASES: &[Case<DynOnlineStore>] = &[
        case!(online_roundtrip, &[], |s, n| online::online_roundtrip(
            s.as_ref()
        )
        .await),
        case!(online_missing_keys, &[], |s, n| {
            online::online_missing_keys(s.as_ref()).await
        }),
        case!(online_newest_wins, &[], |s, n| {
            online::online_newest_wins(s.as_ref()).await
        }),
        case!(online_batch_limits, &[], |s, n| {
            online::online_batch_limits(s.as_ref()).await
        }),
        case!(online_delete_view, &[], |s, n| {
            online::online_delete_view(s.as_ref()).await
        }),
        case!(
            online_concurrent_writers,
            &[ConcurrentNewestWins],
            |s, n| online::online_concurrent_writers(s).await
        ),
        case!(online_statuses, &[], |s, n| online::online_statuses(s)
            .await),
        case!(
            online_concurrent_pushers,
            &[ConcurrentNewestWins],
            |s, n| stress::online_concurrent_pushers(s).await
        ),
        case!(online_parity, &[], |s, n| parity::online_parity(s, n).await),
    ];
    CASES
}

/// Every offline case.
pub fn offline_cases() -> &'static [Case<DynOfflineStore>] {
    use super::offline;
    const CASES: &[Case<DynOfflineStore>] = &[
        case!(offline_append_and_scan, &[], |s, n| {
            offline::offline_append_and_scan(s.as_ref()).await
        }),
        case!(offline_time_range, &[], |s, n| {
            offline::offline_time_range(s.as_ref()).await
        }),
        // Checks whichever of change log / time travel the store declares
        // (and refuses a store with neither), so it needs no capability.
        case!(offline_versions, &[], |s, n| {
            offline::offline_versions(s.as_ref()).await
        }),
        case!(offline_schema_evolution, &[], |s, n| {
            offline::offline_schema_evolution(s.as_ref()).await
        }),
        case!(offline_historical_matches_reference, &[], |s, n| {
            offline::offline_historical_matches_reference(s, n).await
        }),
    ];
    CASES
}

/// Which registry case (registry cases take an `open(ns)` function rather
/// than a store, so they dispatch by kind).
#[derive(Debug, Clone, Copy)]
enum RegistryKind {
    CommitHistory,
    RacingWriters,
    PlanApply,
    RacingApplies,
    RefusesUnreadableStates,
}

/// One registry case: each gets a fresh namespace, opened once or twice (two
/// handles on one registry, as two processes would have).
#[derive(Debug)]
pub struct RegistryCase {
    /// Name (the function in `fstore_core::testkit`).
    pub name: &'static str,
    kind: RegistryKind,
}

/// Every registry case.
pub fn registry_cases() -> &'static [RegistryCase] {
    const CASES: &[RegistryCase] = &[
        RegistryCase {
            name: "registry_commit_history_and_conflict",
            kind: RegistryKind::CommitHistory,
        },
        RegistryCase {
            name: "registry_racing_writers",
            kind: RegistryKind::RacingWriters,
        },
        RegistryCase {
            name: "registry_plan_apply",
            kind: RegistryKind::PlanApply,
        },
        RegistryCase {
            name: "registry_racing_applies",
            kind: RegistryKind::RacingApplies,
        },
        RegistryCase {
            name: "registry_refuses_unreadable_states",
            kind: RegistryKind::RefusesUnreadableStates,
        },
    ];
    CASES
}

/// Runs the online cases on one store: every case whose needs the store has.
///
/// ```no_run
/// # async fn f(store: std::sync::Arc<fstore_core::DynOnlineStore>) {
/// use fstore_core::testkit::{Capability, OnlineSuite};
/// // a stand-in server that does not order racing writers:
/// OnlineSuite::new(store).without(Capability::ConcurrentNewestWins).run().await;
/// # }
/// ```
#[derive(Debug)]
pub struct OnlineSuite {
    store: Arc<DynOnlineStore>,
    lacks: Vec<Capability>,
    parity_cases: u32,
}

impl OnlineSuite {
    /// Every case, with `FSTORE_TEST_PARITY_CASES` property cases (64 unless set).
    pub fn new(store: Arc<DynOnlineStore>) -> Self {
        Self {
            store,
            lacks: Vec::new(),
            parity_cases: super::parity_cases(64),
        }
    }

    /// Declares a capability the store under test lacks: the cases needing
    /// it are skipped (and listed).
    pub fn without(mut self, capability: Capability) -> Self {
        self.lacks.push(capability);
        self
    }

    /// Sets the number of property cases (`FSTORE_TEST_PARITY_CASES` still wins).
    pub fn with_parity_cases(mut self, default: u32) -> Self {
        self.parity_cases = super::parity_cases(default);
        self
    }

    /// Runs every allowed case in registry order; returns the names run.
    ///
    /// # Panics
    /// When a case fails (the message names backend and case).
    pub async fn run(self) -> Vec<&'static str> {
        let lacks = self.lacks;
        run_cases(online_cases(), &self.store, self.parity_cases, |c| {
            lacks.contains(&c)
        })
        .await
    }
}

/// Runs the offline cases on one store: every case whose needs the store's
/// [`OfflineCapabilities`](crate::OfflineCapabilities) meet. Returns the
/// names run.
pub async fn run_offline_cases(
    store: Arc<DynOfflineStore>,
    property_cases: u32,
) -> Vec<&'static str> {
    let caps = store.capabilities();
    run_cases(offline_cases(), &store, property_cases, |c| match c {
        Capability::ChangeLog => !caps.change_log,
        Capability::TimeTravel => !caps.time_travel,
        Capability::ConcurrentNewestWins => false,
    })
    .await
}

/// Runs every registry case; `open(ns)` opens the registry named `ns`.
/// Returns the names run.
pub async fn run_registry_cases<F, Fut>(open: F) -> Vec<&'static str>
where
    F: Fn(String) -> Fut,
    Fut: Future<Output = Arc<DynRegistry>>,
{
    use super::fixtures::unique_name;
    use super::registry as r;
    let mut ran = Vec::new();
    for c in registry_cases() {
        match c.kind {
            RegistryKind::CommitHistory => {
                let reg = open(unique_name("tk_reg_a")).await;
                r::registry_commit_history_and_conflict(reg.as_ref()).await;
            }
            RegistryKind::RacingWriters => {
                let ns = unique_name("tk_reg_b");
                r::registry_racing_writers(open(ns.clone()).await, open(ns).await).await;
            }
            RegistryKind::PlanApply => {
                r::registry_plan_apply(open(unique_name("tk_reg_c")).await).await;
            }
            RegistryKind::RacingApplies => {
                let ns = unique_name("tk_reg_d");
                r::registry_racing_applies(open(ns.clone()).await, open(ns).await).await;
            }
            RegistryKind::RefusesUnreadableStates => {
                let reg = open(unique_name("tk_reg_e")).await;
                super::poison::registry_refuses_unreadable_states(reg.as_ref()).await;
            }
        }
        ran.push(c.name);
    }
    ran
}

async fn run_cases<S: ?Sized + Send + Sync>(
    cases: &'static [Case<S>],
    store: &Arc<S>,
    property_cases: u32,
    lacks: impl Fn(Capability) -> bool + Sync,
) -> Vec<&'static str> {
    let mut ran = Vec::new();
    for c in cases {
        if let Some(missing) = c.needs.iter().copied().find(|&n| lacks(n)) {
            eprintln!("testkit: skipping {} (store lacks {missing:?})", c.name);
            continue;
        }
        (c.run)(Arc::clone(store), property_cases).await;
        ran.push(c.name);
    }
    ran
}
