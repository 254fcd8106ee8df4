//! semantics §12 on Delta: a training set built by the engine from a spine held
//! in a Delta table (pinned to a version) and committed to a Delta result table,
//! equal cell by cell to `get_historical_features` on the same rows.

use std::sync::Arc;
use std::time::Duration;

use arrow_array::{Float64Array, Int64Array, RecordBatch, TimestampMicrosecondArray};
use arrow_schema::{DataType, Field, Schema, TimeUnit};
use fstore_core::engine::EngineConfig;
use fstore_core::testkit::{feature_batch, test_definitions};
use fstore_core::{
    ApplyOptions, Error, FeatureSelection, FeatureStore, HistoricalRequest, HistoricalToRequest,
    OfflineStore,
};
use fstore_offline_delta::{DeltaOfflineStoreBuilder, DeltaSink, DeltaSpine};
use parquet::arrow::ArrowWriter;
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;

const S: i64 = 1_000_000;

fn spine(ids: &[i64], ts: &[i64], first_label: usize) -> RecordBatch {
    RecordBatch::try_new(
        Arc::new(Schema::new(vec![
            Field::new("user_id", DataType::Int64, false),
            Field::new(
                "ts",
                DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into())),
                false,
            ),
            Field::new("y", DataType::Float64, false),
        ])),
        vec![
            Arc::new(Int64Array::from(ids.to_vec())),
            Arc::new(TimestampMicrosecondArray::from(ts.to_vec()).with_timezone("UTC")),
            Arc::new(Float64Array::from_iter_values(
                (0..ids.len()).map(|i| (first_label + i) as f64),
            )),
        ],
    )
    .unwrap()
}

fn write_parquet(path: &std::path::Path, batch: &RecordBatch) {
    let mut w =
        ArrowWriter::try_new(std::fs::File::create(path).unwrap(), batch.schema(), None).unwrap();
    w.write(batch).unwrap();
    w.close().unwrap();
}

