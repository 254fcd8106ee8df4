//! A registry in a local directory: one immutable JSON file per version.
//!
//! Layout under the root directory:
//!
//! ```text
//! versions/00000000000000000001.json   one file per committed version (never rewritten)
//! LATEST                               hint: the newest version number (atomic rename)
//! tmp/                                 staging for atomic publication
//! ```
//!
//! A commit first checks that the snapshot's JSON parses back identical
//! ([`super::registry_document`]), writes it to a new file in `tmp/` (created
//! exclusively, named by host, process, time and a random value), fsyncs it,
//! then publishes it with
//! `link(tmp, versions/<expected+1>.json)`. `link` fails if the target exists, so
//! of two processes racing for the same version exactly one wins and the other
//! gets [`Error::Conflict`]; readers never see a half-written file. Every
//! version stays readable (audit history).

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use chrono::Utc;

use super::{Registry, RegistrySnapshot, RegistryState, registry_document};
use crate::error::{Error, Result};

const BACKEND: &str = "file";

/// A [`Registry`] in a local directory (the embedded default).
#[derive(Debug)]
pub struct FileRegistry {
    root: PathBuf,
    cache: Mutex<Arc<RegistrySnapshot>>,
}

fn io_err(what: String) -> impl FnOnce(std::io::Error) -> Error {
    move |e| Error::backend(BACKEND, what, e)
}

impl FileRegistry {
    /// Opens (creating if needed) a registry under `root`.
    ///
    /// # Errors
    /// [`Error::Backend`] when the directory cannot be created.
    pub fn open(root: impl AsRef<Path>) -> Result<Self> {
        let root = root.as_ref().to_path_buf();
        for d in [root.join("versions"), root.join("tmp")] {
            std::fs::create_dir_all(&d).map_err(io_err(format!("creating {}", d.display())))?;
        }
        Ok(Self {
            root,
            cache: Mutex::new(Arc::new(RegistrySnapshot::empty())),
        })
    }

    /// The root directory.
    pub fn root(&self) -> &Path {
        &self.root
    }

    fn version_path(root: &Path, v: u64) -> PathBuf {
        root.join("versions").join(format!("{v:020}.json"))
    }

    fn read_version(root: &Path, v: u64) -> Result<RegistrySnapshot> {
        let p = Self::version_path(root, v);
        let bytes = match std::fs::read(&p) {
            Ok(b) => b,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Err(Error::not_found("registry version", v.to_string()));
            }
            Err(e) => return Err(io_err(format!("reading {}", p.display()))(e)),
        };
        serde_json::from_slice(&bytes).map_err(|e| {
            Error::backend(BACKEND, format!("corrupt registry file {}", p.display()), e)
        })
    }

    /// Latest version: the LATEST hint, then probing forward.
    fn latest(root: &Path, from: u64) -> u64 {
        let hint = std::fs::read_to_string(root.join("LATEST"))
            .ok()
            .and_then(|s| s.trim().parse::<u64>().ok())
            .unwrap_or(0);
        let mut v = hint.max(from);
        while let Some(next) = v.checked_add(1)
            && Self::version_path(root, next).exists()
        {
            v = next;
        }
        v
    }

    async fn blocking<T: Send + 'static>(
        f: impl FnOnce() -> Result<T> + Send + 'static,
    ) -> Result<T> {
        tokio::task::spawn_blocking(f)
            .await
            .map_err(|e| Error::backend(BACKEND, "registry I/O task failed", e))?
    }
}

/// This host's name, so temporary names differ across hosts sharing the
/// directory (best effort; the random part and `create_new` make collisions
/// harmless anyway).
fn host_tag() -> String {
    let raw = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .or_else(|_| std::fs::read_to_string("/etc/hostname"))
        .ok()
        .or_else(|| std::env::var("HOSTNAME").ok())
        .or_else(|| std::env::var("COMPUTERNAME").ok())
        .unwrap_or_default();
    let tag: String = raw
        .trim()
        .chars()
        .filter(|c| c.is_ascii_alphanumeric() || *c == '-')
        .take(64)
        .collect();
    if tag.is_empty() { "host".into() } else { tag }
}

