//! Configuration: [`ScyllaConfigKey`], [`ScyllaOnlineStoreBuilder`]'s setters,
//! [`Replication`] and the validated [`Settings`], in core's configuration
//! language ([`fstore_core::config`]). Imports nothing else of this crate.

use std::fmt;
use std::str::FromStr;
use std::time::Duration;

use fstore_core::config::{ConfigKey, ConfigValues, format_duration, parse_key};
use scylla::statement::Consistency;

/// Backend id used in errors, logs and [`fstore_core::OnlineStore::backend`].
pub const BACKEND: &str = "scylla";

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

impl ConfigKey for ScyllaConfigKey {
    const BACKEND: &'static str = BACKEND;
    const ENV_PREFIX: &'static str = "SCYLLA";
    const ALL: &'static [Self] = &[
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

    fn name(self) -> &'static str {
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

    fn aliases(self) -> &'static [&'static str] {
        match self {
            Self::ContactPoints => &["hosts", "nodes", "uri", "url"],
            Self::Username => &["user"],
            Self::LocalDc => &["datacenter", "dc"],
            _ => &[],
        }
    }

    fn is_secret(self) -> bool {
        self == Self::Password
    }
}

impl AsRef<str> for ScyllaConfigKey {
    fn as_ref(&self) -> &str {
        self.name()
    }
}

impl fmt::Display for ScyllaConfigKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for ScyllaConfigKey {
    type Err = fstore_core::Error;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        parse_key(s)
    }
}

/// Builds a [`ScyllaOnlineStore`](crate::ScyllaOnlineStore).
///
/// Setters never fail; every value is checked by [`build`](Self::build)
/// (synchronous, no I/O: the session opens on first use) and by
/// [`connect`](Self::connect) (build, then open the session now).
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
    values: ConfigValues<ScyllaConfigKey>,
    in_process_test_server: bool,
}

impl fmt::Debug for ScyllaOnlineStoreBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("ScyllaOnlineStoreBuilder")
            .field(&self.values)
            .finish()
    }
}

impl ScyllaOnlineStoreBuilder {
    /// An empty builder (contact points are required before `build`).
    pub fn new() -> Self {
        Self::default()
    }

    /// A builder from the `FSTORE_SCYLLA_*` environment variables (only those;
    /// one that names no key is ignored with a warning). Names:
    /// [`ConfigKey::env_var`], e.g. `FSTORE_SCYLLA_CONTACT_POINTS`.
    pub fn from_env() -> Self {
        Self {
            values: ConfigValues::from_env(),
            in_process_test_server: false,
        }
    }

    /// Sets any key.
    pub fn with_config(mut self, key: ScyllaConfigKey, value: impl Into<String>) -> Self {
        self.values.set(key, value);
        self
    }

    /// Sets a key by name (canonical, alias or env var name). An unknown name
    /// makes [`build`](Self::build) fail with `UnknownConfigKey`.
    pub fn with_config_str(mut self, key: &str, value: impl Into<String>) -> Self {
        self.values.set_str(key, value);
        self
    }

