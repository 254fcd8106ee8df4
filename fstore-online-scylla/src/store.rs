//! [`ScyllaOnlineStore`]: all driver I/O.

use std::collections::HashMap;
use std::fmt;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use chrono::Utc;
use fstore_core::adapter::display_entity_key;
use fstore_core::{
    OnlineCapabilities, OnlineKey, OnlineRow, OnlineStore, ReadOptions, ResolvedView, Tile,
    TileMergeFn, TileWrite, WriteOptions, WriteSummary,
};
use futures::{StreamExt, TryStreamExt, stream};
use scylla::client::session::Session;
use scylla::statement::Consistency;
use scylla::statement::prepared::PreparedStatement;
use tokio::sync::OnceCell;

use crate::cell;
use crate::client::{Named, Val, open_session};
use crate::config::{BACKEND, ScyllaOnlineStoreBuilder, Settings};
use crate::cql::{Statements, TileStatements};
use crate::error::Error;
use crate::timestamp::{Plan, Stored, delete_timestamp, plan_write, ttl_seconds};

/// The prepared data-path statements, prepared once per store.
struct Prepared {
    insert: PreparedStatement,
    select: PreparedStatement,
    probe: PreparedStatement,
    delete: PreparedStatement,
    scan: PreparedStatement,
}

impl ScyllaOnlineStoreBuilder {
    /// Validates the configuration and returns the store. No I/O: the session
    /// (token-aware, DC-aware when `local_dc` is set) opens on first use;
    /// statements are prepared lazily, once; the schema is **not** created
    /// (see [`ScyllaOnlineStore::ensure_schema`]).
    ///
    /// # Errors
    /// `InvalidInput` / `UnknownConfigKey` for bad configuration.
    pub fn build(self) -> fstore_core::Result<ScyllaOnlineStore> {
        Ok(ScyllaOnlineStore::new(self.settings()?))
    }

    /// [`build`](Self::build), then opens the session now: the store is known
    /// to reach its cluster.
    ///
    /// # Errors
    /// As `build`; `Unavailable` when no contact point answers; `Timeout`
    /// after `connect_timeout` (the whole session build is bounded: the driver
    /// alone can hang on a listener that never answers).
    pub async fn connect(self) -> fstore_core::Result<ScyllaOnlineStore> {
        let store = self.build()?;
        store.session().await?;
        Ok(store)
    }
}

