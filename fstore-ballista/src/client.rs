//! The client side: a DataFusion `SessionContext` whose queries run on a Ballista
//! scheduler, with fstore's codecs registered.

use std::sync::Arc;
use std::time::Duration;

use ballista_core::execution_plans::execute_physical_plan;
use ballista_core::extension::{SessionConfigExt, SessionStateExt};
use ballista_core::serde::protobuf::scheduler_grpc_client::SchedulerGrpcClient;
use datafusion::error::DataFusionError;
use datafusion::execution::{SendableRecordBatchStream, SessionStateBuilder};
use datafusion::physical_plan::ExecutionPlan;
use datafusion::prelude::{SessionConfig, SessionContext};
use datafusion_proto::protobuf::PhysicalPlanNode;
use fstore_core::{Error, Result};

use crate::codec::FstorePhysicalCodec;
use crate::{BACKEND, DEFAULT_SCHEDULER_PORT};

/// Options for [`connect_with`].
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct ClientOptions {
    /// How long to wait for the scheduler to accept a connection (default 10 s).
    pub connect_timeout: Duration,
    /// DataFusion/Ballista session settings (default: Ballista's defaults).
    pub config: Option<SessionConfig>,
}

impl Default for ClientOptions {
    fn default() -> Self {
        Self {
            connect_timeout: Duration::from_secs(10),
            config: None,
        }
    }
}

impl ClientOptions {
    /// Sets [`ClientOptions::connect_timeout`].
    pub fn with_connect_timeout(mut self, timeout: Duration) -> Self {
        self.connect_timeout = timeout;
        self
    }

    /// Sets [`ClientOptions::config`]: the session's settings (target partitions,
    /// batch size, …). Ballista's settings are added to it.
    pub fn with_config(mut self, config: SessionConfig) -> Self {
        self.config = Some(config);
        self
    }
}

/// A connection to a Ballista scheduler with fstore's codec registered: SQL and
/// DataFrame queries through [`BallistaSession::context`], fstore's engine plans
/// (physical plans with fstore's nodes) through [`BallistaSession::execute`].
#[derive(Clone)]
pub struct BallistaSession {
    endpoint: String,
    ctx: SessionContext,
}

impl std::fmt::Debug for BallistaSession {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BallistaSession")
            .field("endpoint", &self.endpoint)
            .field("session_id", &self.ctx.session_id())
            .finish_non_exhaustive()
    }
}

impl BallistaSession {
    /// The scheduler's gRPC endpoint (`http://host:port`).
    pub fn endpoint(&self) -> &str {
        &self.endpoint
    }

    /// A DataFusion context whose SQL and DataFrame queries run on the cluster.
    pub fn context(&self) -> &SessionContext {
        &self.ctx
    }

    /// Runs a physical plan (for example fstore's point-in-time join plan) on the
    /// cluster with this session's settings ([`BallistaSession::execute_with`]).
    ///
    /// # Errors
    /// See [`BallistaSession::execute_with`].
    pub async fn execute(&self, plan: Arc<dyn ExecutionPlan>) -> Result<SendableRecordBatchStream> {
        self.execute_with(plan, self.ctx.copied_config()).await
    }

    /// Runs a physical plan on the cluster with the given settings (batch size,
    /// target partitions, …): the plan is encoded with [`FstorePhysicalCodec`],
    /// submitted to the scheduler as one job, split into stages at its
    /// repartitions by Ballista's static planner (the adaptive one is switched
    /// off for these jobs) and run by the executors; the stream yields the plan's
    /// (single) output partition, fetched from the executor that computed it.
    ///
    /// # Errors
    /// [`Error::Backend`] (backend `ballista`) when the plan cannot be encoded or
    /// the scheduler rejects the job; errors of the job itself (a failed task,
    /// an fstore error raised inside the plan) come through the stream.
    pub async fn execute_with(
        &self,
        plan: Arc<dyn ExecutionPlan>,
        config: SessionConfig,
    ) -> Result<SendableRecordBatchStream> {
        // The static planner cuts the plan at its repartitions and runs it as
        // built. Ballista's adaptive planner re-plans stages from runtime
        // statistics (partition counts, join strategies) and knows nothing of
        // PitJoinExec / PitHashJoinExec, whose two inputs must stay hash-partitioned alike.
        let config = config
            .upgrade_for_ballista()
            .with_ballista_adaptive_query_planner(false);
        let ballista = config.ballista_config();
        execute_physical_plan::<PhysicalPlanNode>(
            self.endpoint.clone(),
            &ballista,
            plan,
            &FstorePhysicalCodec::default(),
            self.ctx.session_id(),
            config,
        )
        .await
        .map_err(|e| Error::backend(BACKEND, "cannot submit the plan to the scheduler", e))
    }
}

