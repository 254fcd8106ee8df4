//! Tests of the point-in-time join: one table-driven test per rule, plus a property
//! test against a naive O(S×F) reference implementation.

use std::sync::Arc;
use std::time::Duration;

use arrow_array::{
    Array, ArrayRef, BinaryArray, Float64Array, Int32Array, Int64Array, LargeStringArray,
    RecordBatch, StringArray, StringViewArray, TimestampMillisecondArray, TimestampNanosecondArray,
    TimestampSecondArray, cast::AsArray, types::Int64Type,
};
use arrow_schema::{DataType, Field};
use proptest::prelude::*;

use super::*;

// ---------------------------------------------------------------- helpers

fn ts(v: Vec<i64>) -> ArrayRef {
    Arc::new(TimestampSecondArray::from(v).with_timezone("UTC"))
}

fn batch(cols: Vec<(&str, ArrayRef)>) -> RecordBatch {
    RecordBatch::try_from_iter(cols).unwrap()
}

fn i64s(v: &[Option<i64>]) -> ArrayRef {
    Arc::new(Int64Array::from(v.to_vec()))
}

/// A spine with an Int64 key `k`, a timestamp `t` (seconds) and a label.
fn spine_k(keys: &[Option<i64>], t: &[i64]) -> RecordBatch {
    let label: Vec<i64> = (0..keys.len() as i64).collect();
    batch(vec![
        ("k", i64s(keys)),
        ("t", ts(t.to_vec())),
        ("label", Arc::new(Int64Array::from(label))),
    ])
}

/// Feature rows with an Int64 key `k`, `event` (s), optional `created` (s), value `v`.
fn feats(keys: &[i64], event: &[i64], created: Option<&[i64]>, v: &[i64]) -> RecordBatch {
    let mut cols = vec![
        ("k", Arc::new(Int64Array::from(keys.to_vec())) as ArrayRef),
        ("event", ts(event.to_vec())),
    ];
    if let Some(c) = created {
        cols.push(("created", ts(c.to_vec())));
    }
    cols.push(("v", Arc::new(Int64Array::from(v.to_vec()))));
    batch(cols)
}

fn view<'a>(
    name: &str,
    keys: &[&str],
    created: bool,
    ttl: Option<u64>,
    b: &'a [RecordBatch],
) -> PitView<'a> {
    PitView {
        name: name.into(),
        join_keys: keys.iter().map(|k| k.to_string()).collect(),
        event_timestamp_column: "event".into(),
        created_timestamp_column: created.then(|| "created".into()),
        ttl: ttl.map(Duration::from_secs),
        features: vec![Field::new("v", DataType::Int64, true)],
        batches: b,
    }
}

fn col_i64(b: &RecordBatch, name: &str) -> Vec<Option<i64>> {
    b.column_by_name(name)
        .unwrap_or_else(|| panic!("no column {name}"))
        .as_primitive::<Int64Type>()
        .iter()
        .collect()
}

