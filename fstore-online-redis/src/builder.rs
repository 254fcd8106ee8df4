//! [`RedisOnlineStoreBuilder`] and [`RedisConfigKey`]: typed configuration,
//! `FSTORE_REDIS_*` environment variables, validation.

use std::fmt;
use std::str::FromStr;
use std::time::Duration;

use fred::types::config::{Config, ServerConfig};
use fstore_core::{Error, Result};

use crate::BACKEND;
use crate::store::RedisOnlineStore;

/// Default key prefix (the "project"): every key is `<prefix>:{<entity key>}`.
pub(crate) const DEFAULT_PREFIX: &str = "fstore";
const DEFAULT_POOL_SIZE: usize = 4;
const DEFAULT_COMMAND_TIMEOUT: Duration = Duration::from_secs(2);
const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(2);
const DEFAULT_EXPIRY_GRACE: Duration = Duration::from_secs(60);
const DEFAULT_SCRIPT_BATCH: usize = 64;

/// A configuration key of [`RedisOnlineStoreBuilder`].
///
/// Parsed from its name (case-insensitive, with the aliases listed) by
/// [`FromStr`]; [`RedisConfigKey::env_var`] gives the environment variable
/// [`RedisOnlineStoreBuilder::from_env`] reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum RedisConfigKey {
    /// `url` (`FSTORE_REDIS_URL`): a Redis URL as understood by fred:
    /// `redis://[user:password@]host:port[/db]`, `rediss://…` (TLS),
    /// `redis-cluster://host:port?node=host2:port2&node=…` (cluster), or a
    /// comma-separated list of `redis://host:port` URLs (cluster seed nodes).
    Url,
    /// `cluster` (`FSTORE_REDIS_CLUSTER`): `true` to treat a plain `redis://`
    /// URL as a Redis Cluster seed node. Default `false` (a `redis-cluster://`
    /// URL or a list of URLs selects cluster mode by itself).
    Cluster,
    /// `username` (alias `user`; `FSTORE_REDIS_USERNAME`): ACL user; overrides the URL's.
    Username,
    /// `password` (`FSTORE_REDIS_PASSWORD`): password; overrides the URL's. Never printed.
    Password,
    /// `tls` (`FSTORE_REDIS_TLS`): `true` to use TLS (rustls, system roots) even
    /// with a `redis://` URL. Needs the crate feature `tls`.
    Tls,
    /// `key_prefix` (aliases `prefix`, `project`; `FSTORE_REDIS_KEY_PREFIX`):
    /// the namespace of every key. Default `fstore`. Must not contain `{` or `}`.
    KeyPrefix,
    /// `pool_size` (`FSTORE_REDIS_POOL_SIZE`): number of multiplexed connections
    /// (per node in cluster mode). Default 4.
    PoolSize,
    /// `command_timeout` (`FSTORE_REDIS_COMMAND_TIMEOUT`): deadline of each command
    /// (and of a read call). `250ms`, `2s`, `1m` or plain milliseconds. Default 2s.
    CommandTimeout,
    /// `connect_timeout` (`FSTORE_REDIS_CONNECT_TIMEOUT`): deadline for opening a
    /// connection (TCP + TLS + handshake). Default 2s.
    ConnectTimeout,
    /// `native_ttl` (`FSTORE_REDIS_NATIVE_TTL`): `true` (default) sets `PEXPIREAT`
    /// on each entity hash so Redis frees entities whose every view has expired.
    NativeTtl,
    /// `expiry_grace` (`FSTORE_REDIS_EXPIRY_GRACE`): extra time added to the
    /// native expiry (`event_ts + ttl + grace`), a margin for clock skew between
    /// the application and Redis. Default 60s.
    ExpiryGrace,
    /// `script_batch` (`FSTORE_REDIS_SCRIPT_BATCH`): rows per `EVALSHA` of the
    /// newest-wins script (rows of one hash slot in cluster mode). Default 64.
    ScriptBatch,
}

impl RedisConfigKey {
    /// Every key, in declaration order.
    pub const ALL: [Self; 12] = [
        Self::Url,
        Self::Cluster,
        Self::Username,
        Self::Password,
        Self::Tls,
        Self::KeyPrefix,
        Self::PoolSize,
        Self::CommandTimeout,
        Self::ConnectTimeout,
        Self::NativeTtl,
        Self::ExpiryGrace,
        Self::ScriptBatch,
    ];

