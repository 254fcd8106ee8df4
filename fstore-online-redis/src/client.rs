//! Driver I/O: the fred pool, the newest-wins Lua script, error mapping.

use std::future::Future;
use std::time::Duration;

use fred::clients::{Client, Pool};
use fred::interfaces::{ClientLike, HashesInterface, LuaInterface};
use fred::types::Builder;
use fred::types::config::{Config, ReconnectPolicy};
use fred::types::scan::{ScanType, Scanner};
use fstore_core::{Error, Result};
use futures::StreamExt;

use crate::config::{BACKEND, Settings};
use crate::error::map_err;

/// The newest-wins upsert, run atomically by Redis for a batch of rows.
///
/// `KEYS[i]` = the entity hash of row i. `ARGV[1]` = payload field,
/// `ARGV[2]` = version field, `ARGV[3]` = `e` (manage expiry) or `n` (native
/// TTL off); then per row: version (17 bytes), payload, expire-at in ms (empty
/// = the view has no ttl: the key must not expire).
///
/// Versions are compared byte by byte on their first 16 bytes (exact; no Lua
/// doubles, no locale-dependent string comparison); `>=` replaces, so an equal
/// version rewrites (later write wins) like `OnlineRow::supersedes`. The key's
/// expiry only ever grows: `PEXPIREAT … GT` on an existing key (a persistent
/// key counts as infinite), a plain `PEXPIREAT` on a new one, `PERSIST` for a
/// view without ttl. Returns the number of rows written.
pub(crate) const UPSERT_LUA: &str = r#"
local pf, vf, mode = ARGV[1], ARGV[2], ARGV[3]
local function newer_or_equal(a, b)
  if #b ~= 17 then return true end
  for i = 1, 16 do
    local x, y = string.byte(a, i), string.byte(b, i)
    if x ~= y then return x > y end
  end
  return true
end
local written = 0
local j = 4
for i = 1, #KEYS do
  local k = KEYS[i]
  local ver, payload, exp = ARGV[j], ARGV[j + 1], ARGV[j + 2]
  j = j + 3
  local old = redis.call('HGET', k, vf)
  if (not old) or newer_or_equal(ver, old) then
    local existed = 1
    if not old then existed = redis.call('EXISTS', k) end
    redis.call('HSET', k, vf, ver, pf, payload)
    if mode == 'e' then
      if exp == '' then
        redis.call('PERSIST', k)
      elseif existed == 1 then
        redis.call('PEXPIREAT', k, exp, 'GT')
      else
        redis.call('PEXPIREAT', k, exp)
      end
    end
    written = written + 1
  end
end
return written
"#;

/// An open pool plus the SHA1 of the loaded write script.
pub(crate) struct Conn {
    pub(crate) pool: Pool,
    pub(crate) sha: String,
    cluster: bool,
    settings_timeout: Duration,
}

impl Conn {
    pub(crate) async fn open(config: &Config, s: &Settings) -> Result<Self> {
        let cluster = config.server.is_clustered();
        let mut builder = Builder::from_config(config.clone());
        builder
            .with_performance_config(|p| {
                p.default_command_timeout = s.command_timeout;
            })
            .with_connection_config(|c| {
                c.connection_timeout = s.connect_timeout;
                c.internal_command_timeout = s.connect_timeout;
                c.max_command_attempts = 2;
                c.tcp.nodelay = Some(true);
            })
            .set_policy(ReconnectPolicy::new_exponential(0, 50, 2_000, 2));
        let pool = builder
            .build_pool(s.pool_size)
            .map_err(|e| map_err(e, "create the connection pool"))?;
        // fail_fast (fred's default) returns the first connection error; the
        // deadline is a backstop for servers that accept but never answer.
        let init = with_deadline(
            s.connect_timeout + Duration::from_millis(500),
            "connect",
            async { pool.init().await.map_err(|e| map_err(e, "connect")) },
        )
        .await;
        if let Err(e) = init {
            let p = pool.clone();
            tokio::spawn(async move {
                let _ = p.quit().await;
            });
            return Err(e);
        }
        let mut conn = Self {
            pool,
            sha: String::new(),
            cluster,
            settings_timeout: s.command_timeout,
        };
        match conn.load_script(conn.pool.next()).await {
            Ok(sha) => conn.sha = sha,
            Err(e) => {
                conn.shutdown();
                return Err(e);
            }
        }
        Ok(conn)
    }

    /// `SCRIPT LOAD` (on every primary in cluster mode); returns the SHA1.
    pub(crate) async fn load_script(&self, client: &Client) -> Result<String> {
        let sha: String = if self.cluster {
            client.script_load_cluster(UPSERT_LUA).await
        } else {
            client.script_load(UPSERT_LUA).await
        }
        .map_err(|e| map_err(e, "SCRIPT LOAD of the newest-wins script"))?;
        Ok(sha)
    }

    /// SCAN every key matching `pattern` (on every primary in cluster mode) and
    /// HDEL `fields` from each, one pipeline per page.
    pub(crate) async fn delete_fields(
        &self,
        pattern: &str,
        fields: [String; 2],
        cluster: bool,
    ) -> Result<()> {
        let client = self.pool.next();
        let mut stream = if cluster {
            client
                .scan_cluster(pattern.to_owned(), Some(1_000), Some(ScanType::Hash))
                .boxed()
        } else {
            client
                .scan(pattern.to_owned(), Some(1_000), Some(ScanType::Hash))
                .boxed()
        };
        while let Some(page) = stream.next().await {
            let mut page = page.map_err(|e| map_err(e, "SCAN"))?;
            if let Some(keys) = page.take_results().filter(|k| !k.is_empty()) {
                let p = client.pipeline();
                for k in keys {
                    let _: () = p
                        .hdel(k, fields.to_vec())
                        .await
                        .map_err(|e| map_err(e, "queue HDEL"))?;
                }
                let _: Vec<fred::types::Value> = p.all().await.map_err(|e| map_err(e, "HDEL"))?;
            }
            page.next();
        }
        Ok(())
    }

    /// Closes the pool in the background (if a runtime is around).
    pub(crate) fn shutdown(&self) {
        if let Ok(rt) = tokio::runtime::Handle::try_current() {
            let p = self.pool.clone();
            let t = self.settings_timeout;
            rt.spawn(async move {
                let _ = tokio::time::timeout(t, p.quit()).await;
            });
        }
    }
}

/// Runs `f` with a deadline; running out is [`Error::Timeout`].
pub(crate) async fn with_deadline<T>(
    d: Duration,
    what: &str,
    f: impl Future<Output = Result<T>>,
) -> Result<T> {
    match tokio::time::timeout(d, f).await {
        Ok(r) => r,
        Err(_) => Err(Error::Timeout {
            backend: BACKEND,
            message: format!(
                "{what}: no reply within {d:?} (server down, unreachable or overloaded)"
            ),
        }),
    }
}