/// An [`OnlineStore`] on Apache Cassandra or ScyllaDB.
///
/// Built by [`ScyllaOnlineStoreBuilder::build`] (lazy) or
/// [`ScyllaOnlineStoreBuilder::connect`]; the schema is created
/// only by [`ensure_schema`](Self::ensure_schema).
///
/// # Table layout
///
/// One table (`<keyspace>.<table>`, default `fstore.online_rows`) holds every
/// view: one partition per (entity key, view), one row holding the view's
/// encoded features, not one row per feature.
///
/// ```text
/// CREATE TABLE fstore.online_rows (
///     entity_key blob,     -- fstore_core::adapter::encode_entity_key
///     view       text,
///     payload    blob,     -- version + payload in one cell (see below)
///     event_ts   bigint,   -- µs since epoch, UTC
///     created_ts bigint,   -- µs since epoch, UTC; null when the view has none
///     write_ts   bigint,   -- the USING TIMESTAMP of this row's cells
///     PRIMARY KEY ((entity_key, view)))
/// ```
///
/// # Newest wins: write timestamps planned from the version
///
/// Each row is written `USING TIMESTAMP` derived from its version, so the
/// cluster keeps the right row on every replica, whatever the arrival order:
///
/// * the write first reads the partition's stored `(event_ts, created_ts,
///   write_ts)` (one single-partition read);
/// * a strictly newer stored version → the row is **skipped** and counted;
/// * otherwise it is written with timestamp `max(event_ts, write_ts + 1)`.
///
/// A pure 64-bit function of `(event_ts, created_ts)` cannot do this: two
/// microsecond instants are 128 bits (the conformance suite writes versions of
/// one event whose created times differ by 1 µs), ScyllaDB refuses timestamps
/// over three days in the future, and equal versions would get equal
/// timestamps, which Cassandra and ScyllaDB break by tombstone, expiry and then
/// *cell value* — never by arrival. With the plan above, every accepted write of
/// a partition carries a strictly larger timestamp than the stored one: newest
/// version wins, **an equal version goes to the later write**, and `skipped` is
/// exact. Because the timestamp is the event time whenever the event is newer
/// than what is stored, *concurrent* writers racing on one partition are still
/// ordered by event time by the cluster; only racers that share the same
/// `event_ts` microsecond, or whose events are both at or below the stored
/// timestamp, plan the **same** timestamp.
///
/// # Ties: one cell holds version and payload
///
/// Cassandra and ScyllaDB settle equal timestamps *cell by cell*, keeping the
/// greater value of each cell. With the version and the payload in separate
/// cells, two racers with equal timestamps could leave one writer's payload
/// under the other's version (a torn row), and later writes planned from that
/// version could be skipped. So the `payload` cell holds the row whole:
/// a marker byte, `event_ts` and `created_ts` as order-preserving big-endian
/// integers, a created-is-set flag, then the core payload. A tie is decided
/// once, by comparing these bytes: the greater `(event_ts, created_ts)` wins
/// (newest wins between racers too), and equal versions resolve identically on
/// every replica. Reads and the write probe take the version from this cell;
/// the `event_ts`/`created_ts` columns are still written for tools and for
/// rows stored before this layout (read through the columns as before). A
/// racer whose row loses a tie is still reported as written (the cluster, not
/// the client, decides), so `skipped` undercounts only under such races.
///
/// Event times must not be `i64::MIN` (reserved by CQL), and on ScyllaDB with
/// its default `restrict_future_timestamp` not more than three days in the
/// future (the server refuses them). Nothing else should write this table with
/// server-assigned timestamps (wall-clock "now" would beat every event time).
///
/// # TTL
///
/// `USING TTL` = `event_ts + view ttl − now` rounded up, plus `ttl_grace`
/// (default 60 s, at least 1 s) so server clocks never expire a row core would
/// still serve. A row already expired at write time is not written and counts
/// as skipped. A TTL over CQL's 20-year maximum is written as "no expiry"
/// rather than capped. Reads still enforce the TTL by event time (core does).
///
/// # Round trips, with figures
///
/// Reads: one single-partition `SELECT` per key, prepared, token-aware (routed
/// straight to a replica), `read_concurrency` in flight — never `IN` on the
/// partition key, which makes one coordinator fan out to every replica set and
/// wait for the slowest. Writes: per row, probe then insert, pipelined with
/// `write_concurrency` rows in flight. Every row is its own partition, so a
/// "batch per partition" holds a single statement; a multi-partition unlogged
/// batch only moves the fan-out to one coordinator (and a logged batch adds a
/// batchlog write). `cargo bench -p fstore-online-scylla` prints the figures
/// for each strategy against `FSTORE_TEST_SCYLLA_URI` (or the in-process test
/// server, whose single lock hides a cluster's parallelism). The read-before-
/// write roughly halves write throughput against a blind insert (2 round trips
/// per row instead of 1); it buys exact `skipped` counts and "equal version:
/// later write wins", which blind timestamps cannot give.
///
/// # Aggregation tiles ([semantics §11](fstore_core::docs::semantics)): no LWT
///
/// A second table, `<keyspace>.<table>_tiles`, holds hop tiles: one partition
/// per (entity key, view), one row per stored piece of a tile.
///
/// ```text
/// CREATE TABLE fstore.online_rows_tiles (
///     entity_key blob,    -- fstore_core::adapter::encode_entity_key
///     view       text,
///     feature    text,    -- aggregation feature name
///     start      bigint,  -- tile start, µs since epoch, UTC (a multiple of the hop)
///     seq        bigint,  -- i64::MIN: the materialized row; else a push row's sequence
///     writer     bigint,  -- 0 for the materialized row; else the pushing store's random id
///     cell       blob,    -- layout version 1: u8 1, then core's tile state bytes
///                         --   (fstore_core::agg, "Tile state bytes", versioned itself)
///     expires_at bigint,  -- event time after which no window reads the tile
///     PRIMARY KEY ((entity_key, view), feature, start, seq, writer))
/// ```
///
/// A tile's value is the merge, in clustering order, of its rows: the
/// materialized row (if any) first, then push rows by `seq`. The design needs
/// no conditional writes (the in-process test server has no LWT, and none is
/// needed on ScyllaDB either):
///
/// * **Push** ([`merge_tiles`](OnlineStore::merge_tiles)) appends one row per
///   delta tile under a primary key no other push uses: `seq` is strictly
///   increasing within the process (wall-clock µs, bumped past the last one),
///   `writer` a random 64-bit id per store. Writers never overwrite each
///   other, so N concurrent pushers × E events give N·E, with no
///   read-modify-write to lose. Before writing, the push reads the partition
///   and runs core's merge over the stored rows and the delta, so a definition
///   mismatch or an int64 overflow is an error and nothing of that entity is
///   written (a concurrent push can still make a later *read* overflow; the
///   read then fails with the named error). Sequential pushes are merged in
///   write order (ties of `first`/`last` go to the later push); pushes from
///   different processes are ordered by their clocks.
/// * **Materialization** ([`write_tiles`](OnlineStore::write_tiles)) writes
///   each rebuilt tile as its materialized row, a fixed key (`seq = i64::MIN,
///   writer = 0`) and bytes that depend only on the offline events, and
///   deletes that tile's push rows (read just before) in the same
///   single-partition batch (atomic and isolated on ScyllaDB/Cassandra).
///   Re-running writes the same row over itself and finds no push rows: the
///   same tiles. A push that lands between that read and the batch survives
///   and is merged on top — the race core documents for every adapter.
/// * **Expiry**: every write deletes, in its batch and by full primary key,
///   the partition's rows with `expires_at <= expire_before` (event time: older
///   than the longest window plus one hop). There is no wall-clock TTL (as for
///   Redis and DynamoDB): an idle entity keeps its last tiles until
///   [`delete_view`](OnlineStore::delete_view). Range deletes would save the
///   read on real clusters; the test server only deletes by full key.
/// * **Round trips**: a read is one single-partition `SELECT` per (view,
///   entity), `read_concurrency` in flight, exactly like row reads. A push or
///   a materialization is one `SELECT` and one batch per entity (more batches
///   only past 256 statements, each a group of whole tiles).
/// * **Cost**: push rows accumulate until the next materialization of their
///   tile or until they expire; every read and push merges them. Materialize
///   regularly when pushes are frequent.
///
/// # Deleting a view
///
/// [`delete_view`](OnlineStore::delete_view) scans the table (paged and
/// streamed: partitions are deleted as pages arrive, `write_concurrency` at a
/// time, so memory stays bounded; cost proportional to the whole table: an
/// administrative operation), and for each
/// partition of the view writes a partition tombstone above the stored row and a
/// deletion marker (only `write_ts`) above that, so later writes of the same
/// keys — even of the same or older versions — are planned above the tombstone
/// and stored normally. Markers are a few bytes per deleted key and are kept.
pub struct ScyllaOnlineStore {
    session: OnceCell<Session>,
    settings: Settings,
    statements: Statements,
    prepared: OnceCell<Arc<Prepared>>,
    tile_statements: TileStatements,
    tile_prepared: OnceCell<Arc<tiles::TilePrepared>>,
    /// Random id in the key of this store's push rows (tiles).
    writer: i64,
}

