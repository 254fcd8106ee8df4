//! The online read deadline through a connection that stops answering
//! ([`crate::OnlineCapabilities::enforces_read_timeout`]).

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;

use super::fixtures::{base_micros, entity_batch, feature_batch, test_definitions, unique_name};
use crate::error::Error;
use crate::memory::{InMemoryOfflineStore, InMemoryRegistry};
use crate::online::{DynOnlineStore, OnlineKey, ReadOptions};
use crate::store::{FeatureSelection, FeatureStore, OnlineRequest, PushTarget};

/// A TCP proxy on 127.0.0.1 to one upstream address that stops forwarding
/// bytes (both ways) while frozen: a server that hangs mid-connection. The
/// accept loop ends when the proxy is dropped.
#[derive(Debug)]
pub struct FreezableProxy {
    port: u16,
    frozen: Arc<AtomicBool>,
    accept: JoinHandle<()>,
}

impl FreezableProxy {
    /// Starts a proxy to `upstream` (`host:port`) on an ephemeral port.
    ///
    /// # Panics
    /// When no loopback port can be bound (test helper).
    pub async fn start(upstream: impl Into<String>) -> Self {
        let upstream = upstream.into();
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind a loopback port for the proxy");
        let port = listener.local_addr().expect("proxy address").port();
        let frozen = Arc::new(AtomicBool::new(false));
        let f = Arc::clone(&frozen);
        let accept = tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                let Ok(server) = TcpStream::connect(&upstream).await else {
                    continue;
                };
                let (cr, cw) = client.into_split();
                let (sr, sw) = server.into_split();
                tokio::spawn(pump(cr, sw, Arc::clone(&f)));
                tokio::spawn(pump(sr, cw, Arc::clone(&f)));
            }
        });
        Self {
            port,
            frozen,
            accept,
        }
    }

    /// The proxy's port on 127.0.0.1.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// Stops (`true`) or resumes (`false`) forwarding.
    pub fn freeze(&self, on: bool) {
        self.frozen.store(on, Ordering::SeqCst);
    }
}

impl Drop for FreezableProxy {
    fn drop(&mut self) {
        self.accept.abort();
    }
}

async fn pump(
    mut r: tokio::net::tcp::OwnedReadHalf,
    mut w: tokio::net::tcp::OwnedWriteHalf,
    frozen: Arc<AtomicBool>,
) {
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        let n = match r.read(&mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(n) => n,
        };
        while frozen.load(Ordering::SeqCst) {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        if w.write_all(&buf[..n]).await.is_err() {
            return;
        }
    }
}

/// The deadline used below; the store's own configured timeouts should be
/// much longer, so only the per-read deadline can end the calls in time.
const DEADLINE: Duration = Duration::from_millis(300);
/// Scheduling slack allowed past the deadline.
const SLACK: Duration = Duration::from_millis(1_500);

/// A read past its deadline fails with [`Error::Timeout`] naming the store,
/// within the deadline plus slack, both through the trait
/// (`ReadOptions::timeout`, and `read_tiles` when the store has tiles) and
/// through [`FeatureStore::get_online_features`] (whose timeout error names
/// the limit) — whether the store enforces the deadline itself
/// ([`crate::OnlineCapabilities::enforces_read_timeout`], then the facade
/// adds no timer) or not. `store` must reach its server only through `proxy`
/// and have its own command/request timeouts well above 2 s.
///
/// # Panics
/// On any violation (test helper).
pub async fn online_read_deadline(store: Arc<DynOnlineStore>, proxy: &FreezableProxy) {
    let b = store.backend();
    let view = unique_name("tk_dl");
    let (defs, rv) = test_definitions(&view, None);
    let fs = FeatureStore::builder()
        .with_registry(Arc::new(InMemoryRegistry::new()))
        .with_offline(Arc::new(InMemoryOfflineStore::new()))
        .with_online(Arc::clone(&store))
        .with_online_timeout(DEADLINE)
        .build()
        .unwrap_or_else(|e| panic!("[{b}] build: {e}"));
    fs.apply(&defs, Default::default())
        .await
        .unwrap_or_else(|e| panic!("[{b}] apply: {e}"));
    let t = base_micros();
    fs.push(
        &view,
        &feature_batch(&[(1, t, t, Some(1.5))]),
        PushTarget::Online,
    )
    .await
    .unwrap_or_else(|e| panic!("[{b}] push: {e}"));
    let req = OnlineRequest::new(
        FeatureSelection::refs([format!("{view}:score")]).expect("refs"),
        entity_batch(&[1]),
    );
    let resp = fs
        .get_online_features(&req)
        .await
        .unwrap_or_else(|e| panic!("[{b}] read before freezing: {e}"));
    assert_eq!(resp.batch().num_rows(), 1, "[{b}] one row before freezing");

    proxy.freeze(true);
    let key = OnlineKey {
        view: rv.name().to_owned(),
        entity_key: crate::adapter::encode_entity_key(&[(
            "user_id",
            crate::model::Value::Int64(1),
        )])
        .expect("key"),
    };
    let opts = ReadOptions::default().with_timeout(DEADLINE);
    let t0 = Instant::now();
    let err = store
        .read(std::slice::from_ref(&key), &opts)
        .await
        .expect_err("a read through a frozen connection must fail");
    let took = t0.elapsed();
    assert!(
        matches!(&err, Error::Timeout { backend, .. } if *backend == b),
        "[{b}] read past ReadOptions::timeout is a Timeout: {err:?}"
    );
    assert!(took < DEADLINE + SLACK, "[{b}] read took {took:?}");

    if store.capabilities().tiles {
        let t0 = Instant::now();
        let err = store
            .read_tiles(std::slice::from_ref(&key), &opts)
            .await
            .expect_err("a tile read through a frozen connection must fail");
        let took = t0.elapsed();
        assert!(
            matches!(&err, Error::Timeout { backend, .. } if *backend == b),
            "[{b}] read_tiles past ReadOptions::timeout is a Timeout: {err:?}"
        );
        assert!(took < DEADLINE + SLACK, "[{b}] read_tiles took {took:?}");
    }

    let t0 = Instant::now();
    let err = fs
        .get_online_features(&req)
        .await
        .expect_err("get_online_features through a frozen connection must fail");
    let took = t0.elapsed();
    let limit = format!("{DEADLINE:?}");
    assert!(
        matches!(&err, Error::Timeout { backend, message } if *backend == b && message.contains(&limit)),
        "[{b}] get_online_features past the online timeout is a Timeout naming {limit}: {err:?}"
    );
    assert!(
        took < DEADLINE + SLACK,
        "[{b}] get_online_features took {took:?}"
    );
    proxy.freeze(false);
    // Best effort: the frozen replies may still be in flight.
    let _ = tokio::time::timeout(Duration::from_secs(5), store.delete_view(&view)).await;
}
