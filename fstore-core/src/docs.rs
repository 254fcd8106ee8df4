//! Documentation-only modules: [`semantics`] (the contract every part of
//! fstore honours, cited as "semantics §n" throughout) and
//! [`writing_a_backend`].

/// The semantics contract, sections 1 to 13 (also `fstore-core/docs/semantics.md` in
/// the repository).
#[doc = include_str!("../docs/semantics.md")]
pub mod semantics {}

/// # Writing a backend
///
/// A backend is a crate that depends on `fstore-core` and implements one of
/// [`crate::OnlineStore`], [`crate::OfflineStore`] or [`crate::Registry`]. If it
/// passes the conformance suite in `fstore_core::testkit`, it is correct.
///
/// ## Online stores
///
/// Adapters never interpret feature values: core hands them [`crate::OnlineRow`]s
/// whose entity key and payload are bytes from core's codecs
/// ([`crate::adapter`]), plus `event_ts`/`created_ts` in UTC microseconds. The
/// adapter's only semantic duty is **newest wins**: keep, per (view, entity
/// key), the row with the greatest [`crate::OnlineRow::version`]; an equal
/// version replaces (the later write wins). Do it server-side — a Lua script,
/// a conditional write, the database's write timestamps — never as a
/// read-then-write race. TTL is enforced by core at read time from `event_ts`;
/// native expiry is an optimisation that may only drop rows core would call
/// expired.
///
/// The payload is a [`crate::bytes::Bytes`]: on reads, hand back
/// the buffer your client already holds (a slice of the reply, a decoded
/// `Vec` via `.into()`) rather than a copy; at 100 entities × 2 views the
/// copies were most of an adapter's cost over its raw client.
///
/// A complete, correct (if not fast) store:
///
/// ```
/// use std::collections::HashMap;
/// use std::sync::Mutex;
/// use async_trait::async_trait;
/// use fstore_core::{
///     OnlineCapabilities, OnlineKey, OnlineRow, OnlineStore, ReadOptions, ResolvedView, Result,
///     WriteOptions, WriteSummary,
/// };
///
/// #[derive(Debug, Default)]
/// struct MapStore(Mutex<HashMap<(String, Vec<u8>), OnlineRow>>);
///
/// #[async_trait]
/// impl OnlineStore for MapStore {
///     fn backend(&self) -> &'static str { "map" }
///     fn store_id(&self) -> String { "map:example".into() }
///     fn capabilities(&self) -> OnlineCapabilities { OnlineCapabilities::default() }
///     async fn write(&self, view: &ResolvedView, rows: Vec<OnlineRow>, _: &WriteOptions) -> Result<WriteSummary> {
///         let mut m = self.0.lock().unwrap();
///         let mut s = WriteSummary::default();
///         for r in rows {
///             let k = (view.name().to_owned(), r.entity_key.clone());
///             match m.get(&k) {
///                 Some(old) if !r.supersedes(old) => s.skipped += 1,
///                 _ => { m.insert(k, r); s.written += 1; }
///             }
///         }
///         Ok(s)
///     }
///     async fn read(&self, keys: &[OnlineKey], _: &ReadOptions) -> Result<Vec<Option<OnlineRow>>> {
///         let m = self.0.lock().unwrap();
///         Ok(keys.iter().map(|k| m.get(&(k.view.clone(), k.entity_key.clone())).cloned()).collect())
///     }
///     async fn delete_view(&self, view: &str) -> Result<()> {
///         self.0.lock().unwrap().retain(|(v, _), _| v != view);
///         Ok(())
///     }
/// }
/// ```
///
/// Then, in `tests/conformance.rs` (with `fstore-core = { features = ["testkit"] }`
/// as a dev-dependency):
///
/// ```text
/// #[tokio::test(flavor = "multi_thread")]
/// async fn conformance() {
///     let Some(url) = fstore_core::testkit::server_url("FSTORE_TEST_MY_URL") else { return };
///     let store = std::sync::Arc::new(MyStore::connect(&url).await.unwrap());
///     fstore_core::testkit::run_online_suite(store).await; // round trip, statuses, newest-wins,
/// }                                                        // batch limits, races, parity proptest
/// ```
///
/// ## Offline stores
///
/// `write` receives batches already in the view's canonical schema
/// ([`crate::adapter::normalize_batch`]); `scan` must return every stored row in
/// the time range, projected, in write order — the point-in-time join's last
/// tie-break is write order. Stores with numbered versions report
/// [`crate::OfflineCapabilities::change_log`] so incremental materialization can
/// pick up late rows. Run `testkit::run_offline_suite`.
///
/// ## Registries
///
/// `commit(expected, state)` is a compare-and-swap; publish each version as an
/// immutable object created only if absent (`link(2)` on a filesystem, a
/// conditional put on an object store). Run `testkit::run_registry_suite`.
///
/// ## The short path for a new adapter crate
///
/// Every adapter crate has the same files, with imports pointing one way only
/// (`config` ← `client` ← `store` ← `lib`):
///
/// | file        | holds                                                                 |
/// |-------------|-----------------------------------------------------------------------|
/// | `config.rs` | `BACKEND`, the `*ConfigKey` enum, the builder's setters, the validated `Settings`; imports nothing else of the crate |
/// | `client.rs` | the driver calls (connect, read, write), nothing fstore-specific      |
/// | `error.rs`  | the driver's errors mapped to [`crate::Error`] (timeout / throttled / unavailable are retryable) |
/// | `store.rs`  | the trait impl, and the builder's terminal verbs: `build()` (sync, no I/O) and `async connect()` (build, then check connectivity) |
/// | `lib.rs`    | crate docs and re-exports                                             |
///
/// Configuration is core's ([`crate::config`]): the adapter declares its keys
/// and gets parsing by name, alias and `FSTORE_<PREFIX>_*` environment
/// variable, typed values (durations need a unit, booleans, sizes), one
/// redaction marker for secrets, warnings on unknown variables and
/// [`crate::Error::UnknownConfigKey`]. All of `config.rs` for a two-key store:
///
/// ```
/// use std::time::Duration;
/// use fstore_core::config::{ConfigKey, ConfigValues};
/// use fstore_core::Result;
///
/// pub const BACKEND: &str = "kv";
///
/// /// Configuration keys (`FSTORE_KV_URL`, `FSTORE_KV_TIMEOUT`).
/// #[derive(Debug, Clone, Copy, PartialEq, Eq)]
/// pub enum KvConfigKey { Url, Timeout }
///
/// impl ConfigKey for KvConfigKey {
///     const BACKEND: &'static str = BACKEND;
///     const ENV_PREFIX: &'static str = "KV";
///     const ALL: &'static [Self] = &[Self::Url, Self::Timeout];
///     fn name(self) -> &'static str {
///         match self { Self::Url => "url", Self::Timeout => "timeout" }
///     }
/// }
///
/// #[derive(Debug, Clone, Default)]
/// pub struct KvStoreBuilder { values: ConfigValues<KvConfigKey> }
///
/// pub(crate) struct Settings { pub url: String, pub timeout: Duration }
///
/// impl KvStoreBuilder {
///     pub fn from_env() -> Self { Self { values: ConfigValues::from_env() } }
///     pub fn with_config_str(mut self, key: &str, value: impl Into<String>) -> Self {
///         self.values.set_str(key, value);
///         self
///     }
///     pub(crate) fn settings(&self) -> Result<Settings> {
///         let c = &self.values;
///         c.check_unknown()?;
///         Ok(Settings {
///             url: c.required(KvConfigKey::Url)?.to_owned(),
///             timeout: c.duration(KvConfigKey::Timeout, Duration::from_secs(1))?,
///         })
///     }
/// }
/// # let s = KvStoreBuilder::default().with_config_str("url", "kv://h")
/// #     .with_config_str("FSTORE_KV_TIMEOUT", "250ms").settings().unwrap();
/// # assert_eq!(s.timeout, Duration::from_millis(250));
/// # assert!(KvStoreBuilder::default().with_config_str("url", "kv://h")
/// #     .with_config_str("timeout", "250").settings().is_err());
/// ```
///
/// The conformance test is one call: every case of the registry that the
/// store's capabilities allow runs, including cases added later. A stand-in
/// server that lacks a guarantee says so, and the cases needing it are skipped
/// by name:
///
/// ```text
/// #[tokio::test(flavor = "multi_thread")]
/// async fn conformance() {
///     let Some(url) = fstore_core::testkit::server_url("FSTORE_TEST_KV_URL") else { return };
///     let store = KvStoreBuilder::from_env().with_config_str("url", url).connect().await.unwrap();
///     fstore_core::testkit::run_online_suite(std::sync::Arc::new(store)).await;
///     // or: testkit::OnlineSuite::new(store).without(Capability::ConcurrentNewestWins).run()
/// }
/// ```
///
/// Besides its driver calls, a new online adapter writes: the trait impl, its
/// keys (one `ConfigKey` impl), a `Settings` struct filled by typed getters,
/// its error mapping, and one test call. (Before core's configuration
/// language, each of the four adapters also wrote its own key parsing, env
/// scanning, unknown-key tracking, redacting `Debug` and duration / boolean /
/// number parsers: 53–167 more lines each, and four different meanings of a
/// bare number.)
pub mod writing_a_backend {}