fn read_all(files: &[std::path::PathBuf]) -> RecordBatch {
    let mut batches = Vec::new();
    for f in files {
        let r = ParquetRecordBatchReaderBuilder::try_new(std::fs::File::open(f).unwrap())
            .unwrap()
            .build()
            .unwrap();
        batches.extend(r.map(|b| b.unwrap()));
    }
    arrow_select::concat::concat_batches(&batches[0].schema(), &batches).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn spine_from_a_pinned_delta_version_result_into_a_delta_table() {
    let dir = tempfile::tempdir().unwrap();
    let b = DeltaOfflineStoreBuilder::new().with_root(dir.path().join("store").to_string_lossy());
    let fs = FeatureStore::builder()
        .with_offline(Arc::new(b.clone().build().unwrap()) as Arc<dyn OfflineStore>)
        .with_registry(Arc::new(b.build_registry().unwrap()))
        .with_registry_cache_ttl(Duration::ZERO)
        .build()
        .unwrap();
    fs.apply(
        &test_definitions("v", Some(Duration::from_secs(30))).0,
        ApplyOptions::default(),
    )
    .await
    .unwrap();
    // Ties on (event, created): write order decides, across two commits.
    let rows: Vec<_> = (0..300i64)
        .map(|i| (i % 17, (i % 50) * S, (i % 3) * S, Some(i as f64)))
        .collect();
    fs.write_history("v", &feature_batch(&rows)).await.unwrap();
    fs.write_history("v", &feature_batch(&rows[..40]))
        .await
        .unwrap();

    // The spine table: three appends; version 2 holds the first two.
    let spine_dir = dir.path().join("spine");
    let sink = DeltaSink::new(&spine_dir);
    let ids: Vec<i64> = (0..260).map(|i| (i * 7) % 19).collect();
    let ts: Vec<i64> = (0..260).map(|i| ((i * 13) % 90) * S).collect();
    let parts = [
        spine(&ids[..120], &ts[..120], 0),
        spine(&ids[120..200], &ts[120..200], 120),
        spine(&ids[200..], &ts[200..], 200),
    ];
    let mut versions = Vec::new();
    for p in &parts {
        let f = sink.data_file().unwrap();
        write_parquet(&f, p);
        versions.push(sink.commit(&f).await.unwrap());
        // Distinct modification times order the files.
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    assert_eq!(versions, [1, 2, 3], "created at 0, one append per part");
    let pinned = DeltaSpine::open(&spine_dir, Some(2)).await.unwrap();
    assert_eq!((pinned.version, pinned.files.len()), (2, 2));
    assert_eq!(
        DeltaSpine::open(&spine_dir, None)
            .await
            .unwrap()
            .files
            .len(),
        3
    );

    let sel = FeatureSelection::refs(["v:score", "v:label"]).unwrap();
    let whole = arrow_select::concat::concat_batches(&parts[0].schema(), &parts[..2]).unwrap();
    let want = fs
        .get_historical_features(
            &HistoricalRequest::new(vec![whole], "ts", sel.clone()).with_created_cutoff(true),
        )
        .await
        .unwrap();

    let result_dir = dir.path().join("train");
    let out = DeltaSink::new(&result_dir);
    let file = out.data_file().unwrap();
    let got = fs
        .historical_to(
            &HistoricalToRequest::new(pinned.files.clone(), "ts", sel)
                .with_created_cutoff(true)
                .with_engine(
                    EngineConfig::default()
                        .with_partitions(3)
                        .with_batch_size(16),
                ),
            &file,
        )
        .await
        .unwrap();
    assert_eq!(got.rows, 200);
    assert_eq!(got.view_versions, want.view_versions);
    let v = out.commit(&file).await.unwrap();
    // Idempotent: committing the same file again adds nothing.
    assert_eq!(out.commit(&file).await.unwrap(), v);
    let result = DeltaSpine::open(&result_dir, None).await.unwrap();
    assert_eq!((result.version, result.files.len()), (v, 1));
    let batch = read_all(&result.files);
    assert_eq!(batch.num_rows(), want.batch.num_rows());
    assert_eq!(batch.num_columns(), want.batch.num_columns());
    for i in 0..batch.num_columns() {
        assert_eq!(
            batch.schema().field(i).name(),
            want.batch.schema().field(i).name()
        );
        assert_eq!(
            batch.column(i).to_data(),
            want.batch.column(i).to_data(),
            "column {i}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_tables_and_files_are_named_errors() {
    let dir = tempfile::tempdir().unwrap();
    // No table, no version.
    let none = dir.path().join("none");
    std::fs::create_dir_all(&none).unwrap();
    let e = DeltaSpine::open(&none, None).await.unwrap_err();
    assert!(
        matches!(e, Error::NotFound { .. }) && e.to_string().contains("none"),
        "{e}"
    );
    let t = dir.path().join("t");
    let sink = DeltaSink::new(&t);
    let f = sink.data_file().unwrap();
    write_parquet(&f, &spine(&[1, 2], &[S, 2 * S], 0));
    assert_eq!(sink.commit(&f).await.unwrap(), 1);
    let e = DeltaSpine::open(&t, Some(9)).await.unwrap_err();
    assert!(
        matches!(e, Error::NotFound { .. }) && e.to_string().contains("9 of spine table"),
        "{e}"
    );

    // A file outside the table directory.
    let outside = dir.path().join("outside.parquet");
    write_parquet(&outside, &spine(&[1], &[S], 0));
    let e = sink.commit(&outside).await.unwrap_err().to_string();
    assert!(
        e.contains("outside.parquet") && e.contains("not a file directly inside"),
        "{e}"
    );

    // A column of another type than the table's: named, nothing committed.
    let other = RecordBatch::try_new(
        Arc::new(Schema::new(vec![
            Field::new("user_id", DataType::Utf8, false),
            Field::new(
                "ts",
                DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into())),
                false,
            ),
            Field::new("y", DataType::Float64, false),
        ])),
        vec![
            Arc::new(arrow_array::StringArray::from(vec!["a"])),
            Arc::new(TimestampMicrosecondArray::from(vec![S]).with_timezone("UTC")),
            Arc::new(Float64Array::from(vec![1.0])),
        ],
    )
    .unwrap();
    let f2 = sink.data_file().unwrap();
    write_parquet(&f2, &other);
    let e = sink.commit(&f2).await.unwrap_err();
    assert!(
        matches!(e, Error::InvalidInput(_))
            && e.to_string().contains("column 'user_id'")
            && e.to_string().contains("Int64"),
        "{e}"
    );
    assert_eq!(DeltaSpine::open(&t, None).await.unwrap().files.len(), 1);

    // Millisecond timestamps: Delta holds microseconds.
    let ms = RecordBatch::try_new(
        Arc::new(Schema::new(vec![Field::new(
            "at",
            DataType::Timestamp(TimeUnit::Millisecond, Some("UTC".into())),
            false,
        )])),
        vec![Arc::new(
            arrow_array::TimestampMillisecondArray::from(vec![1]).with_timezone("UTC"),
        )],
    )
    .unwrap();
    let ms_sink = DeltaSink::new(dir.path().join("ms"));
    let f3 = ms_sink.data_file().unwrap();
    write_parquet(&f3, &ms);
    let e = ms_sink.commit(&f3).await.unwrap_err().to_string();
    assert!(
        e.contains("column 'at'") && e.contains("microseconds"),
        "{e}"
    );

    // A partitioned table cannot be a spine: its partition values are not in its files.
    let part_dir = dir.path().join("partitioned");
    std::fs::create_dir_all(&part_dir).unwrap();
    let url = url::Url::from_directory_path(&part_dir).unwrap();
    deltalake::DeltaTableBuilder::from_url(url)
        .unwrap()
        .build()
        .unwrap()
        .create()
        .with_columns(
            deltalake::kernel::StructType::try_new(vec![
                deltalake::kernel::StructField::new(
                    "day",
                    deltalake::kernel::DataType::STRING,
                    true,
                ),
                deltalake::kernel::StructField::new("x", deltalake::kernel::DataType::LONG, true),
            ])
            .unwrap()
            .fields()
            .cloned(),
        )
        .with_partition_columns(["day"])
        .await
        .unwrap();
    let e = DeltaSpine::open(&part_dir, None)
        .await
        .unwrap_err()
        .to_string();
    assert!(e.contains("partitioned") && e.contains("day"), "{e}");
}
