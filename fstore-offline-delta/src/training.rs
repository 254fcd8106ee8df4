//! Delta tables at both ends of a training set built out of memory
//! (semantics §12): [`DeltaSpine`] lists the data files of a spine table at a
//! pinned version, to hand to `FeatureStore::historical_to` as its spine files;
//! [`DeltaSink`] commits the Parquet file that `historical_to` streamed its
//! result into as one atomic append to a result table.
//!
//! Both work on tables in a local directory: the engine reads the spine's files
//! and writes its result file on the local filesystem.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use arrow_schema::{DataType, Schema};
use deltalake::kernel::engine::arrow_conversion::{TryIntoArrow, TryIntoKernel};
use deltalake::kernel::transaction::CommitBuilder;
use deltalake::kernel::{Action, Add, StructType};
use deltalake::protocol::{DeltaOperation, SaveMode};
use deltalake::{DeltaTable, DeltaTableBuilder};
use url::Url;

use crate::config::BACKEND;
use crate::conform::same_type;

type CoreResult<T> = fstore_core::Result<T>;

/// The spine of a training set read from a Delta table at one version: its data
/// files, in a fixed order, for `HistoricalToRequest::new` (the training set keeps
/// this order: files by modification time, then path; rows in file order).
///
/// Record [`DeltaSpine::version`] with the training set: with the registry version
/// and the view versions `historical_to` reports, it rebuilds the same rows.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct DeltaSpine {
    /// The table version read.
    pub version: u64,
    /// The table's live data files at that version (absolute paths).
    pub files: Vec<PathBuf>,
}

impl DeltaSpine {
    /// Lists the data files of the Delta table in directory `dir` at `version`
    /// (`None`: the latest).
    ///
    /// # Errors
    /// [`fstore_core::Error::NotFound`] when there is no table or no such version;
    /// [`fstore_core::Error::InvalidInput`] for a table whose data files alone do
    /// not hold its rows: partitioned (the partition values are in the log),
    /// with column mapping (the files use physical column names) or with deletion
    /// vectors (some rows of a file are deleted), naming the table and what to
    /// change; a data file outside the table directory.
    pub async fn open(dir: &Path, version: Option<u64>) -> CoreResult<Self> {
        let url = local_url(dir)?;
        let what = || format!("spine table '{}'", dir.display());
        if !dir.join("_delta_log").is_dir() {
            return Err(fstore_core::Error::not_found("Delta table", what()));
        }
        let mut table = DeltaTableBuilder::from_url(url.clone())
            .map_err(delta_err(what()))?
            .load()
            .await
            .map_err(delta_err(what()))?;
        let latest = table.version().unwrap_or_default();
        if let Some(v) = version {
            if v > latest {
                return Err(fstore_core::Error::not_found(
                    "table version",
                    format!("{v} of {} (latest is {latest})", what()),
                ));
            }
            if v != latest {
                table.load_version(v).await.map_err(delta_err(what()))?;
            }
        }
        let version = table.version().unwrap_or_default();
        let snapshot = table.snapshot().map_err(delta_err(what()))?;
        let meta = snapshot.metadata();
        if !meta.partition_columns().is_empty() {
            return Err(fstore_core::Error::invalid(format!(
                "{} is partitioned by {:?}: partition values are not in its data files; \
                 write the spine unpartitioned",
                what(),
                meta.partition_columns()
            )));
        }
        if let Some(mode) = meta.configuration().get("delta.columnMapping.mode")
            && mode != "none"
        {
            return Err(fstore_core::Error::invalid(format!(
                "{} uses column mapping ('{mode}'): its data files name columns differently \
                 from the table; write the spine without column mapping",
                what()
            )));
        }
        let mut listed = Vec::new();
        for f in snapshot.log_data().iter() {
            let path = f.path().into_owned();
            if f.deletion_vector_descriptor().is_some() {
                return Err(fstore_core::Error::invalid(format!(
                    "{} has deletion vectors (data file '{path}'): rewrite the table \
                     (e.g. OPTIMIZE with purge) before using it as a spine",
                    what()
                )));
            }
            listed.push((f.modification_time(), path));
        }
        listed.sort();
        let files = listed
            .into_iter()
            .map(|(_, p)| data_file_path(dir, &p))
            .collect::<CoreResult<Vec<_>>>()?;
        Ok(Self { version, files })
    }
}

