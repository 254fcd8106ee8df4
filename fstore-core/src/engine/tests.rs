//! The engine against the pure join: a property over random inputs (ties, ttl
//! edges, cutoff, null keys, composite int/string keys, several views, duplicate
//! spine rows, unsorted input; 1, 2 and 7 partitions, tiny batches), a spill
//! test under a memory limit far below the data, and the bad-input errors.

use std::sync::Arc;
use std::time::Duration;

use arrow_array::{
    Array, ArrayRef, Int32Array, Int64Array, RecordBatch, StringArray, TimestampMillisecondArray,
    TimestampSecondArray,
};
use arrow_schema::{DataType, Field};
use datafusion::physical_plan::ExecutionPlan;
use proptest::prelude::*;

use super::*;
use crate::pit::{PitOptions, PitView};
use hash::WORK_BYTES_PER_ROW;

fn ts(v: Vec<i64>) -> ArrayRef {
    Arc::new(TimestampSecondArray::from(v).with_timezone("UTC"))
}

fn batch(cols: Vec<(&str, ArrayRef)>) -> RecordBatch {
    RecordBatch::try_from_iter(cols).unwrap()
}

/// Splits `b` into batches of at most `size` rows.
fn chunks(b: &RecordBatch, size: usize) -> Vec<RecordBatch> {
    let mut out = Vec::new();
    let mut off = 0;
    while off < b.num_rows() {
        let len = size.min(b.num_rows() - off);
        out.push(b.slice(off, len));
        off += len;
    }
    if out.is_empty() {
        out.push(b.clone());
    }
    out
}

fn run(
    spine: &[RecordBatch],
    views: &[PitView<'_>],
    opts: &PitOptions,
    config: &EngineConfig,
) -> Result<RecordBatch> {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(point_in_time_join(spine, "t", views, opts, config))
}

/// Cell-by-cell equality of two results (schema names and types, then values).
fn assert_same(got: &RecordBatch, want: &RecordBatch) -> std::result::Result<(), TestCaseError> {
    prop_assert_eq!(got.num_rows(), want.num_rows());
    prop_assert_eq!(got.num_columns(), want.num_columns());
    for (i, (g, w)) in got.columns().iter().zip(want.columns()).enumerate() {
        let name = want.schema().field(i).name().clone();
        prop_assert_eq!(got.schema().field(i).name().clone(), name.clone());
        prop_assert_eq!(g.data_type(), w.data_type(), "column {}", name);
        prop_assert_eq!(g.to_data(), w.to_data(), "column {}", name);
    }
    Ok(())
}

const STRS: [&str; 4] = ["1", "12", "23", "3"];
const INTS: [i64; 6] = [0, 1, 2, 3, i64::MAX, i64::MIN];
/// Single int, string pair, mixed pair, int pair (`ci` = index of `c` as Int32).
const VIEW_KEYS: [&[&str]; 4] = [&["a"], &["b", "c"], &["a", "b"], &["a", "ci"]];

type Keys = (Option<usize>, Option<usize>, Option<usize>);

fn key_cols(rows: &[Keys]) -> Vec<(&'static str, ArrayRef)> {
    let a: Int64Array = rows.iter().map(|r| r.0.map(|i| INTS[i])).collect();
    let b: StringArray = rows.iter().map(|r| r.1.map(|i| STRS[i])).collect();
    let c: StringArray = rows.iter().map(|r| r.2.map(|i| STRS[i])).collect();
    let ci: Int32Array = rows.iter().map(|r| r.2.map(|i| i as i32)).collect();
    vec![
        ("a", Arc::new(a)),
        ("b", Arc::new(b)),
        ("c", Arc::new(c)),
        ("ci", Arc::new(ci)),
    ]
}

/// A feature row: keys, event s, created s.
type GenRow = (Keys, i64, i64);

#[derive(Debug, Clone)]
struct GenView {
    rows: Vec<GenRow>,
    ttl: Option<i64>,
    created: bool,
}

fn keys() -> impl Strategy<Value = Keys> {
    (
        proptest::option::weighted(0.93, 0..INTS.len()),
        proptest::option::weighted(0.93, 0..STRS.len()),
        proptest::option::weighted(0.93, 0..STRS.len()),
    )
}

fn gen_view() -> impl Strategy<Value = GenView> {
    (
        proptest::collection::vec((keys(), 0i64..10, 0i64..5), 0..24),
        proptest::option::of(0i64..5),
        any::<bool>(),
    )
        .prop_map(|(rows, ttl, created)| GenView { rows, ttl, created })
}

fn view_batch(g: &GenView) -> RecordBatch {
    let keys: Vec<Keys> = g.rows.iter().map(|r| r.0).collect();
    let mut cols = key_cols(&keys);
    // events in ms, Paris: unit and zone normalisation as in the pure join's property
    cols.push((
        "event",
        Arc::new(
            TimestampMillisecondArray::from(g.rows.iter().map(|r| r.1 * 1000).collect::<Vec<_>>())
                .with_timezone("Europe/Paris"),
        ),
    ));
    if g.created {
        cols.push(("created", ts(g.rows.iter().map(|r| r.2).collect())));
    }
    // a unique value per row: which row won is visible in every cell
    cols.push((
        "v",
        Arc::new(Int64Array::from(
            (0..g.rows.len() as i64).collect::<Vec<_>>(),
        )),
    ));
    cols.push((
        "s",
        Arc::new(StringArray::from(
            (0..g.rows.len())
                .map(|i| (i % 3 != 0).then(|| format!("s{i}")))
                .collect::<Vec<_>>(),
        )),
    ));
    batch(cols)
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(
        std::env::var("FSTORE_ENGINE_CASES").ok().and_then(|v| v.parse().ok()).unwrap_or(500)
    ))]

    #[test]
    fn engine_matches_pure_join(
        spine_rows in proptest::collection::vec((keys(), 0i64..12), 0..24),
        dups in proptest::collection::vec(0usize..24, 0..4),
        gviews in proptest::collection::vec(gen_view(), 1..=4),
        cutoff in any::<bool>(),
        full_names in any::<bool>(),
        partitions in prop::sample::select(vec![1usize, 2, 7]),
        batch_size in 1usize..5,
        input_chunk in 1usize..7,
        concurrency in 1usize..4,
        row_group in 1usize..5,
        split in proptest::option::of(0usize..24),
    ) {
        // duplicate spine rows, appended (unsorted input: rows are random)
        let mut spine_rows = spine_rows;
        for d in dups {
            if let Some(r) = spine_rows.get(d).cloned() {
                spine_rows.push(r);
            }
        }
        let keys: Vec<Keys> = spine_rows.iter().map(|r| r.0).collect();
        let mut cols = key_cols(&keys);
        cols.push(("t", ts(spine_rows.iter().map(|r| r.1).collect())));
        cols.push(("label", Arc::new(Int64Array::from((0..spine_rows.len() as i64).collect::<Vec<_>>()))));
        let spine_batch = batch(cols);
        let spine = chunks(&spine_batch, input_chunk);
        let view_batches: Vec<Vec<RecordBatch>> = gviews.iter().map(|g| chunks(&view_batch(g), input_chunk)).collect();
        let views: Vec<PitView<'_>> = gviews
            .iter()
            .enumerate()
            .map(|(vi, g)| PitView {
                name: format!("v{vi}"),
                join_keys: VIEW_KEYS[vi].iter().map(|k| k.to_string()).collect(),
                event_timestamp_column: "event".into(),
                created_timestamp_column: g.created.then(|| "created".into()),
                ttl: g.ttl.map(|d| Duration::from_secs(d as u64)),
                features: if full_names {
                    vec![Field::new("v", DataType::Int64, false), Field::new("s", DataType::Utf8, true)]
                } else {
                    // without full names only one view can ask for `v`
                    vec![Field::new(if vi == 0 { "v" } else { "s" }, if vi == 0 { DataType::Int64 } else { DataType::Utf8 }, true)]
                        .into_iter().filter(|_| vi <= 1).collect()
                },
                batches: &view_batches[vi],
            })
            .collect();
        let opts = PitOptions::default()
            .with_full_feature_names(full_names)
            .with_created_cutoff(cutoff);
        let want = crate::pit::point_in_time_join(&spine, "t", &views, &opts).unwrap();
        // Both join algorithms; the hash join with 1..=3 partitions joining at once.
        for join in [JoinAlgorithm::Hash, JoinAlgorithm::Sort] {
            let config = EngineConfig::default()
                .with_partitions(partitions)
                .with_batch_size(batch_size)
                .with_join(join)
                .with_hash_concurrency(concurrency);
            let got = run(&spine, &views, &opts, &config).unwrap();
            assert_same(&got, &want)?;
        }
        // The same inputs from Parquet files of `row_group`-row row groups (one
        // or two files each), so the scan's pieces cut tie groups of equal
        // (key, event, created) rows: the write-order tie-break across pieces,
        // files and partitions.
        let dir = tempfile::tempdir().unwrap();
        let spine_files = parquet_files(dir.path(), "spine", &spine_batch, row_group, split);
        let eviews: Vec<EngineView> = views
            .iter()
            .zip(&gviews)
            .map(|(v, g)| EngineView {
                name: v.name.clone(),
                join_keys: v.join_keys.clone(),
                event_timestamp_column: v.event_timestamp_column.clone(),
                created_timestamp_column: v.created_timestamp_column.clone(),
                ttl: v.ttl,
                features: v.features.clone(),
                input: parquet_plan(
                    &parquet_files(dir.path(), &v.name, &view_batch(g), row_group, split),
                    partitions,
                )
                .unwrap(),
            })
            .collect();
        for join in [JoinAlgorithm::Hash, JoinAlgorithm::Sort] {
            let config = EngineConfig::default()
                .with_partitions(partitions)
                .with_batch_size(batch_size)
                .with_join(join)
                .with_hash_concurrency(concurrency);
            let plan = pit_join_plan_with(
                parquet_plan(&spine_files, partitions).unwrap(),
                "t",
                &eviews,
                &opts,
                &config,
            )
            .unwrap();
            let got = collect_plan(plan, &config);
            assert_same(&got, &want)?;
        }
    }
}

