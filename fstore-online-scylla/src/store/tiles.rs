//! Aggregation tiles ([semantics §11](fstore_core::docs::semantics)) without
//! lightweight transactions: one partition per (entity key, view), append-only
//! push rows merged at read. The layout and the argument are in the docs of
//! [`ScyllaOnlineStore`] ("Aggregation tiles").

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};

use fstore_core::adapter::display_entity_key;
use fstore_core::{OnlineKey, ResolvedView, Tile, TileMergeFn, TileWrite};
use futures::{StreamExt, TryStreamExt, stream};
use scylla::statement::batch::{Batch, BatchType};
use scylla::statement::prepared::PreparedStatement;

use super::ScyllaOnlineStore;
use crate::client::{Named, Val};
use crate::error::Error;

/// Version of the tile cell layout (the first byte of every `cell`).
pub(crate) const TILE_CELL_VERSION: u8 = 1;

/// `seq` of the one materialized row of a tile (sorts before every push row).
pub(crate) const BASE_SEQ: i64 = i64::MIN;

/// Statements per batch: a single-partition batch is applied atomically and
/// in isolation; the cap keeps it well under the server's batch size limits.
const BATCH_STATEMENTS: usize = 256;

/// The prepared tile statements, prepared once per store on first tile use.
pub(super) struct TilePrepared {
    insert: PreparedStatement,
    select: PreparedStatement,
    delete_row: PreparedStatement,
    delete_partition: PreparedStatement,
    scan: PreparedStatement,
}

/// The stored cell: `u8 version (= 1)` + core's tile-state bytes.
pub(crate) fn encode_cell(state: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(state.len() + 1);
    out.push(TILE_CELL_VERSION);
    out.extend_from_slice(state);
    out
}

/// Core's tile-state bytes of a stored cell.
pub(crate) fn decode_cell(cell: &[u8]) -> Result<&[u8], String> {
    match cell.split_first() {
        Some((&TILE_CELL_VERSION, state)) => Ok(state),
        Some((v, _)) => Err(format!(
            "tile cell layout version {v} is not supported (this build reads version {TILE_CELL_VERSION})"
        )),
        None => Err("empty tile cell".into()),
    }
}

/// Push-row sequence numbers: strictly increasing within the process
/// (microseconds of wall clock, bumped past the last one handed out), so
/// sequential pushes are merged in write order.
fn next_seq() -> i64 {
    static LAST: AtomicI64 = AtomicI64::new(i64::MIN);
    let now = chrono::Utc::now().timestamp_micros();
    let prev = LAST
        .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |l| {
            Some(now.max(l.saturating_add(1)))
        })
        .unwrap_or(i64::MIN);
    now.max(prev.saturating_add(1))
}

/// A random 64-bit writer id per store (`RandomState` is seeded per process
/// from the OS), mixed with the process id and the clock.
pub(super) fn writer_id() -> i64 {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u32(std::process::id());
    h.write_i64(chrono::Utc::now().timestamp_nanos_opt().unwrap_or(0));
    // 0 is the writer of materialized rows.
    match h.finish() as i64 {
        0 => 1,
        x => x,
    }
}

/// One stored tile row.
struct Row {
    feature: String,
    start: i64,
    seq: i64,
    writer: i64,
    expires_at: i64,
    state: Vec<u8>,
}

/// One statement of a batch and its values by bind-marker name.
type Stmt<'a> = (&'a PreparedStatement, Vec<(&'static str, Val<'a>)>);

type RawRow = (String, i64, i64, i64, Option<i64>, Option<Vec<u8>>);

impl ScyllaOnlineStore {
    async fn tile_prepared(&self) -> fstore_core::Result<Arc<TilePrepared>> {
        let p = self
            .tile_prepared
            .get_or_try_init(|| async {
                let s = &self.settings;
                let t = &self.tile_statements;
                Ok::<_, Error>(Arc::new(TilePrepared {
                    insert: self.prepare_one(&t.insert, s.write_consistency).await?,
                    select: self.prepare_one(&t.select, s.read_consistency).await?,
                    delete_row: self.prepare_one(&t.delete_row, s.write_consistency).await?,
                    delete_partition: self
                        .prepare_one(&t.delete_partition, s.write_consistency)
                        .await?,
                    scan: self.prepare_one(&t.scan, s.read_consistency).await?,
                }))
            })
            .await
            .map_err(fstore_core::Error::from)?;
        Ok(Arc::clone(p))
    }

