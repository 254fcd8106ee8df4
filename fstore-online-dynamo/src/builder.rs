//! [`DynamoOnlineStoreBuilder`] and [`DynamoConfigKey`].

use std::fmt;
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use aws_sdk_dynamodb::config::retry::RetryConfig;
use aws_sdk_dynamodb::config::timeout::TimeoutConfig;
use aws_sdk_dynamodb::config::{BehaviorVersion, Credentials, Region};
use fstore_core::{Error, Result};

use crate::BACKEND;
use crate::client::{Counters, SdkApi};
use crate::store::{DynamoOnlineStore, RetryPolicy};

/// Default table name.
pub const DEFAULT_TABLE: &str = "fstore_online";
const DEFAULT_MAX_CONCURRENCY: usize = 32;
const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_millis(3100);
const DEFAULT_REQUEST_TIMEOUT: Duration = Duration::from_secs(10);
const DEFAULT_RETRY_BUDGET: u32 = 10;
const DEFAULT_RETRY_BASE_DELAY: Duration = Duration::from_millis(25);
const DEFAULT_RETRY_MAX_DELAY: Duration = Duration::from_secs(2);

/// Configuration keys of [`DynamoOnlineStoreBuilder`].
///
/// Each key parses from its name (`"table"`), from its environment variable
/// (`"FSTORE_DYNAMO_TABLE"`, any case) and from a few aliases listed per variant.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum DynamoConfigKey {
    /// AWS region (`region`; aliases `aws_region`). Required unless an SDK config is given.
    Region,
    /// Endpoint override, e.g. a local DynamoDB-compatible server (`endpoint`; alias `endpoint_url`).
    Endpoint,
    /// Table holding every view (`table`; alias `table_name`). Default `fstore_online`.
    Table,
    /// Strongly consistent reads, `true`/`false` (`consistent_reads`). Default `false`
    /// (eventually consistent: half the read capacity).
    ConsistentReads,
    /// Most DynamoDB requests in flight per read or write call (`max_concurrency`). Default 32.
    MaxConcurrency,
    /// TCP/TLS connect timeout (`connect_timeout`), e.g. `3s`, `250ms`; a bare number is milliseconds.
    ConnectTimeout,
    /// Deadline of one HTTP attempt (`request_timeout`). Default 10 s.
    RequestTimeout,
    /// Retries allowed per request group before giving up with a retryable error (`retry_budget`). Default 10.
    RetryBudget,
    /// First backoff delay (`retry_base_delay`); doubles per retry, with jitter. Default 25 ms.
    RetryBaseDelay,
    /// Largest backoff delay (`retry_max_delay`). Default 2 s.
    RetryMaxDelay,
    /// Write the `expires_at` attribute (event time + view ttl) for DynamoDB's TTL,
    /// and enable TTL in `ensure_tables` (`native_ttl`). Default `true`.
    NativeTtl,
    /// Static access key id (`access_key_id`; alias `aws_access_key_id`).
    AccessKeyId,
    /// Static secret access key (`secret_access_key`; alias `aws_secret_access_key`). Never printed.
    SecretAccessKey,
    /// Static session token (`session_token`; alias `aws_session_token`). Never printed.
    SessionToken,
}

impl DynamoConfigKey {
    const ALL: [Self; 14] = [
        Self::Region,
        Self::Endpoint,
        Self::Table,
        Self::ConsistentReads,
        Self::MaxConcurrency,
        Self::ConnectTimeout,
        Self::RequestTimeout,
        Self::RetryBudget,
        Self::RetryBaseDelay,
        Self::RetryMaxDelay,
        Self::NativeTtl,
        Self::AccessKeyId,
        Self::SecretAccessKey,
        Self::SessionToken,
    ];

