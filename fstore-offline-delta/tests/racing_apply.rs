//! Two processes race an `apply` each (different definitions) on one Delta
//! registry: this test binary runs itself twice, filtered to the ignored
//! `racing_apply_child_process`, which applies through a fresh handle.

use std::sync::Arc;

use fstore_core::DynRegistry;
use fstore_offline_delta::DeltaRegistry;

fn open(path: &str) -> Arc<DynRegistry> {
    Arc::new(DeltaRegistry::open(path, []).expect("open Delta registry"))
}

#[tokio::test(flavor = "multi_thread")]
async fn delta_registry_racing_applies_across_processes() {
    let dir = tempfile::tempdir().expect("temp dir");
    let p = dir
        .path()
        .join("_fstore_registry")
        .to_string_lossy()
        .into_owned();
    let exe = std::env::current_exe().expect("test binary path");
    fstore_core::testkit::registry_racing_applies_across_processes(open(&p), || {
        let mut c = std::process::Command::new(&exe);
        c.args(["--ignored", "--exact", "racing_apply_child_process"])
            .env("FSTORE_TEST_RACE_REGISTRY", &p);
        c
    })
    .await;
}

#[tokio::test(flavor = "multi_thread")]
#[ignore = "child process of delta_registry_racing_applies_across_processes"]
async fn racing_apply_child_process() {
    let path = std::env::var("FSTORE_TEST_RACE_REGISTRY").expect("FSTORE_TEST_RACE_REGISTRY");
    fstore_core::testkit::racing_apply_child(open(&path)).await;
}