/// `b` written as Parquet files of `row_group`-row row groups under `dir`:
/// one file, or two split at row `split` (modulo the rows).
fn parquet_files(
    dir: &std::path::Path,
    name: &str,
    b: &RecordBatch,
    row_group: usize,
    split: Option<usize>,
) -> Vec<std::path::PathBuf> {
    use datafusion::parquet::arrow::ArrowWriter;
    use datafusion::parquet::file::properties::WriterProperties;
    let parts = match split {
        Some(at) if b.num_rows() > 0 => {
            let at = at % b.num_rows();
            vec![b.slice(0, at), b.slice(at, b.num_rows() - at)]
        }
        _ => vec![b.clone()],
    };
    let props = WriterProperties::builder()
        .set_max_row_group_row_count(Some(row_group))
        .build();
    parts
        .iter()
        .enumerate()
        .map(|(i, part)| {
            let p = dir.join(format!("{name}-{i}.parquet"));
            let mut w = ArrowWriter::try_new(
                std::fs::File::create(&p).unwrap(),
                b.schema(),
                Some(props.clone()),
            )
            .unwrap();
            w.write(part).unwrap();
            w.close().unwrap();
            p
        })
        .collect()
}

/// Runs `plan` under `config` and concatenates its output.
fn collect_plan(plan: Arc<dyn ExecutionPlan>, config: &EngineConfig) -> RecordBatch {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let schema = plan.schema();
    let session = config.session().unwrap();
    let out: Vec<RecordBatch> = rt.block_on(async {
        let s = execute(plan, session.task_ctx()).unwrap();
        s.map(|b| b.unwrap()).collect().await
    });
    arrow_select::concat::concat_batches(&schema, &out).unwrap()
}

/// A spine and one view large enough to exceed a small memory pool.
fn large_case(n_spine: usize, n_feat: usize) -> (RecordBatch, RecordBatch) {
    let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
    let mut next = move || {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x
    };
    let n_keys = 5_000u64;
    let (mut sk, mut st) = (Vec::new(), Vec::new());
    for _ in 0..n_spine {
        sk.push((next() % n_keys) as i64);
        st.push((next() % 100_000) as i64);
    }
    let spine = batch(vec![("a", Arc::new(Int64Array::from(sk))), ("t", ts(st))]);
    let (mut fk, mut fe, mut fv) = (Vec::new(), Vec::new(), Vec::new());
    for i in 0..n_feat {
        fk.push((next() % n_keys) as i64);
        fe.push((next() % 100_000) as i64 * 1000);
        fv.push(format!("value-{i:08}-padding-padding-padding"));
    }
    let view = batch(vec![
        ("a", Arc::new(Int64Array::from(fk))),
        (
            "event",
            Arc::new(TimestampMillisecondArray::from(fe).with_timezone("UTC")),
        ),
        ("s", Arc::new(StringArray::from(fv))),
    ]);
    (spine, view)
}

