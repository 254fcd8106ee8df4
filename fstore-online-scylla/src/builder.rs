//! [`ScyllaOnlineStoreBuilder`], [`ScyllaConfigKey`] and `from_env`.

use std::fmt;
use std::str::FromStr;
use std::time::Duration;

use scylla::statement::Consistency;

use crate::BACKEND;
use crate::client::{ScyllaOnlineStore, Settings};
use crate::cql::{Replication, valid_identifier};
use crate::error::Error;

/// Default keyspace.
pub(crate) const DEFAULT_KEYSPACE: &str = "fstore";
/// Default table.
pub(crate) const DEFAULT_TABLE: &str = "online_rows";

/// A configuration key of [`ScyllaOnlineStoreBuilder`].
///
/// Each key has a canonical name (`as_ref()`), accepted by [`FromStr`] together
/// with its environment variable name (`FSTORE_SCYLLA_<NAME>`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ScyllaConfigKey {
    /// `contact_points`: comma-separated `host:port` list (port defaults to 9042).
    ContactPoints,
    /// `keyspace` (default `fstore`): lower-case CQL identifier.
    Keyspace,
    /// `table` (default `online_rows`): lower-case CQL identifier.
    Table,
    /// `local_dc`: datacenter to prefer (DC-aware, token-aware load balancing,
    /// no failover to remote DCs). Unset: every node, token-aware.
    LocalDc,
    /// `read_consistency` (default `LOCAL_QUORUM`): `ONE`, `LOCAL_ONE`, `QUORUM`,
    /// `LOCAL_QUORUM`, `EACH_QUORUM`, `ALL`, …
    ReadConsistency,
    /// `write_consistency` (default `LOCAL_QUORUM`).
    WriteConsistency,
    /// `username` for password authentication.
    Username,
    /// `password` for password authentication (never printed).
    Password,
    /// `tls` (default `false`): connect with TLS (crate feature `tls`).
    Tls,
    /// `tls_ca_file`: PEM file of CA certificates to trust (default: the
    /// platform's roots). Crate feature `tls`.
    TlsCaFile,
    /// `connect_timeout` (default `10s`): deadline for [`ScyllaOnlineStoreBuilder::connect`].
    ConnectTimeout,
    /// `request_timeout` (default `5s`): client-side deadline of one request.
    RequestTimeout,
    /// `read_concurrency` (default `128`): single-partition reads in flight per `read` call.
    ReadConcurrency,
    /// `write_concurrency` (default `256`): single-partition writes in flight per `write` call.
    WriteConcurrency,
    /// `replication` (default `simple:1`) used by `ensure_schema`: `simple:N` or
    /// `network:dc1=N,dc2=M`.
    Replication,
    /// `ttl_grace` (default `60s`): added to every `USING TTL` so that server
    /// clock skew never expires a row before core calls it expired.
    TtlGrace,
    /// `await_schema_agreement` (default `true`): after DDL in `ensure_schema`,
    /// wait until every node has the schema.
    AwaitSchemaAgreement,
}

impl ScyllaConfigKey {
    /// Every key.
    pub const ALL: [Self; 17] = [
        Self::ContactPoints,
        Self::Keyspace,
        Self::Table,
        Self::LocalDc,
        Self::ReadConsistency,
        Self::WriteConsistency,
        Self::Username,
        Self::Password,
        Self::Tls,
        Self::TlsCaFile,
        Self::ConnectTimeout,
        Self::RequestTimeout,
        Self::ReadConcurrency,
        Self::WriteConcurrency,
        Self::Replication,
        Self::TtlGrace,
        Self::AwaitSchemaAgreement,
    ];

    /// The environment variable read by [`ScyllaOnlineStoreBuilder::from_env`].
    pub fn env_var(&self) -> String {
        format!("FSTORE_SCYLLA_{}", self.as_ref().to_ascii_uppercase())
    }
}

