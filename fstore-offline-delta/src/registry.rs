//! [`DeltaRegistry`]: the shared registry next to the Delta tables.
//!
//! # Why an object-store file per version, not a Delta table
//!
//! Each committed version is one immutable JSON file,
//! `<root>/_fstore_registry/versions/<v:020>.json`, published with object
//! store's conditional put (`PutMode::Create`). That is a real compare-and-swap
//! on every backend delta-rs supports — `link(2)` on a local file system,
//! `If-None-Match: *` on S3 and Azure, `ifGenerationMatch=0` on GCS — so of two
//! processes committing version `n + 1` exactly one wins and the other gets
//! [`Error::Conflict`]. A Delta table would give the same guarantee (its log is
//! committed the same way) but a registry snapshot is one small document, not
//! rows: a table would add a Parquet file and a log entry per version and a scan
//! to read it back, for nothing. Every version stays readable (audit history).

use std::fmt;
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use chrono::Utc;
use deltalake::DeltaTableBuilder;
use fstore_core::{Error, Registry, RegistrySnapshot, RegistryState, Result};
use futures::TryStreamExt;
use object_store::path::Path;
use object_store::{ObjectStore, ObjectStoreExt, PutMode, PutOptions, PutPayload};

use crate::config::{BACKEND, DeltaOfflineStoreBuilder, Settings};

/// A [`Registry`] stored as one JSON file per version under a URI (local
/// directory, S3, GCS, Azure), committed with conditional puts.
///
/// Build it with [`crate::DeltaOfflineStoreBuilder::build_registry`] (it then
/// lives at `<root>/_fstore_registry/`) or [`DeltaRegistry::open`].
pub struct DeltaRegistry {
    store: Arc<dyn ObjectStore>,
    uri: String,
    cache: Mutex<Arc<RegistrySnapshot>>,
}

impl fmt::Debug for DeltaRegistry {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DeltaRegistry")
            .field("uri", &self.uri)
            .finish_non_exhaustive()
    }
}

fn store_err(what: String) -> impl FnOnce(object_store::Error) -> Error {
    move |e| crate::error::Error::store(what)(e).into()
}

impl DeltaOfflineStoreBuilder {
    /// Builds the shared [`DeltaRegistry`] under `<root>/_fstore_registry/`.
    ///
    /// # Errors
    /// As [`DeltaOfflineStoreBuilder::build`].
    pub fn build_registry(&self) -> Result<DeltaRegistry> {
        DeltaRegistry::new(&self.settings()?, "_fstore_registry")
    }
}

impl DeltaRegistry {
    pub(crate) fn new(cfg: &Settings, sub: &str) -> Result<Self> {
        let url = cfg
            .root
            .join(&format!("{sub}/"))
            .map_err(|e| Error::invalid(format!("{BACKEND}: registry location '{sub}': {e}")))?;
        let log_store = DeltaTableBuilder::from_url(url.clone())
            .map_err(crate::error::Error::delta(format!(
                "opening registry at {url}"
            )))?
            .with_storage_options(cfg.storage_options.clone())
            .build_storage()
            .map_err(crate::error::Error::delta(format!(
                "opening registry at {url}"
            )))?;
        Ok(Self {
            store: log_store.object_store(None),
            uri: url.to_string(),
            cache: Mutex::new(Arc::new(RegistrySnapshot::empty())),
        })
    }

    /// A registry directly at `uri` (a local path or URL), with delta-rs /
    /// object-store storage options.
    ///
    /// # Errors
    /// [`Error::InvalidInput`] for an unusable location.
    pub fn open(
        uri: &str,
        storage_options: impl IntoIterator<Item = (String, String)>,
    ) -> Result<Self> {
        let mut b = crate::DeltaOfflineStoreBuilder::new().with_root(uri);
        for (k, v) in storage_options {
            b = b.with_storage_option(k, v);
        }
        let cfg = b.settings()?;
        Self::new(&cfg, ".")
    }

    /// The registry's location.
    pub fn uri(&self) -> &str {
        &self.uri
    }

    fn path(v: u64) -> Path {
        Path::from(format!("versions/{v:020}.json"))
    }