    /// The environment variable read by [`RedisOnlineStoreBuilder::from_env`].
    pub fn env_var(self) -> &'static str {
        match self {
            Self::Url => "FSTORE_REDIS_URL",
            Self::Cluster => "FSTORE_REDIS_CLUSTER",
            Self::Username => "FSTORE_REDIS_USERNAME",
            Self::Password => "FSTORE_REDIS_PASSWORD",
            Self::Tls => "FSTORE_REDIS_TLS",
            Self::KeyPrefix => "FSTORE_REDIS_KEY_PREFIX",
            Self::PoolSize => "FSTORE_REDIS_POOL_SIZE",
            Self::CommandTimeout => "FSTORE_REDIS_COMMAND_TIMEOUT",
            Self::ConnectTimeout => "FSTORE_REDIS_CONNECT_TIMEOUT",
            Self::NativeTtl => "FSTORE_REDIS_NATIVE_TTL",
            Self::ExpiryGrace => "FSTORE_REDIS_EXPIRY_GRACE",
            Self::ScriptBatch => "FSTORE_REDIS_SCRIPT_BATCH",
        }
    }
}

impl AsRef<str> for RedisConfigKey {
    fn as_ref(&self) -> &str {
        match self {
            Self::Url => "url",
            Self::Cluster => "cluster",
            Self::Username => "username",
            Self::Password => "password",
            Self::Tls => "tls",
            Self::KeyPrefix => "key_prefix",
            Self::PoolSize => "pool_size",
            Self::CommandTimeout => "command_timeout",
            Self::ConnectTimeout => "connect_timeout",
            Self::NativeTtl => "native_ttl",
            Self::ExpiryGrace => "expiry_grace",
            Self::ScriptBatch => "script_batch",
        }
    }
}

impl fmt::Display for RedisConfigKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_ref())
    }
}

impl FromStr for RedisConfigKey {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self> {
        let k = s.trim().to_ascii_lowercase();
        let k = k.strip_prefix("fstore_redis_").unwrap_or(&k);
        Ok(match k {
            "url" | "redis_url" | "urls" => Self::Url,
            "cluster" => Self::Cluster,
            "username" | "user" => Self::Username,
            "password" => Self::Password,
            "tls" => Self::Tls,
            "key_prefix" | "prefix" | "project" => Self::KeyPrefix,
            "pool_size" => Self::PoolSize,
            "command_timeout" | "timeout" => Self::CommandTimeout,
            "connect_timeout" => Self::ConnectTimeout,
            "native_ttl" => Self::NativeTtl,
            "expiry_grace" => Self::ExpiryGrace,
            "script_batch" => Self::ScriptBatch,
            _ => {
                return Err(Error::UnknownConfigKey {
                    backend: BACKEND,
                    key: s.to_owned(),
                });
            }
        })
    }
}

/// Builds a [`RedisOnlineStore`].
///
/// Setters never fail; [`RedisOnlineStoreBuilder::build`] validates
/// everything. `build` is synchronous and does no I/O: connections are opened
/// on first use.
///
/// ```
/// use std::time::Duration;
/// use fstore_online_redis::{RedisConfigKey, RedisOnlineStoreBuilder};
///
/// let store = RedisOnlineStoreBuilder::new()
///     .with_url("redis://127.0.0.1:6379")
///     .with_key_prefix("shop")
///     .with_command_timeout(Duration::from_millis(500))
///     .with_config(RedisConfigKey::PoolSize, "8")
///     .build()?;
/// assert_eq!(fstore_core::OnlineStore::store_id(&store), "redis:shop@127.0.0.1:6379");
/// # Ok::<(), fstore_core::Error>(())
/// ```
#[derive(Clone, Default)]
pub struct RedisOnlineStoreBuilder {
    url: Option<String>,
    cluster: Option<String>,
    username: Option<String>,
    password: Option<String>,
    tls: Option<String>,
    key_prefix: Option<String>,
    pool_size: Option<String>,
    command_timeout: Option<String>,
    connect_timeout: Option<String>,
    native_ttl: Option<String>,
    expiry_grace: Option<String>,
    script_batch: Option<String>,
    /// Unknown keys given to `with_config_str`, reported by `build`.
    unknown: Vec<String>,
}

