//! Spans of store calls and facade operations, seen by a capturing
//! subscriber. In its own test binary: `tracing` caches callsite interest
//! process-wide, and a concurrent test registering the same callsites while
//! this one installs its thread-local subscriber can leave them disabled.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use tracing::field::{Field, Visit};
use tracing::span::{Attributes, Id, Record};
use tracing_subscriber::layer::{Context, Layer, SubscriberExt};

use fstore_core::testkit::{feature_batch, test_definitions};
use fstore_core::{FeatureStore, PushTarget};

type Fields = BTreeMap<String, String>;

/// Every span: its name and its fields as recorded (at creation and later).
#[derive(Clone, Default)]
struct Capture(Arc<Mutex<Vec<(String, Fields)>>>);

struct V<'a>(&'a mut Fields);

impl Visit for V<'_> {
    fn record_debug(&mut self, f: &Field, v: &dyn std::fmt::Debug) {
        self.0.insert(f.name().to_owned(), format!("{v:?}"));
    }
    fn record_str(&mut self, f: &Field, v: &str) {
        self.0.insert(f.name().to_owned(), v.to_owned());
    }
}

impl<S: tracing::Subscriber + for<'a> tracing_subscriber::registry::LookupSpan<'a>> Layer<S>
    for Capture
{
    fn on_new_span(&self, attrs: &Attributes<'_>, id: &Id, ctx: Context<'_, S>) {
        let mut f = Fields::new();
        attrs.record(&mut V(&mut f));
        let mut all = self.0.lock().unwrap();
        all.push((attrs.metadata().name().to_owned(), f));
        if let Some(s) = ctx.span(id) {
            s.extensions_mut().insert(all.len() - 1);
        }
    }
    fn on_record(&self, id: &Id, values: &Record<'_>, ctx: Context<'_, S>) {
        let Some(s) = ctx.span(id) else { return };
        let Some(i) = s.extensions().get::<usize>().copied() else {
            return;
        };
        values.record(&mut V(&mut self.0.lock().unwrap()[i].1));
    }
}

#[tokio::test(flavor = "current_thread")]
async fn store_calls_and_operations_run_in_spans_with_outcome_and_error() {
    let cap = Capture::default();
    let _g = tracing::subscriber::set_default(
        tracing_subscriber::registry()
            .with(cap.clone())
            .with(tracing_subscriber::filter::LevelFilter::DEBUG),
    );
    let store = FeatureStore::in_memory();
    let (defs, _) = test_definitions("sp_view", None);
    store.apply(&defs, Default::default()).await.unwrap();
    store
        .push(
            "sp_view",
            &feature_batch(&[(1, 1_000_000, 1_000_000, Some(1.0))]),
            PushTarget::Online,
        )
        .await
        .unwrap();
    store.registry().snapshot_at(99).await.unwrap_err();

    let spans = cap.0.lock().unwrap().clone();
    let find = |name: &str| {
        spans
            .iter()
            .filter(|(n, _)| n == name)
            .map(|(_, f)| f.clone())
            .collect::<Vec<_>>()
    };
    let apply = find("fstore.apply");
    assert_eq!(apply.len(), 1, "{spans:?}");
    assert_eq!(apply[0]["outcome"], "ok");
    assert_eq!(apply[0]["version"], "1");
    let write = find("fstore.online.write");
    assert_eq!(write.len(), 1, "{spans:?}");
    assert_eq!(write[0]["backend"], "memory");
    assert_eq!(write[0]["view"], "sp_view");
    assert_eq!(write[0]["rows"], "1");
    assert_eq!(write[0]["written"], "1");
    assert_eq!(write[0]["outcome"], "ok");
    assert_eq!(find("fstore.push")[0]["outcome"], "ok");
    assert_eq!(find("fstore.registry.commit").len(), 1);
    let failed = find("fstore.registry.snapshot_at");
    assert_eq!(failed.len(), 1, "{spans:?}");
    assert_eq!(failed[0]["outcome"], "error");
    assert!(failed[0]["error"].contains("99"), "{:?}", failed[0]);
}
