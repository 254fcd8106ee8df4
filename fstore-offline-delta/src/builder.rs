//! [`DeltaOfflineStoreBuilder`] and [`DeltaConfigKey`].

use std::collections::HashMap;
use std::fmt;
use std::str::FromStr;

use fstore_core::{Error, Result};
use url::Url;

use crate::BACKEND;
use crate::registry::DeltaRegistry;
use crate::store::DeltaOfflineStore;

/// Default number of whole-write retries after delta-rs' own commit retries
/// gave up (each delta-rs attempt already retries 15 times on a newer version).
const DEFAULT_COMMIT_RETRIES: u32 = 5;
/// Default target size of a data file written by `write` or `compact` (bytes).
const DEFAULT_TARGET_FILE_SIZE: u64 = 128 * 1024 * 1024;
/// Rows per record batch streamed out of a scan.
const DEFAULT_SCAN_BATCH_ROWS: usize = 64 * 1024;

/// A configuration key of the Delta offline store.
///
/// Keys parse from their names (`root`, `commit_retries`, …) and from the
/// environment variable names `from_env` reads (`FSTORE_DELTA_ROOT`, …).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum DeltaConfigKey {
    /// Root URI under which each feature view gets its own Delta table
    /// (`<root>/<view>`) and the shared registry lives (`<root>/_fstore_registry`).
    /// A local path or a `file://`, `s3://`, `gs://`, `az://`/`abfss://` URL.
    /// Env: `FSTORE_DELTA_ROOT`.
    Root,
    /// Extra whole-write attempts after a commit conflict. Env: `FSTORE_DELTA_COMMIT_RETRIES`.
    CommitRetries,
    /// Target data-file size in bytes for writes and compaction.
    /// Env: `FSTORE_DELTA_TARGET_FILE_SIZE`.
    TargetFileSize,
    /// Rows per record batch a scan yields. Env: `FSTORE_DELTA_SCAN_BATCH_ROWS`.
    ScanBatchRows,
}

impl DeltaConfigKey {
    const ALL: [Self; 4] = [
        Self::Root,
        Self::CommitRetries,
        Self::TargetFileSize,
        Self::ScanBatchRows,
    ];

    fn env_name(self) -> &'static str {
        match self {
            Self::Root => "FSTORE_DELTA_ROOT",
            Self::CommitRetries => "FSTORE_DELTA_COMMIT_RETRIES",
            Self::TargetFileSize => "FSTORE_DELTA_TARGET_FILE_SIZE",
            Self::ScanBatchRows => "FSTORE_DELTA_SCAN_BATCH_ROWS",
        }
    }
}

impl AsRef<str> for DeltaConfigKey {
    fn as_ref(&self) -> &str {
        match self {
            Self::Root => "root",
            Self::CommitRetries => "commit_retries",
            Self::TargetFileSize => "target_file_size",
            Self::ScanBatchRows => "scan_batch_rows",
        }
    }
}

impl FromStr for DeltaConfigKey {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        let lower = s.to_ascii_lowercase();
        let plain = lower.strip_prefix("fstore_delta_").unwrap_or(&lower);
        Self::ALL
            .into_iter()
            .find(|k| k.as_ref() == plain || (plain == "uri" && *k == Self::Root))
            .ok_or_else(|| Error::UnknownConfigKey {
                backend: BACKEND,
                key: s.to_owned(),
            })
    }
}

/// Builds a [`DeltaOfflineStore`] (and the [`DeltaRegistry`] next to its tables).
///
/// ```
/// use fstore_offline_delta::{DeltaConfigKey, DeltaOfflineStoreBuilder};
/// let dir = std::env::temp_dir().join("fstore-doc-builder");
/// let store = DeltaOfflineStoreBuilder::new()
///     .with_root(dir.to_string_lossy())
///     .with_config(DeltaConfigKey::CommitRetries, "3")
///     .build()
///     .unwrap();
/// assert!(format!("{store:?}").contains("fstore-doc-builder"));
/// ```
#[derive(Clone, Default)]
pub struct DeltaOfflineStoreBuilder {
    root: Option<String>,
    commit_retries: Option<String>,
    target_file_size: Option<String>,
    scan_batch_rows: Option<String>,
    storage_options: HashMap<String, String>,
    unknown: Vec<String>,
}

impl fmt::Debug for DeltaOfflineStoreBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Storage options carry credentials: print only their keys.
        let mut keys: Vec<&String> = self.storage_options.keys().collect();
        keys.sort();
        f.debug_struct("DeltaOfflineStoreBuilder")
            .field("root", &self.root)
            .field("commit_retries", &self.commit_retries)
            .field("target_file_size", &self.target_file_size)
            .field("scan_batch_rows", &self.scan_batch_rows)
            .field("storage_option_keys", &keys)
            .finish_non_exhaustive()
    }
}

