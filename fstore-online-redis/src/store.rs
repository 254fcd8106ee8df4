//! `impl OnlineStore for RedisOnlineStore`: reads, newest-wins writes, deletes.

use std::collections::HashMap;
use std::collections::hash_map::Entry;
use std::fmt;
use std::future::Future;
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use fred::clients::Client;
use fred::interfaces::{ClientLike, HashesInterface};

use fred::types::config::{Config, Options};
use fred::types::{ClusterHash, CustomCommand, Key, Value};
use fstore_core::adapter::display_entity_key;
use fstore_core::{
    Error, OnlineCapabilities, OnlineKey, OnlineRow, OnlineStore, ReadOptions, ResolvedView,
    Result, Tile, TileMergeFn, TileWrite, WriteOptions, WriteSummary,
};
use tokio::sync::OnceCell;

use crate::client::{Conn, with_deadline};
use crate::config::{BACKEND, RedisOnlineStoreBuilder, Settings};
use crate::error::map_err;
use crate::layout::{
    decode_version, encode_version, expire_at_ms, hash_key, payload_field, scan_pattern,
    version_field,
};

/// Script calls per pipeline (each call carries up to `script_batch` rows).
const CALLS_PER_PIPELINE: usize = 512;

/// The most keys one [`OnlineStore::read`] call accepts; more is refused with
/// [`Error::InvalidInput`] (a 10-million-entity request would otherwise become
/// one giant pipeline holding every reply in memory at once). Below it, reads
/// are sent in pipelines of [`HMGETS_PER_PIPELINE`].
pub const MAX_READ_KEYS: usize = 100_000;

/// `HMGET`s per read pipeline (one per distinct entity key).
pub const HMGETS_PER_PIPELINE: usize = 1_000;

/// An [`OnlineStore`] on Redis or Redis Cluster.
///
/// Built by [`crate::RedisOnlineStoreBuilder`]; the connection pool opens
/// lazily on first use (and again after a failed first attempt). See the
/// crate docs for the key layout and the write algorithm.
pub struct RedisOnlineStore {
    config: Config,
    settings: Settings,
    id: String,
    conn: OnceCell<Conn>,
}

impl fmt::Debug for RedisOnlineStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RedisOnlineStore")
            .field("id", &self.id)
            .field("cluster", &self.config.server.is_clustered())
            .field("username", &self.config.username)
            .field("password", &self.config.password.as_ref().map(|_| "***"))
            .field("tls", &self.config.uses_tls())
            .field("settings", &self.settings)
            .field("connected", &self.conn.initialized())
            .finish_non_exhaustive()
    }
}

impl Drop for RedisOnlineStore {
    fn drop(&mut self) {
        if let Some(conn) = self.conn.take() {
            conn.shutdown();
        }
    }
}

impl RedisOnlineStoreBuilder {
    /// Validates the configuration and returns the store (no I/O; the
    /// connection pool opens on first use).
    ///
    /// # Errors
    /// [`Error::UnknownConfigKey`] for a key given by an unknown name;
    /// [`Error::InvalidInput`] naming the key for a missing URL, an unparsable
    /// URL, number, boolean or duration, a pool size or script batch of 0, a
    /// key prefix containing `{` or `}`, or TLS without the `tls` feature.
    pub fn build(self) -> Result<RedisOnlineStore> {
        let (config, settings) = self.settings()?;
        Ok(RedisOnlineStore::new(config, settings))
    }

    /// [`build`](Self::build), then opens the connection pool: the store is
    /// known to reach its server.
    ///
    /// # Errors
    /// As `build`; [`Error::Unavailable`] or [`Error::Timeout`] when no server
    /// answers within the connect timeout; [`Error::Backend`] for
    /// authentication errors.
    pub async fn connect(self) -> Result<RedisOnlineStore> {
        let store = self.build()?;
        store.check().await?;
        Ok(store)
    }
}

/// One newest-wins script call: keys of one hash slot and their arguments.
struct Call {
    slot: u16,
    args: Vec<Value>,
}