/// Sum of `spill_count` over every node of `plan`.
fn spills(plan: &Arc<dyn ExecutionPlan>) -> usize {
    plan.metrics().and_then(|m| m.spill_count()).unwrap_or(0)
        + plan.children().into_iter().map(spills).sum::<usize>()
}

/// Sum of `spill_count` over the [`RepartitionExec`] nodes of `plan`.
fn repartition_spills(plan: &Arc<dyn ExecutionPlan>) -> usize {
    let own = if plan.downcast_ref::<RepartitionExec>().is_some() {
        plan.metrics().and_then(|m| m.spill_count()).unwrap_or(0)
    } else {
        0
    };
    own + plan
        .children()
        .into_iter()
        .map(repartition_spills)
        .sum::<usize>()
}

/// Runs the join of `large_case(800k, 1.6M)` (~124 MB of Arrow) under a pool of
/// `limit` bytes with `config` (partitions, join algorithm): (result, want, plan
/// after the run).
fn run_large_under_small_pool(
    config: EngineConfig,
    limit: usize,
) -> (Result<RecordBatch>, RecordBatch, Arc<dyn ExecutionPlan>) {
    let (spine, view) = large_case(800_000, 1_600_000);
    let data_bytes = spine.get_array_memory_size() + view.get_array_memory_size();
    assert!(
        data_bytes > 3 * limit,
        "data {data_bytes} B vs limit {limit} B"
    );
    let views = [PitView {
        name: "v".into(),
        join_keys: vec!["a".into()],
        event_timestamp_column: "event".into(),
        created_timestamp_column: None,
        ttl: Some(Duration::from_secs(5_000)),
        features: vec![Field::new("s", DataType::Utf8, true)],
        batches: &chunks(&view, 1024),
    }];
    let spine_batches = chunks(&spine, 1024);
    let want = crate::pit::point_in_time_join(&spine_batches, "t", &views, &PitOptions::default())
        .unwrap();

    let dir = tempfile::tempdir().unwrap();
    let config = config
        .with_batch_size(1024)
        .with_spill_merge_fan_in(4)
        .with_memory_limit(Some(limit))
        .with_spill_dir(Some(dir.path().to_path_buf()));
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let (got, plan) = rt.block_on(async {
        let ev = EngineView {
            name: "v".into(),
            join_keys: vec!["a".into()],
            event_timestamp_column: "event".into(),
            created_timestamp_column: None,
            ttl: Some(Duration::from_secs(5_000)),
            features: vec![Field::new("s", DataType::Utf8, true)],
            input: memory_plan(views[0].batches, view.schema(), 2).unwrap(),
        };
        let plan = pit_join_plan_with(
            memory_plan(&spine_batches, spine.schema(), 2).unwrap(),
            "t",
            &[ev],
            &PitOptions::default(),
            &config,
        )
        .unwrap();
        let session = config.session().unwrap();
        let got = async {
            let mut stream = execute(Arc::clone(&plan), session.task_ctx())?;
            let mut out = Vec::new();
            while let Some(b) = stream.next().await {
                out.push(b.map_err(from_df)?);
            }
            Ok(arrow_select::concat::concat_batches(&plan.schema(), &out)?)
        }
        .await;
        (got, plan)
    });
    (got, want, plan)
}

fn assert_same_cells(got: &RecordBatch, want: &RecordBatch) {
    assert_eq!(got.num_rows(), want.num_rows());
    for (g, w) in got.columns().iter().zip(want.columns()) {
        assert_eq!(g.to_data(), w.to_data());
    }
}

#[test]
fn memory_limit_far_below_the_data_spills_and_gives_the_same_answer() {
    // The sort-merge join: the sorts spill.
    let config = EngineConfig::default()
        .with_partitions(2)
        .with_join(JoinAlgorithm::Sort);
    let (got, want, plan) = run_large_under_small_pool(config, 16 << 20);
    let spilled = spills(&plan);
    assert!(spilled > 0, "nothing spilled under a 16 MiB pool");
    assert_same_cells(&got.unwrap(), &want);

    // The hash join: partitions small enough for the pool (~3 MB each, plus the
    // join's working memory), one joining at a time; the queues of the others
    // spill in the repartitions.
    let config = EngineConfig::default()
        .with_partitions(64)
        .with_join(JoinAlgorithm::Hash)
        .with_hash_concurrency(1);
    let (got, want, plan) = run_large_under_small_pool(config, 32 << 20);
    let spilled = repartition_spills(&plan);
    assert!(spilled > 0, "no repartition spilled under a 32 MiB pool");
    assert_same_cells(&got.unwrap(), &want);
}

#[test]
fn a_hash_partition_too_big_for_the_pool_is_a_clear_error() {
    // One partition holding everything cannot fit a 32 MiB pool.
    let config = EngineConfig::default()
        .with_partitions(1)
        .with_join(JoinAlgorithm::Hash);
    let (got, _, _) = run_large_under_small_pool(config, 32 << 20);
    let msg = got.unwrap_err().to_string();
    for part in [
        "view 'v': hash partition 0 of 1 does not fit in the engine's memory",
        "use more partitions (--partitions)",
        "--join sort",
    ] {
        assert!(msg.contains(part), "{part:?} not in: {msg}");
    }
}

fn small_inputs() -> (RecordBatch, RecordBatch) {
    let spine = batch(vec![
        ("a", Arc::new(Int64Array::from(vec![1, 2]))),
        ("t", ts(vec![10, 20])),
    ]);
    let view = batch(vec![
        ("a", Arc::new(Int64Array::from(vec![1, 2]))),
        ("event", ts(vec![5, 15])),
        ("v", Arc::new(Int64Array::from(vec![7, 8]))),
    ]);
    (spine, view)
}

fn view_of<'a>(batches: &'a [RecordBatch], keys: &[&str], feature: Field) -> PitView<'a> {
    PitView {
        name: "v".into(),
        join_keys: keys.iter().map(|k| k.to_string()).collect(),
        event_timestamp_column: "event".into(),
        created_timestamp_column: None,
        ttl: None,
        features: vec![feature],
        batches,
    }
}

/// The engine's error for these inputs equals the pure join's, word for word.
fn same_error(spine: &[RecordBatch], view: PitView<'_>) -> String {
    let pure = crate::pit::point_in_time_join(
        spine,
        "t",
        std::slice::from_ref(&view),
        &PitOptions::default(),
    )
    .unwrap_err();
    let eng = run(
        spine,
        &[view],
        &PitOptions::default(),
        &EngineConfig::default(),
    )
    .unwrap_err();
    assert!(matches!(eng, Error::InvalidInput(_)), "{eng}");
    assert_eq!(eng.to_string(), pure.to_string());
    eng.to_string()
}

