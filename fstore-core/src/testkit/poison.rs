//! Registry case: a state whose JSON document would not read back is never
//! published ([semantics §10](crate::docs::semantics)), whatever the registry.

use std::time::Duration;

use super::fixtures::test_definitions;
use crate::error::Error;
use crate::model::{FeatureField, Value, ValueType};
use crate::registry::{DynRegistry, RegistryState};

/// Commits a good state, then tries states that serialise but would not parse
/// back identical (a nested list type, a NaN default, an infinite list
/// default, a ttl of `Duration::MAX`, a ttl not exact in a 64-bit float), by
/// calling `commit` directly (bypassing `apply`'s validation). Each must fail
/// with [`Error::InvalidInput`] and leave the version and the readable state
/// unchanged.
pub async fn registry_refuses_unreadable_states(reg: &DynRegistry) {
    let b = reg.backend();
    let (good, _) = test_definitions("tk_poison", None);
    let start = reg
        .snapshot()
        .await
        .unwrap_or_else(|e| panic!("[{b}] snapshot: {e}"))
        .version;
    let v = reg
        .commit(
            start,
            RegistryState {
                definitions: good.clone(),
                watermarks: Default::default(),
            },
        )
        .await
        .unwrap_or_else(|e| panic!("[{b}] commit of a good state: {e}"));
    let poisoned = |f: &dyn Fn(&mut crate::model::FeatureView)| {
        let mut d = good.clone();
        if let Some(view) = d.feature_views.get_mut("tk_poison") {
            f(view);
        }
        d
    };
    let cases = [
        (
            "nested list type",
            poisoned(&|v| {
                v.features.push(FeatureField::new(
                    "deep",
                    ValueType::List(Box::new(ValueType::list(ValueType::Int32))),
                ))
            }),
        ),
        (
            "NaN default",
            poisoned(&|v| {
                v.features.push(
                    FeatureField::new("nan", ValueType::Float64)
                        .with_default(Value::Float64(f64::NAN)),
                )
            }),
        ),
        (
            "infinite list default",
            poisoned(&|v| {
                v.features.push(
                    FeatureField::new("inf", ValueType::list(ValueType::Float32))
                        .with_default(Value::List(vec![Some(Value::Float32(f32::INFINITY))])),
                )
            }),
        ),
        (
            "ttl Duration::MAX",
            poisoned(&|v| v.ttl = Some(Duration::MAX)),
        ),
        (
            "ttl not exact as f64",
            poisoned(&|v| v.ttl = Some(Duration::new(10_000_000_000, 1))),
        ),
    ];
    for (case, defs) in cases {
        match reg
            .commit(
                v,
                RegistryState {
                    definitions: defs,
                    watermarks: Default::default(),
                },
            )
            .await
        {
            Err(Error::InvalidInput(_)) => {}
            other => panic!("[{b}] {case}: expected InvalidInput, got {other:?}"),
        }
        let now = reg
            .snapshot()
            .await
            .unwrap_or_else(|e| panic!("[{b}] {case}: the registry must stay readable: {e}"));
        assert_eq!(now.version, v, "[{b}] {case}: nothing was committed");
        assert_eq!(now.state.definitions, good, "[{b}] {case}: state unchanged");
    }
}