/// A Delta table in a local directory that receives training sets: each
/// [`DeltaSink::commit`] adds one Parquet file (written by `historical_to` to
/// [`DeltaSink::data_file`]) as one atomic append, creating the table with the
/// file's schema on the first commit.
#[derive(Debug, Clone)]
pub struct DeltaSink {
    dir: PathBuf,
}

impl DeltaSink {
    /// A sink for the Delta table in directory `dir` (created on first use).
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        Self { dir: dir.into() }
    }

    /// A fresh data file name inside the table directory (the directory is
    /// created). Write the result there, then [`DeltaSink::commit`] it: until
    /// then readers of the table do not see it.
    ///
    /// # Errors
    /// The directory cannot be created.
    pub fn data_file(&self) -> CoreResult<PathBuf> {
        static N: AtomicU64 = AtomicU64::new(0);
        std::fs::create_dir_all(&self.dir).map_err(|e| {
            fstore_core::Error::invalid(format!(
                "result table directory '{}' cannot be created: {e}",
                self.dir.display()
            ))
        })?;
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos());
        Ok(self.dir.join(format!(
            "part-{nanos:x}-{}-{}.fstore.parquet",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        )))
    }

    /// Commits `file` (a Parquet file directly inside the table directory) to the
    /// table: one append of all its rows, in one Delta commit. Idempotent: a file
    /// already in the table is not added again. Returns the table version that
    /// holds it.
    ///
    /// # Errors
    /// [`fstore_core::Error::InvalidInput`] for a file outside the table
    /// directory, one that is not Parquet, a column whose type Delta cannot hold
    /// (timestamps must be microseconds) or that differs from the table's
    /// (naming the column and both types); Delta errors as
    /// [`fstore_core::Error::Backend`].
    pub async fn commit(&self, file: &Path) -> CoreResult<u64> {
        let what = || format!("result table '{}'", self.dir.display());
        let name = file
            .file_name()
            .and_then(|n| n.to_str())
            .filter(|_| {
                file.parent()
                    .map(std::fs::canonicalize)
                    .and_then(Result::ok)
                    == std::fs::canonicalize(&self.dir).ok()
            })
            .ok_or_else(|| {
                fstore_core::Error::invalid(format!(
                    "'{}' is not a file directly inside {}",
                    file.display(),
                    what()
                ))
            })?
            .to_owned();
        let (schema, rows, size) = parquet_facts(file)?;
        for f in schema.fields() {
            if let DataType::Timestamp(unit, _) = f.data_type()
                && *unit != arrow_schema::TimeUnit::Microsecond
            {
                return Err(fstore_core::Error::invalid(format!(
                    "column '{}' of '{}' is a {:?} timestamp; a Delta table holds \
                     microseconds: cast it before writing the result",
                    f.name(),
                    file.display(),
                    unit
                )));
            }
        }
        let url = local_url(&self.dir)?;
        let table = self.load_or_create(url, &schema).await?;
        let snapshot = table.snapshot().map_err(delta_err(what()))?;
        let table_schema: Schema = snapshot
            .schema()
            .as_ref()
            .try_into_arrow()
            .map_err(|e| delta_err(what())(e.into()))?;
        check_same_schema(&table_schema, &schema, file)?;
        if snapshot.log_data().iter().any(|f| f.path() == name) {
            return Ok(table.version().unwrap_or_default());
        }
        let add = Add {
            path: name,
            partition_values: HashMap::new(),
            size: i64::try_from(size).unwrap_or(i64::MAX),
            modification_time: chrono::Utc::now().timestamp_millis(),
            data_change: true,
            stats: Some(serde_json::json!({ "numRecords": rows }).to_string()),
            tags: None,
            deletion_vector: None,
            base_row_id: None,
            default_row_commit_version: None,
            clustering_provider: None,
        };
        let done = CommitBuilder::default()
            .with_actions(vec![Action::Add(add)])
            .build(
                Some(snapshot),
                table.log_store(),
                DeltaOperation::Write {
                    mode: SaveMode::Append,
                    partition_by: None,
                    predicate: None,
                },
            )
            .await
            .map_err(delta_err(format!("committing to {}", what())))?;
        Ok(done.version())
    }

    async fn load_or_create(&self, url: Url, schema: &Schema) -> CoreResult<DeltaTable> {
        let what = || format!("result table '{}'", self.dir.display());
        let unloaded = || -> CoreResult<DeltaTable> {
            DeltaTableBuilder::from_url(url.clone())
                .map_err(delta_err(what()))?
                .build()
                .map_err(delta_err(what()))
        };
        if !self.dir.join("_delta_log").is_dir() {
            let st: StructType = schema
                .try_into_kernel()
                .map_err(|e| fstore_core::Error::invalid(format!("{}: {e}", what())))?;
            let created = unloaded()?
                .create()
                .with_columns(st.fields().cloned())
                .with_save_mode(SaveMode::ErrorIfExists)
                .with_comment("fstore training set")
                .await;
            match created {
                Ok(t) => return Ok(t),
                // Lost a creation race to another writer: load the winner's table.
                Err(e) => {
                    tracing::debug!(table = %self.dir.display(), error = %e, "table creation raced; loading")
                }
            }
        }
        let mut table = unloaded()?;
        table.load().await.map_err(delta_err(what()))?;
        Ok(table)
    }
}