    fn aliases(self) -> &'static [&'static str] {
        match self {
            Self::Region => &["aws_region"],
            Self::Endpoint => &["endpoint_url"],
            Self::Table => &["table_name"],
            Self::AccessKeyId => &["aws_access_key_id"],
            Self::SecretAccessKey => &["aws_secret_access_key"],
            Self::SessionToken => &["aws_session_token"],
            _ => &[],
        }
    }
}

impl AsRef<str> for DynamoConfigKey {
    fn as_ref(&self) -> &str {
        match self {
            Self::Region => "region",
            Self::Endpoint => "endpoint",
            Self::Table => "table",
            Self::ConsistentReads => "consistent_reads",
            Self::MaxConcurrency => "max_concurrency",
            Self::ConnectTimeout => "connect_timeout",
            Self::RequestTimeout => "request_timeout",
            Self::RetryBudget => "retry_budget",
            Self::RetryBaseDelay => "retry_base_delay",
            Self::RetryMaxDelay => "retry_max_delay",
            Self::NativeTtl => "native_ttl",
            Self::AccessKeyId => "access_key_id",
            Self::SecretAccessKey => "secret_access_key",
            Self::SessionToken => "session_token",
        }
    }
}

impl fmt::Display for DynamoConfigKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_ref())
    }
}

impl FromStr for DynamoConfigKey {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self> {
        let lower = s.trim().to_ascii_lowercase();
        let name = lower.strip_prefix("fstore_dynamo_").unwrap_or(&lower);
        Self::ALL
            .into_iter()
            .find(|k| k.as_ref() == name || k.aliases().contains(&name))
            .ok_or_else(|| Error::UnknownConfigKey {
                backend: BACKEND,
                key: s.to_owned(),
            })
    }
}

/// Builds a [`DynamoOnlineStore`].
///
/// Setters never fail; [`build`](Self::build) validates everything. `build` is
/// synchronous and does no I/O (the SDK connects lazily); the table is created
/// only by [`DynamoOnlineStore::ensure_tables`], never implicitly.
///
/// Credentials: static keys ([`with_access_key_id`](Self::with_access_key_id)…),
/// an SDK config of your own ([`with_sdk_config`](Self::with_sdk_config)), or,
/// with the crate feature `aws-config`, the standard AWS chain (environment,
/// profile, web identity, ECS, IMDS) through `build_with_default_chain`.
///
/// ```no_run
/// # fn main() -> fstore_core::Result<()> {
/// use fstore_online_dynamo::DynamoOnlineStoreBuilder;
/// let store = DynamoOnlineStoreBuilder::from_env() // FSTORE_DYNAMO_*
///     .with_table("features")
///     .with_consistent_reads(false)
///     .build()?;
/// # Ok(()) }
/// ```
#[derive(Clone, Default)]
pub struct DynamoOnlineStoreBuilder {
    region: Option<String>,
    endpoint: Option<String>,
    table: Option<String>,
    consistent_reads: Option<String>,
    max_concurrency: Option<String>,
    connect_timeout: Option<String>,
    request_timeout: Option<String>,
    retry_budget: Option<String>,
    retry_base_delay: Option<String>,
    retry_max_delay: Option<String>,
    native_ttl: Option<String>,
    access_key_id: Option<String>,
    secret_access_key: Option<String>,
    session_token: Option<String>,
    sdk_config: Option<aws_sdk_dynamodb::Config>,
}

impl fmt::Debug for DynamoOnlineStoreBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let redacted = |o: &Option<String>| o.as_ref().map(|_| "<redacted>");
        f.debug_struct("DynamoOnlineStoreBuilder")
            .field("region", &self.region)
            .field("endpoint", &self.endpoint)
            .field("table", &self.table)
            .field("consistent_reads", &self.consistent_reads)
            .field("max_concurrency", &self.max_concurrency)
            .field("connect_timeout", &self.connect_timeout)
            .field("request_timeout", &self.request_timeout)
            .field("retry_budget", &self.retry_budget)
            .field("retry_base_delay", &self.retry_base_delay)
            .field("retry_max_delay", &self.retry_max_delay)
            .field("native_ttl", &self.native_ttl)
            .field("access_key_id", &redacted(&self.access_key_id))
            .field("secret_access_key", &redacted(&self.secret_access_key))
            .field("session_token", &redacted(&self.session_token))
            .field("sdk_config", &self.sdk_config.as_ref().map(|_| "<set>"))
            .finish_non_exhaustive()
    }
}

