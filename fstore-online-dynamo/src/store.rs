//! `impl OnlineStore for DynamoOnlineStore`: batching, retries, newest-wins writes.

use std::collections::HashMap;
use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use aws_sdk_dynamodb::types::AttributeValue;
use aws_sdk_dynamodb::types::{
    AttributeDefinition, BillingMode, KeySchemaElement, KeyType, ScalarAttributeType, TableStatus,
    TimeToLiveSpecification, TimeToLiveStatus,
};
use fstore_core::{
    Error, OnlineCapabilities, OnlineKey, OnlineRow, OnlineStore, ReadOptions, ResolvedView,
    Result, Tile, TileMergeFn, TileWrite, WriteOptions, WriteSummary,
};
use futures::{StreamExt, TryStreamExt};

use crate::client::{Api, Counters, PutCall, PutReply, RequestCounts, SdkApi};
use crate::codec::{
    self, CREATED_TS, EVENT_TS, EXPIRES_AT, Item, MAX_BATCH_GET, MAX_BATCH_WRITE, PK, SK,
};
use crate::config::{BACKEND, DynamoOnlineStoreBuilder, Settings};
use crate::error::CallError;

/// An [`OnlineStore`] on one DynamoDB table. Build it with
/// [`DynamoOnlineStoreBuilder`](crate::DynamoOnlineStoreBuilder); see the
/// crate docs for the item layout and the guarantees.
pub struct DynamoOnlineStore {
    settings: Settings,
    sdk: SdkApi,
    api: Arc<dyn Api>,
    counters: Arc<Counters>,
}

impl fmt::Debug for DynamoOnlineStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let s = &self.settings;
        f.debug_struct("DynamoOnlineStore")
            .field("table", &s.table)
            .field("region", &s.region)
            .field("endpoint", &s.endpoint)
            .field("consistent_reads", &s.consistent_reads)
            .field("max_concurrency", &s.max_concurrency)
            .field("retry", &s.retry)
            .field("native_ttl", &s.native_ttl)
            .finish_non_exhaustive()
    }
}

const PUT_CONDITION: &str =
    "attribute_not_exists(#pk) OR #e < :e OR (#e = :e AND (attribute_not_exists(#c) OR #c <= :c))";

impl DynamoOnlineStoreBuilder {
    fn finish(
        self,
        conf: aws_sdk_dynamodb::config::Builder,
        base_region: Option<String>,
    ) -> Result<DynamoOnlineStore> {
        let sdk_endpoint = self.sdk_config.as_ref().map(sdk_endpoint);
        let (conf, mut settings) = self.settings(conf, base_region)?;
        // An endpoint given only through the SDK config is part of the
        // identity too (see `store_id`).
        if settings.endpoint.is_none() {
            settings.endpoint = sdk_endpoint.flatten();
        }
        let counters = Arc::new(Counters::default());
        let sdk = SdkApi {
            client: aws_sdk_dynamodb::Client::from_conf(conf),
            table: settings.table.clone(),
            counters: Arc::clone(&counters),
        };
        Ok(DynamoOnlineStore::new(sdk, settings, counters))
    }