/// A name for a staging file: host, process, time, a per-process random
/// value and a sequence number. Two processes on different hosts with the same
/// pid and clock still differ in the random part; the file is created with
/// `create_new`, so even a collision fails instead of sharing a file.
fn unique_tmp(root: &Path) -> PathBuf {
    use std::hash::{BuildHasher, Hasher};
    use std::sync::OnceLock;
    use std::sync::atomic::{AtomicU64, Ordering};
    static SEQ: AtomicU64 = AtomicU64::new(0);
    static PROCESS: OnceLock<(String, u64)> = OnceLock::new();
    let (host, salt) = PROCESS.get_or_init(|| {
        let mut h = std::collections::hash_map::RandomState::new().build_hasher();
        h.write_u32(std::process::id());
        h.write_i64(Utc::now().timestamp_nanos_opt().unwrap_or_default());
        (host_tag(), h.finish())
    });
    let n = SEQ.fetch_add(1, Ordering::Relaxed);
    let nanos = Utc::now().timestamp_nanos_opt().unwrap_or_default();
    root.join("tmp").join(format!(
        "{host}-{}-{nanos}-{salt:016x}-{n}.json",
        std::process::id()
    ))
}

/// Writes `bytes` to a new staging file (never an existing one) and fsyncs it;
/// returns its path.
fn write_new_synced(root: &Path, bytes: &[u8]) -> Result<PathBuf> {
    use std::io::Write;
    let mut last = None;
    for _ in 0..8 {
        let path = unique_tmp(root);
        let mut f = match std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&path)
        {
            Ok(f) => f,
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
                last = Some(e);
                continue;
            }
            Err(e) => return Err(io_err(format!("creating {}", path.display()))(e)),
        };
        let written = f
            .write_all(bytes)
            .map_err(io_err(format!("writing {}", path.display())))
            .and_then(|()| {
                f.sync_all()
                    .map_err(io_err(format!("syncing {}", path.display())))
            });
        if let Err(e) = written {
            let _ = std::fs::remove_file(&path);
            return Err(e);
        }
        return Ok(path);
    }
    Err(Error::backend(
        BACKEND,
        format!(
            "no unused staging name under {}",
            root.join("tmp").display()
        ),
        last.unwrap_or_else(|| std::io::Error::other("staging name collisions")),
    ))
}