#[test]
fn bad_input_gives_the_pure_joins_errors() {
    let (spine, view) = small_inputs();
    let f = Field::new("v", DataType::Int64, true);
    // missing key column
    let e = same_error(
        std::slice::from_ref(&spine),
        view_of(std::slice::from_ref(&view), &["nope"], f.clone()),
    );
    assert!(e.contains("'nope'"), "{e}");
    // unknown feature
    let e = same_error(
        std::slice::from_ref(&spine),
        view_of(
            std::slice::from_ref(&view),
            &["a"],
            Field::new("w", DataType::Int64, true),
        ),
    );
    assert!(e.contains("'w'"), "{e}");
    // key type mismatch names both types
    let view32 = batch(vec![
        ("a", Arc::new(Int32Array::from(vec![1, 2]))),
        ("event", ts(vec![5, 15])),
        ("v", Arc::new(Int64Array::from(vec![7, 8]))),
    ]);
    let e = same_error(
        std::slice::from_ref(&spine),
        view_of(&[view32], &["a"], f.clone()),
    );
    assert!(e.contains("Int64") && e.contains("Int32"), "{e}");
    // naive timestamps
    let naive = batch(vec![
        ("a", Arc::new(Int64Array::from(vec![1, 2]))),
        (
            "t",
            Arc::new(TimestampSecondArray::from(vec![10, 20])) as ArrayRef,
        ),
    ]);
    let e = same_error(
        &[naive],
        view_of(std::slice::from_ref(&view), &["a"], f.clone()),
    );
    assert!(e.contains("naive"), "{e}");
    // reserved column names
    let reserved = batch(vec![
        ("a", Arc::new(Int64Array::from(vec![1, 2]))),
        ("t", ts(vec![10, 20])),
        ("__fstore_seq", Arc::new(Int64Array::from(vec![1, 2]))),
    ]);
    let e = run(
        &[reserved],
        &[view_of(std::slice::from_ref(&view), &["a"], f.clone())],
        &PitOptions::default(),
        &EngineConfig::default(),
    )
    .unwrap_err();
    assert!(e.to_string().contains("__fstore_seq"), "{e}");
}

#[test]
fn null_timestamps_are_named_errors() {
    let (spine, view) = small_inputs();
    let f = Field::new("v", DataType::Int64, true);
    let null_t = batch(vec![
        ("a", Arc::new(Int64Array::from(vec![1, 2]))),
        (
            "t",
            Arc::new(TimestampSecondArray::from(vec![Some(10), None]).with_timezone("UTC"))
                as ArrayRef,
        ),
    ]);
    let e = run(
        &[null_t],
        &[view_of(&[view], &["a"], f.clone())],
        &PitOptions::default(),
        &EngineConfig::default(),
    )
    .unwrap_err();
    assert!(matches!(e, Error::InvalidInput(_)), "{e}");
    assert!(
        e.to_string().contains("spine") && e.to_string().contains("'t'"),
        "{e}"
    );
    let null_ev = batch(vec![
        ("a", Arc::new(Int64Array::from(vec![1, 2]))),
        (
            "event",
            Arc::new(TimestampSecondArray::from(vec![None, Some(3)]).with_timezone("UTC"))
                as ArrayRef,
        ),
        ("v", Arc::new(Int64Array::from(vec![7, 8]))),
    ]);
    let e = run(
        &[spine],
        &[view_of(&[null_ev], &["a"], f)],
        &PitOptions::default(),
        &EngineConfig::default(),
    )
    .unwrap_err();
    assert!(matches!(e, Error::InvalidInput(_)), "{e}");
    assert!(
        e.to_string().contains("view 'v'") && e.to_string().contains("'event'"),
        "{e}"
    );
}

#[test]
fn unwritable_spill_dir_is_a_clear_error() {
    let file = tempfile::NamedTempFile::new().unwrap();
    let dir = file.path().join("spill"); // a directory inside a regular file
    let (spine, view) = small_inputs();
    let e = run(
        &[spine],
        &[view_of(
            &[view],
            &["a"],
            Field::new("v", DataType::Int64, true),
        )],
        &PitOptions::default(),
        &EngineConfig::default().with_spill_dir(Some(dir.clone())),
    )
    .unwrap_err();
    assert!(matches!(e, Error::InvalidInput(_)), "{e}");
    assert!(
        e.to_string().contains("spill directory")
            && e.to_string().contains(&dir.display().to_string()),
        "{e}"
    );
}

#[test]
fn parquet_spine_in_parquet_out_equals_the_pure_join() {
    use datafusion::parquet::arrow::ArrowWriter;
    use datafusion::parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
    let (spine, view) = large_case(20_000, 40_000);
    let dir = tempfile::tempdir().unwrap();
    // the spine as three files: file order, then row order, is spine order
    let mut files = Vec::new();
    for (i, part) in [
        spine.slice(0, 7_000),
        spine.slice(7_000, 6_000),
        spine.slice(13_000, 7_000),
    ]
    .iter()
    .enumerate()
    {
        let p = dir.path().join(format!("spine-{i}.parquet"));
        let mut w =
            ArrowWriter::try_new(std::fs::File::create(&p).unwrap(), spine.schema(), None).unwrap();
        w.write(part).unwrap();
        w.close().unwrap();
        files.push(p);
    }
    let view_batches = chunks(&view, 4096);
    let pv = PitView {
        name: "v".into(),
        join_keys: vec!["a".into()],
        event_timestamp_column: "event".into(),
        created_timestamp_column: None,
        ttl: Some(Duration::from_secs(3_000)),
        features: vec![Field::new("s", DataType::Utf8, true)],
        batches: &view_batches,
    };
    let want = crate::pit::point_in_time_join(
        std::slice::from_ref(&spine),
        "t",
        &[pv],
        &PitOptions::default(),
    )
    .unwrap();
    let out = dir.path().join("out.parquet");
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let rows = rt.block_on(async {
        let ev = EngineView {
            name: "v".into(),
            join_keys: vec!["a".into()],
            event_timestamp_column: "event".into(),
            created_timestamp_column: None,
            ttl: Some(Duration::from_secs(3_000)),
            features: vec![Field::new("s", DataType::Utf8, true)],
            input: memory_plan(&view_batches, view.schema(), 3).unwrap(),
        };
        let plan = pit_join_plan(
            parquet_plan(&files, 3).unwrap(),
            "t",
            &[ev],
            &PitOptions::default(),
            3,
        )
        .unwrap();
        let session = EngineConfig::default()
            .with_batch_size(1000)
            .session()
            .unwrap();
        write_parquet(execute(plan, session.task_ctx()).unwrap(), &out)
            .await
            .unwrap()
    });
    assert_eq!(rows, 20_000);
    // nothing but the result is left in the directory
    let mut names: Vec<String> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    assert_eq!(
        names,
        [
            "out.parquet",
            "spine-0.parquet",
            "spine-1.parquet",
            "spine-2.parquet"
        ]
    );
    let reader = ParquetRecordBatchReaderBuilder::try_new(std::fs::File::open(&out).unwrap())
        .unwrap()
        .build()
        .unwrap();
    let got: Vec<RecordBatch> = reader.map(|b| b.unwrap()).collect();
    let got = arrow_select::concat::concat_batches(&got[0].schema(), &got).unwrap();
    assert_eq!(got.num_rows(), want.num_rows());
    for (g, w) in got.columns().iter().zip(want.columns()) {
        assert_eq!(g.to_data(), w.to_data());
    }
}

