//! # fstore-online-dynamo
//!
//! An fstore [`OnlineStore`](fstore_core::OnlineStore) on Amazon DynamoDB,
//! through the official `aws-sdk-dynamodb`.
//!
//! ```no_run
//! # async fn demo() -> fstore_core::Result<()> {
//! use std::sync::Arc;
//! use fstore_online_dynamo::DynamoOnlineStoreBuilder;
//!
//! let store = DynamoOnlineStoreBuilder::from_env() // FSTORE_DYNAMO_REGION, FSTORE_DYNAMO_TABLE, …
//!     .with_table("fstore_online")
//!     .build()?;
//! store.ensure_tables().await?; // once, at deploy time: creates the table, enables TTL
//! let store: Arc<fstore_core::DynOnlineStore> = Arc::new(store);
//! # Ok(()) }
//! ```
//!
//! ## Item layout
//!
//! One table holds every view; one item per (entity, view):
//!
//! | attribute    | type | meaning |
//! |--------------|------|---------|
//! | `pk`         | B    | partition key: core's entity-key bytes ([`fstore_core::adapter::encode_entity_key`]) |
//! | `sk`         | S    | sort key: the feature view name |
//! | `payload`    | B    | encoded feature values ([`fstore_core::adapter::encode_payloads`]) |
//! | `event_ts`   | N    | event time, UTC microseconds |
//! | `created_ts` | N    | created time, UTC microseconds; absent = none (sorts first) |
//! | `expires_at` | N    | DynamoDB TTL: epoch seconds, `ceil(event time + view ttl)`; only for views with a ttl |
//!
//! Why this layout: all views of an entity share a partition, so a serving
//! request for one entity and several views is one `BatchGetItem` against one
//! partition; the key is typed and versioned by core, so `(1, 23)` and
//! `(12, 3)` never collide. One table (not one per view) means no table
//! administration when a view is added. The price is `delete_view`, a rare
//! administrative call, which scans the table for the view's items (a global
//! secondary index on `sk` would make it cheap but would concentrate every
//! write of a view on one index partition, throttling materialization).
//!
//! ## Guarantees
//!
//! * **Reads** use `BatchGetItem` in chunks of ≤ 100 distinct keys (duplicates
//!   in a request are read once), chunks in parallel up to `max_concurrency`,
//!   projected to the row attributes. `UnprocessedKeys` are retried with
//!   exponential backoff and jitter; rounds that make no progress consume the
//!   retry budget, and when it is spent the read fails with the retryable
//!   [`Error::Throttled`](fstore_core::Error::Throttled) — a key is never
//!   reported missing because DynamoDB did not process it.
//! * **Writes never regress.** Each row is a conditional `PutItem`:
//!   `attribute_not_exists(pk) OR event_ts < :e OR (event_ts = :e AND
//!   (attribute_not_exists(created_ts) OR created_ts <= :c))`, so an older
//!   `(event_ts, created_ts)` never replaces a newer one whatever the arrival
//!   order or the number of concurrent writers, and an equal version replaces
//!   (later write wins, as [`OnlineRow::supersedes`](fstore_core::OnlineRow::supersedes)).
//!   A failed condition counts as skipped. Rows of one entity within one call
//!   are reduced to the one that wins before sending (exact written/skipped
//!   counts come from the replaced item). The bulk path runs these conditional
//!   puts concurrently (`max_concurrency`). `BatchWriteItem` is not used for
//!   rows: it cannot carry a condition, so it would be last-writer-wins by
//!   arrival; it costs the same write capacity per item anyway, only fewer
//!   HTTP requests. `TransactWriteItems` could carry conditions but costs
//!   twice the capacity and fails as a whole when one row is older.
//! * Items over DynamoDB's 400 KB limit (and oversized keys) are rejected
//!   before anything is sent, with an error naming the entity and the view.
//! * Throttling (`ProvisionedThroughputExceeded`, `ThrottlingException`,
//!   `RequestLimitExceeded`) and transient failures (timeouts, 5xx, dropped
//!   connections) are retried with backoff by the store itself; the SDK's own
//!   retries are off, so there is one retry budget and every HTTP request is
//!   counted ([`DynamoOnlineStore::request_counts`]).
//! * **TTL.** Core enforces the view ttl from `event_ts` on every read.
//!   DynamoDB's TTL (enabled by [`DynamoOnlineStore::ensure_tables`]) only
//!   frees storage, and `expires_at` is rounded up, so DynamoDB never deletes
//!   a row that core would still serve. Raising a view's ttl later needs a
//!   re-materialization (stored items keep their old `expires_at`); with
//!   native TTL on, reads "as of" a past time may find rows DynamoDB already
//!   freed. Set `native_ttl = false` to keep everything.
//!
//! * **Consistency.** Reads are eventually consistent by default (half the
//!   read capacity); right after a write they may return the previous
//!   version — never an older one than was once visible. Set
//!   `consistent_reads = true` for read-your-writes.
//!
//! ## Testing
//!
//! `tests/conformance.rs` runs the core conformance suite (including the
//! parity proptest) and the DynamoDB-specific tests against moto's server
//! (PyPI `moto[server]`), which `scripts/servers/dynamo.sh` installs and
//! starts on a loopback port. moto implements the TTL API, conditional puts,
//! BatchGetItem's 100-key limit, duplicate-key rejection, the 400 KB item
//! limit and `UnprocessedKeys` at the 16 MB response cap; dynalite (npm) lacks
//! the TTL API and DynamoDB Local is not installable from the registries we
//! use. moto does not enforce BatchWriteItem's 25-item limit (the chunking is
//! tested directly) and counts binary attributes by their base64 length (its
//! item limit for binary payloads is about 300 KB). Throttling is injected by
//! wrapping the store's low-level call layer in the crate's unit tests.
//!
//! ## Configuration
//!
//! [`DynamoOnlineStoreBuilder`] with typed [`DynamoConfigKey`]s, also read from
//! `FSTORE_DYNAMO_*` environment variables by `from_env()`. Credentials come
//! from static keys, an SDK config of your own, or (feature `aws-config`) the
//! standard AWS chain via `DynamoOnlineStoreBuilder::build_with_default_chain`.
#![cfg_attr(docsrs, feature(doc_cfg))]

mod client;
mod codec;
mod config;
mod error;
mod store;

pub use client::RequestCounts;
pub use config::{BACKEND, DEFAULT_TABLE, DynamoConfigKey, DynamoOnlineStoreBuilder};
pub use store::DynamoOnlineStore;