#[async_trait]
impl Registry for FileRegistry {
    fn backend(&self) -> &'static str {
        BACKEND
    }

    async fn snapshot(&self) -> Result<Arc<RegistrySnapshot>> {
        let cached = self
            .cache
            .lock()
            .map(|c| Arc::clone(&c))
            .unwrap_or_else(|p| Arc::clone(&p.into_inner()));
        let root = self.root.clone();
        let from = cached.version;
        let latest = Self::blocking(move || Ok(Self::latest(&root, from))).await?;
        if latest == cached.version {
            return Ok(cached);
        }
        let snap = self.snapshot_at(latest).await?;
        if let Ok(mut c) = self.cache.lock()
            && c.version < snap.version
        {
            *c = Arc::clone(&snap);
        }
        Ok(snap)
    }

    async fn snapshot_at(&self, version: u64) -> Result<Arc<RegistrySnapshot>> {
        if version == 0 {
            return Ok(Arc::new(RegistrySnapshot::empty()));
        }
        let root = self.root.clone();
        Ok(Arc::new(
            Self::blocking(move || Self::read_version(&root, version)).await?,
        ))
    }

    async fn commit(&self, expected: u64, state: RegistryState) -> Result<u64> {
        let root = self.root.clone();
        let next = expected.checked_add(1).ok_or_else(|| {
            Error::Conflict(format!(
                "registry at {} cannot go past version {expected}",
                root.display()
            ))
        })?;
        let snap = RegistrySnapshot {
            version: next,
            committed_at: Some(Utc::now()),
            state,
        };
        // Serialise and parse back before anything touches the disk: a state
        // that would not read back is refused here, not by every later reader.
        let bytes = registry_document(&snap)?;
        let snap = Arc::new(snap);
        Self::blocking(move || {
            let latest = Self::latest(&root, 0);
            if latest != expected {
                return Err(Error::Conflict(format!(
                    "registry at {} is at version {latest}, expected {expected}",
                    root.display()
                )));
            }
            let tmp = write_new_synced(&root, &bytes)?;
            let target = Self::version_path(&root, next);
            let linked = std::fs::hard_link(&tmp, &target);
            let _ = std::fs::remove_file(&tmp);
            match linked {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
                    return Err(Error::Conflict(format!(
                        "registry version {next} at {} was committed by another writer",
                        root.display()
                    )));
                }
                Err(e) => return Err(io_err(format!("publishing {}", target.display()))(e)),
            }
            if let Ok(dir) = std::fs::File::open(root.join("versions")) {
                let _ = dir.sync_all();
            }
            // LATEST is only a hint; a stale one is corrected by probing forward.
            if let Ok(hint_tmp) = write_new_synced(&root, next.to_string().as_bytes())
                && std::fs::rename(&hint_tmp, root.join("LATEST")).is_err()
            {
                let _ = std::fs::remove_file(&hint_tmp);
            }
            Ok(())
        })
        .await?;
        if let Ok(mut c) = self.cache.lock()
            && c.version < next
        {
            *c = snap;
        }
        Ok(next)
    }

    async fn versions(&self) -> Result<Vec<u64>> {
        let root = self.root.clone();
        Self::blocking(move || {
            let dir = root.join("versions");
            let mut out = Vec::new();
            for entry in
                std::fs::read_dir(&dir).map_err(io_err(format!("listing {}", dir.display())))?
            {
                let entry = entry.map_err(io_err(format!("listing {}", dir.display())))?;
                if let Some(v) = entry
                    .file_name()
                    .to_str()
                    .and_then(|n| n.strip_suffix(".json"))
                    .and_then(|n| n.parse::<u64>().ok())
                {
                    out.push(v);
                }
            }
            out.sort_unstable();
            Ok(out)
        })
        .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testkit::unique_name;

    #[tokio::test]
    async fn version_overflow_is_a_conflict_and_writes_nothing() {
        let dir = std::env::temp_dir().join(unique_name("fstore_file_overflow"));
        let reg = FileRegistry::open(&dir).unwrap();
        match reg.commit(u64::MAX, RegistryState::default()).await {
            Err(Error::Conflict(m)) => assert!(m.contains(&u64::MAX.to_string()), "{m}"),
            other => panic!("expected Conflict, got {other:?}"),
        }
        assert!(reg.versions().await.unwrap().is_empty());
        // A LATEST hint at u64::MAX must not overflow the forward probe either.
        std::fs::write(dir.join("LATEST"), u64::MAX.to_string()).unwrap();
        assert_eq!(FileRegistry::latest(&dir, 0), u64::MAX);
        match reg.commit(u64::MAX, RegistryState::default()).await {
            Err(Error::Conflict(_)) => {}
            other => panic!("expected Conflict, got {other:?}"),
        }
        assert!(reg.versions().await.unwrap().is_empty());
        let _ = std::fs::remove_dir_all(dir);
    }

    #[tokio::test]
    async fn staging_files_are_exclusive_unique_and_cleaned_up() {
        let dir = std::env::temp_dir().join(unique_name("fstore_file_tmp"));
        let reg = FileRegistry::open(&dir).unwrap();
        let names: std::collections::HashSet<PathBuf> =
            (0..1000).map(|_| unique_tmp(&dir)).collect();
        assert_eq!(names.len(), 1000);
        let host = host_tag();
        assert!(names.iter().all(|p| {
            p.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with(&format!("{host}-")))
        }));
        // create_new: a staging file never reuses an existing path.
        let a = write_new_synced(&dir, b"a").unwrap();
        let b = write_new_synced(&dir, b"b").unwrap();
        assert_ne!(a, b);
        assert_eq!(std::fs::read(&a).unwrap(), b"a");
        std::fs::remove_file(a).unwrap();
        std::fs::remove_file(b).unwrap();
        reg.commit(0, RegistryState::default()).await.unwrap();
        reg.commit(1, RegistryState::default()).await.unwrap();
        assert_eq!(
            std::fs::read_dir(dir.join("tmp")).unwrap().count(),
            0,
            "no staging file left behind"
        );
        let _ = std::fs::remove_dir_all(dir);
    }
}
