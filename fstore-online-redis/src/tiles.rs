//! Aggregation tiles ([semantics §11](fstore_core::docs::semantics)) in Redis.
//!
//! One hash per (view, entity): `<prefix>:{<entity key>}:agg:<view>` — the
//! same hash tag as the entity's row hash, so a cluster keeps them on one
//! slot. Fields `<feature>@<tile start µs>` hold `i64 BE expires_at` + core's
//! tile-state bytes; field `__v` is a version counter.
//!
//! * Read: `HGETALL` of every requested key, issued together on one
//!   connection (fred pipelines them into one round trip).
//! * Merge (push) and replace (materialization) are an optimistic
//!   compare-and-set: `HGETALL`, merge in core's code, then one atomic Lua
//!   script that applies the new fields (and drops expired ones) only if
//!   `__v` is unchanged, bumping it. A concurrent writer makes the script
//!   refuse and the loser retries with fresh state, so concurrent pushers
//!   lose nothing.

use std::collections::HashMap;

use bytes::Bytes;
use fred::clients::Client;
use fred::interfaces::{HashesInterface, KeysInterface, LuaInterface};
use fred::types::Value;
use fred::types::scan::{ScanType, Scanner};
use fstore_core::{Error, OnlineKey, Result, Tile, TileMergeFn, TileWrite};
use futures::StreamExt;

use crate::BACKEND;
use crate::error::map_err;
use crate::layout::hash_key;

/// `KEYS[1]` = tile hash; `ARGV[1]` = expected `__v` (`""` = absent),
/// `ARGV[2]` = number of fields to set, then field/value pairs, then fields
/// to delete. Returns 1 when applied, 0 when `__v` moved.
const CAS_LUA: &str = r#"
local v = redis.call('HGET', KEYS[1], '__v')
if (v or '') ~= ARGV[1] then return 0 end
local n = tonumber(ARGV[2])
local j = 3
for i = 1, n do
  redis.call('HSET', KEYS[1], ARGV[j], ARGV[j + 1])
  j = j + 2
end
while j <= #ARGV do
  redis.call('HDEL', KEYS[1], ARGV[j])
  j = j + 1
end
redis.call('HINCRBY', KEYS[1], '__v', 1)
return 1
"#;

const VERSION: &str = "__v";
const MAX_ATTEMPTS: usize = 200;
const CONCURRENT_ENTITIES: usize = 64;

/// The tile hash of (view, entity).
pub(crate) fn tile_key(prefix: &str, view: &str, entity_key: &[u8]) -> Vec<u8> {
    let mut k = hash_key(prefix, entity_key);
    k.extend_from_slice(b":agg:");
    k.extend_from_slice(view.as_bytes());
    k
}

/// The `SCAN MATCH` pattern of every tile hash of `view`.
pub(crate) fn tile_pattern(prefix: &str, view: &str) -> String {
    let esc = |s: &str, out: &mut String| {
        for c in s.chars() {
            if matches!(c, '*' | '?' | '[' | ']' | '\\') {
                out.push('\\');
            }
            out.push(c);
        }
    };
    let mut p = String::with_capacity(prefix.len() + view.len() + 12);
    esc(prefix, &mut p);
    p.push_str(":{*}:agg:");
    esc(view, &mut p);
    p
}

fn decode_tiles(key: &[u8], fields: HashMap<Bytes, Bytes>) -> Result<Vec<Tile>> {
    let mut out = Vec::with_capacity(fields.len());
    for (f, v) in fields {
        if f.as_ref() == VERSION.as_bytes() {
            continue;
        }
        let bad = |m: &str| {
            Error::backend_msg(
                BACKEND,
                format!(
                    "tile hash '{}' field '{}': {m}",
                    String::from_utf8_lossy(key),
                    String::from_utf8_lossy(&f)
                ),
            )
        };
        let name = std::str::from_utf8(&f).map_err(|_| bad("not UTF-8"))?;
        let (feature, start) = name.rsplit_once('@').ok_or_else(|| bad("no '@'"))?;
        let start: i64 = start.parse().map_err(|_| bad("bad tile start"))?;
        if v.len() < 8 {
            return Err(bad("value shorter than its 8-byte expiry"));
        }
        let mut exp = [0u8; 8];
        exp.copy_from_slice(&v[..8]);
        out.push(Tile {
            feature: feature.to_owned(),
            start,
            expires_at: i64::from_be_bytes(exp),
            state: v[8..].to_vec(),
        });
    }
    Ok(out)
}

