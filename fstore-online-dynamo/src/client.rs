//! All DynamoDB I/O. The store talks to DynamoDB only through [`Api`], one
//! method per low-level call, so tests can wrap it (e.g. to inject throttling
//! and unprocessed keys) and every request is counted in one place.

use std::collections::HashMap;
use std::fmt::Debug;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use async_trait::async_trait;
use aws_sdk_dynamodb::types::{
    AttributeValue, DeleteRequest, KeysAndAttributes, ReturnValue, WriteRequest,
};

use crate::codec::{CREATED_TS, EVENT_TS, Item, PAYLOAD, PK, SK};
use crate::error::CallError;

/// Request counts per DynamoDB operation since the store was built: what a
/// DynamoDB bill is made of. Every HTTP request counts, retries included.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct RequestCounts {
    /// `BatchGetItem` requests (reads; ≤ 100 keys each).
    pub batch_get_item: u64,
    /// `PutItem` requests (conditional writes; one row each).
    pub put_item: u64,
    /// `BatchWriteItem` requests (deletes of `delete_view`; ≤ 25 keys each).
    pub batch_write_item: u64,
    /// `Scan` requests (`delete_view`).
    pub scan: u64,
    /// Table administration (`DescribeTable`, `CreateTable`, TTL calls).
    pub admin: u64,
    /// Of the requests above, how many were retries (throttling, unprocessed keys, transient errors).
    pub retries: u64,
}

impl RequestCounts {
    /// The counts accumulated since `earlier` (a previous snapshot).
    pub fn since(&self, earlier: &Self) -> Self {
        Self {
            batch_get_item: self.batch_get_item.saturating_sub(earlier.batch_get_item),
            put_item: self.put_item.saturating_sub(earlier.put_item),
            batch_write_item: self
                .batch_write_item
                .saturating_sub(earlier.batch_write_item),
            scan: self.scan.saturating_sub(earlier.scan),
            admin: self.admin.saturating_sub(earlier.admin),
            retries: self.retries.saturating_sub(earlier.retries),
        }
    }

    /// All requests.
    pub fn total(&self) -> u64 {
        self.batch_get_item + self.put_item + self.batch_write_item + self.scan + self.admin
    }
}

/// Live counters behind [`RequestCounts`].
#[derive(Debug, Default)]
pub(crate) struct Counters {
    pub(crate) batch_get_item: AtomicU64,
    pub(crate) put_item: AtomicU64,
    pub(crate) batch_write_item: AtomicU64,
    pub(crate) scan: AtomicU64,
    pub(crate) admin: AtomicU64,
    pub(crate) retries: AtomicU64,
}

impl Counters {
    pub(crate) fn bump(c: &AtomicU64) {
        c.fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn snapshot(&self) -> RequestCounts {
        RequestCounts {
            batch_get_item: self.batch_get_item.load(Ordering::Relaxed),
            put_item: self.put_item.load(Ordering::Relaxed),
            batch_write_item: self.batch_write_item.load(Ordering::Relaxed),
            scan: self.scan.load(Ordering::Relaxed),
            admin: self.admin.load(Ordering::Relaxed),
            retries: self.retries.load(Ordering::Relaxed),
        }
    }
}

/// Answer to one `BatchGetItem`.
#[derive(Debug, Default)]
pub(crate) struct BatchGetReply {
    /// Items found (absent keys simply do not appear).
    pub(crate) items: Vec<Item>,
    /// Keys DynamoDB did not process (throttling, 16 MB response cap).
    pub(crate) unprocessed: Vec<Item>,
}

/// One conditional `PutItem`.
#[derive(Debug)]
pub(crate) struct PutCall {
    pub(crate) item: Item,
    pub(crate) condition: &'static str,
    pub(crate) names: HashMap<String, String>,
    pub(crate) values: HashMap<String, AttributeValue>,
    /// Ask for the replaced item (to count written/skipped exactly when one
    /// call carries several rows of the same entity).
    pub(crate) return_old: bool,
}

/// Answer to a conditional `PutItem`.
#[derive(Debug)]
pub(crate) enum PutReply {
    /// Stored; `old` is the replaced item when asked for and present.
    Written { old: Option<Item> },
    /// The condition was false: a newer row is stored.
    ConditionFailed,
}

/// The low-level DynamoDB calls of the data path.
#[async_trait]
pub(crate) trait Api: Send + Sync + Debug + 'static {
    /// `BatchGetItem` of ≤ 100 distinct keys, projected to the row attributes.
    async fn batch_get(&self, keys: &[Item], consistent: bool) -> Result<BatchGetReply, CallError>;
    /// A conditional `PutItem`.
    async fn put(&self, call: &PutCall) -> Result<PutReply, CallError>;
    /// One page of a `Scan` for the keys of `view`; returns the keys and the
    /// key to continue from.
    async fn scan_view_keys(
        &self,
        view: &str,
        start: Option<Item>,
    ) -> Result<(Vec<Item>, Option<Item>), CallError>;
    /// `BatchWriteItem` deleting ≤ 25 keys; returns the unprocessed keys.
    async fn batch_delete(&self, keys: &[Item]) -> Result<Vec<Item>, CallError>;
}

