//! Configuration: [`DynamoConfigKey`], [`DynamoOnlineStoreBuilder`]'s setters
//! and the validated [`Settings`], in core's configuration language
//! ([`fstore_core::config`]). Imports nothing else of this crate.

use std::fmt;
use std::hash::BuildHasher;
use std::str::FromStr;
use std::time::Duration;

use aws_sdk_dynamodb::config::retry::RetryConfig;
use aws_sdk_dynamodb::config::timeout::TimeoutConfig;
use aws_sdk_dynamodb::config::{Credentials, Region};
use fstore_core::config::{ConfigKey, ConfigValues, format_duration, parse_key};
use fstore_core::{Error, Result};

/// Backend id used in errors, logs and [`fstore_core::OnlineStore::backend`].
pub const BACKEND: &str = "dynamo";

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
    /// TCP/TLS connect timeout (`connect_timeout`), e.g. `3s`, `250ms` (a unit is required). Default `3100ms`.
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

impl ConfigKey for DynamoConfigKey {
    const BACKEND: &'static str = BACKEND;
    const ENV_PREFIX: &'static str = "DYNAMO";
    const ALL: &'static [Self] = &[
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

    fn name(self) -> &'static str {
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

    fn is_secret(self) -> bool {
        // The key id is not a secret by AWS's definition, but it identifies
        // the account: it is not printed either.
        matches!(
            self,
            Self::AccessKeyId | Self::SecretAccessKey | Self::SessionToken
        )
    }
}

impl AsRef<str> for DynamoConfigKey {
    fn as_ref(&self) -> &str {
        self.name()
    }
}

impl fmt::Display for DynamoConfigKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for DynamoConfigKey {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self> {
        parse_key(s)
    }
}

/// Builds a [`DynamoOnlineStore`](crate::DynamoOnlineStore).
///
/// Setters never fail; [`build`](Self::build) validates everything. `build` is
/// synchronous and does no I/O (the SDK connects lazily); the table is created
/// only by [`DynamoOnlineStore::ensure_tables`](crate::DynamoOnlineStore::ensure_tables), never implicitly.
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
    values: ConfigValues<DynamoConfigKey>,
    pub(crate) sdk_config: Option<aws_sdk_dynamodb::Config>,
}

impl fmt::Debug for DynamoOnlineStoreBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DynamoOnlineStoreBuilder")
            .field("values", &self.values)
            .field("sdk_config", &self.sdk_config.as_ref().map(|_| "<set>"))
            .finish()
    }
}

impl DynamoOnlineStoreBuilder {
    /// An empty builder (defaults everywhere).
    pub fn new() -> Self {
        Self::default()
    }

    /// A builder with every `FSTORE_DYNAMO_*` environment variable applied
    /// (and only those; unknown `FSTORE_DYNAMO_*` names are logged and ignored).
    pub fn from_env() -> Self {
        Self {
            values: ConfigValues::from_env(),
            sdk_config: None,
        }
    }

    /// Sets one configuration value from a string (validated in `build`).
    pub fn with_config(mut self, key: DynamoConfigKey, value: impl Into<String>) -> Self {
        self.values.set(key, value);
        self
    }

    /// Sets a key given by name (canonical, alias or env var name); an
    /// unknown name makes `build` fail with [`Error::UnknownConfigKey`].
    pub fn with_config_str(mut self, key: &str, value: impl Into<String>) -> Self {
        self.values.set_str(key, value);
        self
    }

