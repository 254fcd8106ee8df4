//! `plan`: a pure, field-by-field diff between two [`Definitions`] that flags
//! breaking changes; `validate`: the checks `apply` runs.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

use serde::Serialize;
use serde_json::Value as Json;

use crate::error::{Error, Result};
use crate::model::{Definitions, Fallback, FeatureRef};

/// The kind of a definition.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum ObjectKind {
    /// An [`crate::Entity`].
    Entity,
    /// A [`crate::FeatureView`].
    FeatureView,
    /// An [`crate::OnDemandView`].
    OnDemandView,
    /// A [`crate::FeatureService`].
    FeatureService,
}

impl fmt::Display for ObjectKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Entity => "entity",
            Self::FeatureView => "feature view",
            Self::OnDemandView => "on-demand view",
            Self::FeatureService => "feature service",
        })
    }
}

/// Added, changed or removed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ChangeKind {
    /// New definition.
    Added,
    /// Modified definition (see [`Change::fields`]).
    Changed,
    /// Deleted definition.
    Removed,
}

/// One changed field of a definition, as a JSON path (`features.trips.type`).
#[derive(Debug, Clone, PartialEq)]
pub struct FieldChange {
    /// Path of the field.
    pub path: String,
    /// Old value (JSON), `None` when added.
    pub old: Option<String>,
    /// New value (JSON), `None` when removed.
    pub new: Option<String>,
}

/// A change to one definition.
#[derive(Debug, Clone, PartialEq)]
pub struct Change {
    /// Kind of definition.
    pub object: ObjectKind,
    /// Its name.
    pub name: String,
    /// What happened.
    pub kind: ChangeKind,
    /// Field-by-field differences (for `Changed`).
    pub fields: Vec<FieldChange>,
    /// Why this change is breaking (empty = safe).
    pub breaking: Vec<String>,
}

/// The result of [`plan`]: what `apply` would do.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Plan {
    /// Changes, grouped by kind of definition, sorted by name.
    pub changes: Vec<Change>,
}

impl Plan {
    /// Nothing to do.
    pub fn is_empty(&self) -> bool {
        self.changes.is_empty()
    }

    /// Every breaking-change reason, one line each.
    pub fn breaking(&self) -> Vec<String> {
        self.changes
            .iter()
            .flat_map(|c| c.breaking.iter().cloned())
            .collect()
    }

    /// True if any change is breaking.
    pub fn is_breaking(&self) -> bool {
        self.changes.iter().any(|c| !c.breaking.is_empty())
    }
}

impl fmt::Display for Plan {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.changes.is_empty() {
            return writeln!(f, "no changes");
        }
        for c in &self.changes {
            let sign = match c.kind {
                ChangeKind::Added => '+',
                ChangeKind::Changed => '~',
                ChangeKind::Removed => '-',
            };
            writeln!(f, "{sign} {} '{}'", c.object, c.name)?;
            for fc in &c.fields {
                writeln!(
                    f,
                    "    {}: {} -> {}",
                    fc.path,
                    fc.old.as_deref().unwrap_or("(none)"),
                    fc.new.as_deref().unwrap_or("(none)")
                )?;
            }
            for b in &c.breaking {
                writeln!(f, "    BREAKING: {b}")?;
            }
        }
        Ok(())
    }
}

fn to_json<T: Serialize>(v: &T) -> Json {
    serde_json::to_value(v).unwrap_or(Json::Null)
}

/// Arrays of objects with a `name` become maps keyed by name, so a diff says
/// `features.trips.type` rather than `features[3].type`.
fn keyed(v: &Json) -> Json {
    match v {
        Json::Array(items)
            if !items.is_empty()
                && items
                    .iter()
                    .all(|i| i.get("name").is_some_and(Json::is_string)) =>
        {
            Json::Object(
                items
                    .iter()
                    .map(|i| (i["name"].as_str().unwrap_or_default().to_owned(), keyed(i)))
                    .collect(),
            )
        }
        Json::Object(m) => Json::Object(m.iter().map(|(k, v)| (k.clone(), keyed(v))).collect()),
        other => other.clone(),
    }
}