fn fmt_duration(d: Duration) -> String {
    format!("{}us", d.as_micros())
}

/// Parses `250ms`, `3s`, `500us`, `1m`, or a bare number of milliseconds.
fn parse_duration(key: DynamoConfigKey, v: &str) -> Result<Duration> {
    let v = v.trim();
    let bad = || {
        Error::invalid(format!(
            "{BACKEND} config '{key}': '{v}' is not a duration (e.g. 250ms, 3s)"
        ))
    };
    let (num, unit) = match v.find(|c: char| !c.is_ascii_digit()) {
        Some(i) => v.split_at(i),
        None => (v, "ms"),
    };
    let n: u64 = num.parse().map_err(|_| bad())?;
    match unit.trim() {
        "us" => Ok(Duration::from_micros(n)),
        "ms" => Ok(Duration::from_millis(n)),
        "s" => Ok(Duration::from_secs(n)),
        "m" => n.checked_mul(60).map(Duration::from_secs).ok_or_else(bad),
        _ => Err(bad()),
    }
}

fn parse_bool(key: DynamoConfigKey, v: &str) -> Result<bool> {
    match v.trim().to_ascii_lowercase().as_str() {
        "true" | "1" | "yes" | "on" => Ok(true),
        "false" | "0" | "no" | "off" => Ok(false),
        _ => Err(Error::invalid(format!(
            "{BACKEND} config '{key}': '{v}' is not a boolean"
        ))),
    }
}

fn parse_num<T: FromStr>(key: DynamoConfigKey, v: &str) -> Result<T> {
    v.trim().parse().map_err(|_| {
        Error::invalid(format!(
            "{BACKEND} config '{key}': '{v}' is not a valid number"
        ))
    })
}

impl DynamoOnlineStoreBuilder {
    /// An empty builder (defaults everywhere).
    pub fn new() -> Self {
        Self::default()
    }

    /// A builder with every `FSTORE_DYNAMO_*` environment variable applied
    /// (and only those; unknown `FSTORE_DYNAMO_*` names are logged and ignored).
    pub fn from_env() -> Self {
        let mut b = Self::new();
        for (name, value) in std::env::vars() {
            if !name.starts_with("FSTORE_DYNAMO_") {
                continue;
            }
            match name.parse::<DynamoConfigKey>() {
                Ok(key) => b = b.with_config(key, value),
                Err(_) => {
                    tracing::warn!(variable = %name, "unknown fstore dynamo configuration variable ignored")
                }
            }
        }
        b
    }

    /// Sets one configuration value from a string (validated in `build`).
    pub fn with_config(mut self, key: DynamoConfigKey, value: impl Into<String>) -> Self {
        let v = Some(value.into());
        match key {
            DynamoConfigKey::Region => self.region = v,
            DynamoConfigKey::Endpoint => self.endpoint = v,
            DynamoConfigKey::Table => self.table = v,
            DynamoConfigKey::ConsistentReads => self.consistent_reads = v,
            DynamoConfigKey::MaxConcurrency => self.max_concurrency = v,
            DynamoConfigKey::ConnectTimeout => self.connect_timeout = v,
            DynamoConfigKey::RequestTimeout => self.request_timeout = v,
            DynamoConfigKey::RetryBudget => self.retry_budget = v,
            DynamoConfigKey::RetryBaseDelay => self.retry_base_delay = v,
            DynamoConfigKey::RetryMaxDelay => self.retry_max_delay = v,
            DynamoConfigKey::NativeTtl => self.native_ttl = v,
            DynamoConfigKey::AccessKeyId => self.access_key_id = v,
            DynamoConfigKey::SecretAccessKey => self.secret_access_key = v,
            DynamoConfigKey::SessionToken => self.session_token = v,
        }
        self
    }