    /// Every row of one (entity, view) partition, in clustering order: one
    /// single-partition `SELECT`, one round trip.
    async fn tile_rows(
        &self,
        p: &TilePrepared,
        view: &str,
        entity: &[u8],
    ) -> fstore_core::Result<Vec<Row>> {
        let what = || {
            format!(
                "reading aggregation tiles of feature view '{view}', entity {}",
                display_entity_key(entity)
            )
        };
        let values = [("entity_key", Val::Blob(entity)), ("view", Val::Text(view))];
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
        let mut out = Vec::with_capacity(rows.rows_num());
        for r in rows.rows::<RawRow>().map_err(|e| Error::Result {
            what: what(),
            message: e.to_string(),
        })? {
            let (feature, start, seq, writer, expires_at, cell) = r.map_err(|e| Error::Result {
                what: what(),
                message: e.to_string(),
            })?;
            let bad = |m: String| Error::Result {
                what: what(),
                message: format!("tile {feature}@{start}: {m}"),
            };
            let cell = cell.ok_or_else(|| bad("null cell (written outside fstore?)".into()))?;
            let state = decode_cell(&cell).map_err(bad)?.to_vec();
            out.push(Row {
                expires_at: expires_at
                    .ok_or_else(|| bad("null expires_at (written outside fstore?)".into()))?,
                feature,
                start,
                seq,
                writer,
                state,
            });
        }
        Ok(out)
    }

    /// `read_tiles`: one single-partition `SELECT` per key, `read_concurrency`
    /// in flight. A tile with push rows comes back as several [`Tile`]s with
    /// the same `(feature, start)`, materialized row first, then push rows in
    /// write order; core merges them in that order.
    pub(super) async fn tiles_read(
        &self,
        keys: &[OnlineKey],
    ) -> fstore_core::Result<Vec<Vec<Tile>>> {
        if keys.is_empty() {
            return Ok(Vec::new());
        }
        let p = self.tile_prepared().await?;
        let p = &p;
        stream::iter(0..keys.len())
            .map(move |i| async move {
                let k = &keys[i];
                let rows = self.tile_rows(p, &k.view, &k.entity_key).await?;
                Ok::<_, fstore_core::Error>(
                    rows.into_iter()
                        .map(|r| Tile {
                            feature: r.feature,
                            start: r.start,
                            expires_at: r.expires_at,
                            state: r.state,
                        })
                        .collect(),
                )
            })
            .buffered(self.settings.read_concurrency)
            .try_collect()
            .await
    }

    /// Runs `groups` of statements as single-partition unlogged batches of at
    /// most [`BATCH_STATEMENTS`] statements; a group never straddles two batches.
    async fn run_batches(
        &self,
        what: String,
        groups: Vec<Vec<Stmt<'_>>>,
    ) -> fstore_core::Result<()> {
        let mut batches: Vec<Vec<Stmt<'_>>> = vec![Vec::new()];
        for g in groups {
            let cur = batches.last().map_or(0, |b| b.len());
            if cur > 0 && cur + g.len() > BATCH_STATEMENTS {
                batches.push(Vec::new());
            }
            if let Some(b) = batches.last_mut() {
                b.extend(g);
            }
        }
        for stmts in batches.into_iter().filter(|b| !b.is_empty()) {
            let mut batch = Batch::new(BatchType::Unlogged);
            batch.set_consistency(self.settings.write_consistency);
            // A driver retry resends the same statements with the same keys and
            // values (a push row's `seq` is chosen once, before sending): it
            // overwrites itself and counts nothing twice.
            batch.set_is_idempotent(true);
            for (st, _) in &stmts {
                batch.append_statement((*st).clone());
            }
            let values: Vec<Named<'_>> = stmts.iter().map(|(_, v)| Named(v)).collect();
            self.session()
                .await?
                .batch(&batch, values)
                .await
                .map_err(|source| Error::Execute {
                    what: what.clone(),
                    source,
                })?;
        }
        Ok(())
    }