    /// The raw value of a key, if set.
    pub fn get_config(&self, key: ScyllaConfigKey) -> Option<&str> {
        self.values.get(key)
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
        self.with_config(ScyllaConfigKey::ConnectTimeout, format_duration(d))
    }
    /// [`ScyllaConfigKey::RequestTimeout`].
    pub fn with_request_timeout(self, d: Duration) -> Self {
        self.with_config(ScyllaConfigKey::RequestTimeout, format_duration(d))
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
        self.with_config(ScyllaConfigKey::TtlGrace, format_duration(d))
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

    /// Validates every setting without connecting.
    pub(crate) fn settings(&self) -> Result<Settings, fstore_core::Error> {
        let c = &self.values;
        c.check_unknown()?;
        let cfg = |m: String| -> fstore_core::Error {
            fstore_core::Error::invalid(format!("{BACKEND}: invalid configuration: {m}"))
        };
        use ScyllaConfigKey as K;
        let contact_points: Vec<String> = c
            .required(K::ContactPoints)?
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
            let v = c.get(k).unwrap_or(default).to_owned();
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
            match c.get(k) {
                None => Ok(Consistency::LocalQuorum),
                Some(v) => parse_consistency(v)
                    .ok_or_else(|| cfg(format!("{} '{v}' is not a consistency level", k.as_ref()))),
            }
        };
        let replication = match c.get(K::Replication) {
            None => Replication::default(),
            Some(v) => Replication::parse(v).map_err(cfg)?,
        };
        let tls = c.bool(K::Tls, false)?;
        let tls_ca_file = c.get(K::TlsCaFile).map(str::to_owned);
        if (tls || tls_ca_file.is_some()) && !cfg!(feature = "tls") {
            return Err(cfg(
                "tls requested but fstore-online-scylla was built without its `tls` feature".into(),
            ));
        }
        let username = c.get(K::Username).map(str::to_owned);
        let password = c.get(K::Password).map(str::to_owned);
        if username.is_some() != password.is_some() {
            return Err(cfg("username and password must be set together".into()));
        }
        let table = ident(K::Table, DEFAULT_TABLE)?;
        // The aggregation tile table is `<table>_tiles`: the name must fit too.
        if !valid_identifier(&crate::cql::tiles_table(&table)) {
            return Err(cfg(format!(
                "table '{table}' is too long: its tile table '{}' must be at most 48 characters",
                crate::cql::tiles_table(&table)
            )));
        }
        Ok(Settings {
            contact_points,
            keyspace: ident(K::Keyspace, DEFAULT_KEYSPACE)?,
            table,
            local_dc: c.get(K::LocalDc).map(str::to_owned),
            read_consistency: consistency(K::ReadConsistency)?,
            write_consistency: consistency(K::WriteConsistency)?,
            credentials: username.zip(password),
            tls: tls || tls_ca_file.is_some(),
            tls_ca_file,
            connect_timeout: c.duration(K::ConnectTimeout, Duration::from_secs(10))?,
            request_timeout: c.duration(K::RequestTimeout, Duration::from_secs(5))?,
            read_concurrency: c.count(K::ReadConcurrency, 128, 1, 65_536)?,
            write_concurrency: c.count(K::WriteConcurrency, 256, 1, 65_536)?,
            replication,
            ttl_grace: c.duration(K::TtlGrace, Duration::from_secs(60))?,
            await_schema_agreement: c.bool(K::AwaitSchemaAgreement, true)?,
            in_process_test_server: self.in_process_test_server,
        })
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

/// Validated configuration .
#[derive(Clone)]
pub(crate) struct Settings {
    pub(crate) contact_points: Vec<String>,
    pub(crate) keyspace: String,
    pub(crate) table: String,
    pub(crate) local_dc: Option<String>,
    pub(crate) read_consistency: Consistency,
    pub(crate) write_consistency: Consistency,
    pub(crate) credentials: Option<(String, String)>,
    pub(crate) tls: bool,
    pub(crate) tls_ca_file: Option<String>,
    pub(crate) connect_timeout: Duration,
    pub(crate) request_timeout: Duration,
    pub(crate) read_concurrency: usize,
    pub(crate) write_concurrency: usize,
    pub(crate) replication: Replication,
    pub(crate) ttl_grace: Duration,
    pub(crate) await_schema_agreement: bool,
    pub(crate) in_process_test_server: bool,
}

impl fmt::Debug for Settings {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Settings")
            .field("contact_points", &self.contact_points)
            .field("keyspace", &self.keyspace)
            .field("table", &self.table)
            .field("local_dc", &self.local_dc)
            .field("read_consistency", &self.read_consistency)
            .field("write_consistency", &self.write_consistency)
            .field("username", &self.credentials.as_ref().map(|(u, _)| u))
            .field("tls", &self.tls)
            .field("tls_ca_file", &self.tls_ca_file)
            .field("connect_timeout", &self.connect_timeout)
            .field("request_timeout", &self.request_timeout)
            .field("read_concurrency", &self.read_concurrency)
            .field("write_concurrency", &self.write_concurrency)
            .field("replication", &self.replication)
            .field("ttl_grace", &self.ttl_grace)
            .finish_non_exhaustive()
    }
}

/// Keyspace replication for `ScyllaOnlineStore::ensure_schema`.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Replication {
    /// `SimpleStrategy` with a replication factor (single-DC clusters, tests).
    Simple {
        /// Replicas of every row.
        factor: u32,
    },
    /// `NetworkTopologyStrategy`: replicas per datacenter (multi-DC production).
    NetworkTopology(Vec<(String, u32)>),
}

