//! Configuration: [`RedisConfigKey`], [`RedisOnlineStoreBuilder`]'s setters and
//! the validated [`Settings`], in core's configuration language
//! ([`fstore_core::config`]). Imports nothing else of this crate.

use std::fmt;
use std::str::FromStr;
use std::time::Duration;

use fred::types::config::{Config, ServerConfig};
use fstore_core::config::{ConfigKey, ConfigValues, REDACTED, format_duration, parse_key};
use fstore_core::{Error, Result};

/// Backend id used in errors, logs and [`fstore_core::OnlineStore::backend`].
pub const BACKEND: &str = "redis";

/// Default key prefix (the "project"): every key is `<prefix>:{<entity key>}`.
pub(crate) const DEFAULT_PREFIX: &str = "fstore";
const DEFAULT_POOL_SIZE: usize = 4;
const DEFAULT_COMMAND_TIMEOUT: Duration = Duration::from_secs(2);
const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(2);
const DEFAULT_EXPIRY_GRACE: Duration = Duration::from_secs(60);
const DEFAULT_SCRIPT_BATCH: usize = 64;

/// A configuration key of [`RedisOnlineStoreBuilder`].
///
/// Parsed from its name, an alias or its environment variable (any case) by
/// [`FromStr`]; values follow [`fstore_core::config`] (durations need a unit:
/// `500ms`, `2s`). [`ConfigKey::env_var`] gives the variable
/// [`RedisOnlineStoreBuilder::from_env`] reads (`FSTORE_REDIS_<NAME>`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum RedisConfigKey {
    /// `url` (aliases `redis_url`, `urls`; `FSTORE_REDIS_URL`): a Redis URL as understood by fred:
    /// `redis://[user:password@]host:port[/db]`, `rediss://…` (TLS),
    /// `redis-cluster://host:port?node=host2:port2&node=…` (cluster), or a
    /// comma-separated list of `redis://host:port` URLs (cluster seed nodes).
    /// Its password is never printed.
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
    /// `command_timeout` (alias `timeout`; `FSTORE_REDIS_COMMAND_TIMEOUT`): deadline
    /// of each command (and of a read call), e.g. `250ms`, `2s`. Default `2s`.
    CommandTimeout,
    /// `connect_timeout` (`FSTORE_REDIS_CONNECT_TIMEOUT`): deadline for opening a
    /// connection (TCP + TLS + handshake). Default `2s`.
    ConnectTimeout,
    /// `native_ttl` (`FSTORE_REDIS_NATIVE_TTL`): `true` (default) sets `PEXPIREAT`
    /// on each entity hash so Redis frees entities whose every view has expired.
    NativeTtl,
    /// `expiry_grace` (`FSTORE_REDIS_EXPIRY_GRACE`): extra time added to the
    /// native expiry (`event_ts + ttl + grace`), a margin for clock skew between
    /// the application and Redis. Default `60s`.
    ExpiryGrace,
    /// `script_batch` (`FSTORE_REDIS_SCRIPT_BATCH`): rows per `EVALSHA` of the
    /// newest-wins script (rows of one hash slot in cluster mode). Default 64.
    ScriptBatch,
}

impl ConfigKey for RedisConfigKey {
    const BACKEND: &'static str = BACKEND;
    const ENV_PREFIX: &'static str = "REDIS";
    const ALL: &'static [Self] = &[
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

    fn name(self) -> &'static str {
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

    fn aliases(self) -> &'static [&'static str] {
        match self {
            Self::Url => &["redis_url", "urls"],
            Self::Username => &["user"],
            Self::KeyPrefix => &["prefix", "project"],
            Self::CommandTimeout => &["timeout"],
            _ => &[],
        }
    }

    fn is_secret(self) -> bool {
        self == Self::Password
    }

    fn display_value(self, value: &str) -> String {
        match self {
            Self::Url => redact_url(value),
            Self::Password => REDACTED.to_owned(),
            _ => value.to_owned(),
        }
    }
}

impl AsRef<str> for RedisConfigKey {
    fn as_ref(&self) -> &str {
        self.name()
    }
}

impl fmt::Display for RedisConfigKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for RedisConfigKey {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self> {
        parse_key(s)
    }
}

/// Builds a [`RedisOnlineStore`](crate::RedisOnlineStore).
///
/// Setters never fail; [`build`](Self::build) validates everything. `build` is
/// synchronous and does no I/O: connections are opened on first use, or by
/// [`connect`](Self::connect), which builds and checks connectivity.
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
    values: ConfigValues<RedisConfigKey>,
}

impl fmt::Debug for RedisOnlineStoreBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("RedisOnlineStoreBuilder")
            .field(&self.values)
            .finish()
    }
}

impl RedisOnlineStoreBuilder {
    /// An empty builder (every key at its default; a URL is required).
    pub fn new() -> Self {
        Self::default()
    }

    /// A builder from the `FSTORE_REDIS_*` environment variables
    /// ([`ConfigKey::env_var`]); no other variable is read, and a
    /// `FSTORE_REDIS_*` variable that names no key is ignored with a warning.
    pub fn from_env() -> Self {
        Self {
            values: ConfigValues::from_env(),
        }
    }

    /// Sets one key.
    pub fn with_config(mut self, key: RedisConfigKey, value: impl Into<String>) -> Self {
        self.values.set(key, value);
        self
    }

