//! Documentation-only modules.

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
/// ## Errors and configuration
///
/// Map transient driver failures to [`crate::Error::Timeout`],
/// [`crate::Error::Throttled`] or [`crate::Error::Unavailable`] (retryable),
/// everything else to [`crate::Error::Backend`] with your `BACKEND` id. Follow
/// the builder pattern: typed setters, a `ConfigKey` enum, `from_env()` reading
/// only your `FSTORE_<NAME>_*` prefix, validation in `build()`, and a
/// hand-written `Debug` that never prints secrets.
pub mod writing_a_backend {}