mod tiles;

impl fmt::Debug for ScyllaOnlineStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ScyllaOnlineStore")
            .field("settings", &self.settings)
            .finish_non_exhaustive()
    }
}

/// Runs `fut` under an optional deadline.
async fn deadline<T>(
    timeout: Option<Duration>,
    what: &str,
    fut: impl Future<Output = fstore_core::Result<T>>,
) -> fstore_core::Result<T> {
    match timeout {
        None => fut.await,
        Some(t) => match tokio::time::timeout(t, fut).await {
            Ok(r) => r,
            Err(_) => Err(Error::Deadline {
                what: what.to_owned(),
                timeout: t,
            }
            .into()),
        },
    }
}

fn now_micros() -> i64 {
    Utc::now().timestamp_micros()
}

/// The stored version of a probed row: from the cell when it carries one,
/// else (rows written before the one-cell layout) from the columns.
fn stored_version(
    cell: Option<&[u8]>,
    event_ts: Option<i64>,
    created_ts: Option<i64>,
) -> Result<Option<(i64, i64)>, String> {
    match cell.map(cell::decode).transpose()? {
        Some(cell::Cell::Versioned {
            event_ts,
            created_ts,
            ..
        }) => Ok(Some((event_ts, created_ts.unwrap_or(i64::MIN)))),
        _ => Ok(event_ts.map(|e| (e, created_ts.unwrap_or(i64::MIN)))),
    }
}