impl AsRef<str> for ScyllaConfigKey {
    fn as_ref(&self) -> &str {
        match self {
            Self::ContactPoints => "contact_points",
            Self::Keyspace => "keyspace",
            Self::Table => "table",
            Self::LocalDc => "local_dc",
            Self::ReadConsistency => "read_consistency",
            Self::WriteConsistency => "write_consistency",
            Self::Username => "username",
            Self::Password => "password",
            Self::Tls => "tls",
            Self::TlsCaFile => "tls_ca_file",
            Self::ConnectTimeout => "connect_timeout",
            Self::RequestTimeout => "request_timeout",
            Self::ReadConcurrency => "read_concurrency",
            Self::WriteConcurrency => "write_concurrency",
            Self::Replication => "replication",
            Self::TtlGrace => "ttl_grace",
            Self::AwaitSchemaAgreement => "await_schema_agreement",
        }
    }
}

impl FromStr for ScyllaConfigKey {
    type Err = fstore_core::Error;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let norm = s.trim().to_ascii_lowercase();
        let norm = norm.strip_prefix("fstore_scylla_").unwrap_or(&norm);
        let alias = match norm {
            "hosts" | "nodes" | "uri" | "url" => "contact_points",
            "user" => "username",
            "datacenter" | "dc" => "local_dc",
            other => other,
        };
        Self::ALL
            .into_iter()
            .find(|k| k.as_ref() == alias)
            .ok_or_else(|| fstore_core::Error::UnknownConfigKey {
                backend: BACKEND,
                key: s.to_owned(),
            })
    }
}

/// Builds a [`ScyllaOnlineStore`].
///
/// Setters never fail; every value is checked by [`connect`](Self::connect).
///
/// ```no_run
/// # async fn f() -> fstore_core::Result<()> {
/// use fstore_online_scylla::ScyllaOnlineStoreBuilder;
/// let store = ScyllaOnlineStoreBuilder::from_env()          // FSTORE_SCYLLA_*
///     .with_contact_points("10.0.0.1:9042,10.0.0.2:9042")
///     .with_local_dc("dc1")
///     .connect()
///     .await?;
/// store.ensure_schema().await?;                              // once, at deploy time
/// # Ok(()) }
/// ```
#[derive(Clone, Default)]
pub struct ScyllaOnlineStoreBuilder {
    values: Vec<(ScyllaConfigKey, String)>,
    unknown: Vec<String>,
    in_process_test_server: bool,
}

impl fmt::Debug for ScyllaOnlineStoreBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut d = f.debug_struct("ScyllaOnlineStoreBuilder");
        for (k, v) in &self.values {
            if *k == ScyllaConfigKey::Password {
                d.field(k.as_ref(), &"<redacted>");
            } else {
                d.field(k.as_ref(), v);
            }
        }
        d.finish_non_exhaustive()
    }
}

impl ScyllaOnlineStoreBuilder {
    /// An empty builder (contact points are required before `connect`).
    pub fn new() -> Self {
        Self::default()
    }

    /// A builder from `FSTORE_SCYLLA_*` environment variables (only those).
    /// Names: [`ScyllaConfigKey::env_var`], e.g. `FSTORE_SCYLLA_CONTACT_POINTS`.
    pub fn from_env() -> Self {
        let mut b = Self::new();
        for k in ScyllaConfigKey::ALL {
            if let Ok(v) = std::env::var(k.env_var()) {
                b = b.with_config(k, v);
            }
        }
        b
    }

    /// Sets any key.
    pub fn with_config(mut self, key: ScyllaConfigKey, value: impl Into<String>) -> Self {
        self.values.retain(|(k, _)| *k != key);
        self.values.push((key, value.into()));
        self
    }

    /// Sets a key by name (canonical, alias or env var name). An unknown name
    /// makes [`connect`](Self::connect) fail with `UnknownConfigKey`.
    pub fn with_config_str(self, key: &str, value: impl Into<String>) -> Self {
        match key.parse() {
            Ok(k) => self.with_config(k, value),
            Err(_) => {
                let mut s = self;
                s.unknown.push(key.to_owned());
                s
            }
        }
    }