impl RedisOnlineStore {
    pub(crate) fn new(config: Config, settings: Settings) -> Self {
        let mut hosts: Vec<String> = config
            .server
            .hosts()
            .iter()
            .map(|s| format!("{}:{}", s.host, s.port))
            .collect();
        hosts.sort();
        hosts.dedup();
        let db = config.database.map(|d| format!("/{d}")).unwrap_or_default();
        let id = format!("{BACKEND}:{}@{}{db}", settings.prefix, hosts.join(","));
        Self {
            config,
            settings,
            id,
            conn: OnceCell::new(),
        }
    }

    /// The key prefix (project) of this store.
    pub fn key_prefix(&self) -> &str {
        &self.settings.prefix
    }

    /// True when talking to a Redis Cluster.
    pub fn is_cluster(&self) -> bool {
        self.config.server.is_clustered()
    }

    /// The Redis key of an entity's hash (see the crate docs for the layout).
    /// Exposed for tooling and benchmarks.
    pub fn entity_hash_key(&self, entity_key: &[u8]) -> Vec<u8> {
        hash_key(&self.settings.prefix, entity_key)
    }

    /// Opens the connection pool now, if not open yet (otherwise the first
    /// call does).
    async fn check(&self) -> Result<()> {
        self.conn().await.map(|_| ())
    }

    async fn conn(&self) -> Result<&Conn> {
        self.conn
            .get_or_try_init(|| Conn::open(&self.config, &self.settings))
            .await
    }

    fn read_deadline(&self, opts: &ReadOptions) -> Duration {
        opts.timeout.unwrap_or(self.settings.command_timeout)
    }

    /// Reads `keys` on an open connection: one `HMGET` per distinct entity
    /// key (every requested view's two fields in it; duplicates read once),
    /// pipelined when there are several.
    async fn read_on(
        &self,
        conn: &Conn,
        keys: &[OnlineKey],
        opts: &ReadOptions,
    ) -> Result<Vec<Option<OnlineRow>>> {
        let first = keys[0].entity_key.as_slice();
        let client: &Client = conn.pool.next();
        if keys.iter().all(|k| k.entity_key == first) {
            // One entity (the common serving call): no grouping map, one
            // HMGET sent directly, whose own timeout is the read's deadline.
            let mut views: Vec<&str> = Vec::with_capacity(keys.len());
            let mut slots = Vec::with_capacity(keys.len());
            for k in keys {
                slots.push(view_slot(&mut views, &k.view));
            }
            let key = Bytes::from(hash_key(&self.settings.prefix, first));
            let reply = match opts.timeout {
                None => client.hmget::<Value, _, _>(key, fields(&views)).await,
                Some(t) => {
                    client
                        .with_options(&Options {
                            timeout: Some(t),
                            ..Options::default()
                        })
                        .hmget::<Value, _, _>(key, fields(&views))
                        .await
                }
            }
            .map_err(|e| map_err(e, &format!("read of {} keys", keys.len())))?;
            let reply = reply.into_array();
            let mut out = Vec::with_capacity(keys.len());
            for (k, v) in keys.iter().zip(slots) {
                out.push(decode_at(&reply, v, k, keys.len())?);
            }
            return Ok(out);
        }

        let what = format!("read of {} keys", keys.len());
        // Boxed: the pipelined read's state is large, and inline it would
        // make every read's future (boxed and copied per call by
        // `async_trait`) as large, the 1-entity HMGET's too.
        Box::pin(with_deadline(self.read_deadline(opts), &what, async {
            let mut groups: Vec<Group<'_>> = Vec::new();
            let mut by_key: HashMap<&[u8], usize> = HashMap::with_capacity(keys.len());
            let mut slots = Vec::with_capacity(keys.len());
            for k in keys {
                let g = match by_key.entry(k.entity_key.as_slice()) {
                    Entry::Occupied(e) => *e.get(),
                    Entry::Vacant(e) => {
                        groups.push(Group {
                            entity_key: &k.entity_key,
                            views: Vec::new(),
                        });
                        *e.insert(groups.len() - 1)
                    }
                };
                let v = view_slot(&mut groups[g].views, &k.view);
                slots.push(Slot { group: g, view: v });
            }
            // Pipelines of HMGETS_PER_PIPELINE, one after the other: bounded
            // request and reply buffers whatever the number of entities.
            let mut replies: Vec<Value> = Vec::with_capacity(groups.len());
            // Entities usually ask for the same views: their field names are
            // built once and shared (reference counts, not copies).
            let mut shared: Option<(&[&str], Vec<Key>)> = None;
            for chunk in groups.chunks(HMGETS_PER_PIPELINE) {
                let p = client.pipeline();
                for g in chunk {
                    let f = match &shared {
                        Some((views, f)) if *views == g.views.as_slice() => f.clone(),
                        _ => {
                            let f = fields(&g.views);
                            shared = Some((&g.views, f.clone()));
                            f
                        }
                    };
                    let _: () = p
                        .hmget(
                            Bytes::from(hash_key(&self.settings.prefix, g.entity_key)),
                            f,
                        )
                        .await
                        .map_err(|e| map_err(e, &what))?;
                }
                let part: Vec<Value> = p.all().await.map_err(|e| map_err(e, &what))?;
                replies.extend(part);
            }
            if replies.len() != groups.len() {
                return Err(Error::backend_msg(
                    BACKEND,
                    format!(
                        "{what}: {} replies to {} HMGETs",
                        replies.len(),
                        groups.len()
                    ),
                ));
            }
            let replies: Vec<Vec<Value>> = replies.into_iter().map(Value::into_array).collect();
            let mut out = Vec::with_capacity(keys.len());
            for (k, s) in keys.iter().zip(slots) {
                out.push(decode_at(&replies[s.group], s.view, k, keys.len())?);
            }
            Ok(out)
        }))
        .await
    }

