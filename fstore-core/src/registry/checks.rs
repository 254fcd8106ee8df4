//! Checks `apply` runs so that nothing committed can poison the registry
//! ([semantics §10](crate::docs::semantics)): every definition must survive a serialize → parse round trip,
//! and every feature-view name must be writable as a table directory.
//!
//! * value types: scalars or `list<scalar>` — `list<list<…>>` serialises as a
//!   string the parser refuses;
//! * defaults: of the declared type, finite floats (JSON writes NaN and ±inf as
//!   `null`), list elements scalars or null;
//! * ttl: must come back identical from its JSON form (seconds as a float) and
//!   fit in `i64` microseconds (the unit every read uses);
//! * names: not `.`/`..`/dot-leading (hidden or path components), feature views
//!   not under the reserved `_fstore` prefix (the shared registry's directory),
//!   and no two feature or on-demand views, nor two columns of one view, that
//!   differ only in case (they share a directory on case-insensitive file
//!   systems, and Delta compares column names case-insensitively).

use std::collections::BTreeMap;
use std::time::Duration;

use crate::error::{Error, Result};
use crate::model::{Definitions, Fallback, FeatureField, Value, ValueType};

/// Reserved prefix of names fstore itself uses next to the view tables
/// (`_fstore_registry`, …); compared case-insensitively.
pub(crate) const RESERVED_PREFIX: &str = "_fstore";

/// A value type must be a scalar or a list of a scalar.
pub(crate) fn check_value_type(what: &str, t: &ValueType) -> Result<()> {
    if let ValueType::List(inner) = t
        && inner.is_list()
    {
        return Err(Error::invalid(format!(
            "{what} has type {t}: nested lists are not supported (list elements must be scalars)"
        )));
    }
    Ok(())
}

fn check_scalar_value(what: &str, v: &Value) -> Result<()> {
    match v {
        Value::Float32(x) if !x.is_finite() => Err(Error::invalid(format!(
            "{what}: default {x} is not a finite number (JSON cannot store NaN or infinity)"
        ))),
        Value::Float64(x) if !x.is_finite() => Err(Error::invalid(format!(
            "{what}: default {x} is not a finite number (JSON cannot store NaN or infinity)"
        ))),
        Value::List(_) => Err(Error::invalid(format!(
            "{what}: default has a list inside a list (list elements must be scalars or null)"
        ))),
        _ => Ok(()),
    }
}

/// A default value must be storable in JSON and read back identical.
pub(crate) fn check_default(what: &str, v: &Value) -> Result<()> {
    match v {
        Value::List(items) => items
            .iter()
            .flatten()
            .try_for_each(|i| check_scalar_value(what, i)),
        other => check_scalar_value(what, other),
    }
}

/// The largest ttl fstore accepts: `i64::MAX` microseconds (~292,000 years).
pub(crate) const MAX_TTL: Duration = Duration::from_micros(i64::MAX as u64);

/// A ttl must fit in microseconds and come back identical from its JSON form.
pub(crate) fn check_ttl(view: &str, ttl: Duration) -> Result<()> {
    if ttl.is_zero() {
        return Err(Error::invalid(format!(
            "feature view '{view}': ttl must be > 0 (or unset)"
        )));
    }
    let round_trips = Duration::try_from_secs_f64(ttl.as_secs_f64()).is_ok_and(|d| d == ttl);
    if ttl > MAX_TTL || !round_trips {
        return Err(Error::invalid(format!(
            "feature view '{view}': ttl {ttl:?} cannot be stored exactly \
             (at most {MAX_TTL:?}, and exactly representable as seconds in a 64-bit float; \
             whole seconds or milliseconds always are)"
        )));
    }
    Ok(())
}

/// A name that becomes a path component must not be `.`, `..` or hidden.
pub(crate) fn check_path_name(kind: &str, name: &str) -> Result<()> {
    if name.starts_with('.') {
        return Err(Error::invalid(format!(
            "{kind} name '{name}' cannot start with '.' (it would be a hidden or relative path)"
        )));
    }
    Ok(())
}

/// Feature-view names become table directories next to the registry.
pub(crate) fn check_view_name(name: &str) -> Result<()> {
    check_path_name("feature view", name)?;
    if name
        .get(..RESERVED_PREFIX.len())
        .is_some_and(|p| p.eq_ignore_ascii_case(RESERVED_PREFIX))
    {
        return Err(Error::invalid(format!(
            "feature view name '{name}' uses the reserved prefix '{RESERVED_PREFIX}'"
        )));
    }
    Ok(())
}