impl fmt::Debug for RedisOnlineStoreBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RedisOnlineStoreBuilder")
            .field("url", &self.url.as_deref().map(redact_url))
            .field("cluster", &self.cluster)
            .field("username", &self.username)
            .field("password", &self.password.as_ref().map(|_| "***"))
            .field("tls", &self.tls)
            .field("key_prefix", &self.key_prefix)
            .field("pool_size", &self.pool_size)
            .field("command_timeout", &self.command_timeout)
            .finish_non_exhaustive()
    }
}

impl RedisOnlineStoreBuilder {
    /// An empty builder (every key at its default; a URL is required).
    pub fn new() -> Self {
        Self::default()
    }

    /// A builder from the `FSTORE_REDIS_*` environment variables
    /// ([`RedisConfigKey::env_var`]); no other variable is read.
    pub fn from_env() -> Self {
        let mut b = Self::new();
        for key in RedisConfigKey::ALL {
            if let Ok(v) = std::env::var(key.env_var()) {
                b = b.with_config(key, v);
            }
        }
        b
    }

    /// Sets one key.
    pub fn with_config(mut self, key: RedisConfigKey, value: impl Into<String>) -> Self {
        let v = Some(value.into());
        match key {
            RedisConfigKey::Url => self.url = v,
            RedisConfigKey::Cluster => self.cluster = v,
            RedisConfigKey::Username => self.username = v,
            RedisConfigKey::Password => self.password = v,
            RedisConfigKey::Tls => self.tls = v,
            RedisConfigKey::KeyPrefix => self.key_prefix = v,
            RedisConfigKey::PoolSize => self.pool_size = v,
            RedisConfigKey::CommandTimeout => self.command_timeout = v,
            RedisConfigKey::ConnectTimeout => self.connect_timeout = v,
            RedisConfigKey::NativeTtl => self.native_ttl = v,
            RedisConfigKey::ExpiryGrace => self.expiry_grace = v,
            RedisConfigKey::ScriptBatch => self.script_batch = v,
        }
        self
    }

    /// Sets a key given by name (see [`RedisConfigKey`]'s `FromStr`); an
    /// unknown name makes [`build`](Self::build) fail with
    /// [`Error::UnknownConfigKey`].
    pub fn with_config_str(mut self, key: &str, value: impl Into<String>) -> Self {
        match key.parse::<RedisConfigKey>() {
            Ok(k) => self.with_config(k, value),
            Err(_) => {
                self.unknown.push(key.to_owned());
                self
            }
        }
    }

    /// Sets [`RedisConfigKey::Url`].
    pub fn with_url(self, url: impl Into<String>) -> Self {
        self.with_config(RedisConfigKey::Url, url)
    }
    /// Sets [`RedisConfigKey::Cluster`].
    pub fn with_cluster(self, cluster: bool) -> Self {
        self.with_config(RedisConfigKey::Cluster, cluster.to_string())
    }
    /// Sets [`RedisConfigKey::Username`].
    pub fn with_username(self, user: impl Into<String>) -> Self {
        self.with_config(RedisConfigKey::Username, user)
    }
    /// Sets [`RedisConfigKey::Password`].
    pub fn with_password(self, password: impl Into<String>) -> Self {
        self.with_config(RedisConfigKey::Password, password)
    }
    /// Sets [`RedisConfigKey::Tls`].
    pub fn with_tls(self, tls: bool) -> Self {
        self.with_config(RedisConfigKey::Tls, tls.to_string())
    }
    /// Sets [`RedisConfigKey::KeyPrefix`].
    pub fn with_key_prefix(self, prefix: impl Into<String>) -> Self {
        self.with_config(RedisConfigKey::KeyPrefix, prefix)
    }
    /// Sets [`RedisConfigKey::PoolSize`].
    pub fn with_pool_size(self, n: usize) -> Self {
        self.with_config(RedisConfigKey::PoolSize, n.to_string())
    }
    /// Sets [`RedisConfigKey::CommandTimeout`].
    pub fn with_command_timeout(self, t: Duration) -> Self {
        self.with_config(
            RedisConfigKey::CommandTimeout,
            format!("{}ms", t.as_millis()),
        )
    }
    /// Sets [`RedisConfigKey::ConnectTimeout`].
    pub fn with_connect_timeout(self, t: Duration) -> Self {
        self.with_config(
            RedisConfigKey::ConnectTimeout,
            format!("{}ms", t.as_millis()),
        )
    }
    /// Sets [`RedisConfigKey::NativeTtl`].
    pub fn with_native_ttl(self, on: bool) -> Self {
        self.with_config(RedisConfigKey::NativeTtl, on.to_string())
    }
    /// Sets [`RedisConfigKey::ExpiryGrace`].
    pub fn with_expiry_grace(self, t: Duration) -> Self {
        self.with_config(RedisConfigKey::ExpiryGrace, format!("{}ms", t.as_millis()))
    }
    /// Sets [`RedisConfigKey::ScriptBatch`].
    pub fn with_script_batch(self, n: usize) -> Self {
        self.with_config(RedisConfigKey::ScriptBatch, n.to_string())
    }