    fn build_calls(&self, view: &ResolvedView, rows: &[OnlineRow]) -> Vec<Call> {
        let name = view.name();
        let head = [
            Value::from(payload_field(name)),
            Value::from(version_field(name)),
            Value::from(if self.settings.native_ttl { "e" } else { "n" }),
        ];
        let ttl_us = view
            .view
            .ttl
            .map(|t| i64::try_from(t.as_micros()).unwrap_or(i64::MAX));
        let grace_us = i64::try_from(self.settings.expiry_grace.as_micros()).unwrap_or(i64::MAX);
        let batch = self.settings.script_batch;

        // Rows grouped by hash slot (cluster) or all together (single node),
        // each group in slice order so equal versions resolve "later wins".
        let mut groups: Vec<Vec<(u16, Bytes, &OnlineRow)>> = Vec::new();
        let mut by_slot: HashMap<u16, usize> = HashMap::new();
        let cluster = self.is_cluster();
        let parts = u16::try_from(self.settings.pool_size)
            .unwrap_or(u16::MAX)
            .max(1);
        for r in rows {
            let key = hash_key(&self.settings.prefix, &r.entity_key);
            // Cluster: one group per hash slot (a script call's keys must
            // share a slot). Single node: one group per pool connection, so
            // groups run concurrently. Either way a key always lands in the
            // same group, which keeps its rows in slice order.
            let slot = fred::util::redis_keyslot(&key);
            let slot = if cluster { slot } else { slot % parts };
            let g = *by_slot.entry(slot).or_insert_with(|| {
                groups.push(Vec::new());
                groups.len() - 1
            });
            groups[g].push((slot, Bytes::from(key), r));
        }
        let mut calls = Vec::new();
        for group in groups {
            for chunk in group.chunks(batch) {
                // EVALSHA <sha> <numkeys> <keys…> <head…> <per-row args…>
                let mut args = Vec::with_capacity(2 + 3 + 4 * chunk.len());
                args.push(Value::Null); // the SHA (or script), filled in when sent
                args.push(Value::from(chunk.len() as i64));
                args.extend(chunk.iter().map(|(_, k, _)| Value::Bytes(k.clone())));
                args.extend(head.iter().cloned());
                for (_, _, r) in chunk {
                    args.push(Value::Bytes(
                        encode_version(r.event_ts, r.created_ts).to_vec().into(),
                    ));
                    args.push(Value::Bytes(r.payload.clone()));
                    let exp = ttl_us.and_then(|t| expire_at_ms(r.event_ts, t, grace_us));
                    args.push(match exp {
                        Some(ms) => Value::from(ms),
                        None => Value::from(""),
                    });
                }
                calls.push(Call {
                    slot: chunk[0].0,
                    args,
                });
            }
        }
        calls
    }

