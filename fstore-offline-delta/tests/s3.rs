//! Delta's `s3` feature (tables and registry on an S3-compatible object store)
//! against moto's S3: the moto server `scripts/servers/dynamo.sh` starts also
//! speaks S3, and the script makes the bucket (`FSTORE_TEST_S3_ENDPOINT`,
//! `FSTORE_TEST_S3_BUCKET`). Static fake credentials; loopback only.

use fstore_core::testkit::server_url;

#[tokio::test(flavor = "multi_thread")]
async fn s3_offline_and_registry_conformance() {
    let Some(endpoint) = server_url("FSTORE_TEST_S3_ENDPOINT") else {
        return;
    };
    assert!(
        cfg!(feature = "s3"),
        "FSTORE_TEST_S3_ENDPOINT is set but this test was built without the `s3` feature: \
         cargo test -p fstore-offline-delta --features s3 (scripts/test.sh does)"
    );
    #[cfg(feature = "s3")]
    {
        use std::sync::Arc;

        use fstore_offline_delta::{DeltaOfflineStoreBuilder, DeltaRegistry};

        let bucket = std::env::var("FSTORE_TEST_S3_BUCKET").expect("FSTORE_TEST_S3_BUCKET");
        let prefix = fstore_core::testkit::unique_name("fstore_s3");
        let options = [
            ("aws_endpoint_url", endpoint.as_str()),
            ("aws_region", "us-east-1"),
            ("aws_access_key_id", "fstore-test"),
            ("aws_secret_access_key", "fstore-test"),
            ("aws_allow_http", "true"),
            ("aws_virtual_hosted_style_request", "false"),
        ];
        let mut b =
            DeltaOfflineStoreBuilder::new().with_root(format!("s3://{bucket}/{prefix}/tables"));
        for (k, v) in options {
            b = b.with_storage_option(k, v);
        }
        let store: Arc<fstore_core::DynOfflineStore> = Arc::new(b.build().expect("build"));
        fstore_core::testkit::run_offline_suite(store).await;
        let reg_root = format!("s3://{bucket}/{prefix}/registry");
        fstore_core::testkit::run_registry_suite(|ns| {
            let uri = format!("{reg_root}/{ns}");
            async move {
                let r: Arc<fstore_core::DynRegistry> = Arc::new(
                    DeltaRegistry::open(
                        &uri,
                        options
                            .iter()
                            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned())),
                    )
                    .expect("open registry"),
                );
                r
            }
        })
        .await;
    }
}