/// The row a read returns, from the stored cell (version and payload) or, for
/// a cell in the old layout, the payload cell plus the version columns.
fn row_from_cell(
    entity_key: &[u8],
    stored: Vec<u8>,
    event_ts: Option<i64>,
    created_ts: Option<i64>,
) -> Result<Option<OnlineRow>, String> {
    match cell::decode(&stored)? {
        cell::Cell::Versioned {
            event_ts,
            created_ts,
            payload,
        } => {
            // The payload is the cell's tail: shared, not copied.
            let at = stored.len() - payload.len();
            Ok(Some(OnlineRow {
                entity_key: entity_key.to_vec(),
                event_ts,
                created_ts,
                payload: fstore_core::bytes::Bytes::from(stored).slice(at..),
            }))
        }
        cell::Cell::Legacy(_) => match event_ts {
            Some(event_ts) => Ok(Some(OnlineRow {
                entity_key: entity_key.to_vec(),
                event_ts,
                created_ts,
                payload: stored.into(),
            })),
            None => {
                Err("stored row has a payload but no event_ts (written outside fstore?)".into())
            }
        },
    }
}

impl ScyllaOnlineStore {
    pub(crate) fn new(settings: Settings) -> Self {
        let statements =
            Statements::new(&settings.keyspace, &settings.table, &settings.replication);
        Self {
            session: OnceCell::new(),
            tile_statements: TileStatements::new(&settings.keyspace, &settings.table),
            settings,
            statements,
            prepared: OnceCell::new(),
            tile_prepared: OnceCell::new(),
            writer: tiles::writer_id(),
        }
    }

    /// The session, opened on first use.
    async fn session(&self) -> Result<&Session, Error> {
        self.session
            .get_or_try_init(|| open_session(&self.settings))
            .await
    }

    /// Creates the keyspace (with the configured replication), the table and
    /// the aggregation tile table if they do not exist. Never called implicitly: run it once at deploy time
    /// (or let your schema tooling run the same CQL, see the type docs).
    ///
    /// # Errors
    /// Backend failures (e.g. missing permissions).
    pub async fn ensure_schema(&self) -> fstore_core::Result<()> {
        for q in self.schema_cql() {
            self.session()
                .await?
                .query_unpaged(q, ())
                .await
                .map_err(|source| Error::Execute {
                    what: format!("`{q}`"),
                    source,
                })?;
        }
        Ok(())
    }

    /// The CQL `ensure_schema` runs, for schema tooling that prefers to own DDL.
    pub fn schema_cql(&self) -> [&str; 3] {
        [
            &self.statements.create_keyspace,
            &self.statements.create_table,
            &self.tile_statements.create_table,
        ]
    }

    async fn prepare_one(
        &self,
        cql: &str,
        consistency: Consistency,
    ) -> Result<PreparedStatement, Error> {
        let mut p = self
            .session()
            .await?
            .prepare(cql)
            .await
            .map_err(|source| Error::Prepare {
                statement: cql.to_owned(),
                source,
            })?;
        p.set_consistency(consistency);
        // Every statement carries its own timestamp (or is a read): retrying is safe.
        p.set_is_idempotent(true);
        Ok(p)
    }

