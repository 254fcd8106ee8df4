//! Registry conformance cases.

use std::future::Future;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use async_trait::async_trait;

use super::fixtures::{test_definitions, unique_name};
use crate::error::Error;
use crate::memory::{InMemoryOfflineStore, InMemoryOnlineStore};
use crate::model::Definitions;
use crate::model::{FeatureRef, FeatureService, ValueType};
use crate::registry::{DynRegistry, Registry, RegistrySnapshot, RegistryState};
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

/// Where a racing `apply` waits before committing, so both racers have
/// planned against the same version and commit at the same moment.
#[derive(Debug)]
enum Gate {
    /// Two tasks of this process.
    Tasks(Arc<tokio::sync::Barrier>),
    /// Two processes: each creates `dir/<me>.ready` and waits for the other's.
    Files {
        dir: PathBuf,
        me: String,
        other: String,
    },
}

impl Gate {
    async fn wait(&self) -> crate::Result<()> {
        match self {
            Self::Tasks(b) => {
                b.wait().await;
                Ok(())
            }
            Self::Files { dir, me, other } => {
                std::fs::write(dir.join(format!("{me}.ready")), b"").map_err(|e| {
                    Error::invalid(format!(
                        "racing apply {me}: cannot write the gate file: {e}"
                    ))
                })?;
                let deadline = Instant::now() + Duration::from_secs(120);
                while !dir.join(format!("{other}.ready")).exists() {
                    if Instant::now() > deadline {
                        return Err(Error::invalid(format!(
                            "racing apply {me}: the other racer ({other}) never reached its commit"
                        )));
                    }
                    // spin (no sleep): both racers leave the gate within
                    // microseconds of each other
                    tokio::task::yield_now().await;
                }
                Ok(())
            }
        }
    }
}

/// A registry handle whose first `commit` (after arming) waits at a [`Gate`]:
/// two `apply`s through two such handles both read version v and then commit
/// against v at the same moment — the race the README's promise is about.
#[derive(Debug)]
struct GatedRegistry {
    inner: Arc<DynRegistry>,
    gate: Gate,
    armed: AtomicBool,
}

#[async_trait]
impl Registry for GatedRegistry {
    fn backend(&self) -> &'static str {
        self.inner.backend()
    }
    async fn snapshot(&self) -> crate::Result<Arc<RegistrySnapshot>> {
        self.inner.snapshot().await
    }
    async fn snapshot_at(&self, version: u64) -> crate::Result<Arc<RegistrySnapshot>> {
        self.inner.snapshot_at(version).await
    }
    async fn commit(&self, expected: u64, state: RegistryState) -> crate::Result<u64> {
        if self.armed.swap(false, Ordering::SeqCst) {
            self.gate.wait().await?;
        }
        self.inner.commit(expected, state).await
    }
    async fn versions(&self) -> crate::Result<Vec<u64>> {
        self.inner.versions().await
    }
}

/// The definitions racer `side` applies in `round` (one view of its own).
fn race_definitions(side: &str, round: u64) -> Definitions {
    test_definitions(&format!("race_{side}{round}"), None).0
}

/// `apply(defs)` through a facade over `reg`: `Ok(version)`, or `Err` with
/// "conflict" for a `Conflict` and the error text otherwise.
async fn apply_outcome(reg: Arc<DynRegistry>, defs: &Definitions) -> Result<u64, String> {
    let fs = FeatureStore::builder()
        .with_registry(reg)
        .with_offline(Arc::new(InMemoryOfflineStore::new()))
        .with_online(Arc::new(InMemoryOnlineStore::new()))
        .build()
        .map_err(|e| format!("build: {e}"))?;
    match fs.apply(defs, ApplyOptions::default()).await {
        Ok(r) => Ok(r.version),
        Err(Error::Conflict(_)) => Err("conflict".into()),
        Err(e) => Err(e.to_string()),
    }
}

