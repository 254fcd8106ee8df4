//! `build_with_default_chain` (crate feature `aws-config`) against moto: the
//! standard AWS chain finds credentials and region in the environment. The
//! variables are set for a child process (this test binary, filtered to the
//! ignored `default_chain_child`), never in this one; profile files and IMDS
//! are pointed away so nothing but the environment can answer.

use std::process::Command;

use fstore_core::testkit::server_url;

fn child(mode: &str, endpoint: &str) -> Command {
    let mut c = Command::new(std::env::current_exe().expect("test binary"));
    c.args(["--ignored", "--exact", "default_chain_child", "--nocapture"])
        .env("FSTORE_TEST_CHAIN_MODE", mode)
        .env("FSTORE_TEST_DYNAMO_ENDPOINT", endpoint)
        .env("AWS_CONFIG_FILE", "/nonexistent/fstore/aws-config")
        .env(
            "AWS_SHARED_CREDENTIALS_FILE",
            "/nonexistent/fstore/aws-credentials",
        )
        .env("AWS_EC2_METADATA_DISABLED", "true")
        .env("AWS_REGION", "us-east-1")
        .env_remove("AWS_PROFILE")
        .env_remove("AWS_SESSION_TOKEN")
        .env_remove("AWS_WEB_IDENTITY_TOKEN_FILE")
        .env_remove("AWS_CONTAINER_CREDENTIALS_RELATIVE_URI")
        .env_remove("AWS_CONTAINER_CREDENTIALS_FULL_URI");
    c
}

fn run(mut c: Command, what: &str) -> String {
    let out = c.output().expect("run the default-chain child");
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "default-chain child ({what}) failed:\n{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    stdout
}

#[tokio::test(flavor = "multi_thread")]
async fn default_credential_chain_reads_the_environment() {
    let Some(endpoint) = server_url("FSTORE_TEST_DYNAMO_ENDPOINT") else {
        return;
    };
    if cfg!(not(feature = "aws-config")) {
        panic!(
            "FSTORE_TEST_DYNAMO_ENDPOINT is set but this test was built without the `aws-config` \
         feature: cargo test -p fstore-online-dynamo --features aws-config (scripts/test.sh does)"
        );
    }
    // credentials in the environment: the chain finds them, moto accepts them
    let mut with = child("env", &endpoint);
    with.env("AWS_ACCESS_KEY_ID", "fstore-chain-test")
        .env("AWS_SECRET_ACCESS_KEY", "fstore-chain-secret");
    let out = run(with, "credentials in the environment");
    assert!(out.contains("default chain: roundtrip ok"), "{out}");
    // none anywhere: the chain has nothing, and the store says so
    let mut without = child("none", &endpoint);
    without
        .env_remove("AWS_ACCESS_KEY_ID")
        .env_remove("AWS_SECRET_ACCESS_KEY");
    let out = run(without, "no credentials");
    assert!(
        out.contains("default chain: no credentials refused"),
        "{out}"
    );
}

#[tokio::test(flavor = "multi_thread")]
#[ignore = "child process of default_credential_chain_reads_the_environment"]
async fn default_chain_child() {
    #[cfg(feature = "aws-config")]
    {
        use fstore_core::{
            Error, FeatureView, JoinKey, OnlineKey, OnlineRow, OnlineStore, ReadOptions,
            ResolvedView, ValueType, WriteOptions,
        };
        use fstore_online_dynamo::DynamoOnlineStoreBuilder;

        let endpoint =
            std::env::var("FSTORE_TEST_DYNAMO_ENDPOINT").expect("FSTORE_TEST_DYNAMO_ENDPOINT");
        let mode = std::env::var("FSTORE_TEST_CHAIN_MODE").expect("FSTORE_TEST_CHAIN_MODE");
        let table = format!("fstore_chain_{}", std::process::id());
        let s = DynamoOnlineStoreBuilder::new()
            .with_endpoint(&endpoint)
            .with_table(&table)
            .with_retry_budget(0)
            .build_with_default_chain()
            .await
            .expect("build with the default chain");
        let view = ResolvedView::new(
            FeatureView::new("chain", ["driver"]).with_feature("f", ValueType::Int64),
            vec![JoinKey::new("driver_id", ValueType::Int64)],
        );
        let key = b"fstore-chain-entity".to_vec();
        match mode.as_str() {
            "env" => {
                s.ensure_tables().await.expect("create the table");
                let row = OnlineRow {
                    entity_key: key.clone(),
                    event_ts: 1,
                    created_ts: None,
                    payload: b"x".to_vec().into(),
                };
                s.write(&view, vec![row.clone()], &WriteOptions::default())
                    .await
                    .expect("write");
                let got = s
                    .read(
                        &[OnlineKey {
                            view: "chain".into(),
                            entity_key: key,
                        }],
                        &ReadOptions::default(),
                    )
                    .await
                    .expect("read");
                assert_eq!(got, vec![Some(row)]);
                s.delete_view("chain").await.expect("delete");
                println!("default chain: roundtrip ok");
            }
            "none" => {
                let err = s.ensure_tables().await.unwrap_err();
                assert!(
                    matches!(
                        &err,
                        Error::Backend {
                            backend: "dynamo",
                            ..
                        } | Error::Unavailable {
                            backend: "dynamo",
                            ..
                        }
                    ) && err.to_string().to_lowercase().contains("credential"),
                    "no credentials anywhere must fail naming credentials: {err:?}"
                );
                println!("default chain: no credentials refused");
            }
            other => panic!("unknown FSTORE_TEST_CHAIN_MODE {other:?}"),
        }
    }
}