#[test]
fn a_failed_run_leaves_no_output_file() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out.parquet");
    let (spine, view) = small_inputs();
    let null_ev = batch(vec![
        ("a", Arc::new(Int64Array::from(vec![1, 2]))),
        (
            "event",
            Arc::new(TimestampSecondArray::from(vec![None, Some(3)]).with_timezone("UTC"))
                as ArrayRef,
        ),
        ("v", Arc::new(Int64Array::from(vec![7, 8]))),
    ]);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let e = rt.block_on(async {
        let ev = EngineView {
            name: "v".into(),
            join_keys: vec!["a".into()],
            event_timestamp_column: "event".into(),
            created_timestamp_column: None,
            ttl: None,
            features: vec![Field::new("v", DataType::Int64, true)],
            input: memory_plan(std::slice::from_ref(&null_ev), null_ev.schema(), 1).unwrap(),
        };
        let plan = pit_join_plan(
            memory_plan(std::slice::from_ref(&spine), spine.schema(), 1).unwrap(),
            "t",
            &[ev],
            &PitOptions::default(),
            2,
        )
        .unwrap();
        let session = EngineConfig::default().session().unwrap();
        write_parquet(execute(plan, session.task_ctx()).unwrap(), &out)
            .await
            .unwrap_err()
    });
    let _ = view;
    assert!(e.to_string().contains("'event'"), "{e}");
    assert_eq!(
        std::fs::read_dir(dir.path()).unwrap().count(),
        0,
        "a file was left behind"
    );
}

/// Sequences come from the sequence-base column (`base + row within the run`),
/// not from the partition index that executes the scan (Ballista renumbers a
/// task's partitions from 0).
#[test]
fn sequences_follow_the_base_column_not_the_executing_partition() {
    use datafusion::arrow::array::UInt64Array;
    let spine = batch(vec![
        ("a", Arc::new(Int64Array::from(vec![1, 2, 3]))),
        ("t", ts(vec![10, 20, 30])),
        (
            SEQ_BASE_COLUMN,
            Arc::new(UInt64Array::from(vec![5 << 40, 5 << 40, (6 << 40) | 7])) as ArrayRef,
        ),
    ]);
    let source =
        MemorySourceConfig::try_new_exec(&[vec![spine.clone()]], spine.schema(), None).unwrap();
    let prep = PitPrepareExec::try_new(
        source,
        PrepareConfig {
            role: PrepareRole::Spine {
                timestamp_column: "t".into(),
            },
            assume_utc: false,
        },
    )
    .unwrap();
    assert!(prep.schema().index_of(SEQ_BASE_COLUMN).is_err(), "consumed");
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let out = rt.block_on(async {
        let s = prep.execute(0, SessionContext::new().task_ctx()).unwrap();
        s.collect::<Vec<_>>().await
    });
    let b = out.into_iter().next().unwrap().unwrap();
    let seq = b
        .column_by_name(SEQ_COLUMN)
        .unwrap()
        .as_any()
        .downcast_ref::<UInt64Array>()
        .unwrap()
        .values()
        .to_vec();
    assert_eq!(seq, vec![5 << 40, (5 << 40) | 1, (6 << 40) | 7]);
}

#[test]
fn a_spilling_consumer_holding_nothing_takes_its_first_batch_from_the_rest_of_the_limit() {
    let pool: Arc<dyn MemoryPool> = Arc::new(SplitPool::new(1000));
    let spillers: Vec<_> = (0..10)
        .map(|i| {
            MemoryConsumer::new(format!("queue {i}"))
                .with_can_spill(true)
                .register(&pool)
        })
        .collect();
    let merge = MemoryConsumer::new("merge").register(&pool);
    // Ten registered: a base share of 50 bytes; the half is full.
    spillers[0].try_grow(500).unwrap();
    merge.try_grow(300).unwrap();
    // A first batch of 150 (three base shares) still fits what the limit has left ...
    spillers[1].try_grow(150).unwrap();
    // ... a second one does not (above its share, and the half is full).
    assert!(spillers[1].try_grow(1).is_err());
    // A first batch never pushes the total past the limit.
    assert!(spillers[2].try_grow(51).is_err());
    spillers[2].try_grow(50).unwrap();
    assert_eq!(pool.reserved(), 1000);
}

#[test]
fn merges_may_use_what_the_spilling_operators_leave_and_the_total_holds() {
    let pool: Arc<dyn MemoryPool> = Arc::new(SplitPool::new(1000));
    let sort_a = MemoryConsumer::new("sort a")
        .with_can_spill(true)
        .register(&pool);
    let sort_b = MemoryConsumer::new("sort b")
        .with_can_spill(true)
        .register(&pool);
    let merge = MemoryConsumer::new("merge").register(&pool);
    // Two running spilling operators share half of the limit: 250 bytes each.
    sort_a.try_grow(50).unwrap();
    sort_b.try_grow(250).unwrap();
    let err = sort_b.try_grow(1).unwrap_err().to_string();
    assert!(err.contains("sort b") && err.contains("can spill"), "{err}");
    // A merge cannot spill: it may take everything the sorts left, beyond half.
    merge.try_grow(650).unwrap();
    assert_eq!(pool.reserved(), 950);
    let err = merge.try_grow(51).unwrap_err().to_string();
    assert!(
        err.contains("merge") && err.contains("cannot spill") && err.contains("50 bytes"),
        "{err}"
    );
    // A sort below its share still cannot push the total past the limit.
    assert!(sort_a.try_grow(51).is_err());
    sort_a.try_grow(50).unwrap();
    assert_eq!(pool.reserved(), 1000);
    // Freed memory is available again.
    sort_b.free();
    merge.try_grow(250).unwrap();
    assert_eq!(pool.reserved(), 1000);
}