fn diff_json(path: &str, old: &Json, new: &Json, out: &mut Vec<FieldChange>) {
    match (old, new) {
        (Json::Object(a), Json::Object(b)) => {
            let keys: BTreeSet<&String> = a.keys().chain(b.keys()).collect();
            for k in keys {
                let p = if path.is_empty() {
                    k.clone()
                } else {
                    format!("{path}.{k}")
                };
                match (a.get(k), b.get(k)) {
                    (Some(x), Some(y)) => diff_json(&p, x, y, out),
                    (x, y) => out.push(FieldChange {
                        path: p,
                        old: x.map(Json::to_string),
                        new: y.map(Json::to_string),
                    }),
                }
            }
        }
        (a, b) if a != b => out.push(FieldChange {
            path: path.to_owned(),
            old: Some(a.to_string()),
            new: Some(b.to_string()),
        }),
        _ => {}
    }
}

fn diff_maps<T: Serialize + PartialEq>(
    kind: ObjectKind,
    old: &BTreeMap<String, T>,
    new: &BTreeMap<String, T>,
    out: &mut Vec<Change>,
) {
    let names: BTreeSet<&String> = old.keys().chain(new.keys()).collect();
    for name in names {
        let change = match (old.get(name), new.get(name)) {
            (None, Some(_)) => ChangeKind::Added,
            (Some(_), None) => ChangeKind::Removed,
            (Some(a), Some(b)) if a != b => ChangeKind::Changed,
            _ => continue,
        };
        let mut fields = Vec::new();
        if let (Some(a), Some(b)) = (old.get(name), new.get(name)) {
            diff_json("", &keyed(&to_json(a)), &keyed(&to_json(b)), &mut fields);
        }
        out.push(Change {
            object: kind,
            name: name.clone(),
            kind: change,
            fields,
            breaking: Vec::new(),
        });
    }
}

fn users_of(defs: &Definitions, view: &str, feature: Option<&str>) -> Vec<String> {
    let hit = |r: &FeatureRef| r.view == view && feature.is_none_or(|f| r.feature == f);
    let mut users: Vec<String> = defs
        .feature_services
        .values()
        .filter(|s| s.features.iter().any(hit))
        .map(|s| format!("feature service '{}'", s.name))
        .collect();
    users.extend(
        defs.on_demand_views
            .values()
            .filter(|o| o.inputs.iter().any(hit))
            .map(|o| format!("on-demand view '{}'", o.name)),
    );
    users
}