    /// The raw value of a key, if set.
    pub fn get_config(&self, key: DynamoConfigKey) -> Option<&str> {
        self.values.get(key)
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
        self.with_config(DynamoConfigKey::ConnectTimeout, format_duration(t))
    }
    /// Deadline of one HTTP attempt.
    pub fn with_request_timeout(self, t: Duration) -> Self {
        self.with_config(DynamoConfigKey::RequestTimeout, format_duration(t))
    }
    /// Retries allowed per request group.
    pub fn with_retry_budget(self, n: u32) -> Self {
        self.with_config(DynamoConfigKey::RetryBudget, n.to_string())
    }
    /// First backoff delay.
    pub fn with_retry_base_delay(self, t: Duration) -> Self {
        self.with_config(DynamoConfigKey::RetryBaseDelay, format_duration(t))
    }
    /// Largest backoff delay.
    pub fn with_retry_max_delay(self, t: Duration) -> Self {
        self.with_config(DynamoConfigKey::RetryMaxDelay, format_duration(t))
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

    pub(crate) fn static_credentials(&self) -> Result<Option<Credentials>> {
        use DynamoConfigKey as K;
        let c = &self.values;
        match (c.get(K::AccessKeyId), c.get(K::SecretAccessKey)) {
            (Some(id), Some(secret)) => Ok(Some(Credentials::new(
                id,
                secret,
                c.get(K::SessionToken).map(str::to_owned),
                None,
                "fstore-static",
            ))),
            (None, None) => Ok(None),
            _ => Err(Error::invalid(format!(
                "{BACKEND} config: access_key_id and secret_access_key must be set together"
            ))),
        }
    }

    /// The region set on this builder, if any.
    #[cfg(feature = "aws-config")]
    pub(crate) fn region(&self) -> Option<&str> {
        self.values.get(DynamoConfigKey::Region)
    }

    /// Validates the configuration and applies it to an SDK config builder.
    /// `base_region`: the region of the SDK config this builder starts from.
    pub(crate) fn settings(
        &self,
        mut conf: aws_sdk_dynamodb::config::Builder,
        base_region: Option<String>,
    ) -> Result<(aws_sdk_dynamodb::Config, Settings)> {
        use DynamoConfigKey as K;
        let c = &self.values;
        c.check_unknown()?;
        if let Some(r) = c.get(K::Region) {
            conf = conf.region(Region::new(r.to_owned()));
        }
        if let Some(e) = c.get(K::Endpoint) {
            conf = conf.endpoint_url(e);
        }
        if let Some(cred) = self.static_credentials()? {
            conf = conf.credentials_provider(cred);
        }
        conf = conf
            .timeout_config(
                TimeoutConfig::builder()
                    .connect_timeout(c.duration(K::ConnectTimeout, DEFAULT_CONNECT_TIMEOUT)?)
                    .operation_attempt_timeout(
                        c.duration(K::RequestTimeout, DEFAULT_REQUEST_TIMEOUT)?,
                    )
                    .build(),
            )
            // One retry layer only: ours (it also retries unprocessed keys, and
            // counts every request).
            .retry_config(RetryConfig::disabled());
        let region = c.get(K::Region).map(str::to_owned).or(base_region);
        if region.is_none() {
            return Err(Error::invalid(format!(
                "{BACKEND} config: no region (set FSTORE_DYNAMO_REGION or with_region)"
            )));
        }
        let table = c.get(K::Table).unwrap_or(DEFAULT_TABLE).to_owned();
        if !(3..=255).contains(&table.len())
            || !table
                .chars()
                .all(|ch| ch.is_ascii_alphanumeric() || "_-.".contains(ch))
        {
            return Err(c.invalid(
                K::Table,
                "not a valid DynamoDB table name (3-255 of a-z A-Z 0-9 _ - .)",
            ));
        }
        let settings = Settings {
            table,
            region,
            endpoint: c.get(K::Endpoint).map(str::to_owned),
            consistent_reads: c.bool(K::ConsistentReads, false)?,
            max_concurrency: c.count(K::MaxConcurrency, DEFAULT_MAX_CONCURRENCY, 1, usize::MAX)?,
            retry: RetryPolicy {
                budget: c.number(K::RetryBudget, DEFAULT_RETRY_BUDGET)?,
                base: c.duration(K::RetryBaseDelay, DEFAULT_RETRY_BASE_DELAY)?,
                max: c.duration(K::RetryMaxDelay, DEFAULT_RETRY_MAX_DELAY)?,
            },
            native_ttl: c.bool(K::NativeTtl, true)?,
        };
        Ok((conf.build(), settings))
    }
}

/// Backoff between retries: exponential from `base`, capped at `max`, with
/// "equal jitter" (a random delay in `[d/2, d]`).
#[derive(Debug, Clone, Copy)]
pub(crate) struct RetryPolicy {
    /// Retries allowed (rounds without progress) before giving up.
    pub(crate) budget: u32,
    pub(crate) base: Duration,
    pub(crate) max: Duration,
}

impl RetryPolicy {
    pub(crate) fn delay(&self, retry: u32) -> Duration {
        let exp = self.base.saturating_mul(1_u32 << retry.min(20));
        let d = exp.min(self.max);
        let nanos = u64::try_from(d.as_nanos()).unwrap_or(u64::MAX);
        let half = nanos / 2;
        let r = std::collections::hash_map::RandomState::new().hash_one(retry);
        Duration::from_nanos(half + r % (nanos - half + 1))
    }
}

/// Resolved settings of a store.
#[derive(Debug, Clone)]
pub(crate) struct Settings {
    pub(crate) table: String,
    pub(crate) region: Option<String>,
    pub(crate) endpoint: Option<String>,
    pub(crate) consistent_reads: bool,
    pub(crate) max_concurrency: usize,
    pub(crate) retry: RetryPolicy,
    pub(crate) native_ttl: bool,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_parse_from_names_env_and_aliases() {
        for &k in DynamoConfigKey::ALL {
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
    fn durations_take_every_unit_and_refuse_bare_numbers() {
        let conf = || aws_sdk_dynamodb::Config::builder();
        let (_, s) = base()
            .with_config(DynamoConfigKey::RetryMaxDelay, "1h")
            .with_retry_base_delay(Duration::from_micros(1234))
            .settings(conf(), None)
            .unwrap();
        assert_eq!(s.retry.max, Duration::from_secs(3600));
        assert_eq!(s.retry.base, Duration::from_micros(1234));
        let e = base()
            .with_config(DynamoConfigKey::RequestTimeout, "40")
            .settings(conf(), None)
            .unwrap_err()
            .to_string();
        assert!(e.contains("request_timeout") && e.contains("500ms"), "{e}");
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