#[cfg(test)]
mod tests {
    use std::path::Path;

    /// Every `.rs` and `.md` file of the workspace, skipping build output.
    fn sources(dir: &Path, out: &mut Vec<std::path::PathBuf>) {
        let Ok(entries) = std::fs::read_dir(dir) else {
            return;
        };
        for e in entries.flatten() {
            let p = e.path();
            let name = e.file_name();
            let name = name.to_string_lossy();
            if p.is_dir() {
                if !name.starts_with('.') && name != "target" {
                    sources(&p, out);
                }
            } else if name.ends_with(".rs") || name.ends_with(".md") {
                out.push(p);
            }
        }
    }

    /// The sections the contract defines (`## §n …` headings).
    fn sections() -> Vec<u32> {
        include_str!("../docs/semantics.md")
            .lines()
            .filter_map(|l| l.strip_prefix("## §"))
            .filter_map(|l| l.split_whitespace().next()?.parse().ok())
            .collect()
    }

    #[test]
    fn contract_has_sections_1_to_13() {
        assert_eq!(sections(), (1..=13).collect::<Vec<_>>());
    }

    /// Every "§n" in the workspace is a "semantics §n" citation of a section
    /// that exists; nothing cites a document outside the repository.
    #[test]
    fn every_section_citation_resolves() {
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
        let known = sections();
        let mut files = Vec::new();
        sources(&root, &mut files);
        assert!(files.len() > 20, "found only {} source files", files.len());
        let mut bad = Vec::new();
        for f in &files {
            let Ok(text) = std::fs::read_to_string(f) else {
                continue;
            };
            if f.ends_with("docs/semantics.md") || f.ends_with("src/docs.rs") {
                continue;
            }
            for (i, line) in text.lines().enumerate() {
                for (at, _) in line.match_indices('§') {
                    let digits: String = line[at + '§'.len_utf8()..]
                        .chars()
                        .take_while(char::is_ascii_digit)
                        .collect();
                    let Ok(n) = digits.parse::<u32>() else {
                        continue; // "§n" in prose about citations
                    };
                    let cites = line[..at].ends_with("semantics ");
                    if !cites || !known.contains(&n) {
                        bad.push(format!("{}:{}: {}", f.display(), i + 1, line.trim()));
                    }
                }
                if line.contains(concat!("shared/", "DESIGN")) {
                    bad.push(format!("{}:{}: {}", f.display(), i + 1, line.trim()));
                }
            }
        }
        assert!(
            bad.is_empty(),
            "section citations must read \"semantics §n\" (fstore-core/docs/semantics.md):\n{}",
            bad.join("\n")
        );
    }
}