/// The Arrow schema, row count and byte size of a Parquet file.
fn parquet_facts(file: &Path) -> CoreResult<(Schema, i64, u64)> {
    let bad = |e: &dyn std::fmt::Display| {
        fstore_core::Error::invalid(format!(
            "'{}' is not a readable Parquet file: {e}",
            file.display()
        ))
    };
    let f = std::fs::File::open(file).map_err(|e| bad(&e))?;
    let size = f.metadata().map_err(|e| bad(&e))?.len();
    let builder = parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder::try_new(f)
        .map_err(|e| bad(&e))?;
    let rows = builder.metadata().file_metadata().num_rows();
    Ok((builder.schema().as_ref().clone(), rows, size))
}

/// Same column names, in the same order, with types Delta round-trips alike.
fn check_same_schema(table: &Schema, file: &Schema, path: &Path) -> CoreResult<()> {
    let names = |s: &Schema| {
        s.fields()
            .iter()
            .map(|f| f.name().clone())
            .collect::<Vec<_>>()
    };
    if names(table) != names(file) {
        return Err(fstore_core::Error::invalid(format!(
            "'{}' has columns {:?}; the result table has {:?}",
            path.display(),
            names(file),
            names(table)
        )));
    }
    for (t, f) in table.fields().iter().zip(file.fields()) {
        if !same_type(t.data_type(), f.data_type()) {
            return Err(fstore_core::Error::invalid(format!(
                "column '{}' of '{}' is {}; the result table holds {}",
                f.name(),
                path.display(),
                f.data_type(),
                t.data_type()
            )));
        }
    }
    Ok(())
}

/// The path of a data file the log names relative to the table directory.
fn data_file_path(dir: &Path, p: &str) -> CoreResult<PathBuf> {
    if p.contains("://") || Path::new(p).is_absolute() || p.split('/').any(|c| c == "..") {
        return Err(fstore_core::Error::invalid(format!(
            "spine table '{}' names data file '{p}' outside its directory",
            dir.display()
        )));
    }
    Ok(dir.join(p))
}

fn local_url(dir: &Path) -> CoreResult<Url> {
    let abs = std::path::absolute(dir)
        .map_err(|e| fstore_core::Error::invalid(format!("'{}': {e}", dir.display())))?;
    Url::from_directory_path(&abs).map_err(|()| {
        fstore_core::Error::invalid(format!("'{}' is not a local directory path", dir.display()))
    })
}

fn delta_err(context: String) -> impl FnOnce(deltalake::DeltaTableError) -> fstore_core::Error {
    move |e| fstore_core::Error::Backend {
        backend: BACKEND,
        message: format!("{context}: {e}"),
        source: Some(Box::new(e)),
    }
}