/// Checks one round of two `apply`s that both planned against version `prev`:
/// exactly one commits `prev + 1` holding exactly its definitions, the other
/// gets `Conflict` and commits nothing; re-applied, the loser's definitions are
/// `prev + 2`, exactly, and `prev + 1` is unchanged (nothing lost or merged).
async fn check_apply_race(
    reg: &Arc<DynRegistry>,
    how: &str,
    round: u64,
    prev: u64,
    outcomes: [(&str, Result<u64, String>); 2],
) {
    let b = reg.backend();
    let wins: Vec<_> = outcomes.iter().filter(|o| o.1.is_ok()).collect();
    assert_eq!(
        wins.len(),
        1,
        "[{b}] {how} round {round}: exactly one apply wins: {outcomes:?}"
    );
    let (winner, loser) = if outcomes[0].1.is_ok() {
        (&outcomes[0], &outcomes[1])
    } else {
        (&outcomes[1], &outcomes[0])
    };
    assert_eq!(
        loser.1,
        Err("conflict".to_string()),
        "[{b}] {how} round {round}: the loser gets Conflict"
    );
    assert_eq!(
        winner.1,
        Ok(prev + 1),
        "[{b}] {how} round {round}: the winner commits the next version"
    );
    let latest = reg
        .snapshot()
        .await
        .unwrap_or_else(|e| panic!("[{b}] snapshot: {e}"));
    assert_eq!(
        latest.version,
        prev + 1,
        "[{b}] {how} round {round}: the loser committed nothing"
    );
    assert_eq!(
        latest.state.definitions,
        race_definitions(winner.0, round),
        "[{b}] {how} round {round}: version {} holds exactly the winner's definitions",
        prev + 1
    );
    let again = apply_outcome(Arc::clone(reg), &race_definitions(loser.0, round)).await;
    assert_eq!(
        again,
        Ok(prev + 2),
        "[{b}] {how} round {round}: the loser's re-apply commits"
    );
    for (v, side) in [(prev + 1, winner.0), (prev + 2, loser.0)] {
        let s = reg
            .snapshot_at(v)
            .await
            .unwrap_or_else(|e| panic!("[{b}] snapshot_at({v}): {e}"));
        assert_eq!(
            s.state.definitions,
            race_definitions(side, round),
            "[{b}] {how} round {round}: version {v} holds exactly {side}'s definitions"
        );
    }
}

/// Two `apply`s with different definitions race on two handles of one registry
/// (two tasks; both read the same version before either commits): one wins,
/// the other gets `Conflict`; each definition ends up in exactly one version.
pub async fn registry_racing_applies(a: Arc<DynRegistry>, c: Arc<DynRegistry>) {
    for round in 0..4u64 {
        let prev = a
            .snapshot()
            .await
            .unwrap_or_else(|e| panic!("[{}] snapshot: {e}", a.backend()))
            .version;
        let barrier = Arc::new(tokio::sync::Barrier::new(2));
        let gated = |h: &Arc<DynRegistry>| -> Arc<DynRegistry> {
            Arc::new(GatedRegistry {
                inner: Arc::clone(h),
                gate: Gate::Tasks(Arc::clone(&barrier)),
                armed: AtomicBool::new(true),
            })
        };
        let (ga, gc) = (gated(&a), gated(&c));
        let ta =
            tokio::spawn(async move { apply_outcome(ga, &race_definitions("a", round)).await });
        let tc =
            tokio::spawn(async move { apply_outcome(gc, &race_definitions("c", round)).await });
        let (ra, rc) = (ta.await, tc.await);
        let outcomes = [
            ("a", ra.unwrap_or_else(|e| panic!("task: {e}"))),
            ("c", rc.unwrap_or_else(|e| panic!("task: {e}"))),
        ];
        check_apply_race(&a, "two tasks", round, prev, outcomes).await;
    }
}

/// The child side of [`registry_racing_applies_across_processes`]: applies
/// racer `FSTORE_TEST_RACE_SIDE`'s definitions of round `FSTORE_TEST_RACE_ROUND`
/// to `reg`, meeting the other process at the gate in `FSTORE_TEST_RACE_DIR`
/// just before committing, and writes the outcome to `<dir>/<side>.out`.
/// Does nothing when `FSTORE_TEST_RACE_DIR` is unset.
///
/// # Panics
/// When the variables are malformed or the outcome cannot be written.
pub async fn racing_apply_child(reg: Arc<DynRegistry>) {
    let Ok(dir) = std::env::var("FSTORE_TEST_RACE_DIR") else {
        return;
    };
    let dir = PathBuf::from(dir);
    let side = std::env::var("FSTORE_TEST_RACE_SIDE").expect("FSTORE_TEST_RACE_SIDE");
    let round: u64 = std::env::var("FSTORE_TEST_RACE_ROUND")
        .expect("FSTORE_TEST_RACE_ROUND")
        .parse()
        .expect("round is a number");
    let other = if side == "a" { "c" } else { "a" };
    let gated: Arc<DynRegistry> = Arc::new(GatedRegistry {
        inner: reg,
        gate: Gate::Files {
            dir: dir.clone(),
            me: side.clone(),
            other: other.to_owned(),
        },
        armed: AtomicBool::new(true),
    });
    let out = match apply_outcome(gated, &race_definitions(&side, round)).await {
        Ok(v) => format!("ok {v}"),
        Err(e) => e,
    };
    std::fs::write(dir.join(format!("{side}.out")), out).expect("write the race outcome");
}

