//! The online store trait ([semantics §6](crate::docs::semantics)).

use std::fmt::Debug;
use std::future::Future;
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;

use crate::error::Result;
use crate::model::ResolvedView;

/// Alias used everywhere an online store is held (`Arc<DynOnlineStore>`).
pub type DynOnlineStore = dyn OnlineStore;

/// One stored row of a view for one entity: what online adapters persist.
///
/// The entity key and the payload are opaque bytes produced by core's codec
/// ([`crate::adapter`]); adapters never interpret them. The payload is a
/// reference-counted [`Bytes`], so an adapter hands back the buffer its client
/// read (a slice of fred's reply, a `Vec` it decoded) without copying it, and
/// cloning a row never copies its values.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OnlineRow {
    /// Entity key bytes ([`crate::adapter::encode_entity_keys`]).
    pub entity_key: Vec<u8>,
    /// Event time, UTC microseconds.
    pub event_ts: i64,
    /// Created time, UTC microseconds (`None` sorts before any value).
    pub created_ts: Option<i64>,
    /// Encoded feature values ([`crate::adapter::encode_payloads`]).
    /// `Vec<u8>` converts without a copy (`payload: vec.into()`).
    pub payload: Bytes,
}

impl OnlineRow {
    /// The ordering key `(event_ts, created_ts)`; a missing created time sorts first.
    pub fn version(&self) -> (i64, i64) {
        (self.event_ts, self.created_ts.unwrap_or(i64::MIN))
    }

    /// True when this row may replace `stored` under the newest-wins rule:
    /// its version is greater or equal (equal = the later write wins, so
    /// rewriting the same row is idempotent).
    pub fn supersedes(&self, stored: &Self) -> bool {
        self.version() >= stored.version()
    }
}

/// The address of a stored row: (view, entity key).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct OnlineKey {
    /// View name.
    pub view: String,
    /// Entity key bytes.
    pub entity_key: Vec<u8>,
}

/// What a backend supports. The facade and the testkit branch on this.
#[derive(Debug, Clone, Default)]
#[non_exhaustive]
pub struct OnlineCapabilities {
    /// Largest number of keys one backend round trip can read (the adapter
    /// chunks internally; the testkit reads more than this).
    pub max_read_batch: Option<usize>,
    /// Largest number of rows one backend round trip can write.
    pub max_write_batch: Option<usize>,
    /// The backend frees rows after `event_ts + ttl` by itself.
    pub native_ttl: bool,
    /// The backend stores aggregation tiles ([`OnlineStore::write_tiles`],
    /// [`OnlineStore::merge_tiles`], [`OnlineStore::read_tiles`]).
    pub tiles: bool,
    /// [`OnlineStore::read`] and [`OnlineStore::read_tiles`] end with
    /// [`crate::Error::Timeout`] once [`ReadOptions::timeout`] has passed, on
    /// every path (connecting included). The facade then adds no timer of its
    /// own around them (one timer per read instead of two); stores that do
    /// not declare this get the facade's timer. The testkit's
    /// `online_read_deadline` checks the claim against a frozen server.
    pub enforces_read_timeout: bool,
}

impl OnlineCapabilities {
    /// Sets `max_read_batch`.
    pub fn with_max_read_batch(mut self, n: usize) -> Self {
        self.max_read_batch = Some(n);
        self
    }
    /// Sets `max_write_batch`.
    pub fn with_max_write_batch(mut self, n: usize) -> Self {
        self.max_write_batch = Some(n);
        self
    }
    /// Sets `native_ttl`.
    pub fn with_native_ttl(mut self, v: bool) -> Self {
        self.native_ttl = v;
        self
    }
    /// Sets `tiles`.
    pub fn with_tiles(mut self, v: bool) -> Self {
        self.tiles = v;
        self
    }
    /// Sets `enforces_read_timeout`.
    pub fn with_enforces_read_timeout(mut self, v: bool) -> Self {
        self.enforces_read_timeout = v;
        self
    }
}