/// Diffs `current` against `desired` (the complete desired set of definitions)
/// and flags breaking changes: a feature type change, a removed feature or view
/// still used by a service or on-demand view (in either version), a change of a
/// view's entities or timestamp columns, a change of an entity's join keys, the
/// removal of an entity still used, an on-demand output type change.
pub fn plan(current: &Definitions, desired: &Definitions) -> Plan {
    let mut changes = Vec::new();
    diff_maps(
        ObjectKind::Entity,
        &current.entities,
        &desired.entities,
        &mut changes,
    );
    diff_maps(
        ObjectKind::FeatureView,
        &current.feature_views,
        &desired.feature_views,
        &mut changes,
    );
    diff_maps(
        ObjectKind::OnDemandView,
        &current.on_demand_views,
        &desired.on_demand_views,
        &mut changes,
    );
    diff_maps(
        ObjectKind::FeatureService,
        &current.feature_services,
        &desired.feature_services,
        &mut changes,
    );

    for c in &mut changes {
        let name = c.name.as_str();
        match (c.object, c.kind) {
            (ObjectKind::Entity, ChangeKind::Changed)
                if current.entities[name].join_keys != desired.entities[name].join_keys =>
            {
                c.breaking
                    .push(format!("entity '{name}': join keys changed"));
            }
            (ObjectKind::Entity, ChangeKind::Removed) => {
                for v in current
                    .feature_views
                    .values()
                    .chain(desired.feature_views.values())
                {
                    if v.entities.iter().any(|e| e == name) {
                        c.breaking.push(format!(
                            "entity '{name}' removed but feature view '{}' uses it",
                            v.name
                        ));
                    }
                }
            }
            (ObjectKind::FeatureView, ChangeKind::Changed) => {
                let (a, b) = (&current.feature_views[name], &desired.feature_views[name]);
                if a.entities != b.entities {
                    c.breaking.push(format!(
                        "feature view '{name}': entities changed {:?} -> {:?}",
                        a.entities, b.entities
                    ));
                }
                if a.event_timestamp_column != b.event_timestamp_column
                    || a.created_timestamp_column != b.created_timestamp_column
                {
                    c.breaking
                        .push(format!("feature view '{name}': timestamp columns changed"));
                }
                for aa in &a.aggregations {
                    match b.aggregation(&aa.name) {
                        Some(ab)
                            if ab.column != aa.column
                                || ab.function != aa.function
                                || ab.window != aa.window
                                || ab.effective_hop() != aa.effective_hop() =>
                        {
                            c.breaking.push(format!(
                                "feature view '{name}': aggregation feature '{}' changed its definition (column, function, window or hop); stored tiles must be rebuilt",
                                aa.name
                            ));
                        }
                        None => {
                            let mut users = users_of(current, name, Some(&aa.name));
                            users.extend(users_of(desired, name, Some(&aa.name)));
                            users.sort();
                            users.dedup();
                            if !users.is_empty() {
                                c.breaking.push(format!(
                                    "aggregation feature '{name}:{}' removed but still used by {}",
                                    aa.name,
                                    users.join(", ")
                                ));
                            }
                        }
                        _ => {}
                    }
                }
                for fa in &a.features {
                    match b.feature(&fa.name) {
                        Some(fb) if fb.value_type != fa.value_type => c.breaking.push(format!(
                            "feature view '{name}': feature '{}' type changed {} -> {}",
                            fa.name, fa.value_type, fb.value_type
                        )),
                        None => {
                            let mut users = users_of(current, name, Some(&fa.name));
                            users.extend(users_of(desired, name, Some(&fa.name)));
                            users.sort();
                            users.dedup();
                            if !users.is_empty() {
                                c.breaking.push(format!(
                                    "feature '{name}:{}' removed but still used by {}",
                                    fa.name,
                                    users.join(", ")
                                ));
                            }
                        }
                        _ => {}
                    }
                }
            }
            (ObjectKind::FeatureView, ChangeKind::Removed) => {
                let mut users = users_of(current, name, None);
                users.extend(users_of(desired, name, None));
                users.sort();
                users.dedup();
                if !users.is_empty() {
                    c.breaking.push(format!(
                        "feature view '{name}' removed but still used by {}",
                        users.join(", ")
                    ));
                }
            }
            (ObjectKind::OnDemandView, ChangeKind::Changed) => {
                let (a, b) = (
                    &current.on_demand_views[name],
                    &desired.on_demand_views[name],
                );
                for fa in &a.outputs {
                    if let Some(fb) = b.outputs.iter().find(|f| f.name == fa.name)
                        && fb.value_type != fa.value_type
                    {
                        c.breaking.push(format!(
                            "on-demand view '{name}': output '{}' type changed {} -> {}",
                            fa.name, fa.value_type, fb.value_type
                        ));
                    }
                }
            }
            _ => {}
        }
    }
    Plan { changes }
}

/// Names reserved by fstore (they would collide with output or metadata columns).
pub(crate) const RESERVED_NAMES: &[&str] = &["__fstore_row", "__fstore_status"];