/// [`Api`] on the AWS SDK client.
#[derive(Debug, Clone)]
pub(crate) struct SdkApi {
    pub(crate) client: aws_sdk_dynamodb::Client,
    pub(crate) table: String,
    pub(crate) counters: Arc<Counters>,
}

fn row_projection() -> (String, HashMap<String, String>) {
    let names = HashMap::from([
        ("#pk".to_owned(), PK.to_owned()),
        ("#sk".to_owned(), SK.to_owned()),
        ("#p".to_owned(), PAYLOAD.to_owned()),
        ("#e".to_owned(), EVENT_TS.to_owned()),
        ("#c".to_owned(), CREATED_TS.to_owned()),
    ]);
    ("#pk, #sk, #p, #e, #c".to_owned(), names)
}

fn build_error(
    op: &'static str,
    table: &str,
    e: impl std::error::Error + Send + Sync + 'static,
) -> CallError {
    CallError::Fatal {
        message: format!("{op} on table '{table}': could not build the request"),
        source: Some(Box::new(e)),
    }
}

#[async_trait]
impl Api for SdkApi {
    async fn batch_get(&self, keys: &[Item], consistent: bool) -> Result<BatchGetReply, CallError> {
        const OP: &str = "BatchGetItem";
        let (projection, names) = row_projection();
        let kaa = KeysAndAttributes::builder()
            .set_keys(Some(keys.to_vec()))
            .projection_expression(projection)
            .set_expression_attribute_names(Some(names))
            .consistent_read(consistent)
            .build()
            .map_err(|e| build_error(OP, &self.table, e))?;
        Counters::bump(&self.counters.batch_get_item);
        let out = self
            .client
            .batch_get_item()
            .request_items(self.table.clone(), kaa)
            .send()
            .await
            .map_err(|e| CallError::from_sdk(OP, &self.table, e))?;
        let items = out
            .responses
            .and_then(|mut r| r.remove(&self.table))
            .unwrap_or_default();
        let unprocessed = out
            .unprocessed_keys
            .and_then(|mut u| u.remove(&self.table))
            .map(|k| k.keys)
            .unwrap_or_default();
        Ok(BatchGetReply { items, unprocessed })
    }

    async fn put(&self, call: &PutCall) -> Result<PutReply, CallError> {
        const OP: &str = "PutItem";
        Counters::bump(&self.counters.put_item);
        let res = self
            .client
            .put_item()
            .table_name(self.table.clone())
            .set_item(Some(call.item.clone()))
            .condition_expression(call.condition)
            .set_expression_attribute_names(Some(call.names.clone()))
            .set_expression_attribute_values(Some(call.values.clone()))
            .return_values(if call.return_old {
                ReturnValue::AllOld
            } else {
                ReturnValue::None
            })
            .send()
            .await;
        match res {
            Ok(out) => Ok(PutReply::Written {
                old: out.attributes.filter(|a| !a.is_empty()),
            }),
            Err(e) => match CallError::from_sdk(OP, &self.table, e) {
                CallError::ConditionFailed => Ok(PutReply::ConditionFailed),
                other => Err(other),
            },
        }
    }

    async fn scan_view_keys(
        &self,
        view: &str,
        start: Option<Item>,
    ) -> Result<(Vec<Item>, Option<Item>), CallError> {
        const OP: &str = "Scan";
        Counters::bump(&self.counters.scan);
        let out = self
            .client
            .scan()
            .table_name(self.table.clone())
            .projection_expression("#pk, #sk")
            .filter_expression("#sk = :v")
            .expression_attribute_names("#pk", PK)
            .expression_attribute_names("#sk", SK)
            .expression_attribute_values(":v", AttributeValue::S(view.to_owned()))
            .set_exclusive_start_key(start)
            .send()
            .await
            .map_err(|e| CallError::from_sdk(OP, &self.table, e))?;
        Ok((
            out.items.unwrap_or_default(),
            out.last_evaluated_key.filter(|k| !k.is_empty()),
        ))
    }

    async fn batch_delete(&self, keys: &[Item]) -> Result<Vec<Item>, CallError> {
        const OP: &str = "BatchWriteItem";
        let mut requests = Vec::with_capacity(keys.len());
        for k in keys {
            let del = DeleteRequest::builder()
                .set_key(Some(k.clone()))
                .build()
                .map_err(|e| build_error(OP, &self.table, e))?;
            requests.push(WriteRequest::builder().delete_request(del).build());
        }
        Counters::bump(&self.counters.batch_write_item);
        let out = self
            .client
            .batch_write_item()
            .request_items(self.table.clone(), requests)
            .send()
            .await
            .map_err(|e| CallError::from_sdk(OP, &self.table, e))?;
        Ok(out
            .unprocessed_items
            .and_then(|mut u| u.remove(&self.table))
            .unwrap_or_default()
            .into_iter()
            .filter_map(|w| w.delete_request.map(|d| d.key))
            .collect())
    }
}