fn read_outcome(dir: &Path, side: &str) -> Result<u64, String> {
    let s = std::fs::read_to_string(dir.join(format!("{side}.out")))
        .unwrap_or_else(|e| panic!("racer {side} left no outcome: {e}"));
    match s.strip_prefix("ok ") {
        Some(v) => Ok(v.parse().unwrap_or_else(|_| panic!("bad outcome {s:?}"))),
        None => Err(s),
    }
}

/// Two **processes** race an `apply` each (different definitions) on one
/// registry: `child()` must build a command that runs [`racing_apply_child`]
/// on a fresh handle of the registry `reg` is a handle on (typically this test
/// binary filtered to an ignored test). Same checks as
/// [`registry_racing_applies`], through `reg`.
///
/// # Panics
/// When a child fails or the race breaks the promise.
pub async fn registry_racing_applies_across_processes(
    reg: Arc<DynRegistry>,
    child: impl Fn() -> std::process::Command,
) {
    let b = reg.backend();
    for round in 0..16u64 {
        let prev = reg
            .snapshot()
            .await
            .unwrap_or_else(|e| panic!("[{b}] snapshot: {e}"))
            .version;
        let dir = std::env::temp_dir().join(unique_name("fstore_race"));
        std::fs::create_dir_all(&dir).unwrap_or_else(|e| panic!("race dir: {e}"));
        let mut kids = Vec::new();
        for side in ["a", "c"] {
            let mut cmd = child();
            cmd.env("FSTORE_TEST_RACE_DIR", &dir)
                .env("FSTORE_TEST_RACE_SIDE", side)
                .env("FSTORE_TEST_RACE_ROUND", round.to_string())
                .stdout(std::process::Stdio::piped())
                .stderr(std::process::Stdio::piped());
            kids.push(
                cmd.spawn()
                    .unwrap_or_else(|e| panic!("[{b}] spawn racer {side}: {e}")),
            );
        }
        for (kid, side) in kids.into_iter().zip(["a", "c"]) {
            let out = tokio::task::spawn_blocking(move || kid.wait_with_output())
                .await
                .unwrap_or_else(|e| panic!("wait task: {e}"))
                .unwrap_or_else(|e| panic!("[{b}] wait for racer {side}: {e}"));
            assert!(
                out.status.success(),
                "[{b}] racer process {side} failed: {}\n{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
        }
        let outcomes = [
            ("a", read_outcome(&dir, "a")),
            ("c", read_outcome(&dir, "c")),
        ];
        check_apply_race(&reg, "two processes", round, prev, outcomes).await;
        let _ = std::fs::remove_dir_all(&dir);
    }
}

/// Runs every registry case of the registry ([`super::registry_cases`]);
/// `open(ns)` must return a handle on the registry named `ns` (empty when
/// new); calling it twice with one `ns` gives two handles on the same registry.
pub async fn run_registry_suite<F, Fut>(open: F)
where
    F: Fn(String) -> Fut,
    Fut: Future<Output = Arc<DynRegistry>>,
{
    super::run_registry_cases(open).await;
}

#[cfg(test)]
mod tests {
    //! The cross-process race on the file registry: this test binary runs
    //! itself twice, filtered to the ignored `racing_apply_child_process`.
    use std::sync::Arc;

    use crate::registry::{DynRegistry, FileRegistry};

    fn open(path: &str) -> Arc<DynRegistry> {
        Arc::new(FileRegistry::open(path).expect("open file registry"))
    }

    #[tokio::test(flavor = "multi_thread")]
    async fn file_registry_racing_applies_across_processes() {
        let path = std::env::temp_dir().join(super::unique_name("fstore_race_reg"));
        let p = path.to_string_lossy().into_owned();
        let exe = std::env::current_exe().expect("test binary path");
        super::registry_racing_applies_across_processes(open(&p), || {
            let mut c = std::process::Command::new(&exe);
            c.args([
                "--ignored",
                "--exact",
                "testkit::registry::tests::racing_apply_child_process",
            ])
            .env("FSTORE_TEST_RACE_REGISTRY", &p);
            c
        })
        .await;
        let _ = std::fs::remove_dir_all(path);
    }

    #[tokio::test(flavor = "multi_thread")]
    #[ignore = "child process of file_registry_racing_applies_across_processes"]
    async fn racing_apply_child_process() {
        let path = std::env::var("FSTORE_TEST_RACE_REGISTRY").expect("FSTORE_TEST_RACE_REGISTRY");
        super::racing_apply_child(open(&path)).await;
    }
}