/// One hop tile of one aggregation feature of one entity ([semantics §11](crate::docs::semantics)).
///
/// `state` is opaque to adapters: core's versioned tile-state bytes (layout in
/// [`crate::agg`], referenced from the entity-key and payload layouts in [`crate::adapter`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Tile {
    /// Aggregation feature name.
    pub feature: String,
    /// Tile start, UTC microseconds (a multiple of the hop).
    pub start: i64,
    /// Event time after which the tile is never read again: tile start + hop
    /// + window + one hop (`i64::MAX` for lifetime windows).
    pub expires_at: i64,
    /// Encoded intermediate state.
    pub state: Vec<u8>,
}

impl Tile {
    /// The tile's field name inside an entity's tile set: `{feature}@{start}`.
    /// Adapters that key tiles by one string use this.
    pub fn field(&self) -> String {
        format!("{}@{}", self.feature, self.start)
    }
}

/// Tiles to store for one entity of a view.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TileWrite {
    /// Entity key bytes.
    pub entity_key: Vec<u8>,
    /// The tiles (each `(feature, start)` at most once).
    pub tiles: Vec<Tile>,
    /// Tiles of this entity whose `expires_at <= expire_before` may be removed
    /// (they can no longer be in any window read after these events).
    pub expire_before: i64,
}

/// Merges a stored tile state with a delta written after it: `(feature,
/// stored, delta) -> merged`. Supplied by core; adapters call it inside their
/// atomic read-modify-write.
pub type TileMergeFn = dyn Fn(&str, &[u8], &[u8]) -> Result<Vec<u8>> + Send + Sync;

/// Per-call write options.
#[derive(Debug, Clone, Default)]
#[non_exhaustive]
pub struct WriteOptions {
    /// Optional deadline for the whole call.
    pub timeout: Option<Duration>,
}

impl WriteOptions {
    /// Sets the deadline.
    pub fn with_timeout(mut self, t: Duration) -> Self {
        self.timeout = Some(t);
        self
    }
}

/// Per-call read options.
#[derive(Debug, Clone, Default)]
#[non_exhaustive]
pub struct ReadOptions {
    /// Optional deadline for the whole call.
    pub timeout: Option<Duration>,
}

impl ReadOptions {
    /// Sets the deadline.
    pub fn with_timeout(mut self, t: Duration) -> Self {
        self.timeout = Some(t);
        self
    }
}

/// Outcome of a write: every input row is either written or skipped.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct WriteSummary {
    /// Rows stored (new, newer, or an equal version rewritten).
    pub written: u64,
    /// Rows not stored because a strictly newer row was already there.
    pub skipped: u64,
}

impl std::ops::AddAssign for WriteSummary {
    fn add_assign(&mut self, o: Self) {
        self.written += o.written;
        self.skipped += o.skipped;
    }
}