/// Connects to the Ballista scheduler at `url` with default options
/// ([`connect_with`]).
///
/// # Errors
/// See [`connect_with`].
pub async fn connect(url: &str) -> Result<BallistaSession> {
    connect_with(url, ClientOptions::default()).await
}

/// Connects to the Ballista scheduler at `url`.
///
/// `url` is `df://host[:port]` (Ballista's form), `http://host[:port]` or
/// `host[:port]`; the port defaults to 50050.
///
/// # Behavior
/// Connects to the scheduler once (gRPC) before returning, so an unreachable
/// scheduler is reported here and not at the first query. Queries on the
/// returned context are planned by the scheduler and run on its executors.
///
/// # Errors
/// - [`Error::InvalidInput`] for a URL that names no host or has a bad port;
/// - [`Error::Unavailable`] (backend `ballista`, retryable) when nothing at the URL
///   accepts a gRPC connection within [`ClientOptions::connect_timeout`]; the
///   message names the URL.
pub async fn connect_with(url: &str, opts: ClientOptions) -> Result<BallistaSession> {
    let endpoint = scheduler_endpoint(url)?;
    probe(&endpoint, opts.connect_timeout).await?;
    let config = opts.config.unwrap_or_else(SessionConfig::new_with_ballista);
    let config = config.with_ballista_physical_extension_codec(FstorePhysicalCodec::shared());
    let state = SessionStateBuilder::new()
        .with_config(config)
        .with_default_features()
        .build()
        .upgrade_for_ballista(endpoint.clone())
        .map_err(datafusion_error)?;
    Ok(BallistaSession {
        endpoint,
        ctx: SessionContext::new_with_state(state),
    })
}

/// Maps a DataFusion error (as returned by queries on a Ballista context) to
/// fstore's [`Error::Backend`] with the error as its source.
pub fn datafusion_error(e: DataFusionError) -> Error {
    Error::backend(BACKEND, "query failed", e)
}

/// `http://host:port` for a scheduler URL in any of the accepted forms.
fn scheduler_endpoint(url: &str) -> Result<String> {
    let bad = |why: &str| Error::invalid(format!("Ballista scheduler URL '{url}': {why}"));
    let rest = ["df://", "http://"]
        .iter()
        .find_map(|s| url.strip_prefix(s))
        .unwrap_or(url);
    if rest.contains("://") {
        return Err(bad(
            "expected df://host:port, http://host:port or host:port",
        ));
    }
    let rest = rest.trim_end_matches('/');
    let (host, port) = match rest.rsplit_once(':') {
        // `[::1]:50050` and `host:50050`; a bare IPv6 literal needs brackets.
        Some((host, port)) if !host.ends_with(':') => {
            let port = port
                .parse::<u16>()
                .map_err(|_| bad(&format!("port '{port}' is not a number in 1..=65535")))?;
            (host, port)
        }
        _ => (rest, DEFAULT_SCHEDULER_PORT),
    };
    if host.is_empty() || host.contains('/') || port == 0 {
        return Err(bad("no host (or port 0)"));
    }
    Ok(format!("http://{host}:{port}"))
}

/// One gRPC connection to the scheduler, or [`Error::Unavailable`] naming it.
async fn probe(endpoint: &str, timeout: Duration) -> Result<()> {
    let unreachable = |why: String| Error::Unavailable {
        backend: BACKEND,
        message: format!("cannot reach the Ballista scheduler at {endpoint}: {why}"),
    };
    match tokio::time::timeout(timeout, SchedulerGrpcClient::connect(endpoint.to_owned())).await {
        Ok(Ok(_client)) => Ok(()),
        Ok(Err(e)) => Err(unreachable(error_chain(&e))),
        Err(_) => Err(unreachable(format!("no answer within {timeout:?}"))),
    }
}

/// `e: cause: cause` (tonic's transport error says only "transport error").
fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        s.push_str(": ");
        s.push_str(&c.to_string());
        cur = c.source();
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scheduler_urls_in_every_accepted_form() {
        for (url, want) in [
            ("df://h:1", "http://h:1"),
            ("df://h", "http://h:50050"),
            ("http://10.0.0.1:7000/", "http://10.0.0.1:7000"),
            ("h:2", "http://h:2"),
            ("[::1]:3", "http://[::1]:3"),
        ] {
            assert_eq!(scheduler_endpoint(url).unwrap(), want, "{url}");
        }
    }

    #[test]
    fn bad_scheduler_urls_are_named_errors() {
        for url in ["", "df://", "df://h:x", "df://h:0", "grpc://h:1", "df://:1"] {
            let err = scheduler_endpoint(url).unwrap_err();
            assert!(
                matches!(&err, Error::InvalidInput(m) if m.contains(&format!("'{url}'"))),
                "{url}: {err}"
            );
        }
    }
}