    /// Validates the configuration and returns the store (no I/O; the
    /// connection pool opens on first use).
    ///
    /// # Errors
    /// [`Error::UnknownConfigKey`] for a key given by an unknown name;
    /// [`Error::InvalidInput`] naming the key for a missing URL, an unparsable
    /// URL, number, boolean or duration, a pool size or script batch of 0, a
    /// key prefix containing `{` or `}`, or TLS without the `tls` feature.
    pub fn build(self) -> Result<RedisOnlineStore> {
        if let Some(k) = self.unknown.first() {
            return Err(Error::UnknownConfigKey {
                backend: BACKEND,
                key: k.clone(),
            });
        }
        let url = self
            .url
            .as_deref()
            .map(str::trim)
            .filter(|u| !u.is_empty())
            .ok_or_else(|| {
                Error::invalid(format!(
                    "{BACKEND}: config key 'url' ({}) is required",
                    RedisConfigKey::Url.env_var()
                ))
            })?;
        let force_cluster = parse_bool(RedisConfigKey::Cluster, self.cluster.as_deref(), false)?;
        let tls = parse_bool(RedisConfigKey::Tls, self.tls.as_deref(), false)?;
        let mut config = parse_url(url, force_cluster)?;
        if let Some(u) = self.username.filter(|u| !u.is_empty()) {
            config.username = Some(u);
        }
        if let Some(p) = self.password {
            config.password = Some(p);
        }
        if tls || url.starts_with("rediss") {
            enable_tls(&mut config)?;
        }
        let prefix = self.key_prefix.unwrap_or_else(|| DEFAULT_PREFIX.to_owned());
        if prefix.contains(['{', '}']) {
            return Err(Error::invalid(format!(
                "{BACKEND}: config key 'key_prefix' is '{prefix}': it must not contain '{{' or '}}' (they mark the cluster hash tag)"
            )));
        }
        let pool_size = parse_usize(
            RedisConfigKey::PoolSize,
            self.pool_size.as_deref(),
            DEFAULT_POOL_SIZE,
        )?;
        let script_batch = parse_usize(
            RedisConfigKey::ScriptBatch,
            self.script_batch.as_deref(),
            DEFAULT_SCRIPT_BATCH,
        )?;
        let settings = Settings {
            prefix,
            pool_size,
            command_timeout: parse_duration(
                RedisConfigKey::CommandTimeout,
                self.command_timeout.as_deref(),
                DEFAULT_COMMAND_TIMEOUT,
            )?,
            connect_timeout: parse_duration(
                RedisConfigKey::ConnectTimeout,
                self.connect_timeout.as_deref(),
                DEFAULT_CONNECT_TIMEOUT,
            )?,
            native_ttl: parse_bool(RedisConfigKey::NativeTtl, self.native_ttl.as_deref(), true)?,
            expiry_grace: parse_duration(
                RedisConfigKey::ExpiryGrace,
                self.expiry_grace.as_deref(),
                DEFAULT_EXPIRY_GRACE,
            )?,
            script_batch,
        };
        Ok(RedisOnlineStore::new(config, settings))
    }
}

/// Validated settings other than the fred connection config.
#[derive(Debug, Clone)]
pub(crate) struct Settings {
    pub(crate) prefix: String,
    pub(crate) pool_size: usize,
    pub(crate) command_timeout: Duration,
    pub(crate) connect_timeout: Duration,
    pub(crate) native_ttl: bool,
    pub(crate) expiry_grace: Duration,
    pub(crate) script_batch: usize,
}