    async fn prepared(&self) -> fstore_core::Result<Arc<Prepared>> {
        let p = self
            .prepared
            .get_or_try_init(|| async {
                let s = &self.settings;
                let insert = self.prepare_one(&self.statements.insert, s.write_consistency).await?;
                let names: Vec<&str> = insert.get_variable_col_specs().iter().map(|c| c.name()).collect();
                let honours_using = names.contains(&"[timestamp]") && names.contains(&"[ttl]");
                if !honours_using {
                    if !s.in_process_test_server {
                        return Err(Error::Result {
                            what: format!("preparing `{}`", self.statements.insert),
                            message: format!(
                                "the server reported bind markers {names:?} without [timestamp] and [ttl]: \
                                 it ignores USING TIMESTAMP/TTL and cannot enforce newest-wins"
                            ),
                        });
                    }
                    tracing::warn!(
                        backend = BACKEND,
                        "server ignores USING TIMESTAMP/TTL (in-process test server): newest-wins and TTL not enforced"
                    );
                }
                Ok(Arc::new(Prepared {
                    insert,
                    select: self.prepare_one(&self.statements.select, s.read_consistency).await?,
                    probe: self.prepare_one(&self.statements.probe, s.read_consistency).await?,
                    delete: self.prepare_one(&self.statements.delete, s.write_consistency).await?,
                    scan: self.prepare_one(&self.statements.scan, s.read_consistency).await?,
                }))
            })
            .await
            .map_err(fstore_core::Error::from)?;
        Ok(Arc::clone(p))
    }

    async fn write_rows(
        &self,
        view: &ResolvedView,
        rows: Vec<OnlineRow>,
    ) -> fstore_core::Result<WriteSummary> {
        let total = rows.len() as u64;
        if rows.is_empty() {
            return Ok(WriteSummary::default());
        }
        let name = view.name();
        // 1. One row per entity key: the newest, ties to the later in slice order.
        let mut best: HashMap<&[u8], usize> = HashMap::with_capacity(rows.len());
        for (i, r) in rows.iter().enumerate() {
            best.entry(&r.entity_key)
                .and_modify(|j| {
                    if r.supersedes(&rows[*j]) {
                        *j = i;
                    }
                })
                .or_insert(i);
        }
        // Rows of a key with the winner's exact version were written too (an
        // equal version is a rewrite, later wins): they count as the winner
        // does, not as skipped (`WriteSummary::skipped` = strictly older).
        let mut same_version = vec![0u64; rows.len()];
        for (i, r) in rows.iter().enumerate() {
            if let Some(&w) = best.get(r.entity_key.as_slice())
                && w != i
                && r.version() == rows[w].version()
            {
                same_version[w] += 1;
            }
        }
        let mut keep: Vec<usize> = best.into_values().collect();
        keep.sort_unstable();
        // 2. TTLs before sending anything: rows already expired are skipped.
        let now = now_micros();
        let mut jobs = Vec::with_capacity(keep.len());
        for i in keep {
            let r = &rows[i];
            if r.event_ts == i64::MIN {
                return Err(fstore_core::Error::invalid(format!(
                    "feature view '{name}', entity {}: event time {} is the reserved CQL timestamp",
                    display_entity_key(&r.entity_key),
                    r.event_ts
                )));
            }
            if let Some(ttl) = ttl_seconds(r.event_ts, view.view.ttl, now, self.settings.ttl_grace)
            {
                jobs.push((i, ttl));
            }
        }
        // 3. Per row, pipelined with bounded concurrency: read the stored
        //    version, then insert with the planned timestamp (or skip).
        let p = self.prepared().await?;
        let (p, rows, same_version) = (&p, &rows, &same_version);
        let written = stream::iter(jobs)
            .map(move |(i, ttl)| {
                let r = &rows[i];
                async move {
                    let what = || {
                        format!(
                            "writing feature view '{name}', entity {}",
                            display_entity_key(&r.entity_key)
                        )
                    };
                    let key = [
                        ("entity_key", Val::Blob(&r.entity_key)),
                        ("view", Val::Text(name)),
                    ];
                    let res = self
                        .session()
                        .await?
                        .execute_unpaged(&p.probe, Named(&key))
                        .await
                        .map_err(|source| Error::Execute {
                            what: what(),
                            source,
                        })?;
                    let stored = res
                        .into_rows_result()
                        .map_err(|e| Error::Result {
                            what: what(),
                            message: e.to_string(),
                        })?
                        .maybe_first_row::<(Option<Vec<u8>>, Option<i64>, Option<i64>, Option<i64>)>()
                        .map_err(|e| Error::Result {
                            what: what(),
                            message: e.to_string(),
                        })?;
                    let stored = match stored {
                        None | Some((_, _, _, None)) => None,
                        Some((cell, e, c, Some(write_ts))) => Some(Stored {
                            version: stored_version(cell.as_deref(), e, c).map_err(|m| {
                                Error::Result {
                                    what: what(),
                                    message: m,
                                }
                            })?,
                            write_ts,
                        }),
                    };
                    let ts = match plan_write(r.version(), stored) {
                        Ok(Plan::Skip) => return Ok::<u64, fstore_core::Error>(0),
                        Ok(Plan::Write(ts)) => ts,
                        Err(e) => {
                            return Err(fstore_core::Error::invalid(format!("{}: {e}", what())));
                        }
                    };
                    // Version and payload in one cell: an equal-timestamp tie is
                    // settled once for the whole row (see `cell`).
                    let cell = cell::encode(r.event_ts, r.created_ts, &r.payload);
                    let values = [
                        ("entity_key", Val::Blob(&r.entity_key)),
                        ("view", Val::Text(name)),
                        ("payload", Val::Blob(&cell)),
                        ("event_ts", Val::BigInt(r.event_ts)),
                        ("created_ts", Val::OptBigInt(r.created_ts)),
                        ("write_ts", Val::BigInt(ts)),
                        ("[timestamp]", Val::BigInt(ts)),
                        ("[ttl]", Val::Int(ttl)),
                    ];
                    self.session()
                        .await?
                        .execute_unpaged(&p.insert, Named(&values))
                        .await
                        .map_err(|source| Error::Execute {
                            what: what(),
                            source,
                        })?;
                    Ok(1 + same_version[i])
                }
            })
            .buffer_unordered(self.settings.write_concurrency)
            .try_fold(0u64, |acc, n| async move { Ok(acc + n) })
            .await?;
        Ok(WriteSummary {
            written,
            skipped: total - written,
        })
    }