    /// [`ScyllaConfigKey::ContactPoints`].
    pub fn with_contact_points(self, v: impl Into<String>) -> Self {
        self.with_config(ScyllaConfigKey::ContactPoints, v)
    }
    /// [`ScyllaConfigKey::Keyspace`].
    pub fn with_keyspace(self, v: impl Into<String>) -> Self {
        self.with_config(ScyllaConfigKey::Keyspace, v)
    }
    /// [`ScyllaConfigKey::Table`].
    pub fn with_table(self, v: impl Into<String>) -> Self {
        self.with_config(ScyllaConfigKey::Table, v)
    }
    /// [`ScyllaConfigKey::LocalDc`].
    pub fn with_local_dc(self, v: impl Into<String>) -> Self {
        self.with_config(ScyllaConfigKey::LocalDc, v)
    }
    /// [`ScyllaConfigKey::ReadConsistency`].
    pub fn with_read_consistency(self, v: impl Into<String>) -> Self {
        self.with_config(ScyllaConfigKey::ReadConsistency, v)
    }
    /// [`ScyllaConfigKey::WriteConsistency`].
    pub fn with_write_consistency(self, v: impl Into<String>) -> Self {
        self.with_config(ScyllaConfigKey::WriteConsistency, v)
    }
    /// [`ScyllaConfigKey::Username`] and [`ScyllaConfigKey::Password`].
    pub fn with_credentials(self, user: impl Into<String>, password: impl Into<String>) -> Self {
        self.with_config(ScyllaConfigKey::Username, user)
            .with_config(ScyllaConfigKey::Password, password)
    }
    /// [`ScyllaConfigKey::Tls`].
    pub fn with_tls(self, on: bool) -> Self {
        self.with_config(ScyllaConfigKey::Tls, on.to_string())
    }
    /// [`ScyllaConfigKey::TlsCaFile`].
    pub fn with_tls_ca_file(self, path: impl Into<String>) -> Self {
        self.with_config(ScyllaConfigKey::TlsCaFile, path)
    }
    /// [`ScyllaConfigKey::ConnectTimeout`].
    pub fn with_connect_timeout(self, d: Duration) -> Self {
        self.with_config(
            ScyllaConfigKey::ConnectTimeout,
            format!("{}ms", d.as_millis()),
        )
    }
    /// [`ScyllaConfigKey::RequestTimeout`].
    pub fn with_request_timeout(self, d: Duration) -> Self {
        self.with_config(
            ScyllaConfigKey::RequestTimeout,
            format!("{}ms", d.as_millis()),
        )
    }
    /// [`ScyllaConfigKey::ReadConcurrency`].
    pub fn with_read_concurrency(self, n: usize) -> Self {
        self.with_config(ScyllaConfigKey::ReadConcurrency, n.to_string())
    }
    /// [`ScyllaConfigKey::WriteConcurrency`].
    pub fn with_write_concurrency(self, n: usize) -> Self {
        self.with_config(ScyllaConfigKey::WriteConcurrency, n.to_string())
    }
    /// [`ScyllaConfigKey::Replication`].
    pub fn with_replication(self, r: &Replication) -> Self {
        let s = match r {
            Replication::Simple { factor } => format!("simple:{factor}"),
            Replication::NetworkTopology(dcs) => format!(
                "network:{}",
                dcs.iter()
                    .map(|(d, n)| format!("{d}={n}"))
                    .collect::<Vec<_>>()
                    .join(",")
            ),
        };
        self.with_config(ScyllaConfigKey::Replication, s)
    }
    /// [`ScyllaConfigKey::TtlGrace`].
    pub fn with_ttl_grace(self, d: Duration) -> Self {
        self.with_config(ScyllaConfigKey::TtlGrace, format!("{}ms", d.as_millis()))
    }
    /// [`ScyllaConfigKey::AwaitSchemaAgreement`].
    pub fn with_await_schema_agreement(self, on: bool) -> Self {
        self.with_config(ScyllaConfigKey::AwaitSchemaAgreement, on.to_string())
    }

    /// **Tests only.** Accept a CQL server that does not report the
    /// `USING TIMESTAMP ? AND TTL ?` bind markers of the insert statement, such
    /// as the in-process `kassandra-tester` stand-in, which ignores `USING`.
    /// Against such a server the write timestamps and TTLs are not sent, so
    /// **newest-wins and native expiry are not enforced**. Without this flag the
    /// first write fails with a clear error instead. Never set it in production.
    pub fn with_in_process_test_server(mut self, on: bool) -> Self {
        self.in_process_test_server = on;
        self
    }

