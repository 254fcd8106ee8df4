//! Seeded generator of point-in-time join benchmark data (Parquet).
//!
//! ```text
//! cargo run --release --example gen_pit_data -- S bench/data/S [--seed N]
//! ```
//!
//! Shapes: `S` = 3 views × 1M feature rows, 100k spine rows, 10k entities;
//! `M` = 3 views × 10M feature rows, 1M spine rows, 100k entities;
//! `L` = 3 views × 30M feature rows, 3M spine rows, 300k entities (about 6 GB);
//! `XL` = 3 views × 100M feature rows, 10M spine rows, 1M entities (about 20 GB:
//! check `df -h` first). `T` (tiny: 3 × 20k, 2k spine, 200 entities) is for
//! quick checks. Views are written in 1M-row chunks (the spine in one batch:
//! 320 MB at XL), so the generator needs little memory at any shape.
//!
//! Writes `spine.parquet`, one `<view>.parquet` per view and `views.txt`, one line
//! per view with the `--view` argument of `training_from_parquet`. Timestamps are
//! `Timestamp(Microsecond, "UTC")`. About 1% of feature rows repeat the previous
//! row's key and event time with a later created time (ties broken by created).

use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use arrow_array::{
    ArrayRef, Float32Array, Float64Array, Int64Array, RecordBatch, StringArray,
    TimestampMicrosecondArray,
};
use parquet::arrow::ArrowWriter;
use parquet::basic::Compression;
use parquet::file::properties::WriterProperties;

type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// splitmix64: tiny, seeded, good enough for benchmark data.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }
    fn unit(&mut self) -> f64 {
        (self.next() >> 11) as f64 / (1u64 << 53) as f64
    }
}

const DAY_US: i64 = 86_400_000_000;
/// 2024-01-01T00:00:00Z in microseconds.
const START_US: i64 = 1_704_067_200_000_000;
const SPAN_DAYS: i64 = 365;
const MERCHANTS: u64 = 4;
const CHUNK: usize = 1 << 20;

struct Shape {
    feature_rows: usize,
    spine_rows: usize,
    entities: u64,
}

#[derive(Clone, Copy)]
enum Kind {
    F64,
    F32,
    I64,
    Str,
}

struct ViewDef {
    name: &'static str,
    composite: bool,
    ttl_s: Option<u64>,
    features: &'static [(&'static str, Kind)],
}

const VIEWS: [ViewDef; 3] = [
    ViewDef {
        name: "user_profile",
        composite: false,
        ttl_s: Some(30 * 86_400),
        features: &[
            ("up_score", Kind::F64),
            ("up_balance", Kind::F64),
            ("up_ratio", Kind::F32),
            ("up_age_days", Kind::I64),
            ("up_segment", Kind::Str),
            ("up_limit", Kind::F64),
        ],
    },
    ViewDef {
        name: "user_activity",
        composite: false,
        ttl_s: Some(7 * 86_400),
        features: &[
            ("ua_count", Kind::I64),
            ("ua_sum", Kind::F64),
            ("ua_avg", Kind::F64),
            ("ua_max", Kind::F32),
            ("ua_min", Kind::F32),
            ("ua_last_cat", Kind::Str),
            ("ua_flags", Kind::I64),
            ("ua_rate", Kind::F64),
        ],
    },
    ViewDef {
        name: "user_merchant",
        composite: true,
        ttl_s: None,
        features: &[
            ("um_count", Kind::I64),
            ("um_amount", Kind::F64),
            ("um_avg", Kind::F32),
            ("um_channel", Kind::Str),
            ("um_risk", Kind::F64),
        ],
    },
];

const WORDS: [&str; 12] = [
    "alpha", "bravo", "charlie", "delta", "echo", "foxtrot", "golf", "hotel", "india", "juliet",
    "kilo", "lima",
];

fn ts(v: Vec<i64>) -> ArrayRef {
    Arc::new(TimestampMicrosecondArray::from(v).with_timezone("UTC"))
}

fn feature(kind: Kind, n: usize, rng: &mut Rng) -> ArrayRef {
    // ~2% nulls in every feature column
    let null = |rng: &mut Rng| rng.below(50) == 0;
    match kind {
        Kind::F64 => Arc::new(Float64Array::from_iter((0..n).map(|_| {
            let v = rng.unit() * 1000.0 - 100.0;
            (!null(rng)).then_some(v)
        }))),
        Kind::F32 => Arc::new(Float32Array::from_iter((0..n).map(|_| {
            let v = rng.unit() as f32;
            (!null(rng)).then_some(v)
        }))),
        Kind::I64 => Arc::new(Int64Array::from_iter((0..n).map(|_| {
            let v = rng.below(1_000_000) as i64 - 1000;
            (!null(rng)).then_some(v)
        }))),
        Kind::Str => Arc::new(StringArray::from_iter((0..n).map(|_| {
            let w = WORDS[rng.below(WORDS.len() as u64) as usize];
            (!null(rng)).then_some(w)
        }))),
    }
}

fn writer(path: &Path, batch: &RecordBatch) -> Result<ArrowWriter<File>, BoxError> {
    let props = WriterProperties::builder()
        .set_compression(Compression::SNAPPY)
        .set_max_row_group_row_count(Some(128 * 1024))
        .build();
    Ok(ArrowWriter::try_new(
        File::create(path)?,
        batch.schema(),
        Some(props),
    )?)
}