#[test]
fn the_spill_half_is_shared_by_the_consumers_holding_memory_not_the_idle_ones() {
    let pool: Arc<dyn MemoryPool> = Arc::new(SplitPool::new(1000));
    let sorts: Vec<_> = ["a", "b", "c", "d"]
        .iter()
        .map(|n| {
            MemoryConsumer::new(format!("sort {n}"))
                .with_can_spill(true)
                .register(&pool)
        })
        .collect();
    let [a, b, c, _idle] = &sorts[..] else {
        unreachable!()
    };
    let merge = MemoryConsumer::new("merge").register(&pool);
    // Four registered, one running: it gets the whole half, not a quarter of it.
    a.try_grow(500).unwrap();
    assert!(a.try_grow(1).is_err());
    // A second one starts while the half is full: it still gets its base share
    // (half over the four registered) from what the limit has left ...
    b.try_grow(125).unwrap();
    assert!(b.try_grow(1).is_err());
    // ... and the first, now above half over the two running, spills at its next
    // allocation.
    assert!(a.try_grow(1).is_err());
    a.free();
    // Another starts: two running, the half has room again, each may grow to 250.
    c.try_grow(100).unwrap();
    b.try_grow(125).unwrap();
    assert!(b.try_grow(1).is_err());
    // Two reservations of one consumer hold one share between them.
    let c2 = c.new_empty();
    c.try_grow(100).unwrap();
    c2.try_grow(50).unwrap();
    assert!(c2.try_grow(1).is_err());
    assert_eq!(pool.reserved(), 500);
    c.free();
    c2.free();
    // The non-spilling merges still may use the rest, and the total holds.
    merge.try_grow(750).unwrap();
    assert!(merge.try_grow(1).is_err());
    assert!(b.try_grow(1).is_err());
    assert_eq!(pool.reserved(), 1000);
}

/// Every [`PitJoinExec`] node of `plan`.
fn join_nodes(plan: &Arc<dyn ExecutionPlan>) -> Vec<Arc<dyn ExecutionPlan>> {
    let mut out: Vec<Arc<dyn ExecutionPlan>> =
        plan.children().into_iter().flat_map(join_nodes).collect();
    if plan.downcast_ref::<PitJoinExec>().is_some() {
        out.push(Arc::clone(plan));
    }
    out
}

#[test]
fn the_join_node_reports_its_rows_and_compute_time() {
    let (spine, view) = large_case(10_000, 30_000);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let plan = rt.block_on(async {
        let ev = EngineView {
            name: "v".into(),
            join_keys: vec!["a".into()],
            event_timestamp_column: "event".into(),
            created_timestamp_column: None,
            ttl: Some(Duration::from_secs(5_000)),
            features: vec![Field::new("s", DataType::Utf8, true)],
            input: memory_plan(&chunks(&view, 1000), view.schema(), 2).unwrap(),
        };
        let plan = pit_join_plan_with(
            memory_plan(&chunks(&spine, 1000), spine.schema(), 2).unwrap(),
            "t",
            &[ev],
            &PitOptions::default(),
            &EngineConfig::default()
                .with_partitions(3)
                .with_join(JoinAlgorithm::Sort),
        )
        .unwrap();
        let session = EngineConfig::default()
            .with_partitions(3)
            .with_batch_size(512)
            .session()
            .unwrap();
        let mut stream = execute(Arc::clone(&plan), session.task_ctx()).unwrap();
        let mut rows = 0;
        while let Some(b) = stream.next().await {
            rows += b.unwrap().num_rows();
        }
        assert_eq!(rows, 10_000);
        plan
    });
    let joins = join_nodes(&plan);
    assert_eq!(joins.len(), 1);
    let m = joins[0].metrics().expect("PitJoinExec reports metrics");
    assert_eq!(m.output_rows(), Some(10_000));
    assert_eq!(
        m.sum_by_name("view_rows").map(|v| v.as_usize()),
        Some(30_000)
    );
    assert!(m.elapsed_compute().is_some_and(|ns| ns > 0), "{m}");
    // Per partition: three partitions reported.
    let partitions: std::collections::BTreeSet<_> =
        m.iter().filter_map(|x| x.partition()).collect();
    assert_eq!(partitions.len(), 3, "{m}");
}

/// A pool without a limit that records each consumer's bytes now and at peak.
#[derive(Debug, Default)]
struct RecordingPool {
    bytes: std::sync::Mutex<HashMap<String, (usize, usize)>>,
}

impl RecordingPool {
    fn add(&self, r: &MemoryReservation, n: usize) {
        let mut b = self.bytes.lock().unwrap();
        let e = b.entry(r.consumer().name().to_string()).or_default();
        e.0 += n;
        e.1 = e.1.max(e.0);
    }
}

impl std::fmt::Display for RecordingPool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "recording")
    }
}

impl MemoryPool for RecordingPool {
    fn name(&self) -> &str {
        "recording"
    }
    fn grow(&self, r: &MemoryReservation, n: usize) {
        self.add(r, n);
    }
    fn shrink(&self, r: &MemoryReservation, n: usize) {
        let mut b = self.bytes.lock().unwrap();
        b.get_mut(r.consumer().name()).unwrap().0 -= n;
    }
    fn try_grow(&self, r: &MemoryReservation, n: usize) -> datafusion::common::Result<()> {
        self.add(r, n);
        Ok(())
    }
    fn reserved(&self) -> usize {
        self.bytes.lock().unwrap().values().map(|v| v.0).sum()
    }
}

#[test]
fn the_join_registers_the_batches_it_holds_with_the_memory_pool() {
    let (spine, view) = large_case(10_000, 30_000);
    let pool = Arc::new(RecordingPool::default());
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let ev = EngineView {
            name: "v".into(),
            join_keys: vec!["a".into()],
            event_timestamp_column: "event".into(),
            created_timestamp_column: None,
            ttl: Some(Duration::from_secs(5_000)),
            features: vec![Field::new("s", DataType::Utf8, true)],
            input: memory_plan(&chunks(&view, 1000), view.schema(), 2).unwrap(),
        };
        let plan = pit_join_plan_with(
            memory_plan(&chunks(&spine, 1000), spine.schema(), 2).unwrap(),
            "t",
            &[ev],
            &PitOptions::default(),
            &EngineConfig::default()
                .with_partitions(2)
                .with_join(JoinAlgorithm::Sort),
        )
        .unwrap();
        let rt_env = datafusion::execution::runtime_env::RuntimeEnvBuilder::new()
            .with_memory_pool(Arc::clone(&pool) as Arc<dyn MemoryPool>)
            .build_arc()
            .unwrap();
        let session =
            SessionContext::new_with_config_rt(SessionConfig::new().with_batch_size(512), rt_env);
        let mut stream = execute(plan, session.task_ctx()).unwrap();
        while let Some(b) = stream.next().await {
            b.unwrap();
        }
    });
    let bytes = pool.bytes.lock().unwrap();
    for p in 0..2 {
        let (now, peak) = bytes
            .get(&format!("PitJoinExec[{p}]"))
            .copied()
            .unwrap_or_default();
        // At least a spine batch with its key rows and a view batch of strings.
        assert!(peak > 512 * 16, "partition {p}: peak {peak} B");
        assert_eq!(now, 0, "partition {p} still holds {now} B");
    }
}