    fn get(&self, k: ScyllaConfigKey) -> Option<&str> {
        self.values
            .iter()
            .find(|(key, _)| *key == k)
            .map(|(_, v)| v.trim())
            .filter(|v| !v.is_empty())
    }

    /// Validates every setting without connecting.
    pub(crate) fn settings(&self) -> Result<Settings, fstore_core::Error> {
        if let Some(k) = self.unknown.first() {
            return Err(fstore_core::Error::UnknownConfigKey {
                backend: BACKEND,
                key: k.clone(),
            });
        }
        let cfg = |m: String| -> fstore_core::Error { Error::Config(m).into() };
        use ScyllaConfigKey as K;
        let contact_points: Vec<String> = self
            .get(K::ContactPoints)
            .ok_or_else(|| cfg(format!("{} is required", K::ContactPoints.env_var())))?
            .split(',')
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(|s| {
                let s = s
                    .strip_prefix("scylla://")
                    .or_else(|| s.strip_prefix("cassandra://"))
                    .unwrap_or(s);
                let s = s.trim_end_matches('/');
                if s.rsplit_once(':')
                    .is_some_and(|(_, p)| p.parse::<u16>().is_ok())
                {
                    s.to_owned()
                } else {
                    format!("{s}:9042")
                }
            })
            .collect();
        if contact_points.is_empty() {
            return Err(cfg("contact_points: no host given".into()));
        }
        let ident = |k: K, default: &str| -> Result<String, fstore_core::Error> {
            let v = self.get(k).unwrap_or(default).to_owned();
            if valid_identifier(&v) {
                Ok(v)
            } else {
                Err(cfg(format!(
                    "{} '{v}' is not a lower-case CQL identifier ([a-z_][a-z0-9_]*, at most 48 characters)",
                    k.as_ref()
                )))
            }
        };
        let consistency = |k: K| -> Result<Consistency, fstore_core::Error> {
            match self.get(k) {
                None => Ok(Consistency::LocalQuorum),
                Some(v) => parse_consistency(v)
                    .ok_or_else(|| cfg(format!("{} '{v}' is not a consistency level", k.as_ref()))),
            }
        };
        let duration = |k: K, default: Duration| -> Result<Duration, fstore_core::Error> {
            match self.get(k) {
                None => Ok(default),
                Some(v) => parse_duration(v).ok_or_else(|| {
                    cfg(format!(
                        "{} '{v}' is not a duration (e.g. 500ms, 5s, 2m)",
                        k.as_ref()
                    ))
                }),
            }
        };
        let count = |k: K, default: usize| -> Result<usize, fstore_core::Error> {
            match self.get(k) {
                None => Ok(default),
                Some(v) => match v.parse::<usize>() {
                    Ok(n) if (1..=65_536).contains(&n) => Ok(n),
                    _ => Err(cfg(format!(
                        "{} '{v}' must be an integer in 1..=65536",
                        k.as_ref()
                    ))),
                },
            }
        };
        let flag = |k: K| -> Result<bool, fstore_core::Error> {
            match self.get(k).map(str::to_ascii_lowercase).as_deref() {
                None => Ok(false),
                Some("1" | "true" | "yes" | "on") => Ok(true),
                Some("0" | "false" | "no" | "off") => Ok(false),
                Some(v) => Err(cfg(format!("{} '{v}' is not a boolean", k.as_ref()))),
            }
        };
        let replication = match self.get(K::Replication) {
            None => Replication::default(),
            Some(v) => Replication::parse(v).map_err(cfg)?,
        };
        let tls = flag(K::Tls)?;
        let tls_ca_file = self.get(K::TlsCaFile).map(str::to_owned);
        if (tls || tls_ca_file.is_some()) && !cfg!(feature = "tls") {
            return Err(cfg(
                "tls requested but fstore-online-scylla was built without its `tls` feature".into(),
            ));
        }
        let username = self.get(K::Username).map(str::to_owned);
        let password = self.get(K::Password).map(str::to_owned);
        if username.is_some() != password.is_some() {
            return Err(cfg("username and password must be set together".into()));
        }
        Ok(Settings {
            contact_points,
            keyspace: ident(K::Keyspace, DEFAULT_KEYSPACE)?,
            table: ident(K::Table, DEFAULT_TABLE)?,
            local_dc: self.get(K::LocalDc).map(str::to_owned),
            read_consistency: consistency(K::ReadConsistency)?,
            write_consistency: consistency(K::WriteConsistency)?,
            credentials: username.zip(password),
            tls: tls || tls_ca_file.is_some(),
            tls_ca_file,
            connect_timeout: duration(K::ConnectTimeout, Duration::from_secs(10))?,
            request_timeout: duration(K::RequestTimeout, Duration::from_secs(5))?,
            read_concurrency: count(K::ReadConcurrency, 128)?,
            write_concurrency: count(K::WriteConcurrency, 256)?,
            replication,
            ttl_grace: duration(K::TtlGrace, Duration::from_secs(60))?,
            await_schema_agreement: match self.get(K::AwaitSchemaAgreement) {
                None => true,
                Some(_) => flag(K::AwaitSchemaAgreement)?,
            },
            in_process_test_server: self.in_process_test_server,
        })
    }