fn write_view(dir: &Path, v: &ViewDef, shape: &Shape, rng: &mut Rng) -> Result<(), BoxError> {
    let path = dir.join(format!("{}.parquet", v.name));
    let mut w: Option<ArrowWriter<File>> = None;
    let mut prev: Option<(i64, i64, i64, i64)> = None; // user, merchant, event, created
    let mut done = 0;
    while done < shape.feature_rows {
        let n = CHUNK.min(shape.feature_rows - done);
        let (mut users, mut merchants, mut events, mut created) = (
            Vec::with_capacity(n),
            Vec::with_capacity(n),
            Vec::with_capacity(n),
            Vec::with_capacity(n),
        );
        for _ in 0..n {
            let row = match prev {
                // ~1% exact (key, event) ties with a strictly later created time
                Some((u, m, e, c)) if rng.below(100) == 0 => {
                    (u, m, e, c + 1 + rng.below(3_600_000_000) as i64)
                }
                _ => {
                    let u = rng.below(shape.entities) as i64;
                    let m = rng.below(MERCHANTS) as i64;
                    let e = START_US + rng.below((SPAN_DAYS * DAY_US) as u64) as i64;
                    let c = e + rng.below(7_200_000_000) as i64;
                    (u, m, e, c)
                }
            };
            prev = Some(row);
            users.push(row.0);
            merchants.push(row.1);
            events.push(row.2);
            created.push(row.3);
        }
        let mut cols: Vec<(&str, ArrayRef)> = vec![("user_id", Arc::new(Int64Array::from(users)))];
        if v.composite {
            cols.push(("merchant_id", Arc::new(Int64Array::from(merchants))));
        }
        cols.push(("event_ts", ts(events)));
        cols.push(("created_ts", ts(created)));
        for (name, kind) in v.features {
            cols.push((name, feature(*kind, n, rng)));
        }
        let batch = RecordBatch::try_from_iter(cols)?;
        if w.is_none() {
            w = Some(writer(&path, &batch)?);
        }
        if let Some(w) = w.as_mut() {
            w.write(&batch)?;
        }
        done += n;
    }
    if let Some(w) = w {
        w.close()?;
    }
    Ok(())
}

fn write_spine(dir: &Path, shape: &Shape, rng: &mut Rng) -> Result<(), BoxError> {
    let n = shape.spine_rows;
    // 2% of spine entities have no feature rows at all
    let users: Vec<i64> = (0..n)
        .map(|_| rng.below(shape.entities * 102 / 100) as i64)
        .collect();
    let merchants: Vec<i64> = (0..n).map(|_| rng.below(MERCHANTS) as i64).collect();
    let times: Vec<i64> = (0..n)
        .map(|_| START_US + 30 * DAY_US + rng.below(((SPAN_DAYS - 30) * DAY_US) as u64) as i64)
        .collect();
    let labels: Vec<i64> = (0..n).map(|_| i64::from(rng.below(10) == 0)).collect();
    let batch = RecordBatch::try_from_iter(vec![
        ("user_id", Arc::new(Int64Array::from(users)) as ArrayRef),
        ("merchant_id", Arc::new(Int64Array::from(merchants))),
        ("ts", ts(times)),
        ("label", Arc::new(Int64Array::from(labels))),
    ])?;
    let mut w = writer(&dir.join("spine.parquet"), &batch)?;
    w.write(&batch)?;
    w.close()?;
    Ok(())
}

fn run() -> Result<(), BoxError> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let usage = "usage: gen_pit_data <T|S|M|L|XL> <out_dir> [--seed N]";
    let (Some(shape_name), Some(out)) = (args.first(), args.get(1)) else {
        return Err(usage.into());
    };
    let seed = match args.get(2).map(String::as_str) {
        Some("--seed") => args.get(3).ok_or(usage)?.parse::<u64>()?,
        Some(other) => return Err(format!("unexpected argument '{other}'; {usage}").into()),
        None => 42,
    };
    let shape = match shape_name.as_str() {
        "S" => Shape {
            feature_rows: 1_000_000,
            spine_rows: 100_000,
            entities: 10_000,
        },
        "M" => Shape {
            feature_rows: 10_000_000,
            spine_rows: 1_000_000,
            entities: 100_000,
        },
        "L" => Shape {
            feature_rows: 30_000_000,
            spine_rows: 3_000_000,
            entities: 300_000,
        },
        "XL" => Shape {
            feature_rows: 100_000_000,
            spine_rows: 10_000_000,
            entities: 1_000_000,
        },
        "T" => Shape {
            feature_rows: 20_000,
            spine_rows: 2_000,
            entities: 200,
        },
        other => return Err(format!("unknown shape '{other}'; {usage}").into()),
    };
    let dir = PathBuf::from(out);
    std::fs::create_dir_all(&dir)?;
    let mut rng = Rng(seed);
    write_spine(&dir, &shape, &mut rng)?;
    let mut lines = String::new();
    for v in &VIEWS {
        write_view(&dir, v, &shape, &mut rng)?;
        let keys = if v.composite {
            "user_id+merchant_id"
        } else {
            "user_id"
        };
        let ttl = v.ttl_s.map(|t| format!(",ttl={t}")).unwrap_or_default();
        lines.push_str(&format!(
            "name={},path={},keys={keys},event=event_ts,created=created_ts{ttl}\n",
            v.name,
            dir.join(format!("{}.parquet", v.name)).display()
        ));
    }
    std::fs::write(dir.join("views.txt"), lines)?;
    println!(
        "wrote shape {shape_name} (seed {seed}) to {}",
        dir.display()
    );
    Ok(())
}

fn main() {
    if let Err(e) = run() {
        eprintln!("error: {e}");
        std::process::exit(2);
    }
}