    /// The value set for `key`, if any (secrets included: handle with care).
    pub fn get_config(&self, key: DynamoConfigKey) -> Option<&str> {
        match key {
            DynamoConfigKey::Region => self.region.as_deref(),
            DynamoConfigKey::Endpoint => self.endpoint.as_deref(),
            DynamoConfigKey::Table => self.table.as_deref(),
            DynamoConfigKey::ConsistentReads => self.consistent_reads.as_deref(),
            DynamoConfigKey::MaxConcurrency => self.max_concurrency.as_deref(),
            DynamoConfigKey::ConnectTimeout => self.connect_timeout.as_deref(),
            DynamoConfigKey::RequestTimeout => self.request_timeout.as_deref(),
            DynamoConfigKey::RetryBudget => self.retry_budget.as_deref(),
            DynamoConfigKey::RetryBaseDelay => self.retry_base_delay.as_deref(),
            DynamoConfigKey::RetryMaxDelay => self.retry_max_delay.as_deref(),
            DynamoConfigKey::NativeTtl => self.native_ttl.as_deref(),
            DynamoConfigKey::AccessKeyId => self.access_key_id.as_deref(),
            DynamoConfigKey::SecretAccessKey => self.secret_access_key.as_deref(),
            DynamoConfigKey::SessionToken => self.session_token.as_deref(),
        }
    }

    /// Sets the AWS region.
    pub fn with_region(self, region: impl Into<String>) -> Self {
        self.with_config(DynamoConfigKey::Region, region)
    }
    /// Overrides the endpoint (a local DynamoDB-compatible server, a VPC endpoint…).
    pub fn with_endpoint(self, url: impl Into<String>) -> Self {
        self.with_config(DynamoConfigKey::Endpoint, url)
    }
    /// Sets the table name.
    pub fn with_table(self, table: impl Into<String>) -> Self {
        self.with_config(DynamoConfigKey::Table, table)
    }
    /// Strongly consistent (`true`) or eventually consistent reads.
    pub fn with_consistent_reads(self, yes: bool) -> Self {
        self.with_config(DynamoConfigKey::ConsistentReads, yes.to_string())
    }
    /// Most requests in flight per call.
    pub fn with_max_concurrency(self, n: usize) -> Self {
        self.with_config(DynamoConfigKey::MaxConcurrency, n.to_string())
    }
    /// Connect timeout.
    pub fn with_connect_timeout(self, t: Duration) -> Self {
        self.with_config(DynamoConfigKey::ConnectTimeout, fmt_duration(t))
    }
    /// Deadline of one HTTP attempt.
    pub fn with_request_timeout(self, t: Duration) -> Self {
        self.with_config(DynamoConfigKey::RequestTimeout, fmt_duration(t))
    }
    /// Retries allowed per request group.
    pub fn with_retry_budget(self, n: u32) -> Self {
        self.with_config(DynamoConfigKey::RetryBudget, n.to_string())
    }
    /// First backoff delay.
    pub fn with_retry_base_delay(self, t: Duration) -> Self {
        self.with_config(DynamoConfigKey::RetryBaseDelay, fmt_duration(t))
    }
    /// Largest backoff delay.
    pub fn with_retry_max_delay(self, t: Duration) -> Self {
        self.with_config(DynamoConfigKey::RetryMaxDelay, fmt_duration(t))
    }
    /// Whether to write the TTL attribute and enable DynamoDB TTL in `ensure_tables`.
    pub fn with_native_ttl(self, yes: bool) -> Self {
        self.with_config(DynamoConfigKey::NativeTtl, yes.to_string())
    }
    /// Static access key id.
    pub fn with_access_key_id(self, v: impl Into<String>) -> Self {
        self.with_config(DynamoConfigKey::AccessKeyId, v)
    }
    /// Static secret access key.
    pub fn with_secret_access_key(self, v: impl Into<String>) -> Self {
        self.with_config(DynamoConfigKey::SecretAccessKey, v)
    }
    /// Static session token.
    pub fn with_session_token(self, v: impl Into<String>) -> Self {
        self.with_config(DynamoConfigKey::SessionToken, v)
    }
    /// Starts from an SDK configuration of your own (credentials provider,
    /// HTTP client, interceptors…). Region, endpoint, static credentials and
    /// timeouts set on this builder override it; the SDK's own retries are
    /// always turned off (the store retries itself, see the crate docs).
    pub fn with_sdk_config(mut self, config: aws_sdk_dynamodb::Config) -> Self {
        self.sdk_config = Some(config);
        self
    }