impl Default for Replication {
    fn default() -> Self {
        Self::Simple { factor: 1 }
    }
}

impl Replication {
    /// Parses `simple:3` or `network:dc1=3,dc2=3` (also `SimpleStrategy:3`,
    /// `NetworkTopologyStrategy:dc1=3`).
    ///
    /// # Errors
    /// A message naming what is wrong.
    pub fn parse(s: &str) -> Result<Self, String> {
        let (kind, rest) = s
            .split_once(':')
            .ok_or_else(|| format!("replication '{s}': expected 'simple:N' or 'network:dc=N,…'"))?;
        match kind.trim().to_ascii_lowercase().as_str() {
            "simple" | "simplestrategy" => {
                let factor = rest
                    .trim()
                    .parse::<u32>()
                    .map_err(|e| format!("replication '{s}': factor: {e}"))?;
                if factor == 0 {
                    return Err(format!("replication '{s}': factor must be at least 1"));
                }
                Ok(Self::Simple { factor })
            }
            "network" | "networktopologystrategy" => {
                let mut dcs = Vec::new();
                for part in rest.split(',').map(str::trim).filter(|p| !p.is_empty()) {
                    let (dc, n) = part
                        .split_once('=')
                        .ok_or_else(|| format!("replication '{s}': '{part}' is not dc=N"))?;
                    let n = n
                        .trim()
                        .parse::<u32>()
                        .map_err(|e| format!("replication '{s}': '{part}': {e}"))?;
                    let dc = dc.trim();
                    if dc.is_empty() || dc.contains(['\'', '"', '\\']) {
                        return Err(format!("replication '{s}': invalid datacenter name '{dc}'"));
                    }
                    dcs.push((dc.to_owned(), n));
                }
                if dcs.is_empty() {
                    return Err(format!("replication '{s}': no datacenter given"));
                }
                Ok(Self::NetworkTopology(dcs))
            }
            other => Err(format!(
                "replication '{s}': unknown strategy '{other}' (use simple or network)"
            )),
        }
    }
}

/// True for an unquoted CQL identifier we accept: `[a-z_][a-z0-9_]{0,47}`.
/// Lower case only, so that unquoted use is exact (CQL folds case).
pub(crate) fn valid_identifier(s: &str) -> bool {
    let mut chars = s.chars();
    matches!(chars.next(), Some(c) if c.is_ascii_lowercase() || c == '_')
        && chars.all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
        && s.len() <= 48
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_roundtrip_and_aliases() {
        for &k in ScyllaConfigKey::ALL {
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
            .with_config(ScyllaConfigKey::TtlGrace, "1.5s")
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
    fn bare_numbers_are_refused_not_read_as_seconds() {
        let e = ScyllaOnlineStoreBuilder::new()
            .with_contact_points("h")
            .with_config(ScyllaConfigKey::RequestTimeout, "3")
            .settings()
            .unwrap_err()
            .to_string();
        assert!(e.contains("request_timeout") && e.contains("500ms"), "{e}");
    }
}