    /// Runs script calls pipelined; on `NOSCRIPT` (a restarted or flushed
    /// server) reloads the script and resends the calls that did not run.
    ///
    /// Calls are spread over the pool's connections by group (hash slot, or
    /// slot modulo pool size on a single node) and the connections run
    /// concurrently; the calls of one group stay on one connection, in order.
    async fn run_calls(&self, conn: &Conn, calls: &[Call]) -> Result<u64> {
        let clients = conn.pool.clients();
        let n = clients.len().max(1);
        let mut parts: Vec<Vec<&Call>> = vec![Vec::new(); n];
        for c in calls {
            parts[usize::from(c.slot) % n].push(c);
        }
        let runs = parts
            .into_iter()
            .enumerate()
            .filter(|(_, p)| !p.is_empty())
            .map(|(i, p)| self.run_part(conn, &clients[i], p));
        Ok(futures::future::try_join_all(runs).await?.into_iter().sum())
    }

    async fn run_part(&self, conn: &Conn, client: &Client, calls: Vec<&Call>) -> Result<u64> {
        let mut written = 0u64;
        for chunk in calls.chunks(CALLS_PER_PIPELINE) {
            let mut pending: Vec<&Call> = chunk.to_vec();
            for attempt in 0..3 {
                let p = client.pipeline();
                for c in &pending {
                    let (cmd, script) = if attempt < 2 {
                        ("EVALSHA", conn.sha.as_str())
                    } else {
                        ("EVAL", crate::client::UPSERT_LUA)
                    };
                    let mut args = c.args.clone();
                    args[0] = Value::from(script);
                    let cmd = CustomCommand::new_static(cmd, ClusterHash::Custom(c.slot), false);
                    let _: () = p
                        .custom(cmd, args)
                        .await
                        .map_err(|e| map_err(e, "queue EVALSHA"))?;
                }
                let results = p.try_all::<i64>().await;
                let mut retry = Vec::new();
                for (c, r) in pending.iter().zip(results) {
                    match r {
                        Ok(n) => written += u64::try_from(n).unwrap_or(0),
                        Err(e) if e.details().starts_with("NOSCRIPT") => retry.push(*c),
                        Err(e) => return Err(map_err(e, "newest-wins write script")),
                    }
                }
                if retry.is_empty() {
                    break;
                }
                if attempt == 2 {
                    return Err(Error::backend_msg(
                        BACKEND,
                        "the newest-wins script is missing on the server even after SCRIPT LOAD and EVAL",
                    ));
                }
                if attempt == 0 {
                    tracing::debug!(
                        calls = retry.len(),
                        "redis: NOSCRIPT, reloading the write script"
                    );
                    conn.load_script(client).await?;
                }
                pending = retry;
            }
        }
        Ok(written)
    }
}

/// Where request entry `i` finds its answer: (entity group, view slot).
struct Slot {
    group: usize,
    view: usize,
}

/// The distinct views requested for one distinct entity key.
struct Group<'a> {
    entity_key: &'a [u8],
    views: Vec<&'a str>,
}