/// A pool without a limit that records the most `PitHashJoinExec[..]`
/// consumers holding memory at the same time.
#[derive(Debug, Default)]
struct ConcurrencyPool {
    state: std::sync::Mutex<(HashMap<usize, usize>, usize, usize)>,
}

impl ConcurrencyPool {
    fn add(&self, r: &MemoryReservation, n: usize) {
        if !r.consumer().name().starts_with("PitHashJoinExec[") || n == 0 {
            return;
        }
        let mut s = self.state.lock().unwrap();
        *s.0.entry(r.consumer().id()).or_default() += n;
        s.1 = s.1.max(s.0.len());
        s.2 = s.2.max(s.0.values().sum());
    }
}

impl std::fmt::Display for ConcurrencyPool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "concurrency")
    }
}

impl MemoryPool for ConcurrencyPool {
    fn name(&self) -> &str {
        "concurrency"
    }
    fn grow(&self, r: &MemoryReservation, n: usize) {
        self.add(r, n);
    }
    fn shrink(&self, r: &MemoryReservation, n: usize) {
        let mut s = self.state.lock().unwrap();
        if let Some(h) = s.0.get_mut(&r.consumer().id()) {
            *h -= n;
            if *h == 0 {
                s.0.remove(&r.consumer().id());
            }
        }
    }
    fn try_grow(&self, r: &MemoryReservation, n: usize) -> datafusion::common::Result<()> {
        self.add(r, n);
        Ok(())
    }
    fn reserved(&self) -> usize {
        self.state.lock().unwrap().0.values().sum()
    }
}

/// Runs the hash join of `large_case(20k, 60k)` with `partitions` and
/// `concurrency` under `pool`; returns the plan after the run.
fn run_hash_join_with_pool(
    partitions: usize,
    concurrency: usize,
    pool: Arc<dyn MemoryPool>,
) -> Arc<dyn ExecutionPlan> {
    let (spine, view) = large_case(20_000, 60_000);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let ev = EngineView {
            name: "v".into(),
            join_keys: vec!["a".into()],
            event_timestamp_column: "event".into(),
            created_timestamp_column: None,
            ttl: Some(Duration::from_secs(5_000)),
            features: vec![Field::new("s", DataType::Utf8, true)],
            input: memory_plan(&chunks(&view, 1000), view.schema(), 2).unwrap(),
        };
        let plan = pit_join_plan_with(
            memory_plan(&chunks(&spine, 1000), spine.schema(), 2).unwrap(),
            "t",
            &[ev],
            &PitOptions::default(),
            &EngineConfig::default()
                .with_partitions(partitions)
                .with_join(JoinAlgorithm::Hash)
                .with_hash_concurrency(concurrency),
        )
        .unwrap();
        let rt_env = datafusion::execution::runtime_env::RuntimeEnvBuilder::new()
            .with_memory_pool(pool)
            .build_arc()
            .unwrap();
        let session =
            SessionContext::new_with_config_rt(SessionConfig::new().with_batch_size(512), rt_env);
        let mut stream = execute(Arc::clone(&plan), session.task_ctx()).unwrap();
        let mut rows = 0;
        while let Some(b) = stream.next().await {
            rows += b.unwrap().num_rows();
        }
        assert_eq!(rows, 20_000);
        plan
    })
}

#[test]
fn at_most_the_configured_hash_partitions_collect_at_once() {
    for (partitions, concurrency) in [(8, 1), (8, 3)] {
        let pool = Arc::new(ConcurrencyPool::default());
        run_hash_join_with_pool(partitions, concurrency, Arc::clone(&pool) as _);
        let (held, most, _) = &*pool.state.lock().unwrap();
        assert!(
            *most >= 1 && *most <= concurrency,
            "{most} partitions held memory at once, allowed {concurrency}"
        );
        assert!(held.is_empty(), "partitions still hold memory: {held:?}");
    }
}

#[test]
fn the_hash_join_registers_what_it_collects_and_reports_its_metrics() {
    let pool = Arc::new(ConcurrencyPool::default());
    let plan = run_hash_join_with_pool(3, 1, Arc::clone(&pool) as _);
    let (held, _, peak) = &*pool.state.lock().unwrap();
    // 60k feature rows of ~40-byte strings in three partitions: the largest
    // share held at once is at least one partition's feature rows.
    assert!(*peak > 60_000 / 3 * 40, "peak {peak} B");
    assert!(held.is_empty(), "partitions still hold memory: {held:?}");
    let mut joins = Vec::new();
    fn walk(p: &Arc<dyn ExecutionPlan>, out: &mut Vec<Arc<dyn ExecutionPlan>>) {
        if p.downcast_ref::<PitHashJoinExec>().is_some() {
            out.push(Arc::clone(p));
        }
        for c in p.children() {
            walk(c, out);
        }
    }
    walk(&plan, &mut joins);
    assert_eq!(joins.len(), 1);
    let m = joins[0].metrics().expect("PitHashJoinExec reports metrics");
    assert_eq!(m.output_rows(), Some(20_000));
    let sum = |name: &str| m.sum_by_name(name).map(|v| v.as_usize());
    assert_eq!(sum("view_rows"), Some(60_000));
    assert_eq!(sum("spine_rows"), Some(20_000));
    assert!(
        sum("collected_bytes").is_some_and(|b| b > 60_000 * 40),
        "{m}"
    );
    assert!(m.elapsed_compute().is_some_and(|ns| ns > 0), "{m}");
    let partitions: std::collections::BTreeSet<_> =
        m.iter().filter_map(|x| x.partition()).collect();
    assert_eq!(partitions.len(), 3, "{m}");
    // One partition at a time: the peak is the largest partition's collected
    // batches plus the join's working memory for its rows.
    let of = |name: &str, p: usize| {
        m.iter()
            .filter(|x| x.partition() == Some(p) && x.value().name() == name)
            .map(|x| x.value().as_usize())
            .sum::<usize>()
    };
    let need = partitions
        .iter()
        .map(|&p| {
            of("collected_bytes", p)
                + WORK_BYTES_PER_ROW * (of("spine_rows", p) + of("view_rows", p))
        })
        .max()
        .unwrap();
    assert_eq!(*peak, need, "{m}");
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    /// The hash join's write-order permutation lists the sequences in ascending
    /// order, for sequences of one or several files, in any arrival order.
    #[test]
    fn the_write_order_permutation_sorts_the_sequences(
        rows in proptest::collection::btree_set((0u64..4, 0u64..(1 << 26)), 0..3000),
        shuffle in any::<u64>(),
    ) {
        let mut seq: Vec<u64> = rows.iter().map(|&(f, r)| (f << 40) | r).collect();
        // a deterministic shuffle: runs of ascending values, as a repartition delivers
        let mut state = shuffle | 1;
        for i in (1..seq.len()).rev() {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            if state % 4 == 0 {
                seq.swap(i, (state % (i as u64 + 1)) as usize);
            }
        }
        let mut want: Vec<u64> = seq.clone();
        want.sort_unstable();
        match hash::ascending(&seq) {
            None => prop_assert_eq!(&seq, &want),
            Some(p) => {
                prop_assert_eq!(p.len(), seq.len());
                let got: Vec<u64> = p.iter().map(|&i| seq[i as usize]).collect();
                prop_assert_eq!(got, want);
            }
        }
    }
}