    async fn list_versions(&self, after: u64) -> Result<Vec<u64>> {
        let prefix = Path::from("versions");
        let offset = Self::path(after);
        let metas: Vec<object_store::ObjectMeta> = self
            .store
            .list_with_offset(Some(&prefix), &offset)
            .try_collect()
            .await
            .map_err(store_err(format!(
                "listing registry versions at {}",
                self.uri
            )))?;
        let mut out: Vec<u64> = metas
            .iter()
            .filter_map(|m| {
                m.location
                    .filename()?
                    .strip_suffix(".json")?
                    .parse::<u64>()
                    .ok()
            })
            .filter(|v| *v > after)
            .collect();
        out.sort_unstable();
        Ok(out)
    }

    fn cached(&self) -> Arc<RegistrySnapshot> {
        self.cache
            .lock()
            .map(|c| Arc::clone(&c))
            .unwrap_or_else(|p| Arc::clone(&p.into_inner()))
    }

    fn remember(&self, snap: &Arc<RegistrySnapshot>) {
        if let Ok(mut c) = self.cache.lock()
            && c.version < snap.version
        {
            *c = Arc::clone(snap);
        }
    }
}

#[async_trait]
impl Registry for DeltaRegistry {
    fn backend(&self) -> &'static str {
        BACKEND
    }

    async fn snapshot(&self) -> Result<Arc<RegistrySnapshot>> {
        let cached = self.cached();
        let Some(latest) = self.list_versions(cached.version).await?.last().copied() else {
            return Ok(cached);
        };
        let snap = self.snapshot_at(latest).await?;
        self.remember(&snap);
        Ok(snap)
    }

    async fn snapshot_at(&self, version: u64) -> Result<Arc<RegistrySnapshot>> {
        if version == 0 {
            return Ok(Arc::new(RegistrySnapshot::empty()));
        }
        let cached = self.cached();
        if cached.version == version {
            return Ok(cached);
        }
        let bytes = match self.store.get(&Self::path(version)).await {
            Ok(r) => r.bytes().await.map_err(store_err(format!(
                "reading registry version {version} at {}",
                self.uri
            )))?,
            Err(object_store::Error::NotFound { .. }) => {
                return Err(Error::not_found(
                    "registry version",
                    format!("{version} at {}", self.uri),
                ));
            }
            Err(e) => {
                return Err(store_err(format!(
                    "reading registry version {version} at {}",
                    self.uri
                ))(e));
            }
        };
        let snap: RegistrySnapshot = serde_json::from_slice(&bytes).map_err(|e| {
            Error::backend(
                BACKEND,
                format!("corrupt registry version {version} at {}", self.uri),
                e,
            )
        })?;
        Ok(Arc::new(snap))
    }

    async fn commit(&self, expected: u64, state: RegistryState) -> Result<u64> {
        let latest = self.list_versions(0).await?.last().copied().unwrap_or(0);
        if latest != expected {
            return Err(Error::Conflict(format!(
                "registry at {} is at version {latest}, expected {expected}",
                self.uri
            )));
        }
        let next = expected.checked_add(1).ok_or_else(|| {
            Error::Conflict(format!(
                "registry at {} cannot go past version {expected}",
                self.uri
            ))
        })?;
        let snap = Arc::new(RegistrySnapshot {
            version: next,
            committed_at: Some(Utc::now()),
            state,
        });
        // Serialise, parse back and compare before publishing: a state that
        // would not read back is refused here, not by every later reader.
        let bytes = fstore_core::adapter::registry_document(snap.as_ref())?;
        let opts = PutOptions {
            mode: PutMode::Create,
            ..Default::default()
        };
        match self
            .store
            .put_opts(&Self::path(next), PutPayload::from(bytes), opts)
            .await
        {
            Ok(_) => {}
            Err(
                object_store::Error::AlreadyExists { .. }
                | object_store::Error::Precondition { .. },
            ) => {
                return Err(Error::Conflict(format!(
                    "registry version {next} at {} was committed by another writer",
                    self.uri
                )));
            }
            Err(e) => {
                return Err(store_err(format!(
                    "committing registry version {next} at {}",
                    self.uri
                ))(e));
            }
        }
        self.remember(&snap);
        Ok(next)
    }

    async fn versions(&self) -> Result<Vec<u64>> {
        self.list_versions(0).await
    }
}