/// The validated configuration shared by the store and the registry.
#[derive(Clone)]
pub(crate) struct Config {
    pub(crate) root: Url,
    pub(crate) commit_retries: u32,
    pub(crate) target_file_size: u64,
    pub(crate) scan_batch_rows: usize,
    pub(crate) storage_options: HashMap<String, String>,
}

impl fmt::Debug for Config {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut keys: Vec<&String> = self.storage_options.keys().collect();
        keys.sort();
        f.debug_struct("Config")
            .field("root", &self.root.as_str())
            .field("commit_retries", &self.commit_retries)
            .field("target_file_size", &self.target_file_size)
            .field("storage_option_keys", &keys)
            .finish_non_exhaustive()
    }
}

fn config_err(msg: String) -> Error {
    Error::InvalidInput(format!("{BACKEND} config: {msg}"))
}

fn parse_num<T: FromStr>(key: DeltaConfigKey, v: Option<&String>, default: T) -> Result<T> {
    match v {
        None => Ok(default),
        Some(s) => s.trim().parse().map_err(|_| {
            config_err(format!(
                "'{}' must be a non-negative integer, got '{s}'",
                key.as_ref()
            ))
        }),
    }
}

/// Turns a local path or URL into a directory URL ending in `/`.
pub(crate) fn root_url(root: &str) -> Result<Url> {
    let root = root.trim();
    if root.is_empty() {
        return Err(config_err("'root' is empty".into()));
    }
    let mut url = match Url::parse(root) {
        // A one-letter scheme is a Windows drive letter, not a URL.
        Ok(u) if u.scheme().len() > 1 => u,
        _ => {
            let p = std::path::Path::new(root);
            let abs = if p.is_absolute() {
                p.to_path_buf()
            } else {
                std::env::current_dir()
                    .map_err(|e| config_err(format!("cannot resolve relative root '{root}': {e}")))?
                    .join(p)
            };
            std::fs::create_dir_all(&abs).map_err(|e| {
                config_err(format!(
                    "cannot create root directory '{}': {e}",
                    abs.display()
                ))
            })?;
            Url::from_directory_path(&abs).map_err(|()| {
                config_err(format!(
                    "root '{}' is not a valid directory path",
                    abs.display()
                ))
            })?
        }
    };
    if !url.path().ends_with('/') {
        let p = format!("{}/", url.path());
        url.set_path(&p);
    }
    Ok(url)
}

impl DeltaOfflineStoreBuilder {
    /// An empty builder (a root is required before `build`).
    pub fn new() -> Self {
        Self::default()
    }

    /// Reads `FSTORE_DELTA_ROOT`, `FSTORE_DELTA_COMMIT_RETRIES`,
    /// `FSTORE_DELTA_TARGET_FILE_SIZE`, `FSTORE_DELTA_SCAN_BATCH_ROWS`, and every
    /// `FSTORE_DELTA_STORAGE_<KEY>` as the delta-rs storage option `<key>`
    /// (lower-cased; e.g. `FSTORE_DELTA_STORAGE_AWS_REGION` → `aws_region`).
    pub fn from_env() -> Self {
        let mut b = Self::new();
        for (k, v) in std::env::vars() {
            if let Some(opt) = k.strip_prefix("FSTORE_DELTA_STORAGE_") {
                b = b.with_storage_option(opt.to_ascii_lowercase(), v);
            } else if let Some(key) = DeltaConfigKey::ALL.into_iter().find(|c| c.env_name() == k) {
                b = b.with_config(key, v);
            }
        }
        b
    }

    /// Sets the root URI (see [`DeltaConfigKey::Root`]).
    pub fn with_root(self, root: impl Into<String>) -> Self {
        self.with_config(DeltaConfigKey::Root, root)
    }

    /// Sets the extra whole-write attempts after a commit conflict.
    pub fn with_commit_retries(self, n: u32) -> Self {
        self.with_config(DeltaConfigKey::CommitRetries, n.to_string())
    }

    /// Sets the target data-file size in bytes (writes and compaction).
    pub fn with_target_file_size(self, bytes: u64) -> Self {
        self.with_config(DeltaConfigKey::TargetFileSize, bytes.to_string())
    }

    /// Sets the rows per record batch a scan yields.
    pub fn with_scan_batch_rows(self, rows: usize) -> Self {
        self.with_config(DeltaConfigKey::ScanBatchRows, rows.to_string())
    }

    /// Passes a storage option through to delta-rs / object_store unchanged
    /// (`aws_region`, `aws_access_key_id`, `google_service_account`, …).
    pub fn with_storage_option(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
        self.storage_options.insert(key.into(), value.into());
        self
    }