/// Fails when two names differ only in ASCII case, naming both.
pub(crate) fn check_case_unique<'a>(
    what: &str,
    names: impl IntoIterator<Item = &'a str>,
) -> Result<()> {
    let mut seen: BTreeMap<String, &str> = BTreeMap::new();
    for n in names {
        if let Some(other) = seen.insert(n.to_ascii_lowercase(), n)
            && other != n
        {
            return Err(Error::invalid(format!(
                "{what} '{other}' and '{n}' differ only in case; they would share a directory \
                 or column on case-insensitive storage"
            )));
        }
    }
    Ok(())
}

/// Type and default checks of one field (feature, request field or output).
pub(crate) fn check_field(what: &str, f: &FeatureField) -> Result<()> {
    check_value_type(what, &f.value_type)?;
    if let Fallback::Default(d) = &f.fallback {
        check_default(what, d)?;
    }
    Ok(())
}

/// Everything in this module, over a whole set of definitions.
pub(crate) fn check_round_trippable(defs: &Definitions) -> Result<()> {
    for (name, e) in &defs.entities {
        check_path_name("entity", name)?;
        for k in &e.join_keys {
            check_value_type(
                &format!("entity '{name}': join key '{}'", k.name),
                &k.value_type,
            )?;
        }
    }
    for (name, v) in &defs.feature_views {
        check_view_name(name)?;
        for f in &v.features {
            check_field(&format!("feature '{name}:{}'", f.name), f)?;
        }
        if let Some(t) = v.ttl {
            check_ttl(name, t)?;
        }
        let mut columns: Vec<&str> = Vec::new();
        for e in &v.entities {
            if let Some(ent) = defs.entities.get(e) {
                columns.extend(ent.join_keys.iter().map(|k| k.name.as_str()));
            }
        }
        columns.push(&v.event_timestamp_column);
        columns.extend(v.created_timestamp_column.as_deref());
        columns.extend(v.features.iter().map(|f| f.name.as_str()));
        check_case_unique(&format!("feature view '{name}': columns"), columns)?;
    }
    for (name, o) in &defs.on_demand_views {
        check_path_name("on-demand view", name)?;
        for f in o.outputs.iter().chain(&o.request_fields) {
            check_field(&format!("on-demand view '{name}': field '{}'", f.name), f)?;
        }
    }
    for name in defs.feature_services.keys() {
        check_path_name("feature service", name)?;
    }
    check_case_unique(
        "feature views",
        defs.feature_views
            .keys()
            .chain(defs.on_demand_views.keys())
            .map(String::as_str),
    )?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::error::Error;
    use crate::memory::InMemoryRegistry;
    use crate::model::{Entity, FeatureView};
    use crate::registry::{DynRegistry, FileRegistry, Registry, RegistryState};
    use crate::store::{ApplyOptions, FeatureStore};
    use crate::testkit::unique_name;

    fn base() -> Definitions {
        Definitions::new()
            .with_entity(Entity::new("driver", "driver_id", ValueType::Int64))
            .with_feature_view(
                FeatureView::new("stats", ["driver"]).with_feature("trips", ValueType::Int64),
            )
    }

    fn with_view(v: FeatureView) -> Definitions {
        base().with_feature_view(v)
    }

    fn view(name: &str) -> FeatureView {
        FeatureView::new(name, ["driver"]).with_feature("x", ValueType::Int64)
    }

    /// Every definition set that serialises but would not read back (or could
    /// never be written), with a fragment the error must contain.
    fn poisoned() -> Vec<(&'static str, Definitions, &'static str)> {
        let nested = ValueType::List(Box::new(ValueType::list(ValueType::Int32)));
        vec![
            (
                "nested list feature",
                with_view(view("v").with_feature("deep", nested.clone())),
                "'v:deep'",
            ),
            (
                "nested list request field",
                base().with_on_demand_view(
                    crate::model::OnDemandView::new("od", "1")
                        .with_request_field("r", nested.clone())
                        .with_output("o", ValueType::Int64),
                ),
                "field 'r'",
            ),
            (
                "NaN default",
                with_view(
                    view("v").with_field(
                        FeatureField::new("f", ValueType::Float64)
                            .with_default(Value::Float64(f64::NAN)),
                    ),
                ),
                "'v:f'",
            ),
            (
                "infinite float32 default",
                with_view(
                    view("v").with_field(
                        FeatureField::new("f", ValueType::Float32)
                            .with_default(Value::Float32(f32::NEG_INFINITY)),
                    ),
                ),
                "'v:f'",
            ),
            (
                "NaN inside a list default",
                with_view(view("v").with_field(
                    FeatureField::new("e", ValueType::list(ValueType::Float64)).with_default(
                        Value::List(vec![
                            Some(Value::Float64(1.0)),
                            Some(Value::Float64(f64::INFINITY)),
                        ]),
                    ),
                )),
                "'v:e'",
            ),
            (
                "ttl Duration::MAX",
                with_view(view("v").with_ttl(Duration::MAX)),
                "feature view 'v': ttl",
            ),
            (
                "ttl not exact as f64 seconds",
                with_view(view("v").with_ttl(Duration::new(10_000_000_000, 1))),
                "feature view 'v': ttl",
            ),
            ("view '.'", with_view(view(".")), "'.'"),
            ("view '..'", with_view(view("..")), "'..'"),
            ("view '.x'", with_view(view(".x")), "'.x'"),
            (
                "view '_fstore_registry'",
                with_view(view("_fstore_registry")),
                "'_fstore_registry'",
            ),
            (
                "view '_FStore_x'",
                with_view(view("_FStore_x")),
                "'_FStore_x'",
            ),
            (
                "views differing in case",
                with_view(view("Stats")),
                "'Stats' and 'stats'",
            ),
            (
                "columns differing in case",
                with_view(view("v").with_feature("X", ValueType::Int64)),
                "'x' and 'X'",
            ),
            (
                "entity '..'",
                base().with_entity(Entity::new("..", "k", ValueType::Int64)),
                "'..'",
            ),
        ]
    }

    async fn file_store() -> (FeatureStore, Arc<FileRegistry>, std::path::PathBuf) {
        let dir = std::env::temp_dir().join(unique_name("fstore_checks"));
        let reg = Arc::new(FileRegistry::open(&dir).expect("open registry"));
        let store = FeatureStore::builder()
            .with_registry(Arc::clone(&reg) as Arc<DynRegistry>)
            .build()
            .expect("build");
        store
            .apply(&base(), ApplyOptions::default())
            .await
            .expect("base applies");
        (store, reg, dir)
    }

    #[tokio::test]
    async fn apply_refuses_unreadable_or_unwritable_definitions_and_writes_nothing() {
        let (store, reg, dir) = file_store().await;
        for (case, defs, fragment) in poisoned() {
            let err = store
                .apply(&defs, ApplyOptions::default().with_force(true))
                .await
                .expect_err(case);
            assert!(
                matches!(&err, Error::InvalidInput(m) if m.contains(fragment)),
                "{case}: {err}"
            );
            assert_eq!(
                reg.versions().await.unwrap(),
                vec![1],
                "{case}: nothing committed"
            );
            // Another process opening the directory still reads the registry.
            let other = FileRegistry::open(&dir).unwrap();
            let snap = other.snapshot().await.expect(case);
            assert_eq!(snap.version, 1, "{case}");
            assert_eq!(snap.state.definitions, base(), "{case}");
        }
        let _ = std::fs::remove_dir_all(dir);
    }

    /// `commit` called directly (bypassing `apply`'s validation) still refuses a
    /// state whose document would not read back, on every built-in registry.
    #[tokio::test]
    async fn registries_round_trip_the_document_before_publishing() {
        let dir = std::env::temp_dir().join(unique_name("fstore_roundtrip"));
        let regs: Vec<Arc<DynRegistry>> = vec![
            Arc::new(FileRegistry::open(&dir).unwrap()),
            Arc::new(InMemoryRegistry::new()),
        ];
        for reg in regs {
            let b = reg.backend();
            reg.commit(
                0,
                RegistryState {
                    definitions: base(),
                    watermarks: Default::default(),
                },
            )
            .await
            .unwrap();
            for (case, defs, _) in poisoned() {
                let state = RegistryState {
                    definitions: defs,
                    watermarks: Default::default(),
                };
                // Some name cases are still readable documents; only check the
                // ones that cannot come back from JSON.
                let bad_json = case.contains("nested")
                    || case.contains("NaN")
                    || case.contains("infinite")
                    || case.contains("ttl");
                if !bad_json {
                    continue;
                }
                match reg.commit(1, state).await {
                    Err(Error::InvalidInput(m)) => {
                        assert!(m.contains("nothing was committed"), "[{b}] {case}: {m}")
                    }
                    other => panic!("[{b}] {case}: expected InvalidInput, got {other:?}"),
                }
                assert_eq!(reg.versions().await.unwrap(), vec![1], "[{b}] {case}");
                assert_eq!(reg.snapshot().await.unwrap().version, 1, "[{b}] {case}");
            }
        }
        let fresh = FileRegistry::open(&dir).unwrap();
        assert_eq!(fresh.snapshot().await.unwrap().state.definitions, base());
        let _ = std::fs::remove_dir_all(dir);
    }

    #[test]
    fn ttls_that_round_trip_are_accepted() {
        for t in [
            Duration::from_secs(1),
            Duration::from_millis(1500),
            Duration::from_millis(100),
            Duration::from_secs(86_400 * 365 * 1000),
            Duration::from_micros(1),
        ] {
            check_ttl("v", t).unwrap_or_else(|e| panic!("{t:?}: {e}"));
        }
        assert!(check_ttl("v", MAX_TTL + Duration::from_secs(1)).is_err());
    }
}