    /// Validates the configuration and builds the store. No I/O (the SDK
    /// connects on first use).
    ///
    /// # Errors
    /// [`Error::UnknownConfigKey`] for a key set by an unknown name;
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
                    aws_sdk_dynamodb::Config::builder()
                        .behavior_version(aws_sdk_dynamodb::config::BehaviorVersion::latest()),
                    None,
                )
            }
        };
        self.finish(conf, base_region)
    }

    /// [`build`](Self::build), then one `ListTables` call: the store is known
    /// to reach DynamoDB with valid credentials. The table itself may not
    /// exist yet (see [`DynamoOnlineStore::ensure_tables`]).
    ///
    /// # Errors
    /// As `build`; the call's error (unreachable endpoint, bad credentials).
    pub async fn connect(self) -> Result<DynamoOnlineStore> {
        let store = self.build()?;
        store.check().await?;
        Ok(store)
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
                if let Some(r) = self.region() {
                    loader = loader.region(aws_sdk_dynamodb::config::Region::new(r.to_owned()));
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

/// The rows of one entity within one write call.
struct Group {
    /// Rows that would be stored if the call were applied row by row on an
    /// empty store, in slice order: a non-decreasing chain of versions. The
    /// last one is the one sent.
    candidates: Vec<OnlineRow>,
    /// Rows already superseded within the call.
    shadowed: u64,
}

impl DynamoOnlineStore {
    pub(crate) fn new(sdk: SdkApi, settings: Settings, counters: Arc<Counters>) -> Self {
        let api: Arc<dyn Api> = Arc::new(sdk.clone());
        Self {
            settings,
            sdk,
            api,
            counters,
        }
    }

    /// Replaces the low-level call layer (tests wrap it to inject throttling).
    #[cfg(test)]
    pub(crate) fn with_api(mut self, wrap: impl FnOnce(Arc<dyn Api>) -> Arc<dyn Api>) -> Self {
        self.api = wrap(Arc::clone(&self.api));
        self
    }

    /// One `ListTables` call (connectivity and credentials).
    async fn check(&self) -> Result<()> {
        Counters::bump(&self.counters.admin);
        self.sdk
            .client
            .list_tables()
            .limit(1)
            .send()
            .await
            .map_err(|e| admin_error("ListTables", &self.settings.table, e))?;
        Ok(())
    }

    /// The table name.
    pub fn table(&self) -> &str {
        &self.settings.table
    }

    /// Requests sent so far, per DynamoDB operation (retries included).
    pub fn request_counts(&self) -> RequestCounts {
        self.counters.snapshot()
    }

    /// Creates the table if it does not exist (on-demand billing, key schema
    /// `pk` (B, hash) + `sk` (S, range)), waits until it is active, and enables
    /// DynamoDB TTL on `expires_at` when native TTL is on. Idempotent; never
    /// called implicitly.
    ///
    /// # Errors
    /// Backend failures; [`Error::InvalidInput`] when an existing table has a
    /// different key schema.
    pub async fn ensure_tables(&self) -> Result<()> {
        let client = &self.sdk.client;
        let table = &self.settings.table;
        Counters::bump(&self.counters.admin);
        let described = client.describe_table().table_name(table).send().await;
        let exists = match described {
            Ok(out) => {
                self.check_key_schema(
                    out.table
                        .as_ref()
                        .map(|t| t.key_schema())
                        .unwrap_or_default(),
                )?;
                true
            }
            Err(e)
                if e.as_service_error()
                    .is_some_and(|s| s.is_resource_not_found_exception()) =>
            {
                false
            }
            Err(e) => return Err(admin_error("DescribeTable", table, e)),
        };
        if !exists {
            let attr = |n: &str, t| {
                AttributeDefinition::builder()
                    .attribute_name(n)
                    .attribute_type(t)
                    .build()
                    .map_err(|e| Error::backend(BACKEND, "CreateTable request", e))
            };
            let key = |n: &str, t| {
                KeySchemaElement::builder()
                    .attribute_name(n)
                    .key_type(t)
                    .build()
                    .map_err(|e| Error::backend(BACKEND, "CreateTable request", e))
            };
            Counters::bump(&self.counters.admin);
            let created = client
                .create_table()
                .table_name(table)
                .billing_mode(BillingMode::PayPerRequest)
                .attribute_definitions(attr(PK, ScalarAttributeType::B)?)
                .attribute_definitions(attr(SK, ScalarAttributeType::S)?)
                .key_schema(key(PK, KeyType::Hash)?)
                .key_schema(key(SK, KeyType::Range)?)
                .send()
                .await;
            match created {
                Ok(_) => {}
                // Another process created it first.
                Err(e)
                    if e.as_service_error()
                        .is_some_and(|s| s.is_resource_in_use_exception()) => {}
                Err(e) => return Err(admin_error("CreateTable", table, e)),
            }
            self.wait_active().await?;
        }
        if self.settings.native_ttl {
            Counters::bump(&self.counters.admin);
            let ttl = client
                .describe_time_to_live()
                .table_name(table)
                .send()
                .await
                .map_err(|e| admin_error("DescribeTimeToLive", table, e))?;
            let desc = ttl.time_to_live_description();
            let status = desc.and_then(|d| d.time_to_live_status());
            let attr = desc.and_then(|d| d.attribute_name());
            let on = matches!(
                status,
                Some(TimeToLiveStatus::Enabled | TimeToLiveStatus::Enabling)
            );
            if on && attr != Some(EXPIRES_AT) {
                return Err(Error::invalid(format!(
                    "{BACKEND}: table '{table}' has TTL enabled on attribute '{}', fstore writes '{EXPIRES_AT}'; \
                     disable native_ttl or change the table's TTL attribute",
                    attr.unwrap_or_default()
                )));
            }
            if !on {
                let spec = TimeToLiveSpecification::builder()
                    .enabled(true)
                    .attribute_name(EXPIRES_AT)
                    .build()
                    .map_err(|e| Error::backend(BACKEND, "UpdateTimeToLive request", e))?;
                Counters::bump(&self.counters.admin);
                client
                    .update_time_to_live()
                    .table_name(table)
                    .time_to_live_specification(spec)
                    .send()
                    .await
                    .map_err(|e| admin_error("UpdateTimeToLive", table, e))?;
            }
        }
        Ok(())
    }

    fn check_key_schema(&self, schema: &[KeySchemaElement]) -> Result<()> {
        let has = |n: &str, t: KeyType| {
            schema
                .iter()
                .any(|k| k.attribute_name() == n && *k.key_type() == t)
        };
        if schema.len() == 2 && has(PK, KeyType::Hash) && has(SK, KeyType::Range) {
            Ok(())
        } else {
            Err(Error::invalid(format!(
                "{BACKEND}: table '{}' exists with key schema {:?}; fstore needs '{PK}' (hash, binary) + '{SK}' (range, string)",
                self.settings.table,
                schema
                    .iter()
                    .map(|k| format!("{}:{}", k.attribute_name(), k.key_type().as_str()))
                    .collect::<Vec<_>>()
            )))
        }
    }

    async fn wait_active(&self) -> Result<()> {
        let table = &self.settings.table;
        for _ in 0..300 {
            Counters::bump(&self.counters.admin);
            let out = self
                .sdk
                .client
                .describe_table()
                .table_name(table)
                .send()
                .await
                .map_err(|e| admin_error("DescribeTable", table, e))?;
            if out.table.as_ref().and_then(|t| t.table_status()) == Some(&TableStatus::Active) {
                return Ok(());
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        Err(Error::Timeout {
            backend: BACKEND,
            message: format!("table '{table}' did not become ACTIVE within 60 s"),
        })
    }

    async fn backoff(&self, retry: u32) {
        Counters::bump(&self.counters.retries);
        tokio::time::sleep(self.settings.retry.delay(retry)).await;
    }

    /// Reads ≤ 100 distinct keys, retrying unprocessed keys and throttling.
    ///
    /// Rounds that make progress (fewer keys left) do not consume the budget,
    /// so the loop ends: each such round strictly shrinks the key set.
    async fn get_chunk(&self, keys: Vec<Item>) -> Result<Vec<Item>> {
        let budget = self.settings.retry.budget;
        let mut pending = keys;
        let mut items = Vec::with_capacity(pending.len());
        let mut failures = 0_u32;
        loop {
            match self
                .api
                .batch_get(&pending, self.settings.consistent_reads)
                .await
            {
                Ok(reply) => {
                    items.extend(reply.items);
                    if reply.unprocessed.is_empty() {
                        return Ok(items);
                    }
                    if reply.unprocessed.len() < pending.len() {
                        failures = 0;
                    } else {
                        failures += 1;
                    }
                    if failures > budget {
                        return Err(Error::Throttled {
                            backend: BACKEND,
                            message: format!(
                                "BatchGetItem on table '{}': {} of {} keys still unprocessed after {budget} retries \
                                 (retry budget spent); no key is reported missing",
                                self.settings.table,
                                reply.unprocessed.len(),
                                pending.len()
                            ),
                        });
                    }
                    pending = reply.unprocessed;
                    self.backoff(failures).await;
                }
                Err(e) if e.is_retryable() && failures < budget => {
                    failures += 1;
                    self.backoff(failures).await;
                }
                Err(e) => return Err(e.into_error(failures)),
            }
        }
    }

    async fn read_inner(&self, keys: &[OnlineKey]) -> Result<Vec<Option<OnlineRow>>> {
        // Distinct (entity key, view) pairs: BatchGetItem rejects duplicates.
        let mut index: HashMap<(&[u8], &str), usize> = HashMap::with_capacity(keys.len());
        let mut unique: Vec<(&[u8], &str)> = Vec::with_capacity(keys.len());
        let mut slot = Vec::with_capacity(keys.len());
        for k in keys {
            codec::check_view_name(&k.view)?;
            codec::check_entity_key(&k.entity_key, &k.view)?;
            let id = (k.entity_key.as_slice(), k.view.as_str());
            let i = *index.entry(id).or_insert_with(|| {
                unique.push(id);
                unique.len() - 1
            });
            slot.push(i);
        }
        let chunks: Vec<Vec<Item>> = unique
            .chunks(MAX_BATCH_GET)
            .map(|c| c.iter().map(|(e, v)| codec::key(e, v)).collect())
            .collect();
        let results: Vec<Vec<Item>> =
            futures::stream::iter(chunks.into_iter().map(|c| self.get_chunk(c)))
                .buffer_unordered(self.settings.max_concurrency)
                .try_collect()
                .await?;
        let mut found: Vec<Option<OnlineRow>> = vec![None; unique.len()];
        for item in results.into_iter().flatten() {
            let (view, row) = codec::from_item(item).map_err(|m| {
                Error::backend_msg(
                    BACKEND,
                    format!("table '{}': malformed item: {m}", self.settings.table),
                )
            })?;
            if let Some(&i) = index.get(&(row.entity_key.as_slice(), view.as_str())) {
                found[i] = Some(row);
            }
        }
        Ok(slot.into_iter().map(|i| found[i].clone()).collect())
    }

    /// Splits rows by entity (first-appearance order) into [`Group`]s.
    fn group_rows(rows: Vec<OnlineRow>) -> Vec<Group> {
        let mut by_key: HashMap<Vec<u8>, usize> = HashMap::new();
        let mut groups: Vec<Group> = Vec::new();
        for row in rows {
            let g = *by_key.entry(row.entity_key.clone()).or_insert_with(|| {
                groups.push(Group {
                    candidates: Vec::new(),
                    shadowed: 0,
                });
                groups.len() - 1
            });
            let g = &mut groups[g];
            match g.candidates.last() {
                Some(last) if !row.supersedes(last) => g.shadowed += 1,
                _ => g.candidates.push(row),
            }
        }
        groups
    }

    /// Writes one entity's group with one conditional put (retried on throttling).
    async fn write_group(
        &self,
        view: &str,
        ttl: Option<Duration>,
        group: Group,
    ) -> Result<WriteSummary> {
        let Some(winner) = group.candidates.last() else {
            return Ok(WriteSummary::default());
        };
        let expiry = if self.settings.native_ttl {
            codec::expiry_secs(winner.event_ts, ttl)
        } else {
            None
        };
        let call = PutCall {
            item: codec::to_item(winner, view, expiry),
            condition: PUT_CONDITION,
            names: HashMap::from([
                ("#pk".to_owned(), PK.to_owned()),
                ("#e".to_owned(), EVENT_TS.to_owned()),
                ("#c".to_owned(), CREATED_TS.to_owned()),
            ]),
            values: HashMap::from([
                (
                    ":e".to_owned(),
                    AttributeValue::N(winner.event_ts.to_string()),
                ),
                (
                    ":c".to_owned(),
                    AttributeValue::N(winner.created_ts.unwrap_or(i64::MIN).to_string()),
                ),
            ]),
            return_old: group.candidates.len() > 1,
        };
        let budget = self.settings.retry.budget;
        let mut failures = 0_u32;
        let reply = loop {
            match self.api.put(&call).await {
                Ok(r) => break r,
                Err(e) if e.is_retryable() && failures < budget => {
                    failures += 1;
                    self.backoff(failures).await;
                }
                Err(e) => {
                    let e = e.with_context(|| {
                        format!(
                            "feature view '{view}', entity {}",
                            fstore_core::adapter::display_entity_key(&winner.entity_key)
                        )
                    });
                    return Err(e.into_error(failures));
                }
            }
        };
        let n = group.candidates.len() as u64;
        let mut s = WriteSummary {
            written: 0,
            skipped: group.shadowed,
        };
        match reply {
            PutReply::ConditionFailed => s.skipped += n,
            PutReply::Written { old: None } => s.written += n,
            PutReply::Written { old: Some(old) } => {
                // Applied row by row, a candidate is stored iff it is not older
                // than what was stored before the call.
                let stored = codec::version(&old).map_err(|m| {
                    Error::backend_msg(
                        BACKEND,
                        format!("table '{}': malformed item: {m}", self.settings.table),
                    )
                })?;
                let written = group
                    .candidates
                    .iter()
                    .filter(|r| r.version() >= stored)
                    .count() as u64;
                s.written += written;
                s.skipped += n - written;
            }
        }
        Ok(s)
    }

    async fn write_inner(&self, view: &ResolvedView, rows: Vec<OnlineRow>) -> Result<WriteSummary> {
        let name = view.name();
        codec::check_view_name(name)?;
        let ttl = view.view.ttl;
        // Validate everything before sending anything.
        for row in &rows {
            let expiry = if self.settings.native_ttl {
                codec::expiry_secs(row.event_ts, ttl)
            } else {
                None
            };
            codec::check_row(row, name, expiry)?;
        }
        let groups = Self::group_rows(rows);
        futures::stream::iter(groups.into_iter().map(|g| self.write_group(name, ttl, g)))
            .buffer_unordered(self.settings.max_concurrency)
            .try_fold(WriteSummary::default(), |mut acc, s| async move {
                acc += s;
                Ok(acc)
            })
            .await
    }

    /// Deletes ≤ 25 keys with `BatchWriteItem`, retrying unprocessed ones.
    async fn delete_chunk(&self, keys: Vec<Item>) -> Result<()> {
        let budget = self.settings.retry.budget;
        let mut pending = keys;
        let mut failures = 0_u32;
        loop {
            match self.api.batch_delete(&pending).await {
                Ok(left) if left.is_empty() => return Ok(()),
                Ok(left) => {
                    if left.len() < pending.len() {
                        failures = 0;
                    } else {
                        failures += 1;
                    }
                    if failures > budget {
                        return Err(Error::Throttled {
                            backend: BACKEND,
                            message: format!(
                                "BatchWriteItem on table '{}': {} deletes still unprocessed after {budget} retries",
                                self.settings.table,
                                left.len()
                            ),
                        });
                    }
                    pending = left;
                    self.backoff(failures).await;
                }
                Err(e) if e.is_retryable() && failures < budget => {
                    failures += 1;
                    self.backoff(failures).await;
                }
                Err(e) => return Err(e.into_error(failures)),
            }
        }
    }

    async fn delete_inner(&self, view: &str) -> Result<()> {
        codec::check_view_name(view)?;
        let budget = self.settings.retry.budget;
        let mut start: Option<Item> = None;
        loop {
            let mut failures = 0_u32;
            let (keys, next) = loop {
                match self.api.scan_view_keys(view, start.clone()).await {
                    Ok(page) => break page,
                    Err(e) if e.is_retryable() && failures < budget => {
                        failures += 1;
                        self.backoff(failures).await;
                    }
                    Err(e) => return Err(e.into_error(failures)),
                }
            };
            let chunks = batch_write_chunks(keys);
            futures::stream::iter(chunks.into_iter().map(|c| self.delete_chunk(c)))
                .buffer_unordered(self.settings.max_concurrency)
                .try_collect::<Vec<()>>()
                .await?;
            match next {
                Some(k) => start = Some(k),
                None => return Ok(()),
            }
        }
    }
}

/// Maps a failed administrative call (no retries there: `ensure_tables` is
/// run at deploy time and can simply be run again).
fn admin_error<E, R>(
    op: &'static str,
    table: &str,
    e: aws_sdk_dynamodb::error::SdkError<E, R>,
) -> Error
where
    E: aws_sdk_dynamodb::error::ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
    R: fmt::Debug + Send + Sync + 'static,
{
    CallError::from_sdk(op, table, e).into_error(0)
}

/// Splits keys into `BatchWriteItem`-sized chunks (≤ 25).
pub(crate) fn batch_write_chunks(keys: Vec<Item>) -> Vec<Vec<Item>> {
    let mut out = Vec::with_capacity(keys.len().div_ceil(MAX_BATCH_WRITE));
    let mut it = keys.into_iter().peekable();
    while it.peek().is_some() {
        out.push(it.by_ref().take(MAX_BATCH_WRITE).collect());
    }
    out
}

async fn with_deadline<T>(
    timeout: Option<Duration>,
    what: impl FnOnce() -> String,
    fut: impl Future<Output = Result<T>>,
) -> Result<T> {
    match timeout {
        None => fut.await,
        Some(t) => tokio::time::timeout(t, fut)
            .await
            .map_err(|_| Error::Timeout {
                backend: BACKEND,
                message: format!("{} did not finish within {t:?}", what()),
            })?,
    }
}

/// The endpoint URL set inside an SDK config. The SDK has no getter for it;
/// its `Debug` output shows it as `EndpointUrl("…")`. When that cannot be
/// found, a custom SDK config still marks the id (`sdk-config`), so it never
/// looks like the public AWS endpoint.
fn sdk_endpoint(c: &aws_sdk_dynamodb::Config) -> Option<String> {
    let dbg = format!("{c:?}");
    let found = dbg.split("EndpointUrl(\"").nth(1).and_then(|rest| {
        rest.split('"')
            .next()
            .filter(|u| !u.is_empty())
            .map(str::to_owned)
    });
    Some(found.unwrap_or_else(|| "sdk-config".to_owned()))
}

/// See [`OnlineStore::store_id`] on [`DynamoOnlineStore`].
fn store_id(s: &crate::config::Settings) -> String {
    let region = s.region.as_deref().unwrap_or("no-region");
    let endpoint = s
        .endpoint
        .as_deref()
        .map_or("aws", |e| e.trim_end_matches('/'));
    format!("{BACKEND}:{region}/{endpoint}/{}", s.table)
}

#[async_trait]
impl OnlineStore for DynamoOnlineStore {
    fn backend(&self) -> &'static str {
        BACKEND
    }

    /// `dynamo:<region>/<endpoint>/<table>`, with `aws` as the endpoint when
    /// none is configured (the region's public endpoint). Region and endpoint
    /// are part of it: staging and production (or DynamoDB Local) tables of the
    /// same name sharing one registry must not share watermarks. An endpoint
    /// set only inside a custom SDK config (`with_sdk_config`) is taken from
    /// it (or, when it cannot be read, the id says `sdk-config`); setting it
    /// with `with_endpoint` is the reliable way.
    fn store_id(&self) -> String {
        store_id(&self.settings)
    }

    fn capabilities(&self) -> OnlineCapabilities {
        OnlineCapabilities::default()
            .with_max_read_batch(MAX_BATCH_GET)
            .with_max_write_batch(1)
            .with_native_ttl(self.settings.native_ttl)
            // `read` and `read_tiles` run under `with_deadline(opts.timeout)`.
            .with_enforces_read_timeout(true)
            .with_tiles(true)
    }

    async fn write_tiles(
        &self,
        view: &ResolvedView,
        writes: Vec<TileWrite>,
        opts: &WriteOptions,
    ) -> Result<()> {
        with_deadline(
            opts.timeout,
            || format!("tile write of {} entities", writes.len()),
            self.apply_tiles(view.name(), &writes, None),
        )
        .await
    }

    async fn merge_tiles(
        &self,
        view: &ResolvedView,
        writes: Vec<TileWrite>,
        merge: &TileMergeFn,
        opts: &WriteOptions,
    ) -> Result<()> {
        with_deadline(
            opts.timeout,
            || format!("tile merge of {} entities", writes.len()),
            self.apply_tiles(view.name(), &writes, Some(merge)),
        )
        .await
    }

    async fn read_tiles(&self, keys: &[OnlineKey], opts: &ReadOptions) -> Result<Vec<Vec<Tile>>> {
        with_deadline(
            opts.timeout,
            || format!("tile read of {} keys", keys.len()),
            self.read_tiles_inner(keys),
        )
        .await
    }

    async fn write(
        &self,
        view: &ResolvedView,
        rows: Vec<OnlineRow>,
        opts: &WriteOptions,
    ) -> Result<WriteSummary> {
        let n = rows.len();
        with_deadline(
            opts.timeout,
            || format!("write of {n} rows to view '{}'", view.name()),
            self.write_inner(view, rows),
        )
        .await
    }

    async fn read(&self, keys: &[OnlineKey], opts: &ReadOptions) -> Result<Vec<Option<OnlineRow>>> {
        with_deadline(
            opts.timeout,
            || format!("read of {} keys", keys.len()),
            self.read_inner(keys),
        )
        .await
    }

    async fn delete_view(&self, view: &str) -> Result<()> {
        codec::check_view_name(view)?;
        self.delete_tiles(view).await?;
        self.delete_inner(view).await
    }
}

#[cfg(test)]
mod tests {
    //! Retry tests through the [`Api`] seam: a wrapper around the real client
    //! (talking to the test server) that makes DynamoDB's throttling
    //! behaviour happen on demand.

    use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};

    use fstore_core::{FeatureView, JoinKey, ValueType};

    use super::*;

    /// Item 7: two stores on tables of the same name in different regions or
    /// behind different endpoints never share an id (and so never share a
    /// materialization watermark).
    #[test]
    fn store_id_includes_region_and_endpoint() {
        let id = |region: &str, endpoint: Option<&str>| {
            let mut b = DynamoOnlineStoreBuilder::new()
                .with_region(region)
                .with_table("features")
                .with_access_key_id("k")
                .with_secret_access_key("s");
            if let Some(e) = endpoint {
                b = b.with_endpoint(e);
            }
            fstore_core::OnlineStore::store_id(&b.build().unwrap())
        };
        let prod = id("eu-west-1", None);
        assert_eq!(prod, "dynamo:eu-west-1/aws/features");
        let others = [
            id("us-east-1", None),
            id("eu-west-1", Some("http://127.0.0.1:8000")),
            id("eu-west-1", Some("http://127.0.0.1:8001/")),
        ];
        assert!(others.iter().all(|o| *o != prod), "{others:?}");
        assert_ne!(others[1], others[2]);
    }
    use crate::client::BatchGetReply;
    use crate::config::RetryPolicy;
    use crate::{DynamoOnlineStoreBuilder, codec};

    /// Forwards to the real API, but while `throttled_calls > 0` each
    /// BatchGetItem forwards only the first `keep` keys (the rest come back
    /// unprocessed, as DynamoDB does under throttling) and each PutItem fails
    /// with ProvisionedThroughputExceeded.
    #[derive(Debug)]
    struct Throttling {
        inner: Arc<dyn Api>,
        throttled_calls: AtomicU32,
        keep: usize,
        calls: AtomicU64,
    }

    impl Throttling {
        fn take(&self) -> bool {
            self.calls.fetch_add(1, Ordering::SeqCst);
            self.throttled_calls
                .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
                .is_ok()
        }
    }

    #[async_trait]
    impl Api for Throttling {
        async fn batch_get(
            &self,
            keys: &[Item],
            consistent: bool,
        ) -> Result<BatchGetReply, CallError> {
            if !self.take() {
                return self.inner.batch_get(keys, consistent).await;
            }
            let keep = self.keep.min(keys.len());
            let mut reply = if keep > 0 {
                self.inner.batch_get(&keys[..keep], consistent).await?
            } else {
                BatchGetReply::default()
            };
            reply.unprocessed.extend_from_slice(&keys[keep..]);
            Ok(reply)
        }
        async fn put(&self, call: &PutCall) -> Result<PutReply, CallError> {
            if self.take() {
                return Err(CallError::Throttled(
                    "PutItem: ProvisionedThroughputExceededException".into(),
                ));
            }
            self.inner.put(call).await
        }
        async fn scan_view_keys(
            &self,
            view: &str,
            start: Option<Item>,
        ) -> Result<(Vec<Item>, Option<Item>), CallError> {
            self.inner.scan_view_keys(view, start).await
        }
        async fn batch_delete(&self, keys: &[Item]) -> Result<Vec<Item>, CallError> {
            self.inner.batch_delete(keys).await
        }
    }

    fn endpoint() -> Option<String> {
        fstore_core::testkit::server_url("FSTORE_TEST_DYNAMO_ENDPOINT")
    }

    async fn store(endpoint: &str, table: &str, budget: u32) -> DynamoOnlineStore {
        let s = DynamoOnlineStoreBuilder::new()
            .with_endpoint(endpoint)
            .with_region("us-east-1")
            .with_access_key_id("fstore-test")
            .with_secret_access_key("fstore-test")
            .with_table(table)
            .with_retry_budget(budget)
            .with_retry_base_delay(Duration::from_millis(1))
            .with_retry_max_delay(Duration::from_millis(4))
            .build()
            .unwrap();
        s.ensure_tables().await.unwrap();
        s
    }

    fn view(name: &str) -> ResolvedView {
        ResolvedView::new(
            FeatureView::new(name, ["e"]).with_feature("f", ValueType::Int64),
            vec![JoinKey::new("id", ValueType::Int64)],
        )
    }

    fn row(id: i64, ts: i64) -> OnlineRow {
        OnlineRow {
            entity_key: fstore_core::adapter::encode_entity_key(&[(
                "id",
                fstore_core::Value::Int64(id),
            )])
            .unwrap(),
            event_ts: ts,
            created_ts: None,
            payload: ts.to_le_bytes().to_vec().into(),
        }
    }

    fn wrap(
        s: DynamoOnlineStore,
        throttled_calls: u32,
        keep: usize,
    ) -> (DynamoOnlineStore, Arc<Throttling>) {
        let mut handle = None;
        let s = s.with_api(|inner| {
            let t = Arc::new(Throttling {
                inner,
                throttled_calls: AtomicU32::new(throttled_calls),
                keep,
                calls: AtomicU64::new(0),
            });
            handle = Some(Arc::clone(&t));
            t
        });
        (s, handle.unwrap())
    }

    #[tokio::test(flavor = "multi_thread")]
    async fn unprocessed_keys_are_retried_until_done() {
        let Some(ep) = endpoint() else { return };
        let base = store(&ep, "fstore_retry_partial", 3).await;
        let v = view("retry_partial");
        let rows: Vec<_> = (0..150).map(|i| row(i, 10 + i)).collect();
        base.write(&v, rows.clone(), &WriteOptions::default())
            .await
            .unwrap();
        // Every call for the next 20 calls processes only 7 keys: progress
        // each round, so the budget (3) is never spent.
        let (s, t) = wrap(base, 20, 7);
        let keys: Vec<_> = rows
            .iter()
            .map(|r| OnlineKey {
                view: v.name().into(),
                entity_key: r.entity_key.clone(),
            })
            .collect();
        let got = s.read(&keys, &ReadOptions::default()).await.unwrap();
        for (r, g) in rows.iter().zip(&got) {
            assert_eq!(g.as_ref(), Some(r));
        }
        assert!(t.calls.load(Ordering::SeqCst) > 20);
        // Every call after the first of each of the 2 chunks is a retry.
        let c = s.request_counts();
        assert_eq!(c.retries, c.batch_get_item - 2, "{c:?}");
    }

    #[tokio::test(flavor = "multi_thread")]
    async fn spent_budget_is_throttled_never_not_found() {
        let Some(ep) = endpoint() else { return };
        let base = store(&ep, "fstore_retry_spent", 4).await;
        let v = view("retry_spent");
        base.write(&v, vec![row(1, 5), row(2, 6)], &WriteOptions::default())
            .await
            .unwrap();
        let (s, t) = wrap(base, u32::MAX, 0);
        let keys: Vec<_> = [1, 2, 3]
            .into_iter()
            .map(|i| OnlineKey {
                view: v.name().into(),
                entity_key: row(i, 0).entity_key,
            })
            .collect();
        let err = s.read(&keys, &ReadOptions::default()).await.unwrap_err();
        assert!(
            matches!(
                err,
                Error::Throttled {
                    backend: "dynamo",
                    ..
                }
            ),
            "{err:?}"
        );
        assert!(err.is_retryable());
        assert!(err.to_string().contains("unprocessed"), "{err}");
        // One first try + 4 retries.
        assert_eq!(t.calls.load(Ordering::SeqCst), 5);
    }

    #[tokio::test(flavor = "multi_thread")]
    async fn throttled_puts_are_retried_then_reported() {
        let Some(ep) = endpoint() else { return };
        let v = view("retry_put");
        let (s, _) = wrap(store(&ep, "fstore_retry_put", 3).await, 3, 0);
        let sum = s
            .write(&v, vec![row(1, 5)], &WriteOptions::default())
            .await
            .unwrap();
        assert_eq!(
            sum,
            WriteSummary {
                written: 1,
                skipped: 0
            }
        );
        assert_eq!(
            s.request_counts().put_item,
            1,
            "throttled attempts never reached the server"
        );
        let (s, _) = wrap(store(&ep, "fstore_retry_put", 3).await, u32::MAX, 0);
        let err = s
            .write(&v, vec![row(1, 6)], &WriteOptions::default())
            .await
            .unwrap_err();
        assert!(matches!(err, Error::Throttled { .. }), "{err:?}");
        // The stored row is untouched.
        let got = s
            .sdk
            .batch_get(&[codec::key(&row(1, 0).entity_key, v.name())], true)
            .await
            .unwrap();
        assert_eq!(codec::version(&got.items[0]).unwrap(), (5, i64::MIN));
    }

    #[test]
    fn batch_write_chunks_respect_the_limit() {
        let keys: Vec<Item> = (0..61_u8).map(|i| codec::key(&[i + 1], "v")).collect();
        let chunks = batch_write_chunks(keys);
        assert_eq!(
            chunks.iter().map(Vec::len).collect::<Vec<_>>(),
            vec![25, 25, 11]
        );
        assert!(batch_write_chunks(Vec::new()).is_empty());
    }

    #[test]
    fn grouping_keeps_the_sequential_winner() {
        let mut last = row(1, 7);
        last.payload = vec![9].into();
        let rows = vec![row(1, 5), row(1, 3), row(2, 1), row(1, 7), last];
        let groups = DynamoOnlineStore::group_rows(rows);
        assert_eq!(groups.len(), 2);
        let ts: Vec<i64> = groups[0].candidates.iter().map(|r| r.event_ts).collect();
        assert_eq!(ts, vec![5, 7, 7]);
        assert_eq!(groups[0].shadowed, 1);
        // The later of two equal versions is the one sent.
        assert_eq!(groups[0].candidates.last().unwrap().payload, vec![9]);
    }

    #[test]
    fn backoff_grows_with_jitter_and_cap() {
        let p = RetryPolicy {
            budget: 5,
            base: Duration::from_millis(10),
            max: Duration::from_millis(100),
        };
        for r in 0..30 {
            let d = p.delay(r);
            let full = Duration::from_millis(10)
                .saturating_mul(1 << r.min(20))
                .min(p.max);
            assert!(d >= full / 2 && d <= full, "{r}: {d:?}");
        }
    }
}

/// Aggregation tiles ([semantics §11](fstore_core::docs::semantics)): one item per (entity, view) with sort key
/// `agg#<view>` (`#` never occurs in a view name, so it cannot collide with a
/// row), a map attribute `tiles` of `<feature>@<start µs>` → `i64 BE
/// expires_at` + core's tile-state bytes, and a number attribute `ver`.
/// Reads are `BatchGetItem` (100 keys a call); merges and replacements are a
/// read then a `PutItem` conditional on `ver` being unchanged
/// (`attribute_not_exists(ver) OR ver = :v`), retried with fresh state when a
/// concurrent writer won — so concurrent pushers lose nothing.
mod tiles {
    use super::*;
    use aws_sdk_dynamodb::primitives::Blob;
    use aws_sdk_dynamodb::types::KeysAndAttributes;
    use fstore_core::{Tile, TileMergeFn, TileWrite};

    pub(super) const TILES: &str = "tiles";
    pub(super) const VER: &str = "ver";
    const MAX_ATTEMPTS: usize = 200;

    pub(super) fn sort_key(view: &str) -> String {
        format!("agg#{view}")
    }

    fn key(entity: &[u8], view: &str) -> Item {
        Item::from([
            (PK.to_owned(), AttributeValue::B(Blob::new(entity.to_vec()))),
            (SK.to_owned(), AttributeValue::S(sort_key(view))),
        ])
    }

    fn decode(item: &Item) -> Result<(Option<String>, Vec<Tile>)> {
        let ver = match item.get(VER) {
            Some(AttributeValue::N(n)) => Some(n.clone()),
            _ => None,
        };
        let mut out = Vec::new();
        if let Some(AttributeValue::M(m)) = item.get(TILES) {
            for (f, v) in m {
                let bad = |what: &str| {
                    Error::backend_msg(BACKEND, format!("tile attribute '{f}': {what}"))
                };
                let (feature, start) = f.rsplit_once('@').ok_or_else(|| bad("no '@'"))?;
                let start: i64 = start.parse().map_err(|_| bad("bad tile start"))?;
                let AttributeValue::B(b) = v else {
                    return Err(bad("not binary"));
                };
                let b = b.as_ref();
                if b.len() < 8 {
                    return Err(bad("shorter than its 8-byte expiry"));
                }
                let mut exp = [0u8; 8];
                exp.copy_from_slice(&b[..8]);
                out.push(Tile {
                    feature: feature.to_owned(),
                    start,
                    expires_at: i64::from_be_bytes(exp),
                    state: b[8..].to_vec(),
                });
            }
        }
        Ok((ver, out))
    }

    impl DynamoOnlineStore {
        async fn get_tile_item(&self, entity: &[u8], view: &str) -> Result<Option<Item>> {
            let out = self
                .sdk
                .client
                .get_item()
                .table_name(&self.settings.table)
                .set_key(Some(key(entity, view)))
                .consistent_read(true)
                .send()
                .await
                .map_err(|e| {
                    CallError::from_sdk("GetItem", &self.settings.table, e).into_error(0)
                })?;
            Ok(out.item)
        }

        async fn apply_tiles_one(
            &self,
            view: &str,
            w: &TileWrite,
            merge: Option<&TileMergeFn>,
        ) -> Result<()> {
            for _ in 0..MAX_ATTEMPTS {
                let stored = self.get_tile_item(&w.entity_key, view).await?;
                let (ver, tiles) = match &stored {
                    Some(item) => decode(item)?,
                    None => (None, Vec::new()),
                };
                let mut map: HashMap<String, AttributeValue> = HashMap::new();
                for s in &tiles {
                    if s.expires_at > w.expire_before {
                        let mut v = s.expires_at.to_be_bytes().to_vec();
                        v.extend_from_slice(&s.state);
                        map.insert(s.field(), AttributeValue::B(Blob::new(v)));
                    }
                }
                for t in &w.tiles {
                    let old = tiles
                        .iter()
                        .find(|s| s.feature == t.feature && s.start == t.start);
                    let state = match (merge, old) {
                        (Some(m), Some(old)) => m(&t.feature, &old.state, &t.state)?,
                        _ => t.state.clone(),
                    };
                    let mut v = t.expires_at.to_be_bytes().to_vec();
                    v.extend_from_slice(&state);
                    map.insert(t.field(), AttributeValue::B(Blob::new(v)));
                }
                let next: i64 = ver.as_deref().and_then(|v| v.parse().ok()).unwrap_or(0) + 1;
                let mut item = key(&w.entity_key, view);
                item.insert(TILES.to_owned(), AttributeValue::M(map));
                item.insert(VER.to_owned(), AttributeValue::N(next.to_string()));
                let mut put = self
                    .sdk
                    .client
                    .put_item()
                    .table_name(&self.settings.table)
                    .set_item(Some(item))
                    .expression_attribute_names("#v", VER);
                put = match &ver {
                    Some(v) => put
                        .condition_expression("#v = :v")
                        .expression_attribute_values(":v", AttributeValue::N(v.clone())),
                    None => put.condition_expression("attribute_not_exists(#v)"),
                };
                match put.send().await {
                    Ok(_) => return Ok(()),
                    Err(e) => match CallError::from_sdk("PutItem", &self.settings.table, e) {
                        CallError::ConditionFailed => continue,
                        other => return Err(other.into_error(0)),
                    },
                }
            }
            Err(Error::Conflict(format!(
                "{BACKEND}: tiles of view '{view}' for one entity changed {MAX_ATTEMPTS} times in a row under a conditional put"
            )))
        }

        pub(super) async fn apply_tiles(
            &self,
            view: &str,
            writes: &[TileWrite],
            merge: Option<&TileMergeFn>,
        ) -> Result<()> {
            let mut s = futures::stream::iter(0..writes.len())
                .map(|i| self.apply_tiles_one(view, &writes[i], merge))
                .buffer_unordered(self.settings.max_concurrency.max(1));
            while let Some(r) = s.next().await {
                r?;
            }
            Ok(())
        }

        pub(super) async fn read_tiles_inner(&self, keys: &[OnlineKey]) -> Result<Vec<Vec<Tile>>> {
            let mut found: HashMap<(Vec<u8>, String), Vec<Tile>> = HashMap::new();
            let mut uniq: Vec<Item> = Vec::new();
            let mut seen = std::collections::HashSet::new();
            for k in keys {
                if seen.insert((k.entity_key.clone(), k.view.clone())) {
                    uniq.push(key(&k.entity_key, &k.view));
                }
            }
            for chunk in uniq.chunks(MAX_BATCH_GET) {
                let mut pending: Vec<Item> = chunk.to_vec();
                let mut rounds = 0u32;
                while !pending.is_empty() {
                    let kaa = KeysAndAttributes::builder()
                        .set_keys(Some(std::mem::take(&mut pending)))
                        .consistent_read(self.settings.consistent_reads)
                        .build()
                        .map_err(|e| Error::backend(BACKEND, "BatchGetItem request", e))?;
                    let out = self
                        .sdk
                        .client
                        .batch_get_item()
                        .request_items(&self.settings.table, kaa)
                        .send()
                        .await
                        .map_err(|e| {
                            CallError::from_sdk("BatchGetItem", &self.settings.table, e)
                                .into_error(0)
                        })?;
                    for item in out
                        .responses
                        .and_then(|mut r| r.remove(&self.settings.table))
                        .unwrap_or_default()
                    {
                        let pk = match item.get(PK) {
                            Some(AttributeValue::B(b)) => b.as_ref().to_vec(),
                            _ => continue,
                        };
                        let view = match item.get(SK) {
                            Some(AttributeValue::S(s)) => {
                                s.strip_prefix("agg#").unwrap_or(s).to_owned()
                            }
                            _ => continue,
                        };
                        found.insert((pk, view), decode(&item)?.1);
                    }
                    pending = out
                        .unprocessed_keys
                        .and_then(|mut u| u.remove(&self.settings.table))
                        .map(|k| k.keys)
                        .unwrap_or_default();
                    if !pending.is_empty() {
                        rounds += 1;
                        if rounds > self.settings.retry.budget {
                            return Err(Error::Throttled {
                                backend: BACKEND,
                                message: "BatchGetItem of tiles kept returning unprocessed keys"
                                    .into(),
                            });
                        }
                        self.backoff(rounds).await;
                    }
                }
            }
            Ok(keys
                .iter()
                .map(|k| {
                    found
                        .get(&(k.entity_key.clone(), k.view.clone()))
                        .cloned()
                        .unwrap_or_default()
                })
                .collect())
        }

        pub(super) async fn delete_tiles(&self, view: &str) -> Result<()> {
            let sk = sort_key(view);
            let mut start: Option<Item> = None;
            loop {
                let (keys, next) = self
                    .api
                    .scan_view_keys(&sk, start.clone())
                    .await
                    .map_err(|e| e.into_error(0))?;
                for c in batch_write_chunks(keys) {
                    self.delete_chunk(c).await?;
                }
                match next {
                    Some(k) => start = Some(k),
                    None => return Ok(()),
                }
            }
        }
    }
}