fn bad(key: RedisConfigKey, value: &str, what: &str) -> Error {
    Error::invalid(format!("{BACKEND}: config key '{key}' = '{value}': {what}"))
}

fn parse_bool(key: RedisConfigKey, v: Option<&str>, default: bool) -> Result<bool> {
    match v.map(|s| s.trim().to_ascii_lowercase()) {
        None => Ok(default),
        Some(s) => match s.as_str() {
            "" => Ok(default),
            "1" | "true" | "yes" | "on" => Ok(true),
            "0" | "false" | "no" | "off" => Ok(false),
            _ => Err(bad(key, &s, "expected true or false")),
        },
    }
}

fn parse_usize(key: RedisConfigKey, v: Option<&str>, default: usize) -> Result<usize> {
    match v.map(str::trim).filter(|s| !s.is_empty()) {
        None => Ok(default),
        Some(s) => match s.parse::<usize>() {
            Ok(0) => Err(bad(key, s, "must be at least 1")),
            Ok(n) => Ok(n),
            Err(_) => Err(bad(key, s, "expected a positive integer")),
        },
    }
}

/// `250ms`, `2s`, `1m`, `1h` or plain milliseconds.
pub(crate) fn parse_duration(
    key: RedisConfigKey,
    v: Option<&str>,
    default: Duration,
) -> Result<Duration> {
    let Some(s) = v.map(str::trim).filter(|s| !s.is_empty()) else {
        return Ok(default);
    };
    let split = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    let (num, unit) = s.split_at(split);
    let n: u64 = num.parse().map_err(|_| {
        bad(
            key,
            s,
            "expected a duration such as 250ms, 2s, 1m or plain milliseconds",
        )
    })?;
    let ms = match unit.trim() {
        "" | "ms" => Some(n),
        "s" => n.checked_mul(1_000),
        "m" => n.checked_mul(60_000),
        "h" => n.checked_mul(3_600_000),
        _ => None,
    }
    .ok_or_else(|| {
        bad(
            key,
            s,
            "expected a duration such as 250ms, 2s, 1m or plain milliseconds",
        )
    })?;
    Ok(Duration::from_millis(ms))
}

fn parse_url(url: &str, force_cluster: bool) -> Result<Config> {
    let map = |e: fred::error::Error| bad(RedisConfigKey::Url, &redact_url(url), e.details());
    let parts: Vec<&str> = url
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .collect();
    if parts.len() > 1 {
        // A list of seed nodes: the first URL carries credentials and options.
        let mut config = Config::from_url_clustered(parts[0]).map_err(map)?;
        let mut hosts = config.server.hosts();
        for p in &parts[1..] {
            let c = Config::from_url_centralized(p).map_err(map)?;
            hosts.extend(c.server.hosts());
        }
        config.server = ServerConfig::Clustered {
            hosts,
            policy: Default::default(),
        };
        return Ok(config);
    }
    if force_cluster {
        Config::from_url_clustered(url).map_err(map)
    } else {
        Config::from_url(url).map_err(map)
    }
}

#[cfg(feature = "tls")]
fn enable_tls(config: &mut Config) -> Result<()> {
    if config.tls.is_none() {
        let connector = fred::types::config::TlsConnector::default_rustls()
            .map_err(|e| bad(RedisConfigKey::Tls, "true", e.details()))?;
        config.tls = Some(connector.into());
    }
    Ok(())
}

#[cfg(not(feature = "tls"))]
fn enable_tls(_config: &mut Config) -> Result<()> {
    Err(Error::invalid(format!(
        "{BACKEND}: TLS was requested (config key 'tls' or a rediss:// URL) but fstore-online-redis was built without its 'tls' feature"
    )))
}