/// The scan's pieces: contiguous byte ranges of whole row groups, sequence
/// bases `file << 40 | rows before`, at most the asked partitions, every row
/// group in exactly one piece, runs in file order.
#[test]
fn parquet_pieces_cover_every_row_group_once_in_order() {
    let span = |rows: u64, offset: i64| RowGroupSpan {
        rows,
        bytes: rows * 10,
        offset: Some(offset),
    };
    let files = vec![
        ScannedFile {
            path: "a".into(),
            size: 1000,
            groups: vec![span(10, 4), span(10, 104), span(10, 204), span(5, 304)],
        },
        ScannedFile {
            path: "b".into(),
            size: 50,
            groups: vec![],
        },
        ScannedFile {
            path: "c".into(),
            size: 500,
            groups: vec![span(20, 4), span(20, 200)],
        },
    ];
    for n in 1..=8 {
        let runs = pieces(&files, n);
        assert!(!runs.is_empty() && runs.len() <= n, "n={n}: {runs:?}");
        let flat: Vec<&Piece> = runs.iter().flatten().collect();
        // pieces in file order, each file's ranges contiguous and covering its row groups
        for (fi, f) in files.iter().enumerate() {
            let mine: Vec<&&Piece> = flat.iter().filter(|p| p.file == fi).collect();
            if f.groups.is_empty() {
                assert_eq!(mine.len(), 1, "n={n}");
                assert_eq!((mine[0].range, mine[0].base), (None, (fi as u64) << 40));
                continue;
            }
            let mut at = f.groups[0].offset.unwrap();
            let mut rows_before = 0;
            for p in &mine {
                let (start, end) = p.range.unwrap();
                assert_eq!(start, at, "n={n}: {runs:?}");
                assert_eq!(p.base, ((fi as u64) << 40) | rows_before, "n={n}: {runs:?}");
                for g in &f.groups {
                    if (start..end).contains(&g.offset.unwrap()) {
                        rows_before += g.rows;
                    }
                }
                at = end;
            }
            assert_eq!(at, f.size as i64, "n={n}: the last piece ends the file");
        }
        let files_in_order: Vec<usize> = flat.iter().map(|p| p.file).collect();
        assert!(files_in_order.is_sorted(), "n={n}: {files_in_order:?}");
    }
    // 6 row groups, asked for 8: one piece each.
    assert_eq!(
        pieces(&files, 8)
            .iter()
            .flatten()
            .filter(|p| p.range.is_some())
            .count(),
        6
    );
    // A file whose row groups cannot be told apart by range is read whole.
    let mut unordered = files[0].groups.clone();
    unordered.swap(0, 1);
    let f = ScannedFile {
        path: "d".into(),
        size: 1000,
        groups: check_offsets(unordered, 1000),
    };
    let runs = pieces(std::slice::from_ref(&f), 4);
    assert_eq!(runs.iter().flatten().count(), 1);
    assert_eq!(runs[0][0].range, None);
}

/// The parallel Parquet writer: row groups of the asked size, every cell read
/// back as written, for 1 and 3 encoding threads and batches that straddle
/// row groups; the Arrow schema (time zones) is kept.
#[test]
fn parquet_output_encoded_on_several_threads_reads_back_cell_by_cell() {
    use datafusion::parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
    let (_, view) = large_case(0, 10_000);
    let nullable: Int64Array = (0..10_000i64).map(|i| (i % 3 != 0).then_some(i)).collect();
    let mut cols: Vec<(&str, ArrayRef)> = vec![("n", Arc::new(nullable))];
    let view_schema = view.schema();
    for (f, c) in view_schema.fields().iter().zip(view.columns()) {
        cols.push((f.name().as_str(), Arc::clone(c)));
    }
    let spine = batch(cols);
    let dir = tempfile::tempdir().unwrap();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    for threads in [1, 3] {
        let out = dir.path().join(format!("out-{threads}.parquet"));
        let batches = chunks(&spine, 777);
        let plan = MemorySourceConfig::try_new_exec(&[batches], spine.schema(), None).unwrap();
        let rows = rt
            .block_on(async {
                let s = execute(plan, SessionContext::new().task_ctx())?;
                write_parquet_with(s, &out, Some(3_000), threads).await
            })
            .unwrap();
        assert_eq!(rows, 10_000);
        let builder =
            ParquetRecordBatchReaderBuilder::try_new(std::fs::File::open(&out).unwrap()).unwrap();
        let groups: Vec<i64> = builder
            .metadata()
            .row_groups()
            .iter()
            .map(|g| g.num_rows())
            .collect();
        assert_eq!(groups, [3_000, 3_000, 3_000, 1_000], "threads={threads}");
        let got: Vec<RecordBatch> = builder.build().unwrap().map(|b| b.unwrap()).collect();
        let got = arrow_select::concat::concat_batches(&got[0].schema(), &got).unwrap();
        assert_eq!(got.schema(), spine.schema(), "threads={threads}");
        assert_same_cells(&got, &spine);
    }
}