fn decode_row(
    entity_key: &[u8],
    view: &str,
    ver: &Value,
    payload: &Value,
) -> Result<Option<OnlineRow>> {
    let ver = match ver {
        Value::Null => return Ok(None),
        v => v.as_bytes().ok_or_else(|| {
            Error::backend_msg(
                BACKEND,
                format!(
                    "unexpected reply type for the version of view '{view}', entity {}",
                    display_entity_key(entity_key)
                ),
            )
        })?,
    };
    let (event_ts, created_ts) = decode_version(ver, || {
        format!("view '{view}', entity {}", display_entity_key(entity_key))
    })?;
    // The reply's own buffer, shared: no copy of the values.
    let payload = match payload {
        Value::Bytes(b) => b.clone(),
        Value::String(s) => s.inner().clone(),
        _ => {
            return Err(Error::backend_msg(
                BACKEND,
                format!(
                    "view '{view}', entity {}: version present but payload missing",
                    display_entity_key(entity_key)
                ),
            ));
        }
    };
    Ok(Some(OnlineRow {
        entity_key: entity_key.to_vec(),
        event_ts,
        created_ts,
        payload,
    }))
}

/// The position of `view` in `views`, appended when new.
fn view_slot<'a>(views: &mut Vec<&'a str>, view: &'a str) -> usize {
    match views.iter().position(|v| *v == view) {
        Some(v) => v,
        None => {
            views.push(view);
            views.len() - 1
        }
    }
}

/// Decodes the row of view slot `v` of one `HMGET` reply.
fn decode_at(reply: &[Value], v: usize, k: &OnlineKey, n_keys: usize) -> Result<Option<OnlineRow>> {
    match (reply.get(2 * v), reply.get(2 * v + 1)) {
        (Some(ver), Some(payload)) => decode_row(&k.entity_key, &k.view, ver, payload),
        _ => Err(Error::backend_msg(
            BACKEND,
            format!(
                "read of {n_keys} keys: short HMGET reply ({} values)",
                reply.len()
            ),
        )),
    }
}

async fn deadline<T>(
    d: Option<Duration>,
    what: &str,
    f: impl Future<Output = Result<T>>,
) -> Result<T> {
    match d {
        Some(d) => with_deadline(d, what, f).await,
        None => f.await,
    }
}