fn join(spine: &RecordBatch, views: &[PitView<'_>], opts: &PitOptions) -> Result<RecordBatch> {
    point_in_time_join(std::slice::from_ref(spine), "t", views, opts)
}

fn err_of(r: Result<RecordBatch>) -> String {
    match r {
        Err(Error::InvalidInput(m)) => m,
        Err(e) => panic!("expected InvalidInput, got {e}"),
        Ok(_) => panic!("expected an error"),
    }
}

// ---------------------------------------------------------------- rules

#[test]
fn ttl_window_is_inclusive_at_both_ends() {
    let f = [feats(&[1], &[100], None, &[7])];
    // (ttl, spine t, expected)
    let cases: &[(Option<u64>, i64, Option<i64>)] = &[
        (None, 99, None),     // event > t
        (None, 100, Some(7)), // event == t
        (None, 1_000_000, Some(7)),
        (Some(5), 105, Some(7)), // event == t - ttl
        (Some(5), 106, None),    // just outside
        (Some(0), 100, Some(7)), // zero ttl: only event == t
        (Some(0), 101, None),
    ];
    for &(ttl, t, want) in cases {
        let spine = spine_k(&[Some(1)], &[t]);
        let out = join(
            &spine,
            &[view("v", &["k"], false, ttl, &f)],
            &PitOptions::default(),
        )
        .unwrap();
        assert_eq!(col_i64(&out, "v"), vec![want], "ttl {ttl:?} t {t}");
    }
}

#[test]
fn ties_break_by_created_then_write_order() {
    // (batches of (event, created, value), expected at t = 10)
    type Rows = Vec<Vec<(i64, i64, i64)>>;
    let cases: Vec<(Rows, i64)> = vec![
        (vec![vec![(5, 1, 1), (5, 3, 2), (5, 2, 3)]], 2),
        (vec![vec![(5, 3, 1)], vec![(5, 3, 2)]], 2), // later batch wins
        (vec![vec![(5, 3, 1), (5, 3, 2)], vec![]], 2), // later row wins
        (vec![vec![(5, 3, 2)], vec![(5, 3, 1), (4, 9, 3)]], 1),
        (vec![vec![(6, 0, 1)], vec![(5, 9, 2)]], 1), // event first
    ];
    for (rows, want) in cases {
        let batches: Vec<RecordBatch> = rows
            .iter()
            .map(|r| {
                let k: Vec<i64> = r.iter().map(|_| 1).collect();
                let e: Vec<i64> = r.iter().map(|x| x.0).collect();
                let c: Vec<i64> = r.iter().map(|x| x.1).collect();
                let v: Vec<i64> = r.iter().map(|x| x.2).collect();
                feats(&k, &e, Some(&c), &v)
            })
            .collect();
        let spine = spine_k(&[Some(1)], &[10]);
        let out = join(
            &spine,
            &[view("v", &["k"], true, None, &batches)],
            &PitOptions::default(),
        )
        .unwrap();
        assert_eq!(col_i64(&out, "v"), vec![Some(want)], "{rows:?}");
    }
}

#[test]
fn created_cutoff_hides_backfilled_rows() {
    let f = [feats(
        &[1, 1, 1],
        &[5, 4, 3],
        Some(&[20, 6, 11]),
        &[1, 2, 3],
    )];
    let spine = spine_k(&[Some(1), Some(1), Some(1)], &[10, 5, 20]);
    let plain = join(
        &spine,
        &[view("v", &["k"], true, None, &f)],
        &PitOptions::default(),
    )
    .unwrap();
    assert_eq!(col_i64(&plain, "v"), vec![Some(1), Some(1), Some(1)]);
    let opts = PitOptions::default().with_created_cutoff(true);
    let cut = join(&spine, &[view("v", &["k"], true, None, &f)], &opts).unwrap();
    assert_eq!(col_i64(&cut, "v"), vec![Some(2), None, Some(1)]);
    // with a ttl the walk back stops at the window
    let cut_ttl = join(&spine, &[view("v", &["k"], true, Some(3), &f)], &opts).unwrap();
    assert_eq!(col_i64(&cut_ttl, "v"), vec![None, None, None]);
    // a view without a created column is unaffected by the cutoff
    let f2 = [feats(&[1], &[5], None, &[9])];
    let out = join(&spine, &[view("v", &["k"], false, None, &f2)], &opts).unwrap();
    assert_eq!(col_i64(&out, "v"), vec![Some(9), Some(9), Some(9)]);
}

#[test]
fn null_keys_give_nulls_and_spine_order_and_duplicates_are_kept() {
    let f = [feats(&[1, 2], &[1, 1], None, &[10, 20])];
    let spine = spine_k(
        &[Some(2), None, Some(1), Some(2), Some(3)],
        &[5, 5, 5, 5, 5],
    );
    let out = join(
        &spine,
        &[view("v", &["k"], false, None, &f)],
        &PitOptions::default(),
    )
    .unwrap();
    assert_eq!(
        col_i64(&out, "v"),
        vec![Some(20), None, Some(10), Some(20), None]
    );
    assert_eq!(col_i64(&out, "label"), (0..5).map(Some).collect::<Vec<_>>());
    assert_eq!(out.schema().field(0).name(), "k");
    assert_eq!(out.num_columns(), 4);
    // feature rows with a null key never match
    let fk = batch(vec![
        ("k", i64s(&[None])),
        ("event", ts(vec![1])),
        ("v", i64s(&[Some(5)])),
    ]);
    let fk = [fk];
    let out = join(
        &spine,
        &[view("v", &["k"], false, None, &fk)],
        &PitOptions::default(),
    )
    .unwrap();
    assert_eq!(col_i64(&out, "v"), vec![None; 5]);
}

#[test]
fn composite_keys_never_collide() {
    // Int64 pairs and string pairs: (1, 23) vs (12, 3).
    let int_pair = |a: Vec<i64>, b: Vec<i64>| -> (ArrayRef, ArrayRef) {
        (Arc::new(Int64Array::from(a)), Arc::new(Int64Array::from(b)))
    };
    let str_pair = |a: Vec<i64>, b: Vec<i64>| -> (ArrayRef, ArrayRef) {
        let s = |v: Vec<i64>| -> ArrayRef {
            Arc::new(StringArray::from(
                v.iter().map(|x| x.to_string()).collect::<Vec<_>>(),
            ))
        };
        (s(a), s(b))
    };
    for pair in [int_pair, str_pair] {
        let (a, b) = pair(vec![1, 12], vec![23, 3]);
        let spine = batch(vec![("a", a), ("b", b), ("t", ts(vec![10, 10]))]);
        let (fa, fb) = pair(vec![12], vec![3]);
        let f = [batch(vec![
            ("a", fa),
            ("b", fb),
            ("event", ts(vec![1])),
            ("v", i64s(&[Some(123)])),
        ])];
        let out = join(
            &spine,
            &[view("v", &["a", "b"], false, None, &f)],
            &PitOptions::default(),
        )
        .unwrap();
        assert_eq!(col_i64(&out, "v"), vec![None, Some(123)]);
    }
}

#[test]
fn key_types() {
    let keyed: Vec<(ArrayRef, ArrayRef)> = vec![
        (
            Arc::new(Int32Array::from(vec![1, 2])),
            Arc::new(Int32Array::from(vec![2])),
        ),
        (
            Arc::new(Int64Array::from(vec![i64::MIN, i64::MAX])),
            Arc::new(Int64Array::from(vec![i64::MAX])),
        ),
        (
            Arc::new(StringArray::from(vec!["a", "b"])),
            Arc::new(StringArray::from(vec!["b"])),
        ),
        (
            Arc::new(LargeStringArray::from(vec!["a", "b"])),
            Arc::new(LargeStringArray::from(vec!["b"])),
        ),
        (
            Arc::new(StringViewArray::from(vec![
                "a",
                "a long string over twelve bytes",
            ])),
            Arc::new(StringViewArray::from(vec![
                "a long string over twelve bytes",
            ])),
        ),
        (
            Arc::new(BinaryArray::from(vec![&b"a"[..], &b"b"[..]])),
            Arc::new(BinaryArray::from(vec![&b"b"[..]])),
        ),
    ];
    for (sk, fk) in keyed {
        let dt = sk.data_type().clone();
        let spine = batch(vec![("k", sk), ("t", ts(vec![10, 10]))]);
        let f = [batch(vec![
            ("k", fk),
            ("event", ts(vec![1])),
            ("v", i64s(&[Some(5)])),
        ])];
        let out = join(
            &spine,
            &[view("v", &["k"], false, None, &f)],
            &PitOptions::default(),
        )
        .unwrap();
        assert_eq!(col_i64(&out, "v"), vec![None, Some(5)], "{dt}");
    }
}

#[test]
fn several_views_with_different_join_keys() {
    let spine = batch(vec![
        ("user", i64s(&[Some(1), Some(2), Some(1)])),
        (
            "item",
            Arc::new(StringArray::from(vec!["x", "x", "y"])) as ArrayRef,
        ),
        ("t", ts(vec![10, 10, 10])),
    ]);
    let users = [batch(vec![
        ("user", i64s(&[Some(1), Some(2)])),
        ("event", ts(vec![1, 2])),
        ("v", i64s(&[Some(100), Some(200)])),
    ])];
    let items = [batch(vec![
        (
            "item",
            Arc::new(StringArray::from(vec!["y", "x"])) as ArrayRef,
        ),
        ("event", ts(vec![1, 2])),
        ("v", i64s(&[Some(-1), Some(-2)])),
    ])];
    let pairs = [batch(vec![
        ("user", i64s(&[Some(2)])),
        ("item", Arc::new(StringArray::from(vec!["x"])) as ArrayRef),
        ("event", ts(vec![3])),
        ("v", i64s(&[Some(7)])),
    ])];
    let views = [
        view("users", &["user"], false, None, &users),
        view("items", &["item"], false, None, &items),
        view("pairs", &["user", "item"], false, None, &pairs),
    ];
    let out = join(
        &spine,
        &views,
        &PitOptions::default().with_full_feature_names(true),
    )
    .unwrap();
    assert_eq!(
        col_i64(&out, "users__v"),
        vec![Some(100), Some(200), Some(100)]
    );
    assert_eq!(
        col_i64(&out, "items__v"),
        vec![Some(-2), Some(-2), Some(-1)]
    );
    assert_eq!(col_i64(&out, "pairs__v"), vec![None, Some(7), None]);
    let names: Vec<String> = out
        .schema()
        .fields()
        .iter()
        .map(|f| f.name().clone())
        .collect();
    assert_eq!(
        names,
        ["user", "item", "t", "users__v", "items__v", "pairs__v"]
    );
}

#[test]
fn name_clashes_are_errors_without_full_names() {
    let f = [feats(&[1], &[1], None, &[1])];
    let spine = spine_k(&[Some(1)], &[5]);
    let two = [
        view("a", &["k"], false, None, &f),
        view("b", &["k"], false, None, &f),
    ];
    let msg = err_of(join(&spine, &two, &PitOptions::default()));
    assert!(
        msg.contains("'v'") && msg.contains("full_feature_names"),
        "{msg}"
    );
    assert!(
        join(
            &spine,
            &two,
            &PitOptions::default().with_full_feature_names(true)
        )
        .is_ok()
    );
    // vs a spine column
    let mut clash = view("a", &["k"], false, None, &f);
    clash.features = vec![Field::new("label", DataType::Int64, true)];
    let msg = err_of(join(&spine, &[clash], &PitOptions::default()));
    assert!(msg.contains("'label'"), "{msg}");
}

#[test]
fn timestamp_errors() {
    let f = [feats(&[1], &[1], None, &[1])];
    // naive spine timestamps
    let naive = batch(vec![
        ("k", i64s(&[Some(1)])),
        (
            "t",
            Arc::new(TimestampSecondArray::from(vec![5])) as ArrayRef,
        ),
    ]);
    let msg = err_of(join(
        &naive,
        &[view("v", &["k"], false, None, &f)],
        &PitOptions::default(),
    ));
    assert!(msg.contains("'t'") && msg.contains("naive"), "{msg}");
    let ok = join(
        &naive,
        &[view("v", &["k"], false, None, &f)],
        &PitOptions::default().with_assume_utc(true),
    )
    .unwrap();
    assert_eq!(col_i64(&ok, "v"), vec![Some(1)]);
    // naive event timestamps
    let nf = [batch(vec![
        ("k", i64s(&[Some(1)])),
        (
            "event",
            Arc::new(TimestampSecondArray::from(vec![1])) as ArrayRef,
        ),
        ("v", i64s(&[Some(1)])),
    ])];
    let spine = spine_k(&[Some(1)], &[5]);
    let msg = err_of(join(
        &spine,
        &[view("v", &["k"], false, None, &nf)],
        &PitOptions::default(),
    ));
    assert!(
        msg.contains("'event'") && msg.contains("naive") && msg.contains("view 'v'"),
        "{msg}"
    );
    // null spine timestamp
    let ns = batch(vec![
        ("k", i64s(&[Some(1), Some(1), Some(1)])),
        (
            "t",
            Arc::new(TimestampSecondArray::from(vec![Some(1), None, None]).with_timezone("UTC"))
                as ArrayRef,
        ),
    ]);
    let msg = err_of(join(
        &ns,
        &[view("v", &["k"], false, None, &f)],
        &PitOptions::default(),
    ));
    assert!(
        msg.contains("'t'") && msg.contains("2 null") && msg.contains("row 1"),
        "{msg}"
    );
    // null created timestamp, even on a row outside every window
    let nc = [batch(vec![
        ("k", i64s(&[Some(9), Some(1)])),
        ("event", ts(vec![1, 1])),
        (
            "created",
            Arc::new(TimestampSecondArray::from(vec![None, Some(1)]).with_timezone("UTC"))
                as ArrayRef,
        ),
        ("v", i64s(&[Some(1), Some(2)])),
    ])];
    let msg = err_of(join(
        &spine,
        &[view("v", &["k"], true, None, &nc)],
        &PitOptions::default(),
    ));
    assert!(
        msg.contains("'created'") && msg.contains("1 null") && msg.contains("row 0"),
        "{msg}"
    );
}

#[test]
fn any_unit_and_zone_is_normalised() {
    // spine in ms at +05:00, features in ns
    let spine = batch(vec![
        ("k", i64s(&[Some(1)])),
        (
            "t",
            Arc::new(TimestampMillisecondArray::from(vec![10_000]).with_timezone("+05:00"))
                as ArrayRef,
        ),
    ]);
    let f = [batch(vec![
        ("k", i64s(&[Some(1), Some(1), Some(1)])),
        (
            "event",
            Arc::new(
                TimestampNanosecondArray::from(vec![9_999_999_999, 10_000_000_999, 10_000_001_000])
                    .with_timezone("UTC"),
            ) as ArrayRef,
        ),
        ("v", i64s(&[Some(1), Some(2), Some(3)])),
    ])];
    // nanoseconds are floored to microseconds: 10.000000999 s counts as 10 s == t
    let out = join(
        &spine,
        &[view("v", &["k"], false, None, &f)],
        &PitOptions::default(),
    )
    .unwrap();
    assert_eq!(col_i64(&out, "v"), vec![Some(2)]);
}

#[test]
fn type_mismatches_name_both_types() {
    let spine = spine_k(&[Some(1)], &[5]);
    let f = [batch(vec![
        ("k", Arc::new(Int32Array::from(vec![1])) as ArrayRef),
        ("event", ts(vec![1])),
        ("v", i64s(&[Some(1)])),
    ])];
    let msg = err_of(join(
        &spine,
        &[view("v", &["k"], false, None, &f)],
        &PitOptions::default(),
    ));
    assert!(
        msg.contains("'k'") && msg.contains("Int64") && msg.contains("Int32"),
        "{msg}"
    );
    // declared feature type differs
    let f = [feats(&[1], &[1], None, &[1])];
    let mut v = view("myview", &["k"], false, None, &f);
    v.features = vec![Field::new("v", DataType::Float64, true)];
    let msg = err_of(join(&spine, &[v], &PitOptions::default()));
    assert!(
        msg.contains("'myview'") && msg.contains("'v'") && msg.contains("Float64"),
        "{msg}"
    );
    // missing feature column / missing spine key / missing spine ts
    let mut v = view("myview", &["k"], false, None, &f);
    v.features = vec![Field::new("nope", DataType::Int64, true)];
    let msg = err_of(join(&spine, &[v], &PitOptions::default()));
    assert!(msg.contains("'myview'") && msg.contains("'nope'"), "{msg}");
    let msg = err_of(join(
        &spine,
        &[view("v", &["user"], false, None, &f)],
        &PitOptions::default(),
    ));
    assert!(msg.contains("'user'"), "{msg}");
    let msg = err_of(point_in_time_join(
        std::slice::from_ref(&spine),
        "when",
        &[],
        &PitOptions::default(),
    ));
    assert!(msg.contains("'when'"), "{msg}");
    let msg = err_of(point_in_time_join(&[], "t", &[], &PitOptions::default()));
    assert!(msg.contains("no batches"), "{msg}");
}

#[test]
fn empty_inputs() {
    let f = [feats(&[1], &[1], None, &[1])];
    let empty_spine = spine_k(&[], &[]);
    let out = join(
        &empty_spine,
        &[view("v", &["k"], false, None, &f)],
        &PitOptions::default(),
    )
    .unwrap();
    assert_eq!(out.num_rows(), 0);
    assert_eq!(out.num_columns(), 4);
    let spine = spine_k(&[Some(1), None], &[5, 5]);
    let empty = [feats(&[], &[], None, &[]), feats(&[], &[], None, &[])];
    let out = join(
        &spine,
        &[view("v", &["k"], false, None, &empty)],
        &PitOptions::default(),
    )
    .unwrap();
    assert_eq!(col_i64(&out, "v"), vec![None, None]);
    let out = join(
        &spine,
        &[view("v", &["k"], false, None, &[])],
        &PitOptions::default(),
    )
    .unwrap();
    assert_eq!(col_i64(&out, "v"), vec![None, None]);
    assert!(out.schema().field(3).is_nullable());
    // no views: the spine comes back as is
    let out = join(&spine, &[], &PitOptions::default()).unwrap();
    assert_eq!(out, spine);
}

#[test]
fn spine_batches_are_concatenated_and_other_feature_types_gathered() {
    let s1 = spine_k(&[Some(1)], &[5]);
    let s2 = spine_k(&[Some(2)], &[5]);
    let f = [batch(vec![
        ("k", i64s(&[Some(2), Some(1)])),
        ("event", ts(vec![1, 2])),
        (
            "x",
            Arc::new(Float64Array::from(vec![0.5, 1.5])) as ArrayRef,
        ),
        (
            "s",
            Arc::new(StringArray::from(vec![Some("two"), None])) as ArrayRef,
        ),
    ])];
    let v = PitView {
        features: vec![
            Field::new("s", DataType::Utf8, true),
            Field::new("x", DataType::Float64, false),
        ],
        ..view("v", &["k"], false, None, &f)
    };
    let out = point_in_time_join(&[s1, s2], "t", &[v], &PitOptions::default()).unwrap();
    let s = out.column_by_name("s").unwrap().as_string::<i32>();
    assert_eq!(s.iter().collect::<Vec<_>>(), vec![None, Some("two")]);
    let x = out
        .column_by_name("x")
        .unwrap()
        .as_primitive::<arrow_array::types::Float64Type>();
    assert_eq!(x.values().to_vec(), vec![1.5, 0.5]);
    assert_eq!(col_i64(&out, "label"), vec![Some(0), Some(0)]);
}

#[test]
fn no_join_keys_means_one_global_entity() {
    let spine = spine_k(&[Some(1), None], &[5, 1]);
    let f = [batch(vec![
        ("event", ts(vec![2, 4])),
        ("v", i64s(&[Some(2), Some(4)])),
    ])];
    let out = join(
        &spine,
        &[view("v", &[], false, None, &f)],
        &PitOptions::default(),
    )
    .unwrap();
    assert_eq!(col_i64(&out, "v"), vec![Some(4), None]);
}

// ---------------------------------------------------------------- reference

/// A typed key component of the reference implementation.
#[derive(Debug, Clone, PartialEq)]
enum KeyVal {
    I(i64),
    S(String),
}

#[derive(Debug, Clone)]
struct RefRow {
    key: Vec<Option<KeyVal>>,
    event: i64,
    created: Option<i64>,
    value: i64,
}

/// Obviously-correct O(S×F) join: rows in write order; the last row with the
/// greatest (event, created) among the candidates wins.
fn reference(
    spine: &[(Vec<Option<KeyVal>>, i64)],
    rows: &[RefRow],
    ttl: Option<i64>,
    cutoff: bool,
) -> Vec<Option<i64>> {
    spine
        .iter()
        .map(|(key, t)| {
            if key.iter().any(Option::is_none) {
                return None;
            }
            let mut best: Option<&RefRow> = None;
            for r in rows {
                let ok = r.key == *key
                    && r.event <= *t
                    && ttl.is_none_or(|d| r.event >= t - d)
                    && !(cutoff && r.created.is_some_and(|c| c > *t));
                if ok && best.is_none_or(|b| (r.event, r.created) >= (b.event, b.created)) {
                    best = Some(r);
                }
            }
            best.map(|b| b.value)
        })
        .collect()
}

const STRS: [&str; 4] = ["1", "12", "23", "3"];
const INTS: [i64; 6] = [0, 1, 2, 3, i64::MAX, i64::MIN];

/// Feature row: key indices (a, b/c), event s, created s.
type GenRow = (Option<usize>, Option<usize>, Option<usize>, i64, i64);

#[derive(Debug, Clone)]
struct GenView {
    rows: Vec<GenRow>,
    ttl: Option<i64>,
    created: bool,
    splits: Vec<usize>,
}

fn gen_view() -> impl Strategy<Value = GenView> {
    let row = (
        proptest::option::weighted(0.95, 0..INTS.len()),
        proptest::option::weighted(0.95, 0..STRS.len()),
        proptest::option::weighted(0.95, 0..STRS.len()),
        0i64..12,
        0i64..4,
    );
    (
        proptest::collection::vec(row, 0..30),
        proptest::option::of(0i64..6),
        any::<bool>(),
        proptest::collection::vec(0usize..30, 0..4),
    )
        .prop_map(|(rows, ttl, created, splits)| GenView {
            rows,
            ttl,
            created,
            splits,
        })
}

type SpineRow = (Option<usize>, Option<usize>, Option<usize>, i64);

fn key_of(view: usize, r: (Option<usize>, Option<usize>, Option<usize>)) -> Vec<Option<KeyVal>> {
    let i = r.0.map(|i| KeyVal::I(INTS[i]));
    let s = |x: Option<usize>| x.map(|j| KeyVal::S(STRS[j].to_string()));
    match view {
        0 => vec![i],
        1 => vec![s(r.1), s(r.2)],
        2 => vec![i, s(r.1)],
        _ => vec![i, r.2.map(|j| KeyVal::I(j as i64))],
    }
}

/// Single int (dense/hashed), string pair, mixed pair, int pair (`ci` = index of `c`).
const VIEW_KEYS: [&[&str]; 4] = [&["a"], &["b", "c"], &["a", "b"], &["a", "ci"]];

fn key_cols(
    rows: &[(Option<usize>, Option<usize>, Option<usize>)],
) -> Vec<(&'static str, ArrayRef)> {
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

proptest! {
    #![proptest_config(ProptestConfig::with_cases(1000))]

    #[test]
    fn matches_naive_reference(
        spine_rows in proptest::collection::vec(
            (proptest::option::weighted(0.9, 0..INTS.len()),
             proptest::option::weighted(0.9, 0..STRS.len()),
             proptest::option::weighted(0.9, 0..STRS.len()),
             0i64..14),
            0..30),
        spine_split in 0usize..30,
        gviews in proptest::collection::vec(gen_view(), 4),
        cutoff in any::<bool>(),
        seed in any::<u64>(),
    ) {
        let spine_rows: Vec<SpineRow> = spine_rows;
        // spine, possibly split in two batches
        let mut cols = key_cols(&spine_rows.iter().map(|r| (r.0, r.1, r.2)).collect::<Vec<_>>());
        cols.push(("t", ts(spine_rows.iter().map(|r| r.3).collect())));
        let whole = batch(cols);
        let cut = spine_split.min(whole.num_rows());
        let spine_batches = vec![whole.slice(0, cut), whole.slice(cut, whole.num_rows() - cut)];

        // feature batches: rows shuffled (that order is the write order), then split
        let mut rng = seed;
        let mut next = move || {
            rng ^= rng << 13;
            rng ^= rng >> 7;
            rng ^= rng << 17;
            rng
        };
        let mut all_batches: Vec<Vec<RecordBatch>> = Vec::new();
        let mut expected: Vec<Vec<Option<i64>>> = Vec::new();
        for (vi, g) in gviews.iter().enumerate() {
            let mut rows: Vec<(usize, _)> = g.rows.iter().cloned().enumerate().collect();
            for i in (1..rows.len()).rev() {
                let j = (next() % (i as u64 + 1)) as usize;
                rows.swap(i, j);
            }
            let refs: Vec<RefRow> = rows
                .iter()
                .map(|(id, r)| RefRow {
                    key: key_of(vi, (r.0, r.1, r.2)),
                    event: r.3 * 1_000_000,
                    created: g.created.then_some(r.4 * 1_000_000),
                    value: *id as i64,
                })
                .collect();
            let spine_ref: Vec<_> = spine_rows
                .iter()
                .map(|r| (key_of(vi, (r.0, r.1, r.2)), r.3 * 1_000_000))
                .collect();
            expected.push(reference(&spine_ref, &refs, g.ttl.map(|d| d * 1_000_000), cutoff));

            let mut cols = key_cols(&rows.iter().map(|(_, r)| (r.0, r.1, r.2)).collect::<Vec<_>>());
            // event in ms to exercise unit normalisation
            cols.push(("event", Arc::new(
                TimestampMillisecondArray::from(rows.iter().map(|(_, r)| r.3 * 1000).collect::<Vec<_>>())
                    .with_timezone("Europe/Paris")) as ArrayRef));
            if g.created {
                cols.push(("created", ts(rows.iter().map(|(_, r)| r.4).collect())));
            }
            cols.push(("v", Arc::new(Int64Array::from(rows.iter().map(|(id, _)| *id as i64).collect::<Vec<_>>()))));
            let whole = batch(cols);
            let mut cuts: Vec<usize> = g.splits.iter().map(|s| (*s).min(whole.num_rows())).collect();
            cuts.sort_unstable();
            let mut batches = Vec::new();
            let mut prev = 0;
            for c in cuts.into_iter().chain([whole.num_rows()]) {
                batches.push(whole.slice(prev, c - prev));
                prev = c;
            }
            all_batches.push(batches);
        }
        let views: Vec<PitView<'_>> = gviews
            .iter()
            .enumerate()
            .map(|(vi, g)| PitView {
                name: format!("v{vi}"),
                join_keys: VIEW_KEYS[vi].iter().map(|k| k.to_string()).collect(),
                event_timestamp_column: "event".into(),
                created_timestamp_column: g.created.then(|| "created".into()),
                ttl: g.ttl.map(|d| Duration::from_secs(d as u64)),
                features: vec![Field::new("v", DataType::Int64, false)],
                batches: &all_batches[vi],
            })
            .collect();
        let opts = PitOptions::default().with_full_feature_names(true).with_created_cutoff(cutoff);
        let out = point_in_time_join(&spine_batches, "t", &views, &opts).unwrap();
        prop_assert_eq!(out.num_rows(), spine_rows.len());
        for (vi, want) in expected.iter().enumerate() {
            prop_assert_eq!(&col_i64(&out, &format!("v{vi}__v")), want, "view {}", vi);
        }
    }
}

// ------------------------------------------- large inputs: every fast path

/// A xorshift generator (the large property builds its data from one seed:
/// generating thousands of rows through proptest strategies is slow and their
/// shrinking would not help).
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }
    /// True with probability `pct` %.
    fn pct(&mut self, pct: u64) -> bool {
        self.below(100) < pct
    }
}

