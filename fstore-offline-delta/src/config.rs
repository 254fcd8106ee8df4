//! Configuration: [`DeltaConfigKey`], [`DeltaOfflineStoreBuilder`]'s setters
//! and the validated [`Settings`], in core's configuration language
//! ([`fstore_core::config`]). Imports nothing else of this crate.

use std::collections::HashMap;
use std::fmt;
use std::str::FromStr;

use fstore_core::config::{ConfigKey, ConfigValues, parse_key};
use fstore_core::{Error, Result};
use url::Url;

/// Backend id used in errors and tracing.
pub const BACKEND: &str = "delta";

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
    /// Target data-file size for writes and compaction: bytes, or a size with
    /// a unit (`128MiB`, `1GiB`). Env: `FSTORE_DELTA_TARGET_FILE_SIZE`.
    TargetFileSize,
    /// Rows per record batch a scan yields. Env: `FSTORE_DELTA_SCAN_BATCH_ROWS`.
    ScanBatchRows,
}

impl ConfigKey for DeltaConfigKey {
    const BACKEND: &'static str = BACKEND;
    const ENV_PREFIX: &'static str = "DELTA";
    const ALL: &'static [Self] = &[
        Self::Root,
        Self::CommitRetries,
        Self::TargetFileSize,
        Self::ScanBatchRows,
    ];

    fn name(self) -> &'static str {
        match self {
            Self::Root => "root",
            Self::CommitRetries => "commit_retries",
            Self::TargetFileSize => "target_file_size",
            Self::ScanBatchRows => "scan_batch_rows",
        }
    }

    fn aliases(self) -> &'static [&'static str] {
        match self {
            Self::Root => &["uri"],
            _ => &[],
        }
    }
}

impl AsRef<str> for DeltaConfigKey {
    fn as_ref(&self) -> &str {
        self.name()
    }
}

impl fmt::Display for DeltaConfigKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for DeltaConfigKey {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        parse_key(s)
    }
}

/// Builds a [`DeltaOfflineStore`](crate::DeltaOfflineStore) (and the
/// [`DeltaRegistry`](crate::DeltaRegistry) next to its tables).
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
    values: ConfigValues<DeltaConfigKey>,
    storage_options: HashMap<String, String>,
}

impl fmt::Debug for DeltaOfflineStoreBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Storage options carry credentials: print only their keys.
        let mut keys: Vec<&String> = self.storage_options.keys().collect();
        keys.sort();
        f.debug_struct("DeltaOfflineStoreBuilder")
            .field("values", &self.values)
            .field("storage_option_keys", &keys)
            .finish()
    }
}

/// The validated configuration shared by the store and the registry.
#[derive(Clone)]
pub(crate) struct Settings {
    pub(crate) root: Url,
    pub(crate) commit_retries: u32,
    pub(crate) target_file_size: u64,
    pub(crate) scan_batch_rows: usize,
    pub(crate) storage_options: HashMap<String, String>,
}

impl fmt::Debug for Settings {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut keys: Vec<&String> = self.storage_options.keys().collect();
        keys.sort();
        f.debug_struct("Settings")
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
    /// Any other `FSTORE_DELTA_*` variable is ignored with a warning.
    pub fn from_env() -> Self {
        let (storage, keys): (Vec<_>, Vec<_>) =
            std::env::vars().partition(|(k, _)| k.starts_with("FSTORE_DELTA_STORAGE_"));
        let mut b = Self {
            values: ConfigValues::from_vars(keys),
            storage_options: HashMap::new(),
        };
        for (k, v) in storage {
            let opt = &k["FSTORE_DELTA_STORAGE_".len()..];
            b = b.with_storage_option(opt.to_ascii_lowercase(), v);
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
        self.values.set(key, value);
        self
    }

    /// Sets a key by name; an unknown name makes `build` fail with
    /// [`Error::UnknownConfigKey`].
    pub fn with_config_str(mut self, key: &str, value: impl Into<String>) -> Self {
        self.values.set_str(key, value);
        self
    }

    /// The raw value of a key, if set.
    pub fn get_config(&self, key: DeltaConfigKey) -> Option<&str> {
        self.values.get(key)
    }

    /// Validates the configuration (no I/O except creating a local root
    /// directory).
    pub(crate) fn settings(&self) -> Result<Settings> {
        use DeltaConfigKey as K;
        let c = &self.values;
        c.check_unknown()?;
        let root = c.required(K::Root)?;
        Ok(Settings {
            root: root_url(root)?,
            commit_retries: c.number(K::CommitRetries, DEFAULT_COMMIT_RETRIES)?,
            target_file_size: c.size(K::TargetFileSize, DEFAULT_TARGET_FILE_SIZE)?,
            scan_batch_rows: c.count(K::ScanBatchRows, DEFAULT_SCAN_BATCH_ROWS, 1, usize::MAX)?,
            storage_options: self.storage_options.clone(),
        })
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
        for &k in DeltaConfigKey::ALL {
            assert_eq!(k.as_ref().parse::<DeltaConfigKey>().unwrap(), k);
            assert_eq!(k.env_var().parse::<DeltaConfigKey>().unwrap(), k);
        }
        assert_eq!(DeltaConfigKey::Root.env_var(), "FSTORE_DELTA_ROOT");
        let e = DeltaOfflineStoreBuilder::new()
            .with_root("/tmp/x")
            .with_config_str("nope", "1")
            .settings()
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
            .settings()
            .unwrap_err();
        assert!(e.to_string().contains("commit_retries"), "{e}");
        let e = DeltaOfflineStoreBuilder::new().settings().unwrap_err();
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
    fn target_file_size_takes_units() {
        let s = DeltaOfflineStoreBuilder::new()
            .with_root(std::env::temp_dir().to_string_lossy())
            .with_config(DeltaConfigKey::TargetFileSize, "256MiB")
            .settings()
            .unwrap();
        assert_eq!(s.target_file_size, 256 << 20);
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