    /// Sets a key by enum.
    pub fn with_config(mut self, key: DeltaConfigKey, value: impl Into<String>) -> Self {
        let v = Some(value.into());
        match key {
            DeltaConfigKey::Root => self.root = v,
            DeltaConfigKey::CommitRetries => self.commit_retries = v,
            DeltaConfigKey::TargetFileSize => self.target_file_size = v,
            DeltaConfigKey::ScanBatchRows => self.scan_batch_rows = v,
        }
        self
    }

    /// Sets a key by name; an unknown name makes `build` fail with
    /// [`Error::UnknownConfigKey`].
    pub fn with_config_str(mut self, key: &str, value: impl Into<String>) -> Self {
        match key.parse::<DeltaConfigKey>() {
            Ok(k) => self.with_config(k, value),
            Err(_) => {
                self.unknown.push(key.to_owned());
                self
            }
        }
    }

    pub(crate) fn config(&self) -> Result<Config> {
        if let Some(k) = self.unknown.first() {
            return Err(Error::UnknownConfigKey {
                backend: BACKEND,
                key: k.clone(),
            });
        }
        let root = self
            .root
            .as_deref()
            .ok_or_else(|| config_err("'root' is required (FSTORE_DELTA_ROOT)".into()))?;
        let scan_batch_rows = parse_num(
            DeltaConfigKey::ScanBatchRows,
            self.scan_batch_rows.as_ref(),
            DEFAULT_SCAN_BATCH_ROWS,
        )?;
        if scan_batch_rows == 0 {
            return Err(config_err("'scan_batch_rows' must be at least 1".into()));
        }
        Ok(Config {
            root: root_url(root)?,
            commit_retries: parse_num(
                DeltaConfigKey::CommitRetries,
                self.commit_retries.as_ref(),
                DEFAULT_COMMIT_RETRIES,
            )?,
            target_file_size: parse_num(
                DeltaConfigKey::TargetFileSize,
                self.target_file_size.as_ref(),
                DEFAULT_TARGET_FILE_SIZE,
            )?,
            scan_batch_rows,
            storage_options: self.storage_options.clone(),
        })
    }

    /// Validates the configuration and builds the store. No I/O except creating
    /// a local root directory; tables are created on first write.
    ///
    /// # Errors
    /// [`Error::UnknownConfigKey`] for a key set by name that does not exist;
    /// [`Error::InvalidInput`] for a missing root or a malformed number.
    pub fn build(self) -> Result<DeltaOfflineStore> {
        DeltaOfflineStore::new(self.config()?)
    }

    /// Builds the shared [`DeltaRegistry`] under `<root>/_fstore_registry/`.
    ///
    /// # Errors
    /// As [`DeltaOfflineStoreBuilder::build`].
    pub fn build_registry(&self) -> Result<DeltaRegistry> {
        DeltaRegistry::new(&self.config()?, "_fstore_registry")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_parse_from_names_and_env_names() {
        assert_eq!(
            "root".parse::<DeltaConfigKey>().unwrap(),
            DeltaConfigKey::Root
        );
        assert_eq!(
            "FSTORE_DELTA_COMMIT_RETRIES"
                .parse::<DeltaConfigKey>()
                .unwrap(),
            DeltaConfigKey::CommitRetries
        );
        for k in DeltaConfigKey::ALL {
            assert_eq!(k.as_ref().parse::<DeltaConfigKey>().unwrap(), k);
            assert_eq!(k.env_name().parse::<DeltaConfigKey>().unwrap(), k);
        }
        let e = DeltaOfflineStoreBuilder::new()
            .with_root("/tmp/x")
            .with_config_str("nope", "1")
            .build()
            .unwrap_err();
        assert!(
            matches!(e, Error::UnknownConfigKey { ref key, .. } if key == "nope"),
            "{e}"
        );
    }

    #[test]
    fn bad_values_name_the_key_and_debug_hides_secrets() {
        let e = DeltaOfflineStoreBuilder::new()
            .with_root("/tmp/x")
            .with_config(DeltaConfigKey::CommitRetries, "many")
            .build()
            .unwrap_err();
        assert!(e.to_string().contains("commit_retries"), "{e}");
        let e = DeltaOfflineStoreBuilder::new().build().unwrap_err();
        assert!(e.to_string().contains("FSTORE_DELTA_ROOT"), "{e}");
        let b =
            DeltaOfflineStoreBuilder::new().with_storage_option("aws_secret_access_key", "hunter2");
        let dbg = format!("{b:?}");
        assert!(
            dbg.contains("aws_secret_access_key") && !dbg.contains("hunter2"),
            "{dbg}"
        );
    }

    #[test]
    fn local_paths_become_directory_urls() {
        let dir = tempfile::tempdir().unwrap();
        let u = root_url(&dir.path().join("sub").to_string_lossy()).unwrap();
        assert_eq!(u.scheme(), "file");
        assert!(u.path().ends_with("/sub/"), "{u}");
        let u = root_url("s3://bucket/prefix").unwrap();
        assert_eq!(u.as_str(), "s3://bucket/prefix/");
    }
}