    async fn read_rows(&self, keys: &[OnlineKey]) -> fstore_core::Result<Vec<Option<OnlineRow>>> {
        if keys.is_empty() {
            return Ok(Vec::new());
        }
        let p = self.prepared().await?;
        let p = &p;
        let rows = stream::iter(0..keys.len())
            .map(move |i| async move {
                let k = &keys[i];
                let what = || {
                    format!(
                        "reading feature view '{}', entity {}",
                        k.view,
                        display_entity_key(&k.entity_key)
                    )
                };
                let values = [
                    ("entity_key", Val::Blob(&k.entity_key)),
                    ("view", Val::Text(&k.view)),
                ];
                let res = self
                    .session()
                    .await?
                    .execute_unpaged(&p.select, Named(&values))
                    .await
                    .map_err(|source| Error::Execute {
                        what: what(),
                        source,
                    })?;
                let rows = res.into_rows_result().map_err(|e| Error::Result {
                    what: what(),
                    message: e.to_string(),
                })?;
                let row = rows
                    .maybe_first_row::<(Option<Vec<u8>>, Option<i64>, Option<i64>, Option<i64>)>()
                    .map_err(|e| Error::Result {
                        what: what(),
                        message: e.to_string(),
                    })?;
                match row {
                    // no row, or a deletion marker (only write_ts set)
                    None | Some((None, None, None, Some(_))) => Ok(None),
                    Some((Some(stored), event_ts, created_ts, _)) => {
                        row_from_cell(&k.entity_key, stored, event_ts, created_ts).map_err(|m| {
                            Error::Result {
                                what: what(),
                                message: m,
                            }
                        })
                    }
                    Some(_) => Err(Error::Result {
                        what: what(),
                        message:
                            "stored row has a null payload or event_ts (written outside fstore?)"
                                .into(),
                    }),
                }
            })
            .buffered(self.settings.read_concurrency)
            .try_collect::<Vec<_>>()
            .await?;
        Ok(rows)
    }