#[async_trait]
impl OnlineStore for RedisOnlineStore {
    fn backend(&self) -> &'static str {
        BACKEND
    }

    fn store_id(&self) -> String {
        self.id.clone()
    }

    fn capabilities(&self) -> OnlineCapabilities {
        OnlineCapabilities::default()
            .with_native_ttl(self.settings.native_ttl)
            .with_tiles(true)
            // Every read path ends at `ReadOptions::timeout`: a single HMGET
            // through fred's per-command timeout, pipelines, tile reads and
            // the first connect under `with_deadline`.
            .with_enforces_read_timeout(true)
    }

    async fn write(
        &self,
        view: &ResolvedView,
        rows: Vec<OnlineRow>,
        opts: &WriteOptions,
    ) -> Result<WriteSummary> {
        if rows.is_empty() {
            return Ok(WriteSummary::default());
        }
        let what = format!("write of {} rows of view '{}'", rows.len(), view.name());
        deadline(opts.timeout, &what, async {
            let conn = self.conn().await?;
            let calls = self.build_calls(view, &rows);
            let written = self.run_calls(conn, &calls).await?;
            let n = rows.len() as u64;
            if written > n {
                return Err(Error::backend_msg(
                    BACKEND,
                    format!("{what}: the script reported {written} rows written"),
                ));
            }
            Ok(WriteSummary {
                written,
                skipped: n - written,
            })
        })
        .await
    }

    async fn read(&self, keys: &[OnlineKey], opts: &ReadOptions) -> Result<Vec<Option<OnlineRow>>> {
        if keys.is_empty() {
            return Ok(Vec::new());
        }
        if keys.len() > MAX_READ_KEYS {
            return Err(Error::invalid(format!(
                "{BACKEND}: a read of {} keys exceeds the maximum of {MAX_READ_KEYS} keys per \
                 request; split the request",
                keys.len()
            )));
        }
        match self.conn.get() {
            // Connected: one timer per read. A single HMGET carries the
            // deadline itself (fred's command timeout); a pipeline gets an
            // outer deadline.
            Some(conn) => self.read_on(conn, keys, opts).await,
            // First call: the connect counts against the read's deadline too
            // (boxed: connecting's state would otherwise enlarge every read's).
            None => {
                let what = format!("read of {} keys", keys.len());
                Box::pin(with_deadline(self.read_deadline(opts), &what, async {
                    let conn = self.conn().await?;
                    self.read_on(conn, keys, opts).await
                }))
                .await
            }
        }
    }

    async fn write_tiles(
        &self,
        view: &ResolvedView,
        writes: Vec<TileWrite>,
        opts: &WriteOptions,
    ) -> Result<()> {
        let what = format!(
            "tile write of {} entities of '{}'",
            writes.len(),
            view.name()
        );
        deadline(opts.timeout, &what, async {
            let conn = self.conn().await?;
            crate::tiles::apply(
                conn.pool.next(),
                &self.settings.prefix,
                view.name(),
                &writes,
                None,
            )
            .await
        })
        .await
    }

    async fn merge_tiles(
        &self,
        view: &ResolvedView,
        writes: Vec<TileWrite>,
        merge: &TileMergeFn,
        opts: &WriteOptions,
    ) -> Result<()> {
        let what = format!(
            "tile merge of {} entities of '{}'",
            writes.len(),
            view.name()
        );
        deadline(opts.timeout, &what, async {
            let conn = self.conn().await?;
            crate::tiles::apply(
                conn.pool.next(),
                &self.settings.prefix,
                view.name(),
                &writes,
                Some(merge),
            )
            .await
        })
        .await
    }

    async fn read_tiles(&self, keys: &[OnlineKey], opts: &ReadOptions) -> Result<Vec<Vec<Tile>>> {
        let what = format!("tile read of {} keys", keys.len());
        with_deadline(self.read_deadline(opts), &what, async {
            let conn = self.conn().await?;
            crate::tiles::read(conn.pool.next(), &self.settings.prefix, keys).await
        })
        .await
    }

    async fn delete_view(&self, view: &str) -> Result<()> {
        let conn = self.conn().await?;
        crate::tiles::delete_view(
            conn.pool.next(),
            &self.settings.prefix,
            view,
            self.is_cluster(),
        )
        .await?;
        conn.delete_fields(
            &scan_pattern(&self.settings.prefix),
            [version_field(view), payload_field(view)],
            self.is_cluster(),
        )
        .await
        .map_err(|e| match e {
            Error::Backend {
                message, source, ..
            } => Error::Backend {
                backend: BACKEND,
                message: format!("delete_view '{view}': {message}"),
                source,
            },
            e => e,
        })
    }
}

fn fields(views: &[&str]) -> Vec<Key> {
    let mut f = Vec::with_capacity(views.len() * 2);
    for v in views {
        f.push(Key::from(version_field(v)));
        f.push(Key::from(payload_field(v)));
    }
    f
}

#[cfg(test)]
mod decode_props {
    use super::*;

    /// Item 2: the stored version field and payload of any bytes decode to a
    /// row or a named `InvalidInput`, never a panic.
    #[test]
    fn stored_fields_never_panic() {
        let seeds = vec![
            crate::layout::encode_version(5, Some(6)).to_vec(),
            crate::layout::encode_version(-5, None).to_vec(),
        ];
        fstore_core::testkit::decoder_never_panics(
            "redis version field",
            &seeds,
            fstore_core::testkit::DECODER_CASES,
            |b| {
                let ver = Value::Bytes(Bytes::copy_from_slice(b));
                let payload = Value::Bytes(Bytes::copy_from_slice(b));
                decode_row(b"k", "v", &ver, &payload).map(|_| ())
            },
        );
    }
}