    /// `write_tiles` (materialization) for one entity: read the partition,
    /// then one batch that writes each tile's materialized row (fixed key
    /// `seq = BASE_SEQ, writer = 0`: re-running overwrites it with the same
    /// bytes), deletes that tile's push rows (the rebuilt tile replaces them)
    /// and deletes every row with `expires_at <= expire_before`.
    async fn tiles_replace_one(
        &self,
        p: &TilePrepared,
        view: &str,
        w: &TileWrite,
    ) -> fstore_core::Result<()> {
        let stored = self.tile_rows(p, view, &w.entity_key).await?;
        let cells: Vec<Vec<u8>> = w.tiles.iter().map(|t| encode_cell(&t.state)).collect();
        let mut groups: HashMap<(&str, i64), Vec<_>> = HashMap::new();
        let mut order: Vec<(&str, i64)> = Vec::new();
        for (t, cell) in w.tiles.iter().zip(&cells) {
            let v = vec![
                ("entity_key", Val::Blob(&w.entity_key)),
                ("view", Val::Text(view)),
                ("feature", Val::Text(&t.feature)),
                ("start", Val::BigInt(t.start)),
                ("seq", Val::BigInt(BASE_SEQ)),
                ("writer", Val::BigInt(0)),
                ("cell", Val::Blob(cell)),
                ("expires_at", Val::BigInt(t.expires_at)),
            ];
            let key = (t.feature.as_str(), t.start);
            order.push(key);
            groups.entry(key).or_default().push((&p.insert, v));
        }
        let mut expired = Vec::new();
        for r in &stored {
            let key = (r.feature.as_str(), r.start);
            let rebuilt = r.seq != BASE_SEQ && groups.contains_key(&key);
            if !rebuilt && r.expires_at > w.expire_before {
                continue;
            }
            let v = vec![
                ("entity_key", Val::Blob(&w.entity_key)),
                ("view", Val::Text(view)),
                ("feature", Val::Text(&r.feature)),
                ("start", Val::BigInt(r.start)),
                ("seq", Val::BigInt(r.seq)),
                ("writer", Val::BigInt(r.writer)),
            ];
            match groups.get_mut(&key) {
                // a push row of a rebuilt tile: deleted in the same batch as the new row
                Some(g) => g.push((&p.delete_row, v)),
                None => expired.push(vec![(&p.delete_row, v)]),
            }
        }
        let mut all: Vec<_> = order.iter().filter_map(|k| groups.remove(k)).collect();
        all.extend(expired);
        let what = format!(
            "writing aggregation tiles of feature view '{view}', entity {}",
            display_entity_key(&w.entity_key)
        );
        self.run_batches(what, all).await
    }

    /// `merge_tiles` (push) for one entity: read the partition; check that
    /// every delta merges onto what is stored (`merge` over the stored rows
    /// of its tile, then the delta: a definition mismatch or an int64
    /// overflow fails here and nothing is written); then one batch that
    /// appends each delta as a new row under a key no other push uses
    /// (`seq` increasing within the process, `writer` random per store) and
    /// deletes every row with `expires_at <= expire_before`.
    async fn tiles_merge_one(
        &self,
        p: &TilePrepared,
        view: &str,
        w: &TileWrite,
        merge: &TileMergeFn,
    ) -> fstore_core::Result<()> {
        let stored = self.tile_rows(p, view, &w.entity_key).await?;
        let mut by_tile: HashMap<(&str, i64), Vec<&Row>> = HashMap::new();
        for r in &stored {
            by_tile.entry((&r.feature, r.start)).or_default().push(r);
        }
        for t in &w.tiles {
            if let Some(rows) = by_tile.get(&(t.feature.as_str(), t.start)) {
                let mut acc = rows[0].state.clone();
                for r in &rows[1..] {
                    acc = merge(&t.feature, &acc, &r.state)?;
                }
                merge(&t.feature, &acc, &t.state)?;
            }
        }
        let cells: Vec<Vec<u8>> = w.tiles.iter().map(|t| encode_cell(&t.state)).collect();
        let seqs: Vec<i64> = w.tiles.iter().map(|_| next_seq()).collect();
        let mut groups = Vec::new();
        for ((t, cell), seq) in w.tiles.iter().zip(&cells).zip(&seqs) {
            groups.push(vec![(
                &p.insert,
                vec![
                    ("entity_key", Val::Blob(&w.entity_key)),
                    ("view", Val::Text(view)),
                    ("feature", Val::Text(&t.feature)),
                    ("start", Val::BigInt(t.start)),
                    ("seq", Val::BigInt(*seq)),
                    ("writer", Val::BigInt(self.writer)),
                    ("cell", Val::Blob(cell)),
                    ("expires_at", Val::BigInt(t.expires_at)),
                ],
            )]);
        }
        for r in &stored {
            if r.expires_at > w.expire_before {
                continue;
            }
            groups.push(vec![(
                &p.delete_row,
                vec![
                    ("entity_key", Val::Blob(&w.entity_key)),
                    ("view", Val::Text(view)),
                    ("feature", Val::Text(&r.feature)),
                    ("start", Val::BigInt(r.start)),
                    ("seq", Val::BigInt(r.seq)),
                    ("writer", Val::BigInt(r.writer)),
                ],
            )]);
        }
        let what = format!(
            "pushing aggregation tiles of feature view '{view}', entity {}",
            display_entity_key(&w.entity_key)
        );
        self.run_batches(what, groups).await
    }