    async fn delete_rows(&self, view: &str) -> fstore_core::Result<()> {
        let p = self.prepared().await?;
        let what = format!("scanning for rows of feature view '{view}'");
        let pager = self
            .session()
            .await?
            .execute_iter(p.scan.clone(), Named(&[]))
            .await
            .map_err(|source| Error::Pager {
                what: what.clone(),
                source,
            })?;
        let stream = pager
            .rows_stream::<(Vec<u8>, String, Option<i64>)>()
            .map_err(|e| Error::Result {
                what: what.clone(),
                message: e.to_string(),
            })?;
        // Streamed: rows are deleted as the scan pages in, at most
        // `write_concurrency` at a time; memory does not grow with the view.
        let what = &what;
        // The driver's row error is large; it is boxed into core's error below.
        #[allow(clippy::result_large_err)]
        let victims = stream
            .map(move |row| {
                let (key, v, write_ts) = row.map_err(|source| Error::NextRow {
                    what: what.clone(),
                    source,
                })?;
                if v != view {
                    return Ok(None);
                }
                // A row fstore did not write (no write_ts) is covered from 0 µs
                // (1970) up: fstore's own timestamps are event times.
                let ts = delete_timestamp(write_ts.unwrap_or(0)).map_err(|e| Error::Result {
                    what: what.clone(),
                    message: e.to_string(),
                })?;
                Ok(Some((key, ts)))
            })
            .try_filter_map(|x| async move { Ok::<_, Error>(x) });
        let p = &p;
        victims
            .map_ok(move |(key, ts)| async move {
                let what = || {
                    format!(
                        "deleting feature view '{view}', entity {}",
                        display_entity_key(&key)
                    )
                };
                // 1. A partition tombstone above the stored row.
                let mut del = p.delete.clone();
                del.set_timestamp(Some(ts));
                let pk = [("entity_key", Val::Blob(&key)), ("view", Val::Text(view))];
                self.session()
                    .await?
                    .execute_unpaged(&del, Named(&pk))
                    .await
                    .map_err(|source| Error::Execute {
                        what: what(),
                        source,
                    })?;
                // 2. A deletion marker just above the tombstone (a tie would go
                //    to the tombstone): data cells null, `write_ts` set, so the
                //    next write of this partition is planned above both.
                let ts = delete_timestamp(ts).map_err(|e| Error::Result {
                    what: what(),
                    message: e.to_string(),
                })?;
                let values = [
                    ("entity_key", Val::Blob(&key)),
                    ("view", Val::Text(view)),
                    ("payload", Val::OptBlob(None)),
                    ("event_ts", Val::OptBigInt(None)),
                    ("created_ts", Val::OptBigInt(None)),
                    ("write_ts", Val::BigInt(ts)),
                    ("[timestamp]", Val::BigInt(ts)),
                    ("[ttl]", Val::Int(0)),
                ];
                self.session()
                    .await?
                    .execute_unpaged(&p.insert, Named(&values))
                    .await
                    .map(drop)
                    .map_err(|source| Error::Execute {
                        what: what(),
                        source,
                    })
            })
            .try_buffer_unordered(self.settings.write_concurrency)
            .try_collect::<()>()
            .await?;
        Ok(())
    }
}