    /// Sets a key given by name (see [`RedisConfigKey`]'s `FromStr`); an
    /// unknown name makes [`build`](Self::build) fail with
    /// [`Error::UnknownConfigKey`].
    pub fn with_config_str(mut self, key: &str, value: impl Into<String>) -> Self {
        self.values.set_str(key, value);
        self
    }

    /// The raw value of a key, if set.
    pub fn get_config(&self, key: RedisConfigKey) -> Option<&str> {
        self.values.get(key)
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
        self.with_config(RedisConfigKey::CommandTimeout, format_duration(t))
    }
    /// Sets [`RedisConfigKey::ConnectTimeout`].
    pub fn with_connect_timeout(self, t: Duration) -> Self {
        self.with_config(RedisConfigKey::ConnectTimeout, format_duration(t))
    }
    /// Sets [`RedisConfigKey::NativeTtl`].
    pub fn with_native_ttl(self, on: bool) -> Self {
        self.with_config(RedisConfigKey::NativeTtl, on.to_string())
    }
    /// Sets [`RedisConfigKey::ExpiryGrace`].
    pub fn with_expiry_grace(self, t: Duration) -> Self {
        self.with_config(RedisConfigKey::ExpiryGrace, format_duration(t))
    }
    /// Sets [`RedisConfigKey::ScriptBatch`].
    pub fn with_script_batch(self, n: usize) -> Self {
        self.with_config(RedisConfigKey::ScriptBatch, n.to_string())
    }

    /// Validates every key: the fred connection config and the other settings.
    ///
    /// # Errors
    /// [`Error::UnknownConfigKey`] for a key given by an unknown name;
    /// [`Error::InvalidInput`] naming the key for a missing URL, an unparsable
    /// URL, number, boolean or duration, a pool size or script batch of 0, a
    /// key prefix containing `{` or `}`, or TLS without the `tls` feature.
    pub(crate) fn settings(&self) -> Result<(Config, Settings)> {
        use RedisConfigKey as K;
        let c = &self.values;
        c.check_unknown()?;
        let url = c.required(K::Url)?;
        let force_cluster = c.bool(K::Cluster, false)?;
        let tls = c.bool(K::Tls, false)?;
        let mut config = parse_url(url, force_cluster)?;
        if let Some(u) = c.get(K::Username) {
            config.username = Some(u.to_owned());
        }
        if let Some(p) = c.get(K::Password) {
            config.password = Some(p.to_owned());
        }
        if tls || url.starts_with("rediss") {
            enable_tls(&mut config)?;
        }
        let prefix = c.get(K::KeyPrefix).unwrap_or(DEFAULT_PREFIX).to_owned();
        if prefix.contains(['{', '}']) {
            return Err(c.invalid(
                K::KeyPrefix,
                "must not contain '{' or '}' (they mark the cluster hash tag)",
            ));
        }
        let settings = Settings {
            prefix,
            pool_size: c.count(K::PoolSize, DEFAULT_POOL_SIZE, 1, usize::MAX)?,
            command_timeout: c.duration(K::CommandTimeout, DEFAULT_COMMAND_TIMEOUT)?,
            connect_timeout: c.duration(K::ConnectTimeout, DEFAULT_CONNECT_TIMEOUT)?,
            native_ttl: c.bool(K::NativeTtl, true)?,
            expiry_grace: c.duration(K::ExpiryGrace, DEFAULT_EXPIRY_GRACE)?,
            script_batch: c.count(K::ScriptBatch, DEFAULT_SCRIPT_BATCH, 1, usize::MAX)?,
        };
        Ok((config, settings))
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
    Error::invalid(format!(
        "{BACKEND}: config key '{key}' ({}) = '{value}': {what}",
        key.env_var()
    ))
}

fn parse_url(url: &str, force_cluster: bool) -> Result<Config> {
    #[cfg(feature = "tls")]
    ensure_crypto_provider(); // fred builds a rustls config for rediss:// URLs
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

/// rustls refuses to choose when more than one crypto backend is compiled into
/// the process (another crate may bring aws-lc-rs) and then panics inside fred;
/// this adapter's `tls` feature brings ring, so install it unless the host
/// application already chose one.
#[cfg(feature = "tls")]
pub(crate) fn ensure_crypto_provider() {
    if rustls::crypto::CryptoProvider::get_default().is_none() {
        // Err = another thread installed one first: fine.
        let _ = rustls::crypto::ring::default_provider().install_default();
    }
}

#[cfg(feature = "tls")]
fn enable_tls(config: &mut Config) -> Result<()> {
    ensure_crypto_provider();
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
        for &k in RedisConfigKey::ALL {
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
    fn durations_need_a_unit_and_keep_sub_millisecond_precision() {
        let base = || RedisOnlineStoreBuilder::new().with_url("redis://127.0.0.1:1");
        let err = base()
            .with_config(RedisConfigKey::CommandTimeout, "500")
            .build()
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("command_timeout") && err.contains("500ms"),
            "{err}"
        );
        let (_, s) = base()
            .with_command_timeout(Duration::from_micros(1500))
            .with_config_str("FSTORE_REDIS_EXPIRY_GRACE", "1h")
            .settings()
            .unwrap();
        assert_eq!(s.command_timeout, Duration::from_micros(1500));
        assert_eq!(s.expiry_grace, Duration::from_secs(3600));
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
