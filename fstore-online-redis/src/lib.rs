//! # fstore-online-redis
//!
//! An [`fstore_core::OnlineStore`] on Redis (single node) and Redis Cluster,
//! built on [fred](https://docs.rs/fred). Requires Redis 7.0 or newer
//! (`PEXPIREAT … GT`).
//!
//! ```no_run
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> fstore_core::Result<()> {
//! use std::sync::Arc;
//! use fstore_core::FeatureStore;
//! use fstore_online_redis::RedisOnlineStoreBuilder;
//!
//! // FSTORE_REDIS_URL=redis://127.0.0.1:6379 (or redis-cluster://h1:p1?node=h2:p2…)
//! // `build()` is lazy (the first call connects); `connect()` builds and connects now.
//! let online = RedisOnlineStoreBuilder::from_env().with_key_prefix("shop").connect().await?;
//! let store = FeatureStore::builder().with_online(Arc::new(online)).build()?;
//! # let _ = store; Ok(()) }
//! ```
//!
//! ## Configuration
//!
//! [`RedisOnlineStoreBuilder`] takes typed keys ([`RedisConfigKey`]) or reads
//! `FSTORE_REDIS_*` ([`RedisOnlineStoreBuilder::from_env`]): URL(s), cluster,
//! username/password (never printed by `Debug`, never in
//! [`store_id`](fstore_core::OnlineStore::store_id)), TLS (feature `tls`), key
//! prefix (the project), pool size, command and connect timeouts, native TTL,
//! expiry grace, rows per script call.
//!
//! ## Key layout
//!
//! One Redis **hash per (prefix, entity key)**, holding every view of that entity:
//!
//! ```text
//! key    <prefix>:{<entity key bytes>}        entity key = fstore_core::backend codec bytes;
//!                                             inside the braces '}' is escaped as 0x01 0x02
//!                                             and 0x01 as 0x01 0x01
//! field  t:<view>  -> 17 bytes: event_ts (8) | created_ts (8) | created present (1)
//!                     (i64 µs, big-endian with the sign bit flipped: byte order = time order;
//!                     a missing created_ts is stored as i64::MIN, as core orders it)
//! field  p:<view>  -> the view's payload, core's compact codec (fstore_core::adapter::encode_payloads)
//! ```
//!
//! * The whole entity key is the **hash tag**, so in Cluster mode all of an
//!   entity's data is in one slot (and the slot depends on the entity only, not
//!   on the prefix). A request for M views of one entity is **one `HMGET`** of
//!   2·M fields.
//! * **Reads**: one pipelined `HMGET` per distinct entity key (duplicate
//!   (view, entity) pairs and several views of one entity are read once), sent
//!   in one round trip — per node in Cluster mode (fred routes and pipelines per
//!   node); a single entity's `HMGET` is sent directly, not pipelined. The read
//!   has one deadline (`ReadOptions::timeout`, else the command timeout: fred's
//!   own timeout for a single `HMGET`, an outer one for a pipeline); running out is [`fstore_core::Error::Timeout`], a dropped
//!   connection [`fstore_core::Error::Unavailable`].
//! * **Writes** run a Lua script (loaded once with `SCRIPT LOAD` — on every
//!   primary in Cluster mode — and called with `EVALSHA`, pipelined; on
//!   `NOSCRIPT` after a restart or `SCRIPT FLUSH` it is reloaded, then `EVAL` is
//!   the last resort). One call upserts up to `script_batch` rows (rows of one
//!   hash slot in Cluster mode): per row it compares the stored 16-byte version
//!   with the new one **byte by byte on the server** (exact, no Lua doubles)
//!   and writes only if the new one is greater or equal — newest wins,
//!   atomically, whatever the number of concurrent writers; an equal version
//!   rewrites (later write wins). The summary counts written and skipped rows.
//! * **Native TTL** (on by default): a written row sets the key's expiry to
//!   `event_ts + ttl + expiry_grace` (ms, rounded up) **only if that extends
//!   it** (`PEXPIREAT … GT`); a view without ttl makes the key persistent. The
//!   hash holds several views, so its expiry is the maximum over its views'
//!   needs and never cuts one short. Redis expires by its own clock; reads still
//!   return rows whatever their age and core enforces ttl from `event_ts` at the
//!   request's `now`. Caveats: raising a view's ttl does not extend keys written
//!   before (re-materialize), and rows whose `event_ts + ttl + grace` is already
//!   past are freed at once — serving with a `now` in the past (backtests) needs
//!   `native_ttl = false`.
//! * **`delete_view`** `SCAN`s every key of the prefix (`MATCH <prefix>:{*`,
//!   type hash, on every primary in Cluster mode) and `HDEL`s the view's two
//!   fields, one pipeline per page of 1,000 keys. Its cost is proportional to
//!   the number of entities under the prefix (all views), not to the view's
//!   size: minutes for tens of millions of keys. It is meant for retiring a
//!   view, not for the serving path.
//! * [`store_id`](fstore_core::OnlineStore::store_id) is
//!   `redis:<prefix>@<host:port,…>[/db]` (sorted seed hosts, no credentials).
#![cfg_attr(docsrs, feature(doc_cfg))]

mod client;
mod config;
mod error;
mod layout;
mod store;
mod tiles;

pub use config::{BACKEND, RedisConfigKey, RedisOnlineStoreBuilder};
pub use store::{HMGETS_PER_PIPELINE, MAX_READ_KEYS, RedisOnlineStore};