    fn static_credentials(&self) -> Result<Option<Credentials>> {
        match (&self.access_key_id, &self.secret_access_key) {
            (Some(id), Some(secret)) => Ok(Some(Credentials::new(
                id.clone(),
                secret.clone(),
                self.session_token.clone(),
                None,
                "fstore-static",
            ))),
            (None, None) => Ok(None),
            _ => Err(Error::invalid(format!(
                "{BACKEND} config: access_key_id and secret_access_key must be set together"
            ))),
        }
    }

    /// Applies this builder's settings to an SDK config builder.
    fn apply(
        &self,
        mut conf: aws_sdk_dynamodb::config::Builder,
    ) -> Result<aws_sdk_dynamodb::config::Builder> {
        if let Some(r) = &self.region {
            conf = conf.region(Region::new(r.clone()));
        }
        if let Some(e) = &self.endpoint {
            conf = conf.endpoint_url(e.clone());
        }
        if let Some(c) = self.static_credentials()? {
            conf = conf.credentials_provider(c);
        }
        let connect = self
            .connect_timeout
            .as_deref()
            .map(|v| parse_duration(DynamoConfigKey::ConnectTimeout, v))
            .transpose()?
            .unwrap_or(DEFAULT_CONNECT_TIMEOUT);
        let attempt = self
            .request_timeout
            .as_deref()
            .map(|v| parse_duration(DynamoConfigKey::RequestTimeout, v))
            .transpose()?
            .unwrap_or(DEFAULT_REQUEST_TIMEOUT);
        conf = conf
            .timeout_config(
                TimeoutConfig::builder()
                    .connect_timeout(connect)
                    .operation_attempt_timeout(attempt)
                    .build(),
            )
            // One retry layer only: ours (it also retries unprocessed keys, and
            // counts every request).
            .retry_config(RetryConfig::disabled());
        Ok(conf)
    }