/// The spine/feature key columns of a row whose entity is `key` (`None`: null).
/// Views join on `a` (dense Int64), `h` (sparse Int64: hashed index) or
/// `(s, ci)` (string + Int32 composite).
fn big_key_cols(keys: &[Option<i64>]) -> Vec<(&'static str, ArrayRef)> {
    let a: Int64Array = keys.iter().copied().collect();
    let h: Int64Array = keys
        .iter()
        .map(|k| k.map(|k| k.wrapping_mul(1_000_000_007) ^ i64::MIN))
        .collect();
    let s: StringArray = keys
        .iter()
        .map(|k| k.map(|k| format!("k{}", k / 7)))
        .collect();
    let ci: Int32Array = keys.iter().map(|k| k.map(|k| (k % 7) as i32)).collect();
    vec![
        ("a", Arc::new(a)),
        ("h", Arc::new(h)),
        ("s", Arc::new(s)),
        ("ci", Arc::new(ci)),
    ]
}

/// One feature column of every value type for rows `0..n` (global row ids
/// `first..first + n`), about `null_pct` % of the cells null.
fn big_feature_cols(
    first: usize,
    n: usize,
    rng: &mut Rng,
    null_pct: u64,
) -> Vec<(String, ArrayRef)> {
    use arrow_array::builder::{Float32Builder, ListBuilder};
    use arrow_array::{BooleanArray, Float32Array, TimestampMicrosecondArray};
    let ids: Vec<i64> = (first..first + n).map(|g| g as i64).collect();
    let mut nulls = |_: ()| -> Vec<bool> { (0..n).map(|_| rng.pct(null_pct)).collect() };
    let opt = |null: &[bool], i: usize| (!null[i]).then_some(());
    let nb = nulls(());
    let bools: BooleanArray = (0..n)
        .map(|i| opt(&nb, i).map(|_| ids[i] % 3 == 0))
        .collect();
    let ni = nulls(());
    let i32s: Int32Array = (0..n)
        .map(|i| opt(&ni, i).map(|_| ids[i] as i32 - 5000))
        .collect();
    let nl = nulls(());
    let i64s: Int64Array = (0..n).map(|i| opt(&nl, i).map(|_| ids[i] * 7919)).collect();
    let nf = nulls(());
    let f32s: Float32Array = (0..n)
        .map(|i| opt(&nf, i).map(|_| ids[i] as f32 * 0.5))
        .collect();
    let nd = nulls(());
    let f64s: Float64Array = (0..n)
        .map(|i| opt(&nd, i).map(|_| ids[i] as f64 / 3.0))
        .collect();
    let ns = nulls(());
    let strs: StringArray = (0..n)
        .map(|i| opt(&ns, i).map(|_| format!("r{}", ids[i])))
        .collect();
    let nby = nulls(());
    let bytes: BinaryArray = (0..n)
        .map(|i| opt(&nby, i).map(|_| ids[i].to_le_bytes().to_vec()))
        .collect::<Vec<_>>()
        .iter()
        .map(|o| o.as_deref())
        .collect();
    let nt = nulls(());
    let tss = TimestampMicrosecondArray::from(
        (0..n)
            .map(|i| opt(&nt, i).map(|_| ids[i] * 1_000))
            .collect::<Vec<_>>(),
    )
    .with_timezone("UTC");
    let nli = nulls(());
    let mut list = ListBuilder::new(Float32Builder::new());
    for i in 0..n {
        if nli[i] {
            list.append(false);
        } else {
            if ids[i] % 5 != 0 {
                list.values().append_value(ids[i] as f32);
                list.values().append_null();
            }
            list.append(true);
        }
    }
    vec![
        ("f_bool".into(), Arc::new(bools) as ArrayRef),
        ("f_i32".into(), Arc::new(i32s)),
        ("f_i64".into(), Arc::new(i64s)),
        ("f_f32".into(), Arc::new(f32s)),
        ("f_f64".into(), Arc::new(f64s)),
        ("f_str".into(), Arc::new(strs)),
        ("f_bytes".into(), Arc::new(bytes)),
        ("f_ts".into(), Arc::new(tss)),
        ("f_list".into(), Arc::new(list.finish())),
    ]
}