    /// Validates the configuration, opens a session (token-aware, DC-aware
    /// when `local_dc` is set) and returns the store. Statements are prepared
    /// lazily, once, on first use; the schema is **not** created (see
    /// [`ScyllaOnlineStore::ensure_schema`]).
    ///
    /// # Errors
    /// `InvalidInput` / `UnknownConfigKey` for bad configuration; `Unavailable`
    /// when no contact point answers; `Timeout` after `connect_timeout` (the
    /// whole session build is bounded: the driver alone can hang on a listener
    /// that never answers).
    pub async fn connect(self) -> fstore_core::Result<ScyllaOnlineStore> {
        let settings = self.settings()?;
        ScyllaOnlineStore::connect(settings).await
    }
}

fn parse_consistency(s: &str) -> Option<Consistency> {
    Some(
        match s.trim().to_ascii_uppercase().replace('-', "_").as_str() {
            "ANY" => Consistency::Any,
            "ONE" => Consistency::One,
            "TWO" => Consistency::Two,
            "THREE" => Consistency::Three,
            "QUORUM" => Consistency::Quorum,
            "ALL" => Consistency::All,
            "LOCAL_QUORUM" => Consistency::LocalQuorum,
            "EACH_QUORUM" => Consistency::EachQuorum,
            "LOCAL_ONE" => Consistency::LocalOne,
            _ => return None,
        },
    )
}