/// Every tile of each key, aligned with `keys`.
pub(crate) async fn read(
    client: &Client,
    prefix: &str,
    keys: &[OnlineKey],
) -> Result<Vec<Vec<Tile>>> {
    let hkeys: Vec<Vec<u8>> = keys
        .iter()
        .map(|k| tile_key(prefix, &k.view, &k.entity_key))
        .collect();
    let replies = futures::future::join_all(hkeys.iter().map(|k| async move {
        let m: HashMap<Bytes, Bytes> = client
            .hgetall(Bytes::from(k.clone()))
            .await
            .map_err(|e| map_err(e, "HGETALL of aggregation tiles"))?;
        decode_tiles(k, m)
    }))
    .await;
    replies.into_iter().collect()
}

/// Applies `w` to its entity's tile hash: each tile merged into the stored
/// one with `merge` (or replacing it when `merge` is `None`), expired tiles
/// dropped — under compare-and-set, retried on a concurrent change.
async fn apply_one(
    client: &Client,
    prefix: &str,
    view: &str,
    w: &TileWrite,
    merge: Option<&TileMergeFn>,
) -> Result<()> {
    let key = Bytes::from(tile_key(prefix, view, &w.entity_key));
    for _ in 0..MAX_ATTEMPTS {
        let stored: HashMap<Bytes, Bytes> = client
            .hgetall(key.clone())
            .await
            .map_err(|e| map_err(e, "HGETALL of aggregation tiles"))?;
        let version = stored.get(VERSION.as_bytes()).cloned().unwrap_or_default();
        let tiles = decode_tiles(&key, stored.clone())?;
        let mut args: Vec<Value> = vec![Value::Bytes(version), Value::Null];
        let mut n_set = 0i64;
        let mut touched = std::collections::HashSet::new();
        for t in &w.tiles {
            let field = t.field();
            let old = tiles
                .iter()
                .find(|s| s.feature == t.feature && s.start == t.start);
            let state = match (merge, old) {
                (Some(m), Some(old)) => m(&t.feature, &old.state, &t.state)?,
                _ => t.state.clone(),
            };
            let mut v = Vec::with_capacity(8 + state.len());
            v.extend_from_slice(&t.expires_at.to_be_bytes());
            v.extend_from_slice(&state);
            touched.insert(field.clone());
            args.push(Value::from(field));
            args.push(Value::Bytes(Bytes::from(v)));
            n_set += 1;
        }
        args[1] = Value::from(n_set);
        for s in &tiles {
            let f = s.field();
            if s.expires_at <= w.expire_before && !touched.contains(&f) {
                args.push(Value::from(f));
            }
        }
        let applied: i64 = client
            .eval(CAS_LUA, vec![key.clone()], args)
            .await
            .map_err(|e| map_err(e, "tile compare-and-set script"))?;
        if applied == 1 {
            return Ok(());
        }
    }
    Err(Error::Conflict(format!(
        "{BACKEND}: tiles of view '{view}' for one entity changed {MAX_ATTEMPTS} times in a row under compare-and-set"
    )))
}

/// Applies every write, a bounded number of entities at a time.
pub(crate) async fn apply(
    client: &Client,
    prefix: &str,
    view: &str,
    writes: &[TileWrite],
    merge: Option<&TileMergeFn>,
) -> Result<()> {
    let mut stream = futures::stream::iter(0..writes.len())
        .map(|i| apply_one(client, prefix, view, &writes[i], merge))
        .buffer_unordered(CONCURRENT_ENTITIES);
    while let Some(r) = stream.next().await {
        r?;
    }
    Ok(())
}

/// Deletes every tile hash of `view`.
pub(crate) async fn delete_view(
    client: &Client,
    prefix: &str,
    view: &str,
    cluster: bool,
) -> Result<()> {
    let pattern = tile_pattern(prefix, view);
    let mut stream = if cluster {
        client
            .scan_cluster(pattern, Some(1_000), Some(ScanType::Hash))
            .boxed()
    } else {
        client
            .scan(pattern, Some(1_000), Some(ScanType::Hash))
            .boxed()
    };
    while let Some(page) = stream.next().await {
        let mut page = page.map_err(|e| map_err(e, "SCAN of tile hashes"))?;
        if let Some(keys) = page.take_results().filter(|k| !k.is_empty()) {
            for k in keys {
                let _: i64 = client
                    .del(k)
                    .await
                    .map_err(|e| map_err(e, "DEL of a tile hash"))?;
            }
        }
        page.next();
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tile_keys_share_the_entity_hash_tag_and_patterns_escape_globs() {
        let k = tile_key("p*", "txn", b"ab}c");
        assert!(k.starts_with(&hash_key("p*", b"ab}c")));
        assert!(k.ends_with(b":agg:txn"));
        assert_eq!(tile_pattern("p*", "txn"), "p\\*:{*}:agg:txn");
    }
}