/// The URL with any password replaced by `***`.
pub(crate) fn redact_url(url: &str) -> String {
    url.split(',')
        .map(|u| match (u.find("://"), u.rfind('@')) {
            (Some(s), Some(at)) if at > s => {
                let cred = &u[s + 3..at];
                let user = cred.split(':').next().unwrap_or("");
                if cred.contains(':') {
                    format!("{}{user}:***{}", &u[..s + 3], &u[at..])
                } else {
                    format!("{}***{}", &u[..s + 3], &u[at..])
                }
            }
            _ => u.to_owned(),
        })
        .collect::<Vec<_>>()
        .join(",")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_parse_with_aliases_and_env_names() {
        for k in RedisConfigKey::ALL {
            assert_eq!(k.as_ref().parse::<RedisConfigKey>().unwrap(), k);
            assert_eq!(k.env_var().parse::<RedisConfigKey>().unwrap(), k);
        }
        assert_eq!(
            "PROJECT".parse::<RedisConfigKey>().unwrap(),
            RedisConfigKey::KeyPrefix
        );
        assert!(matches!(
            "nope".parse::<RedisConfigKey>(),
            Err(Error::UnknownConfigKey { key, .. }) if key == "nope"
        ));
    }

    #[test]
    fn build_validates() {
        let err = RedisOnlineStoreBuilder::new()
            .build()
            .unwrap_err()
            .to_string();
        assert!(err.contains("'url'"), "{err}");
        let err = RedisOnlineStoreBuilder::new()
            .with_url("redis://127.0.0.1:1")
            .with_config(RedisConfigKey::PoolSize, "0")
            .build()
            .unwrap_err()
            .to_string();
        assert!(err.contains("pool_size"), "{err}");
        let err = RedisOnlineStoreBuilder::new()
            .with_url("redis://127.0.0.1:1")
            .with_key_prefix("a{b}")
            .build()
            .unwrap_err()
            .to_string();
        assert!(err.contains("key_prefix"), "{err}");
        let err = RedisOnlineStoreBuilder::new()
            .with_url("redis://127.0.0.1:1")
            .with_config(RedisConfigKey::CommandTimeout, "soon")
            .build()
            .unwrap_err()
            .to_string();
        assert!(err.contains("command_timeout"), "{err}");
        let err = RedisOnlineStoreBuilder::new()
            .with_url("redis://127.0.0.1:1")
            .with_config_str("colour", "blue")
            .build()
            .unwrap_err();
        assert!(matches!(err, Error::UnknownConfigKey { .. }), "{err}");
        let err = RedisOnlineStoreBuilder::new()
            .with_url("not a url")
            .build()
            .unwrap_err()
            .to_string();
        assert!(err.contains("'url'"), "{err}");
    }

    #[test]
    fn durations() {
        let k = RedisConfigKey::CommandTimeout;
        let d = Duration::ZERO;
        assert_eq!(
            parse_duration(k, Some("250ms"), d).unwrap(),
            Duration::from_millis(250)
        );
        assert_eq!(
            parse_duration(k, Some("2s"), d).unwrap(),
            Duration::from_secs(2)
        );
        assert_eq!(
            parse_duration(k, Some("1m"), d).unwrap(),
            Duration::from_secs(60)
        );
        assert_eq!(
            parse_duration(k, Some("15"), d).unwrap(),
            Duration::from_millis(15)
        );
        assert!(parse_duration(k, Some("2 weeks"), d).is_err());
    }

    #[test]
    fn debug_hides_secrets() {
        let b = RedisOnlineStoreBuilder::new()
            .with_url("redis://alice:s3cret@127.0.0.1:6379")
            .with_password("hunter2");
        let s = format!("{b:?}");
        assert!(!s.contains("s3cret") && !s.contains("hunter2"), "{s}");
        let store = b.build().unwrap();
        let s = format!("{store:?}");
        assert!(!s.contains("s3cret") && !s.contains("hunter2"), "{s}");
        let id = fstore_core::OnlineStore::store_id(&store);
        assert!(!id.contains("s3cret") && !id.contains("hunter2"), "{id}");
    }

    #[test]
    fn url_lists_are_clusters() {
        let c = parse_url("redis://127.0.0.1:7000, redis://127.0.0.1:7001", false).unwrap();
        assert!(c.server.is_clustered());
        assert_eq!(c.server.hosts().len(), 2);
        let c = parse_url("redis://127.0.0.1:7000", true).unwrap();
        assert!(c.server.is_clustered());
        let c = parse_url("redis-cluster://127.0.0.1:7000?node=127.0.0.1:7001", false).unwrap();
        assert!(c.server.is_clustered());
        let c = parse_url("redis://127.0.0.1:7000", false).unwrap();
        assert!(!c.server.is_clustered());
    }
}