/// `500ms`, `5s`, `2m`, `1h`, or a bare number of seconds.
fn parse_duration(s: &str) -> Option<Duration> {
    let s = s.trim();
    let (num, unit) = match s.find(|c: char| !c.is_ascii_digit() && c != '.') {
        Some(i) => (&s[..i], s[i..].trim()),
        None => (s, "s"),
    };
    let n: f64 = num.parse().ok()?;
    let secs = match unit {
        "ms" => n / 1000.0,
        "s" => n,
        "m" => n * 60.0,
        "h" => n * 3600.0,
        _ => return None,
    };
    Duration::try_from_secs_f64(secs).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_roundtrip_and_aliases() {
        for k in ScyllaConfigKey::ALL {
            assert_eq!(k.as_ref().parse::<ScyllaConfigKey>().unwrap(), k);
            assert_eq!(k.env_var().parse::<ScyllaConfigKey>().unwrap(), k);
            assert!(k.env_var().starts_with("FSTORE_SCYLLA_"));
        }
        assert_eq!(
            "hosts".parse::<ScyllaConfigKey>().unwrap(),
            ScyllaConfigKey::ContactPoints
        );
        assert_eq!(
            "DC".parse::<ScyllaConfigKey>().unwrap(),
            ScyllaConfigKey::LocalDc
        );
        assert!(matches!(
            "nope".parse::<ScyllaConfigKey>(),
            Err(fstore_core::Error::UnknownConfigKey { .. })
        ));
        let e = ScyllaOnlineStoreBuilder::new()
            .with_contact_points("h")
            .with_config_str("nope", "x")
            .settings()
            .unwrap_err();
        assert!(matches!(e, fstore_core::Error::UnknownConfigKey { ref key, .. } if key == "nope"));
    }

    #[test]
    fn defaults_and_parsing() {
        let s = ScyllaOnlineStoreBuilder::new()
            .with_contact_points("a, b:9043,scylla://c:19042/")
            .settings()
            .unwrap();
        assert_eq!(s.contact_points, vec!["a:9042", "b:9043", "c:19042"]);
        assert_eq!(s.keyspace, "fstore");
        assert_eq!(s.table, "online_rows");
        assert_eq!(s.read_consistency, Consistency::LocalQuorum);
        assert_eq!(s.request_timeout, Duration::from_secs(5));
        assert_eq!(s.read_concurrency, 128);
        assert!(s.await_schema_agreement);
        let s = ScyllaOnlineStoreBuilder::new()
            .with_contact_points("h")
            .with_read_consistency("local_one")
            .with_write_consistency("EACH-QUORUM")
            .with_request_timeout(Duration::from_millis(250))
            .with_config(ScyllaConfigKey::ConnectTimeout, "2m")
            .with_config(ScyllaConfigKey::TtlGrace, "1.5")
            .with_config(ScyllaConfigKey::Replication, "network:dc1=3")
            .with_await_schema_agreement(false)
            .settings()
            .unwrap();
        assert_eq!(s.read_consistency, Consistency::LocalOne);
        assert_eq!(s.write_consistency, Consistency::EachQuorum);
        assert_eq!(s.request_timeout, Duration::from_millis(250));
        assert_eq!(s.connect_timeout, Duration::from_secs(120));
        assert_eq!(s.ttl_grace, Duration::from_millis(1500));
        assert_eq!(
            s.replication,
            Replication::NetworkTopology(vec![("dc1".into(), 3)])
        );
        assert!(!s.await_schema_agreement);
    }

    #[test]
    fn bad_values_are_clear_errors() {
        let base = || ScyllaOnlineStoreBuilder::new().with_contact_points("h");
        let msg = |b: ScyllaOnlineStoreBuilder| b.settings().unwrap_err().to_string();
        assert!(msg(ScyllaOnlineStoreBuilder::new()).contains("FSTORE_SCYLLA_CONTACT_POINTS"));
        assert!(msg(base().with_keyspace("Bad-Name")).contains("keyspace 'Bad-Name'"));
        assert!(msg(base().with_table("x;drop")).contains("table"));
        assert!(msg(base().with_read_consistency("sometimes")).contains("read_consistency"));
        assert!(
            msg(base().with_config(ScyllaConfigKey::RequestTimeout, "soon"))
                .contains("request_timeout")
        );
        assert!(msg(base().with_read_concurrency(0)).contains("read_concurrency"));
        assert!(msg(base().with_config(ScyllaConfigKey::Username, "u")).contains("together"));
        assert!(
            msg(base().with_config(ScyllaConfigKey::Replication, "ring:2")).contains("replication")
        );
        assert!(msg(base().with_config(ScyllaConfigKey::Tls, "maybe")).contains("tls"));
        #[cfg(not(feature = "tls"))]
        assert!(msg(base().with_tls(true)).contains("`tls` feature"));
    }

    #[test]
    fn debug_hides_password() {
        let b = ScyllaOnlineStoreBuilder::new()
            .with_contact_points("h")
            .with_credentials("alice", "s3cret-pw");
        let d = format!("{b:?}");
        assert!(
            d.contains("alice") && !d.contains("s3cret-pw") && d.contains("redacted"),
            "{d}"
        );
    }

    #[test]
    fn durations() {
        assert_eq!(parse_duration("500ms"), Some(Duration::from_millis(500)));
        assert_eq!(parse_duration("3"), Some(Duration::from_secs(3)));
        assert_eq!(parse_duration("1h"), Some(Duration::from_secs(3600)));
        assert_eq!(parse_duration("x"), None);
        assert_eq!(parse_duration("5 parsecs"), None);
        assert_eq!(parse_duration("-1s"), None);
    }
}