fn check_name(kind: &str, name: &str) -> Result<()> {
    let ok_chars = name
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-' || c == '.');
    if name.is_empty()
        || name.len() > 255
        || !ok_chars
        || name.contains("__")
        || RESERVED_NAMES.contains(&name)
    {
        return Err(Error::invalid(format!(
            "{kind} name '{name}' is invalid: use 1-255 characters [A-Za-z0-9_.-] without '__' (reserved for view__feature)"
        )));
    }
    Ok(())
}

/// Validates a complete set of definitions: names (unique, well-formed, not
/// reserved), known entities, join-key types, declared timestamp columns,
/// feature names unique and not clashing with key or timestamp columns, ttl > 0,
/// defaults of the declared type, on-demand inputs and service references that
/// resolve; and that everything survives the registry's JSON round trip and can
/// be written: no nested list types, finite float defaults, a ttl that is stored
/// exactly, no `.`-leading or `_fstore`-prefixed view names, no two views (or
/// two columns of a view) whose names differ only in case.
///
/// # Errors
/// [`Error::InvalidInput`] naming the definition and what is wrong.
pub fn validate(defs: &Definitions) -> Result<()> {
    for (name, e) in &defs.entities {
        check_name("entity", name)?;
        if &e.name != name {
            return Err(Error::invalid(format!(
                "entity '{}' stored under name '{name}'",
                e.name
            )));
        }
        if e.join_keys.is_empty() {
            return Err(Error::invalid(format!("entity '{name}' has no join keys")));
        }
        let mut seen = BTreeSet::new();
        for k in &e.join_keys {
            check_name("join key", &k.name)?;
            if !k.value_type.is_key_type() {
                return Err(Error::invalid(format!(
                    "entity '{name}': join key '{}' has type {}; join keys must be int32, int64, string or bytes",
                    k.name, k.value_type
                )));
            }
            if !seen.insert(&k.name) {
                return Err(Error::invalid(format!(
                    "entity '{name}': join key '{}' repeated",
                    k.name
                )));
            }
        }
    }
    for (name, v) in &defs.feature_views {
        check_name("feature view", name)?;
        if &v.name != name {
            return Err(Error::invalid(format!(
                "feature view '{}' stored under name '{name}'",
                v.name
            )));
        }
        if v.entities.is_empty() {
            return Err(Error::invalid(format!(
                "feature view '{name}' has no entities"
            )));
        }
        let mut columns = BTreeSet::new();
        for e in &v.entities {
            let ent = defs.entities.get(e).ok_or_else(|| {
                Error::invalid(format!("feature view '{name}' uses unknown entity '{e}'"))
            })?;
            for k in &ent.join_keys {
                if !columns.insert(k.name.clone()) {
                    return Err(Error::invalid(format!(
                        "feature view '{name}': join key '{}' appears in two of its entities",
                        k.name
                    )));
                }
            }
        }
        check_name("event timestamp column", &v.event_timestamp_column)?;
        if !columns.insert(v.event_timestamp_column.clone()) {
            return Err(Error::invalid(format!(
                "feature view '{name}': event timestamp column '{}' clashes with a join key",
                v.event_timestamp_column
            )));
        }
        if let Some(c) = &v.created_timestamp_column {
            check_name("created timestamp column", c)?;
            if !columns.insert(c.clone()) {
                return Err(Error::invalid(format!(
                    "feature view '{name}': created timestamp column '{c}' clashes with another column"
                )));
            }
        }
        if v.features.is_empty() {
            return Err(Error::invalid(format!(
                "feature view '{name}' has no features"
            )));
        }
        for f in &v.features {
            check_name("feature", &f.name)?;
            if !columns.insert(f.name.clone()) {
                return Err(Error::invalid(format!(
                    "feature view '{name}': feature '{}' is repeated or clashes with a key/timestamp column",
                    f.name
                )));
            }
            if let Fallback::Default(d) = &f.fallback
                && !d.matches(&f.value_type)
            {
                return Err(Error::invalid(format!(
                    "feature '{name}:{}': default {d:?} is not a {}",
                    f.name, f.value_type
                )));
            }
        }
        if v.ttl.is_some_and(|t| t.is_zero()) {
            return Err(Error::invalid(format!(
                "feature view '{name}': ttl must be > 0 (or unset)"
            )));
        }
        for a in &v.aggregations {
            check_name("aggregation feature", &a.name)?;
            if !columns.insert(a.name.clone()) {
                return Err(Error::invalid(format!(
                    "feature view '{name}': aggregation feature '{}' is repeated or clashes with a feature/key/timestamp column",
                    a.name
                )));
            }
            a.validate(name, v.feature(&a.column).map(|f| &f.value_type))?;
        }
    }
    for (name, o) in &defs.on_demand_views {
        check_name("on-demand view", name)?;
        if defs.feature_views.contains_key(name) {
            return Err(Error::invalid(format!(
                "on-demand view '{name}' has the same name as a feature view"
            )));
        }
        if o.version.is_empty() {
            return Err(Error::invalid(format!(
                "on-demand view '{name}' has an empty version"
            )));
        }
        if o.outputs.is_empty() {
            return Err(Error::invalid(format!(
                "on-demand view '{name}' has no outputs"
            )));
        }
        for r in &o.inputs {
            let ok = defs
                .feature_views
                .get(&r.view)
                .is_some_and(|v| v.feature(&r.feature).is_some());
            if !ok {
                return Err(Error::invalid(format!(
                    "on-demand view '{name}': input '{r}' is not a feature of a feature view"
                )));
            }
        }
        let mut outs = BTreeSet::new();
        for f in o.outputs.iter().chain(&o.request_fields) {
            check_name("on-demand field", &f.name)?;
            if !outs.insert(&f.name) {
                return Err(Error::invalid(format!(
                    "on-demand view '{name}': field '{}' repeated",
                    f.name
                )));
            }
        }
    }
    for (name, s) in &defs.feature_services {
        check_name("feature service", name)?;
        if s.features.is_empty() {
            return Err(Error::invalid(format!(
                "feature service '{name}' has no features"
            )));
        }
        for r in &s.features {
            if !defs.has_feature(r) {
                return Err(Error::invalid(format!(
                    "feature service '{name}' references unknown feature '{r}'"
                )));
            }
        }
    }
    super::checks::check_round_trippable(defs)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{Entity, FeatureService, FeatureView, ValueType};

    fn base() -> Definitions {
        Definitions::new()
            .with_entity(Entity::new("driver", "driver_id", ValueType::Int64))
            .with_feature_view(
                FeatureView::new("stats", ["driver"])
                    .with_feature("a", ValueType::Float64)
                    .with_feature("b", ValueType::Int64),
            )
            .with_feature_service(FeatureService::new("svc", [FeatureRef::new("stats", "b")]))
    }

    #[test]
    fn plan_reports_field_changes_and_breaking_flags() {
        let cur = base();
        assert!(plan(&cur, &cur).is_empty());
        let mut d = cur.clone();
        let v = d.feature_views.get_mut("stats").unwrap();
        v.features[0].value_type = ValueType::Float32;
        v.description = "new".into();
        let p = plan(&cur, &d);
        assert_eq!(p.changes.len(), 1);
        let paths: Vec<&str> = p.changes[0]
            .fields
            .iter()
            .map(|f| f.path.as_str())
            .collect();
        assert!(
            paths.contains(&"features.a.type") && paths.contains(&"description"),
            "{paths:?}"
        );
        assert!(
            p.is_breaking() && p.breaking()[0].contains("'a' type changed"),
            "{p}"
        );

        // removing a feature still used by a service is breaking; an unused one is not
        let mut d = cur.clone();
        d.feature_views
            .get_mut("stats")
            .unwrap()
            .features
            .retain(|f| f.name != "b");
        assert!(plan(&cur, &d).breaking()[0].contains("svc"));
        let mut d = cur.clone();
        d.feature_views
            .get_mut("stats")
            .unwrap()
            .features
            .retain(|f| f.name != "a");
        assert!(!plan(&cur, &d).is_breaking());

        // adding a feature is safe
        let mut d = cur.clone();
        let v = d
            .feature_views
            .remove("stats")
            .unwrap()
            .with_feature("c", ValueType::String);
        d = d.with_feature_view(v);
        let p = plan(&cur, &d);
        assert!(!p.is_breaking());
        assert_eq!(p.changes[0].fields[0].path, "features.c");
    }

    #[test]
    fn validate_names_what_is_wrong() {
        validate(&base()).unwrap();
        let d = base().with_feature_view(
            FeatureView::new("x", ["nobody"]).with_feature("f", ValueType::Int64),
        );
        assert!(
            validate(&d)
                .unwrap_err()
                .to_string()
                .contains("unknown entity 'nobody'")
        );
        let d = base().with_feature_view(
            FeatureView::new("a__b", ["driver"]).with_feature("f", ValueType::Int64),
        );
        assert!(validate(&d).unwrap_err().to_string().contains("'a__b'"));
        let d = base().with_feature_view(
            FeatureView::new("y", ["driver"]).with_feature("driver_id", ValueType::Int64),
        );
        assert!(
            validate(&d)
                .unwrap_err()
                .to_string()
                .contains("'driver_id'")
        );
        let d = base()
            .with_feature_service(FeatureService::new("s2", [FeatureRef::new("stats", "zz")]));
        assert!(validate(&d).unwrap_err().to_string().contains("stats:zz"));
        let d = base().with_entity(Entity::new("e", "k", ValueType::Float64));
        assert!(validate(&d).unwrap_err().to_string().contains("'k'"));
    }

    #[test]
    fn aggregations_diff_field_by_field_and_definition_changes_are_breaking() {
        use crate::model::{AggFunction, Aggregation};
        use std::time::Duration;
        let day = Duration::from_secs(86_400);
        let with = |a: Aggregation| {
            let mut d = base();
            let v = d.feature_views.remove("stats").unwrap().with_aggregation(a);
            d.with_feature_view(v)
        };
        let cur = with(Aggregation::new("b", AggFunction::Sum, Some(7 * day)));
        validate(&cur).unwrap();
        assert!(plan(&cur, &cur).is_empty());
        let renamed = with(Aggregation::new("b", AggFunction::Sum, Some(7 * day)).with_name("b7"));
        let p = plan(&cur, &renamed);
        assert!(!p.is_breaking(), "{p}");
        let window = with(
            Aggregation::new("b", AggFunction::Sum, Some(7 * day))
                .with_name("b_sum_7d")
                .with_hop(day),
        );
        let p = plan(&cur, &window);
        assert!(p.is_breaking(), "{p}");
        assert!(
            p.changes[0]
                .fields
                .iter()
                .any(|f| f.path == "aggregations.b_sum_7d.hop"),
            "{p}"
        );
        let mut func = Aggregation::new("b", AggFunction::Mean, Some(7 * day));
        func.name = "b_sum_7d".into();
        let p = plan(&cur, &with(func));
        assert!(
            p.is_breaking() && p.breaking()[0].contains("b_sum_7d"),
            "{p}"
        );
        assert!(
            p.changes[0]
                .fields
                .iter()
                .any(|f| f.path == "aggregations.b_sum_7d.function"),
            "{p}"
        );
        // selectable in services; validation names the feature
        let mut svc = cur.clone();
        svc.feature_services.insert(
            "s2".into(),
            FeatureService::new("s2", [FeatureRef::new("stats", "b_sum_7d")]),
        );
        validate(&svc).unwrap();
        let e = validate(&with(Aggregation::new("zz", AggFunction::Sum, Some(day))))
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("stats:zz_sum_1d") && e.contains("not a feature"),
            "{e}"
        );
        let e = validate(&with(
            Aggregation::new("b", AggFunction::Sum, Some(day)).with_name("a"),
        ))
        .unwrap_err()
        .to_string();
        assert!(e.contains("clashes"), "{e}");
    }
}