#[async_trait]
impl OnlineStore for ScyllaOnlineStore {
    fn backend(&self) -> &'static str {
        BACKEND
    }

    fn store_id(&self) -> String {
        let mut cps = self.settings.contact_points.clone();
        cps.sort();
        format!(
            "{BACKEND}://{}/{}.{}",
            cps.join(","),
            self.settings.keyspace,
            self.settings.table
        )
    }

    fn capabilities(&self) -> OnlineCapabilities {
        OnlineCapabilities::default()
            .with_native_ttl(true)
            .with_tiles(true)
            // `read` and `read_tiles` run whole (session, statement
            // preparation, queries) under `ReadOptions::timeout`; running out
            // is `Error::Deadline`, a timeout.
            .with_enforces_read_timeout(true)
    }

    /// Read-before-write planning; see the type docs.
    async fn write(
        &self,
        view: &ResolvedView,
        rows: Vec<OnlineRow>,
        opts: &WriteOptions,
    ) -> fstore_core::Result<WriteSummary> {
        deadline(opts.timeout, "write", self.write_rows(view, rows)).await
    }

    async fn read(
        &self,
        keys: &[OnlineKey],
        opts: &ReadOptions,
    ) -> fstore_core::Result<Vec<Option<OnlineRow>>> {
        deadline(opts.timeout, "read", self.read_rows(keys)).await
    }

    /// See the type docs ("Deleting a view"); also deletes the view's tiles.
    async fn delete_view(&self, view: &str) -> fstore_core::Result<()> {
        self.delete_rows(view).await?;
        self.tiles_delete_view(view).await
    }

    /// See the type docs ("Aggregation tiles").
    async fn write_tiles(
        &self,
        view: &ResolvedView,
        writes: Vec<TileWrite>,
        opts: &WriteOptions,
    ) -> fstore_core::Result<()> {
        deadline(
            opts.timeout,
            "write_tiles",
            self.tiles_write(view, writes, None),
        )
        .await
    }

    /// See the type docs ("Aggregation tiles").
    async fn merge_tiles(
        &self,
        view: &ResolvedView,
        writes: Vec<TileWrite>,
        merge: &TileMergeFn,
        opts: &WriteOptions,
    ) -> fstore_core::Result<()> {
        deadline(
            opts.timeout,
            "merge_tiles",
            self.tiles_write(view, writes, Some(merge)),
        )
        .await
    }

    /// See the type docs ("Aggregation tiles").
    async fn read_tiles(
        &self,
        keys: &[OnlineKey],
        opts: &ReadOptions,
    ) -> fstore_core::Result<Vec<Vec<Tile>>> {
        deadline(opts.timeout, "read_tiles", self.tiles_read(keys)).await
    }
}

#[cfg(test)]
mod cell_row_tests {
    use super::*;

    /// Item 2: a stored CQL row (cell + columns) of any bytes decodes to a
    /// row or a named error, never a panic.
    #[test]
    fn stored_rows_never_panic() {
        let seeds = vec![
            cell::encode(5, Some(6), b"\x01\x00\x00"),
            cell::encode(-5, None, b""),
            b"\x01\x00\x00".to_vec(),
        ];
        fstore_core::testkit::decoder_never_panics(
            "scylla stored row",
            &seeds,
            fstore_core::testkit::DECODER_CASES,
            |b| {
                for (e, c) in [(Some(1), None), (None, Some(2))] {
                    let _ = stored_version(Some(b), e, c);
                    if let Ok(Some(row)) = row_from_cell(b"k", b.to_vec(), e, c) {
                        // What a read returns decodes like any payload (core's
                        // own property covers the payload bytes).
                        let _ = fstore_core::adapter::decode_payloads(
                            &[Some(&row.payload)],
                            &[fstore_core::FeatureField::new(
                                "x",
                                fstore_core::ValueType::Int64,
                            )],
                        );
                    }
                }
                Ok(())
            },
        );
    }

    #[test]
    fn versions_come_from_the_cell_not_the_columns() {
        let c = cell::encode(10, Some(3), b"p");
        // Torn columns (another writer's version) are ignored.
        assert_eq!(
            stored_version(Some(&c), Some(99), Some(99)),
            Ok(Some((10, 3)))
        );
        let row = row_from_cell(b"k", c, Some(99), None).unwrap().unwrap();
        assert_eq!(
            (row.event_ts, row.created_ts, &row.payload[..]),
            (10, Some(3), &b"p"[..])
        );
        // Old layout: the columns.
        assert_eq!(
            stored_version(Some(b"\x01"), Some(7), None),
            Ok(Some((7, i64::MIN)))
        );
        assert!(row_from_cell(b"k", b"\x01".to_vec(), None, None).is_err());
    }
}