    pub(super) async fn tiles_write(
        &self,
        view: &ResolvedView,
        writes: Vec<TileWrite>,
        merge: Option<&TileMergeFn>,
    ) -> fstore_core::Result<()> {
        if writes.is_empty() {
            return Ok(());
        }
        let p = self.tile_prepared().await?;
        let (p, name, writes) = (&p, view.name(), &writes);
        stream::iter(0..writes.len())
            .map(move |i| async move {
                let w = &writes[i];
                match merge {
                    None => self.tiles_replace_one(p, name, w).await,
                    Some(m) => self.tiles_merge_one(p, name, w, m).await,
                }
            })
            .buffer_unordered(self.settings.write_concurrency)
            .try_collect::<()>()
            .await
    }

    /// Deletes every tile partition of `view`: a paged scan collects the
    /// view's entity keys (keys only), then one partition delete per key.
    pub(super) async fn tiles_delete_view(&self, view: &str) -> fstore_core::Result<()> {
        let p = self.tile_prepared().await?;
        let what = format!("scanning for aggregation tiles of feature view '{view}'");
        let pager = self
            .session()
            .await?
            .execute_iter(p.scan.clone(), Named(&[]))
            .await
            .map_err(|source| Error::Pager {
                what: what.clone(),
                source,
            })?;
        let mut rows = pager
            .rows_stream::<(Vec<u8>, String)>()
            .map_err(|e| Error::Result {
                what: what.clone(),
                message: e.to_string(),
            })?;
        // Collected first, then deleted: deleting while a scan pages through
        // the same table could move rows past the pager.
        let mut keys: Vec<Vec<u8>> = Vec::new();
        let mut seen: HashSet<Vec<u8>> = HashSet::new();
        while let Some(row) = rows.next().await {
            let (key, v) = row.map_err(|source| Error::NextRow {
                what: what.clone(),
                source,
            })?;
            if v == view && seen.insert(key.clone()) {
                keys.push(key);
            }
        }
        let p = &p;
        stream::iter(keys)
            .map(move |key| async move {
                let values = [("entity_key", Val::Blob(&key)), ("view", Val::Text(view))];
                self.session()
                    .await?
                    .execute_unpaged(&p.delete_partition, Named(&values))
                    .await
                    .map(drop)
                    .map_err(|source| {
                        fstore_core::Error::from(Error::Execute {
                            what: format!(
                                "deleting aggregation tiles of feature view '{view}', entity {}",
                                display_entity_key(&key)
                            ),
                            source,
                        })
                    })
            })
            .buffer_unordered(self.settings.write_concurrency)
            .try_collect::<()>()
            .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cell_is_versioned() {
        let c = encode_cell(b"\x01state");
        assert_eq!(c[0], TILE_CELL_VERSION);
        assert_eq!(decode_cell(&c), Ok(&b"\x01state"[..]));
        assert!(decode_cell(b"").unwrap_err().contains("empty"));
        assert!(decode_cell(b"\x02x").unwrap_err().contains("version 2"));
    }

    #[test]
    fn push_sequence_is_strictly_increasing() {
        let mut last = next_seq();
        for _ in 0..10_000 {
            let s = next_seq();
            assert!(s > last && s > BASE_SEQ);
            last = s;
        }
    }
}