/// A store of the latest row per (view, entity) for low-latency serving.
///
/// # Contract
///
/// * **Newest wins, idempotent.** Per (view, entity key) the store keeps the row
///   with the greatest [`OnlineRow::version`] ever written; an equal version
///   replaces the stored row (later write wins), a strictly older one is
///   skipped and counted in [`WriteSummary::skipped`]. This holds whatever the
///   arrival order, within one call (rows are applied in slice order) and
///   across concurrent callers (backends use a server-side compare-and-set or
///   the database's own timestamps, never read-then-write).
/// * **Reads are exact.** `read` returns one entry per requested key, aligned
///   with the request; `None` when nothing is stored. Rows are returned
///   whatever their age: TTL is enforced by core from `event_ts`, so backends
///   with native expiry must only ever expire rows that core would also call
///   expired.
/// * **Batching is the adapter's job.** Any number of keys or rows may be
///   passed; adapters split them at their limits ([`OnlineCapabilities`]) and
///   use as few round trips as the backend allows.
/// * Transient failures map to [`crate::Error::Timeout`],
///   [`crate::Error::Throttled`] or [`crate::Error::Unavailable`]; nothing is
///   ever reported as "not found" because a backend call failed.
///
/// The conformance suite in `fstore_core::testkit` (feature `testkit`) checks
/// all of this against a live backend.
#[async_trait]
pub trait OnlineStore: Send + Sync + Debug + 'static {
    /// Backend id (`"redis"`, `"memory"`…), used in errors and logs.
    fn backend(&self) -> &'static str;

    /// A stable identity of the store's data (backend + location + namespace,
    /// no secrets). Materialization watermarks are kept per (view, store id).
    fn store_id(&self) -> String;

    /// What this backend supports.
    fn capabilities(&self) -> OnlineCapabilities;

    /// Upserts rows of `view` under the newest-wins rule.
    ///
    /// # Errors
    /// Backend failures; on error some rows may have been written (re-running is
    /// safe: writes are idempotent).
    async fn write(
        &self,
        view: &ResolvedView,
        rows: Vec<OnlineRow>,
        opts: &WriteOptions,
    ) -> Result<WriteSummary>;

    /// Reads the stored rows at `keys`, aligned with `keys`.
    ///
    /// # Errors
    /// Backend failures; never a silent `None` for a failed lookup.
    async fn read(&self, keys: &[OnlineKey], opts: &ReadOptions) -> Result<Vec<Option<OnlineRow>>>;

    /// Removes every row of the view `view` (and its aggregation tiles).
    ///
    /// # Errors
    /// Backend failures.
    async fn delete_view(&self, view: &str) -> Result<()>;

    /// Stores aggregation tiles, **replacing** any stored tile with the same
    /// `(view, entity, feature, start)` (materialization: re-running gives
    /// the same tiles). Tiles past `expire_before` may be dropped.
    ///
    /// # Errors
    /// [`crate::Error::NotSupported`] unless [`OnlineCapabilities::tiles`];
    /// backend failures (re-running is safe).
    async fn write_tiles(
        &self,
        view: &ResolvedView,
        writes: Vec<TileWrite>,
        opts: &WriteOptions,
    ) -> Result<()> {
        let _ = (view, writes, opts);
        Err(crate::Error::NotSupported {
            backend: self.backend(),
            operation: "write_tiles",
        })
    }

    /// Merges delta tiles into the stored ones (push): per tile, stored ⊕
    /// delta with `merge`, or the delta where nothing is stored. Atomic per
    /// entity: concurrent callers lose nothing (N pushers × E events → count
    /// N·E). If `merge` fails for a tile, nothing of that entity is written.
    ///
    /// # Errors
    /// [`crate::Error::NotSupported`] unless [`OnlineCapabilities::tiles`];
    /// errors of `merge` (e.g. [`crate::Error::AggregationDefinitionMismatch`]);
    /// backend failures.
    async fn merge_tiles(
        &self,
        view: &ResolvedView,
        writes: Vec<TileWrite>,
        merge: &TileMergeFn,
        opts: &WriteOptions,
    ) -> Result<()> {
        let _ = (view, writes, merge, opts);
        Err(crate::Error::NotSupported {
            backend: self.backend(),
            operation: "merge_tiles",
        })
    }

    /// Reads every stored tile of each (view, entity key), aligned with
    /// `keys` (empty when none), in one backend call where the backend allows.
    /// A backend may return several tiles with the same `(feature, start)`
    /// (e.g. append-only push rows): core merges them in the returned order,
    /// so they come in write order.
    ///
    /// # Errors
    /// [`crate::Error::NotSupported`] unless [`OnlineCapabilities::tiles`];
    /// backend failures.
    async fn read_tiles(&self, keys: &[OnlineKey], opts: &ReadOptions) -> Result<Vec<Vec<Tile>>> {
        let _ = (keys, opts);
        Err(crate::Error::NotSupported {
            backend: self.backend(),
            operation: "read_tiles",
        })
    }
}

/// Convenience methods on every [`OnlineStore`]. Blanket-implemented; adapters
/// must not implement it.
pub trait OnlineStoreExt: OnlineStore {
    /// Reads one (view, entity key).
    fn read_one(
        &self,
        view: &str,
        entity_key: &[u8],
    ) -> impl Future<Output = Result<Option<OnlineRow>>> + Send {
        let key = OnlineKey {
            view: view.to_owned(),
            entity_key: entity_key.to_vec(),
        };
        async move {
            let mut rows = self
                .read(std::slice::from_ref(&key), &ReadOptions::default())
                .await?;
            Ok(rows.pop().flatten())
        }
    }
}

impl<T: OnlineStore + ?Sized> OnlineStoreExt for T {}