    /// `base_region`: the region of the SDK config this builder starts from.
    fn finish(
        self,
        conf: aws_sdk_dynamodb::config::Builder,
        base_region: Option<String>,
    ) -> Result<DynamoOnlineStore> {
        let conf = self.apply(conf)?;
        let region = self.region.clone().or(base_region);
        if region.is_none() {
            return Err(Error::invalid(format!(
                "{BACKEND} config: no region (set FSTORE_DYNAMO_REGION or with_region)"
            )));
        }
        let table = self
            .table
            .clone()
            .unwrap_or_else(|| DEFAULT_TABLE.to_owned());
        if !(3..=255).contains(&table.len())
            || !table
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || "_-.".contains(c))
        {
            return Err(Error::invalid(format!(
                "{BACKEND} config 'table': '{table}' is not a valid DynamoDB table name (3-255 of a-z A-Z 0-9 _ - .)"
            )));
        }
        let opt = |v: &Option<String>, k: DynamoConfigKey| -> Result<Option<Duration>> {
            v.as_deref().map(|s| parse_duration(k, s)).transpose()
        };
        let retry = RetryPolicy {
            budget: self
                .retry_budget
                .as_deref()
                .map(|v| parse_num(DynamoConfigKey::RetryBudget, v))
                .transpose()?
                .unwrap_or(DEFAULT_RETRY_BUDGET),
            base: opt(&self.retry_base_delay, DynamoConfigKey::RetryBaseDelay)?
                .unwrap_or(DEFAULT_RETRY_BASE_DELAY),
            max: opt(&self.retry_max_delay, DynamoConfigKey::RetryMaxDelay)?
                .unwrap_or(DEFAULT_RETRY_MAX_DELAY),
        };
        let max_concurrency: usize = self
            .max_concurrency
            .as_deref()
            .map(|v| parse_num(DynamoConfigKey::MaxConcurrency, v))
            .transpose()?
            .unwrap_or(DEFAULT_MAX_CONCURRENCY);
        if max_concurrency == 0 {
            return Err(Error::invalid(format!(
                "{BACKEND} config 'max_concurrency' must be at least 1"
            )));
        }
        let consistent_reads = self
            .consistent_reads
            .as_deref()
            .map(|v| parse_bool(DynamoConfigKey::ConsistentReads, v))
            .transpose()?
            .unwrap_or(false);
        let native_ttl = self
            .native_ttl
            .as_deref()
            .map(|v| parse_bool(DynamoConfigKey::NativeTtl, v))
            .transpose()?
            .unwrap_or(true);
        let counters = Arc::new(Counters::default());
        let sdk = SdkApi {
            client: aws_sdk_dynamodb::Client::from_conf(conf.build()),
            table: table.clone(),
            counters: Arc::clone(&counters),
        };
        Ok(DynamoOnlineStore::new(
            sdk,
            crate::store::Settings {
                table,
                region,
                endpoint: self.endpoint.clone(),
                consistent_reads,
                max_concurrency,
                retry,
                native_ttl,
            },
            counters,
        ))
    }

    /// Validates the configuration and builds the store. No I/O.
    ///
    /// # Errors
    /// [`Error::InvalidInput`] for a missing region, a bad table name, an
    /// unparsable value, or no credentials (set static keys, give an SDK config,
    /// or use `build_with_default_chain` with the `aws-config` feature).
    pub fn build(self) -> Result<DynamoOnlineStore> {
        let (conf, base_region) = match &self.sdk_config {
            Some(c) => (c.to_builder(), c.region().map(ToString::to_string)),
            None => {
                if self.static_credentials()?.is_none() {
                    return Err(Error::invalid(format!(
                        "{BACKEND} config: no credentials; set access_key_id and secret_access_key, pass an SDK config \
                         (with_sdk_config), or enable the `aws-config` feature and call build_with_default_chain"
                    )));
                }
                (
                    aws_sdk_dynamodb::Config::builder().behavior_version(BehaviorVersion::latest()),
                    None,
                )
            }
        };
        self.finish(conf, base_region)
    }

    /// Builds the store with the standard AWS credential and region chain
    /// (environment, shared profile, web identity, ECS, IMDS); settings on this
    /// builder take precedence. Loads the chain's configuration (may do I/O).
    ///
    /// # Errors
    /// As [`build`](Self::build); a missing region after the chain ran is an error.
    #[cfg(feature = "aws-config")]
    #[cfg_attr(docsrs, doc(cfg(feature = "aws-config")))]
    pub async fn build_with_default_chain(self) -> Result<DynamoOnlineStore> {
        let (conf, base_region) = match &self.sdk_config {
            Some(c) => (c.to_builder(), c.region().map(ToString::to_string)),
            None => {
                // What this builder already knows is handed to the loader, so
                // the chain does not go looking for it (e.g. IMDS for a region).
                let mut loader = aws_config::defaults(aws_config::BehaviorVersion::latest());
                if let Some(r) = &self.region {
                    loader = loader.region(Region::new(r.clone()));
                }
                if let Some(c) = self.static_credentials()? {
                    loader = loader.credentials_provider(c);
                }
                let shared = loader.load().await;
                (
                    aws_sdk_dynamodb::config::Builder::from(&shared),
                    shared.region().map(ToString::to_string),
                )
            }
        };
        self.finish(conf, base_region)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_parse_from_names_env_and_aliases() {
        for k in DynamoConfigKey::ALL {
            assert_eq!(k.as_ref().parse::<DynamoConfigKey>().unwrap(), k);
            let env = format!("FSTORE_DYNAMO_{}", k.as_ref().to_ascii_uppercase());
            assert_eq!(env.parse::<DynamoConfigKey>().unwrap(), k);
        }
        assert_eq!(
            "endpoint_url".parse::<DynamoConfigKey>().unwrap(),
            DynamoConfigKey::Endpoint
        );
        assert_eq!(
            "AWS_REGION".parse::<DynamoConfigKey>().unwrap(),
            DynamoConfigKey::Region
        );
        assert!(matches!(
            "nope".parse::<DynamoConfigKey>(),
            Err(Error::UnknownConfigKey {
                backend: "dynamo",
                ..
            })
        ));
    }

    #[test]
    fn durations_parse() {
        let k = DynamoConfigKey::ConnectTimeout;
        assert_eq!(
            parse_duration(k, "250ms").unwrap(),
            Duration::from_millis(250)
        );
        assert_eq!(parse_duration(k, "3s").unwrap(), Duration::from_secs(3));
        assert_eq!(parse_duration(k, "1m").unwrap(), Duration::from_secs(60));
        assert_eq!(parse_duration(k, "40").unwrap(), Duration::from_millis(40));
        assert_eq!(
            parse_duration(k, &fmt_duration(Duration::from_micros(1234))).unwrap(),
            Duration::from_micros(1234)
        );
        assert!(parse_duration(k, "soon").is_err());
        assert!(parse_duration(k, "5h").is_err());
    }

    fn base() -> DynamoOnlineStoreBuilder {
        DynamoOnlineStoreBuilder::new()
            .with_region("us-east-1")
            .with_access_key_id("AKIDEXAMPLE")
            .with_secret_access_key("very-secret")
            .with_session_token("token-secret")
    }

    #[test]
    fn build_validates() {
        assert!(base().build().is_ok());
        let no_creds = DynamoOnlineStoreBuilder::new()
            .with_region("us-east-1")
            .build()
            .unwrap_err();
        assert!(no_creds.to_string().contains("credentials"), "{no_creds}");
        let half = DynamoOnlineStoreBuilder::new()
            .with_region("r")
            .with_access_key_id("a")
            .build()
            .unwrap_err();
        assert!(half.to_string().contains("together"), "{half}");
        let no_region = base().with_config(DynamoConfigKey::Region, "x");
        assert!(no_region.build().is_ok());
        assert!(
            DynamoOnlineStoreBuilder::new()
                .with_access_key_id("a")
                .with_secret_access_key("b")
                .build()
                .unwrap_err()
                .to_string()
                .contains("region")
        );
        assert!(base().with_table("a b").build().is_err());
        assert!(base().with_max_concurrency(0).build().is_err());
        let e = base()
            .with_config(DynamoConfigKey::ConsistentReads, "maybe")
            .build()
            .unwrap_err();
        assert!(e.to_string().contains("consistent_reads"), "{e}");
        assert!(
            base()
                .with_config(DynamoConfigKey::RetryBudget, "-1")
                .build()
                .is_err()
        );
    }

    #[test]
    fn debug_hides_secrets() {
        let b = base();
        let s = format!("{b:?}");
        assert!(
            !s.contains("very-secret") && !s.contains("token-secret") && !s.contains("AKIDEXAMPLE"),
            "{s}"
        );
        let store = b.with_table("t_1").build().unwrap();
        let s = format!("{store:?}");
        assert!(
            !s.contains("very-secret") && !s.contains("token-secret"),
            "{s}"
        );
        assert!(s.contains("t_1"), "{s}");
    }
}