/// Sizes and switches of one large case; the data comes from `seed`.
#[derive(Debug, Clone)]
struct BigCase {
    seed: u64,
    n_keys: u64,
    n_spine: usize,
    rows: [usize; 4],
    ttl: [Option<i64>; 4],
    created: [bool; 4],
    cutoff: bool,
}

fn big_case() -> impl Strategy<Value = BigCase> {
    (
        any::<u64>(),
        200u64..3000,
        1000usize..4000,
        proptest::array::uniform4(1500usize..9000),
        proptest::array::uniform4(proptest::option::of(0i64..400)),
        proptest::array::uniform4(any::<bool>()),
        any::<bool>(),
    )
        .prop_map(
            |(seed, n_keys, n_spine, rows, ttl, created, cutoff)| BigCase {
                seed: seed | 1,
                n_keys,
                n_spine,
                rows,
                ttl,
                created,
                cutoff,
            },
        )
}

/// Key columns each of the four views joins on.
const BIG_VIEW_KEYS: [&[&str]; 4] = [&["a"], &["h"], &["s", "ci"], &["a"]];

/// Builds the case, runs the join with `tuning` and checks every output cell
/// against the naive reference (per key: the candidates' greatest
/// `(event, created)`, ties to the row written last).
fn check_big(case: &BigCase, tuning: &Tuning) -> std::result::Result<(), TestCaseError> {
    let mut rng = Rng(case.seed);
    let key = |rng: &mut Rng, range: u64| (!rng.pct(2)).then(|| rng.below(range) as i64);
    // spine: times 0..1000 s
    let spine_keys: Vec<Option<i64>> = (0..case.n_spine)
        .map(|_| key(&mut rng, case.n_keys))
        .collect();
    let spine_t: Vec<i64> = (0..case.n_spine).map(|_| rng.below(1000) as i64).collect();
    let mut cols = big_key_cols(&spine_keys);
    cols.push(("t", ts(spine_t.clone())));
    let whole = batch(cols);
    let cut = rng.below(case.n_spine as u64) as usize;
    let spine = vec![whole.slice(0, cut), whole.slice(cut, case.n_spine - cut)];

    let mut all_batches: Vec<Vec<RecordBatch>> = Vec::new();
    let mut expected: Vec<Vec<Option<u32>>> = Vec::new();
    let mut sources: Vec<Vec<(String, ArrayRef)>> = Vec::new();
    for vi in 0..4 {
        let n = case.rows[vi];
        // 20% more keys than the spine has: some feature rows match nothing
        let keys: Vec<Option<i64>> = (0..n).map(|_| key(&mut rng, case.n_keys * 6 / 5)).collect();
        let event: Vec<i64> = (0..n).map(|_| rng.below(1000) as i64).collect();
        // few created values: many (event, created) ties, broken by write order
        let created: Vec<i64> = event.iter().map(|e| e + rng.below(4) as i64 * 20).collect();
        let feats = big_feature_cols(0, n, &mut rng, 15);

        // naive reference, per key
        let mut by_key: std::collections::HashMap<i64, Vec<usize>> = Default::default();
        for (g, k) in keys.iter().enumerate() {
            if let Some(k) = k {
                by_key.entry(*k).or_default().push(g);
            }
        }
        let has_created = case.created[vi];
        let rank = |g: usize| (event[g], if has_created { created[g] } else { i64::MIN });
        expected.push(
            spine_keys
                .iter()
                .zip(&spine_t)
                .map(|(k, &t)| {
                    let mut best: Option<usize> = None;
                    for &g in k.and_then(|k| by_key.get(&k)).map_or(&[][..], |v| v) {
                        let ok = event[g] <= t
                            && case.ttl[vi].is_none_or(|d| event[g] >= t - d)
                            && !(case.cutoff && has_created && created[g] > t);
                        if ok && best.is_none_or(|b| rank(g) >= rank(b)) {
                            best = Some(g);
                        }
                    }
                    best.map(|g| g as u32)
                })
                .collect(),
        );

        let mut cols = big_key_cols(&keys);
        cols.push(("event", ts(event.clone())));
        if has_created {
            cols.push(("created", ts(created.clone())));
        }
        let mut named: Vec<(String, ArrayRef)> =
            cols.into_iter().map(|(n, c)| (n.to_string(), c)).collect();
        named.extend(feats.iter().cloned());
        let whole =
            RecordBatch::try_from_iter(named).map_err(|e| TestCaseError::fail(e.to_string()))?;
        let mut cuts: Vec<usize> = (0..rng.below(4))
            .map(|_| rng.below(n as u64) as usize)
            .collect();
        cuts.sort_unstable();
        let mut batches = Vec::new();
        let mut prev = 0;
        for c in cuts.into_iter().chain([n]) {
            batches.push(whole.slice(prev, c - prev));
            prev = c;
        }
        all_batches.push(batches);
        sources.push(feats);
    }
    let views: Vec<PitView<'_>> = (0..4)
        .map(|vi| PitView {
            name: format!("v{vi}"),
            join_keys: BIG_VIEW_KEYS[vi].iter().map(|k| k.to_string()).collect(),
            event_timestamp_column: "event".into(),
            created_timestamp_column: case.created[vi].then(|| "created".into()),
            ttl: case.ttl[vi].map(|d| Duration::from_secs(d as u64)),
            features: sources[vi]
                .iter()
                .map(|(n, c)| Field::new(n, c.data_type().clone(), true))
                .collect(),
            batches: &all_batches[vi],
        })
        .collect();
    let opts = PitOptions::default()
        .with_full_feature_names(true)
        .with_created_cutoff(case.cutoff);
    let out = join_tuned(&spine, "t", &views, &opts, tuning)
        .map_err(|e| TestCaseError::fail(format!("join: {e}")))?;
    prop_assert_eq!(out.num_rows(), case.n_spine);
    // The rows-only entry point picks exactly the reference's rows.
    let rows = point_in_time_rows(&spine, "t", &views, &opts)
        .map_err(|e| TestCaseError::fail(format!("rows: {e}")))?;
    prop_assert_eq!(rows.len(), 4);
    for (vi, r) in rows.iter().enumerate() {
        let want = arrow_array::UInt32Array::from(expected[vi].clone());
        prop_assert_eq!(r, &want, "chosen rows of view v{}", vi);
    }
    for vi in 0..4 {
        let idx = arrow_array::UInt32Array::from(expected[vi].clone());
        for (name, src) in &sources[vi] {
            let want = arrow_select::take::take(src.as_ref(), &idx, None)
                .map_err(|e| TestCaseError::fail(e.to_string()))?;
            let col = format!("v{vi}__{name}");
            let got = out
                .column_by_name(&col)
                .ok_or_else(|| TestCaseError::fail(format!("no column {col}")))?;
            if got.as_ref() != want.as_ref() {
                let row = (0..case.n_spine)
                    .find(|&r| got.slice(r, 1).as_ref() != want.slice(r, 1).as_ref())
                    .unwrap_or(0);
                return Err(TestCaseError::fail(format!(
                    "{col}: first differing spine row {row} (key {:?}, t {}): got {:?}, \
                     reference row {:?} gives {:?}",
                    spine_keys[row],
                    spine_t[row],
                    got.slice(row, 1),
                    expected[vi][row],
                    want.slice(row, 1)
                )));
            }
        }
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(12))]

    /// Thousands of keys and rows, null keys and values, every feature type:
    /// the production thresholds (one pass, one thread at this size) and
    /// lowered ones that force the mid-buffer flush, the threaded path and
    /// key-range partitioning (shift > 0) give the reference's answer.
    #[test]
    fn large_inputs_match_naive_reference_on_every_path(case in big_case()) {
        check_big(&case, &Tuning::default())?;
        let forced = Tuning {
            // Smaller than any key range's share of a view's rows (1,500+ rows over at
            // most 3 ranges), so the mid-buffer flush always runs.
            part_chunk: 17 + (case.seed % 180) as usize,
            parallel_work: 0,
            max_threads: 3,
            piece_rows: 61 + (case.seed % 300) as usize,
            profile: None,
            log: PathLog::default(),
        };
        check_big(&case, &forced)?;
        let log = &forced.log;
        prop_assert!(log.max_shift.load(Ordering::Relaxed) > 0, "key-range partitioning ran (shift > 0)");
        prop_assert!(log.mid_flushes.load(Ordering::Relaxed) > 0, "mid-buffer flush ran");
        prop_assert!(log.threaded.load(Ordering::Relaxed) > 0, "threaded path ran");
        prop_assert!(log.id_splits.load(Ordering::Relaxed) > 0, "slotting split by key-id range ran");
    }
}

/// Several views on several threads: the small view is slotted as one range by
/// one worker while the others run the big views' key ranges (each split), and
/// every cell matches the naive reference.
#[test]
fn small_view_slotted_whole_beside_split_big_views() {
    let case = BigCase {
        seed: 0x5eed_0001,
        n_keys: 700,
        n_spine: 1000,
        rows: [9000, 9000, 9000, 1500],
        ttl: [Some(300), None, Some(50), None],
        created: [true, false, true, true],
        cutoff: true,
    };
    let forced = Tuning {
        part_chunk: 150,
        parallel_work: 0,
        max_threads: 3,
        piece_rows: 200,
        profile: None,
        log: PathLog::default(),
    };
    check_big(&case, &forced).unwrap();
    let log = &forced.log;
    assert!(
        log.threaded.load(Ordering::Relaxed) > 0,
        "threaded path ran"
    );
    assert_eq!(
        log.id_splits.load(Ordering::Relaxed),
        3,
        "the three big views were split by key-id range"
    );
    assert_eq!(
        log.pooled_whole.load(Ordering::Relaxed),
        1,
        "the small view was slotted as one range"
    );
    assert!(
        log.mid_flushes.load(Ordering::Relaxed) > 0,
        "mid-buffer flush ran"
    );
}
