//! The model ([semantics §4](crate::docs::semantics)): entities, feature views, on-demand views, feature
//! services and feature references. Every type is serde-serialisable to a
//! human-diffable JSON document (see [`Definitions`]).

mod agg;
mod types;

use std::collections::BTreeMap;
use std::fmt;
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use arrow_schema::{Field, Schema, SchemaRef};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::time::timestamp_type;

pub use agg::{AggFunction, Aggregation, LAST_N_CAP, format_duration, parse_duration};
pub use types::{Value, ValueType};

/// Free-form key/value labels.
pub type Tags = BTreeMap<String, String>;

/// A join key of an entity: a column name and its type.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct JoinKey {
    /// Column name, in spines, feature data and online requests.
    pub name: String,
    /// Its type (int32, int64, string or bytes).
    #[serde(rename = "type")]
    pub value_type: ValueType,
}

impl JoinKey {
    /// A join key.
    pub fn new(name: impl Into<String>, value_type: ValueType) -> Self {
        Self {
            name: name.into(),
            value_type,
        }
    }
}

/// Something features are about (a driver, a user, a (user, item) pair).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Entity {
    /// Unique name.
    pub name: String,
    /// Join keys; composite keys have several.
    pub join_keys: Vec<JoinKey>,
    /// Human description.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub description: String,
    /// Labels.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub tags: Tags,
}

impl Entity {
    /// An entity with one join key.
    pub fn new(name: impl Into<String>, key: impl Into<String>, key_type: ValueType) -> Self {
        Self {
            name: name.into(),
            join_keys: vec![JoinKey::new(key, key_type)],
            description: String::new(),
            tags: Tags::new(),
        }
    }

    /// Adds a join key (composite entity).
    pub fn with_join_key(mut self, key: impl Into<String>, key_type: ValueType) -> Self {
        self.join_keys.push(JoinKey::new(key, key_type));
        self
    }

    /// Sets the description.
    pub fn with_description(mut self, d: impl Into<String>) -> Self {
        self.description = d.into();
        self
    }
}

/// What serving returns for a feature that has no usable value ([semantics §9](crate::docs::semantics)).
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Fallback {
    /// Return null (the default).
    #[default]
    Null,
    /// Impute this value; imputations are counted.
    Default(Value),
    /// Fail the request, naming the feature.
    Required,
}

impl Fallback {
    fn is_null(&self) -> bool {
        matches!(self, Self::Null)
    }
}

/// A feature of a view (or an output of an on-demand view).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FeatureField {
    /// Name, unique in its view.
    pub name: String,
    /// Value type.
    #[serde(rename = "type")]
    pub value_type: ValueType,
    /// Human description.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub description: String,
    /// Labels.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub tags: Tags,
    /// Serving fallback policy.
    #[serde(default, skip_serializing_if = "Fallback::is_null")]
    pub fallback: Fallback,
}

impl FeatureField {
    /// A field with no description, tags or fallback.
    pub fn new(name: impl Into<String>, value_type: ValueType) -> Self {
        Self {
            name: name.into(),
            value_type,
            description: String::new(),
            tags: Tags::new(),
            fallback: Fallback::Null,
        }
    }

    /// Serving imputes `v` when the feature has no usable value.
    pub fn with_default(mut self, v: Value) -> Self {
        self.fallback = Fallback::Default(v);
        self
    }

    /// Serving fails when the feature has no usable value.
    pub fn required(mut self) -> Self {
        self.fallback = Fallback::Required;
        self
    }

    /// Sets the description.
    pub fn with_description(mut self, d: impl Into<String>) -> Self {
        self.description = d.into();
        self
    }

    /// The Arrow field (always nullable).
    pub fn to_arrow(&self) -> Field {
        Field::new(&self.name, self.value_type.to_arrow(), true)
    }
}

/// A deprecation notice on a feature view: reads warn and are counted, so the
/// view can be removed once its readers reach zero.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Deprecation {
    /// When the view will be removed.
    pub tombstone: DateTime<Utc>,
    /// The view (or `view:feature`) to use instead.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub replacement: Option<String>,
}

mod ttl_secs {
    use serde::{Deserialize, Deserializer, Serializer};
    use std::time::Duration;

    pub(super) fn serialize<S: Serializer>(v: &Option<Duration>, s: S) -> Result<S::Ok, S::Error> {
        match v {
            Some(d) => s.serialize_some(&d.as_secs_f64()),
            None => s.serialize_none(),
        }
    }

    pub(super) fn deserialize<'de, D: Deserializer<'de>>(
        d: D,
    ) -> Result<Option<Duration>, D::Error> {
        let v: Option<f64> = Option::deserialize(d)?;
        v.map(|secs| {
            Duration::try_from_secs_f64(secs)
                .map_err(|e| serde::de::Error::custom(format!("ttl_seconds: {e}")))
        })
        .transpose()
    }
}

fn default_event_ts() -> String {
    "event_timestamp".to_owned()
}

fn yes() -> bool {
    true
}

/// A feature view: a set of features of some entities, with history in the
/// offline store and (if `online`) the latest value per entity online.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FeatureView {
    /// Unique name.
    pub name: String,
    /// Entity names; the view's key is all their join keys.
    pub entities: Vec<String>,
    /// The features.
    pub features: Vec<FeatureField>,
    /// Lookback window; `None` = unbounded.
    #[serde(rename = "ttl_seconds", with = "ttl_secs", default)]
    pub ttl: Option<Duration>,
    /// Event-timestamp column of the feature data.
    #[serde(default = "default_event_ts")]
    pub event_timestamp_column: String,
    /// Optional created-timestamp column (tie-break, backfill cutoff).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub created_timestamp_column: Option<String>,
    /// Whether the view is materialised to the online store.
    #[serde(default = "yes")]
    pub online: bool,
    /// Source table or path, informational for the offline store.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source: Option<String>,
    /// Owner (team or person).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub owner: String,
    /// Human description.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub description: String,
    /// Labels.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub tags: Tags,
    /// Deprecation notice.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deprecation: Option<Deprecation>,
    /// Aggregation features over the view's event history ([semantics §11](crate::docs::semantics)),
    /// referenced as `view:name` like plain features.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub aggregations: Vec<Aggregation>,
}

impl FeatureView {
    /// A view over `entities` with no features yet, `event_timestamp` as the
    /// event-time column, no ttl, online.
    pub fn new<I, S>(name: impl Into<String>, entities: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        Self {
            name: name.into(),
            entities: entities.into_iter().map(Into::into).collect(),
            features: Vec::new(),
            ttl: None,
            event_timestamp_column: default_event_ts(),
            created_timestamp_column: None,
            online: true,
            source: None,
            owner: String::new(),
            description: String::new(),
            tags: Tags::new(),
            deprecation: None,
            aggregations: Vec::new(),
        }
    }

    /// Adds a feature.
    pub fn with_feature(mut self, name: impl Into<String>, value_type: ValueType) -> Self {
        self.features.push(FeatureField::new(name, value_type));
        self
    }

    /// Adds a feature given as a [`FeatureField`] (with description, fallback…).
    pub fn with_field(mut self, field: FeatureField) -> Self {
        self.features.push(field);
        self
    }

    /// Sets the ttl.
    pub fn with_ttl(mut self, ttl: Duration) -> Self {
        self.ttl = Some(ttl);
        self
    }

    /// Sets the event-timestamp column.
    pub fn with_event_timestamp_column(mut self, c: impl Into<String>) -> Self {
        self.event_timestamp_column = c.into();
        self
    }

    /// Sets the created-timestamp column.
    pub fn with_created_timestamp_column(mut self, c: impl Into<String>) -> Self {
        self.created_timestamp_column = Some(c.into());
        self
    }

    /// Sets the online flag.
    pub fn with_online(mut self, online: bool) -> Self {
        self.online = online;
        self
    }

    /// Sets the owner.
    pub fn with_owner(mut self, owner: impl Into<String>) -> Self {
        self.owner = owner.into();
        self
    }

    /// Sets the description.
    pub fn with_description(mut self, d: impl Into<String>) -> Self {
        self.description = d.into();
        self
    }

    /// Adds a tag.
    pub fn with_tag(mut self, k: impl Into<String>, v: impl Into<String>) -> Self {
        self.tags.insert(k.into(), v.into());
        self
    }

    /// Sets the source.
    pub fn with_source(mut self, s: impl Into<String>) -> Self {
        self.source = Some(s.into());
        self
    }

    /// Marks the view deprecated.
    pub fn with_deprecation(mut self, d: Deprecation) -> Self {
        self.deprecation = Some(d);
        self
    }

    /// The feature called `name`.
    pub fn feature(&self, name: &str) -> Option<&FeatureField> {
        self.features.iter().find(|f| f.name == name)
    }

    /// Adds an aggregation feature ([semantics §11](crate::docs::semantics)).
    pub fn with_aggregation(mut self, a: Aggregation) -> Self {
        self.aggregations.push(a);
        self
    }

    /// The aggregation feature called `name`.
    pub fn aggregation(&self, name: &str) -> Option<&Aggregation> {
        self.aggregations.iter().find(|a| a.name == name)
    }
}

/// A reference to a feature: `view:feature`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct FeatureRef {
    /// View (or on-demand view) name.
    pub view: String,
    /// Feature name.
    pub feature: String,
}

impl FeatureRef {
    /// `view:feature`.
    pub fn new(view: impl Into<String>, feature: impl Into<String>) -> Self {
        Self {
            view: view.into(),
            feature: feature.into(),
        }
    }
}

impl fmt::Display for FeatureRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.view, self.feature)
    }
}

impl FromStr for FeatureRef {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        match s.split_once(':') {
            Some((v, f)) if !v.is_empty() && !f.is_empty() && !f.contains(':') => {
                Ok(Self::new(v, f))
            }
            _ => Err(Error::invalid(format!(
                "feature reference '{s}' must have the form 'view:feature'"
            ))),
        }
    }
}

impl TryFrom<String> for FeatureRef {
    type Error = Error;
    fn try_from(s: String) -> Result<Self> {
        s.parse()
    }
}

impl From<FeatureRef> for String {
    fn from(r: FeatureRef) -> Self {
        r.to_string()
    }
}

/// An on-demand view: a named Rust function over Arrow batches, run after the
/// point-in-time join and after the online read. The registry keeps its
/// definition; the function itself is registered in each process with
/// [`crate::OnDemandFunction`] and must carry the same `version`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct OnDemandView {
    /// Unique name (shares the namespace of feature views).
    pub name: String,
    /// Input features (`view:feature`); the function sees them under their short names.
    pub inputs: Vec<FeatureRef>,
    /// Fields the request (or spine) must carry.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub request_fields: Vec<FeatureField>,
    /// Output schema.
    pub outputs: Vec<FeatureField>,
    /// Version of the function; a process whose function differs is refused.
    pub version: String,
    /// Human description.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub description: String,
}

impl OnDemandView {
    /// A definition with no inputs or outputs yet.
    pub fn new(name: impl Into<String>, version: impl Into<String>) -> Self {
        Self {
            name: name.into(),
            inputs: Vec::new(),
            request_fields: Vec::new(),
            outputs: Vec::new(),
            version: version.into(),
            description: String::new(),
        }
    }

    /// Adds an input feature.
    pub fn with_input(mut self, r: FeatureRef) -> Self {
        self.inputs.push(r);
        self
    }

    /// Adds a request field.
    pub fn with_request_field(mut self, name: impl Into<String>, t: ValueType) -> Self {
        self.request_fields.push(FeatureField::new(name, t));
        self
    }

    /// Adds an output.
    pub fn with_output(mut self, name: impl Into<String>, t: ValueType) -> Self {
        self.outputs.push(FeatureField::new(name, t));
        self
    }
}

/// The features a model consumes: the lineage edge model → features.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FeatureService {
    /// Unique name.
    pub name: String,
    /// The features.
    pub features: Vec<FeatureRef>,
    /// Owner.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub owner: String,
    /// Human description.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub description: String,
    /// Labels.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub tags: Tags,
}

impl FeatureService {
    /// A service over `features`.
    pub fn new(name: impl Into<String>, features: impl IntoIterator<Item = FeatureRef>) -> Self {
        Self {
            name: name.into(),
            features: features.into_iter().collect(),
            owner: String::new(),
            description: String::new(),
            tags: Tags::new(),
        }
    }
}

/// The complete set of definitions of a project: what `plan`/`apply` take and
/// what the registry stores. Maps are sorted by name, so the JSON form diffs well.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct Definitions {
    /// Entities by name.
    #[serde(default)]
    pub entities: BTreeMap<String, Entity>,
    /// Feature views by name.
    #[serde(default)]
    pub feature_views: BTreeMap<String, FeatureView>,
    /// On-demand views by name.
    #[serde(default)]
    pub on_demand_views: BTreeMap<String, OnDemandView>,
    /// Feature services by name.
    #[serde(default)]
    pub feature_services: BTreeMap<String, FeatureService>,
}

impl Definitions {
    /// Empty definitions.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds (or replaces) an entity.
    pub fn with_entity(mut self, e: Entity) -> Self {
        self.entities.insert(e.name.clone(), e);
        self
    }

    /// Adds (or replaces) a feature view.
    pub fn with_feature_view(mut self, v: FeatureView) -> Self {
        self.feature_views.insert(v.name.clone(), v);
        self
    }

    /// Adds (or replaces) an on-demand view.
    pub fn with_on_demand_view(mut self, v: OnDemandView) -> Self {
        self.on_demand_views.insert(v.name.clone(), v);
        self
    }

    /// Adds (or replaces) a feature service.
    pub fn with_feature_service(mut self, s: FeatureService) -> Self {
        self.feature_services.insert(s.name.clone(), s);
        self
    }

    /// Parses the JSON form.
    ///
    /// # Errors
    /// [`Error::InvalidInput`] with serde's message (line and column).
    pub fn from_json(s: &str) -> Result<Self> {
        serde_json::from_str(s).map_err(|e| Error::invalid(format!("definitions: {e}")))
    }

    /// The pretty-printed JSON form.
    pub fn to_json(&self) -> String {
        serde_json::to_string_pretty(self).unwrap_or_default()
    }

    /// The field a reference names: a feature of a feature view or an output of
    /// an on-demand view.
    pub fn field(&self, r: &FeatureRef) -> Option<&FeatureField> {
        self.feature_views
            .get(&r.view)
            .and_then(|v| v.feature(&r.feature))
            .or_else(|| {
                self.on_demand_views
                    .get(&r.view)
                    .and_then(|o| o.outputs.iter().find(|f| f.name == r.feature))
            })
    }

    /// The aggregation feature a reference names, with its view.
    pub fn aggregation(&self, r: &FeatureRef) -> Option<(&FeatureView, &Aggregation)> {
        let v = self.feature_views.get(&r.view)?;
        v.aggregation(&r.feature).map(|a| (v, a))
    }

    /// True when `r` names a plain feature, an on-demand output or an
    /// aggregation feature.
    pub fn has_feature(&self, r: &FeatureRef) -> bool {
        self.field(r).is_some() || self.aggregation(r).is_some()
    }

    /// Resolves the view `name` with its entities' join keys.
    ///
    /// # Errors
    /// [`Error::NotFound`] for an unknown view or entity.
    pub fn resolve_view(&self, name: &str) -> Result<ResolvedView> {
        let view = self
            .feature_views
            .get(name)
            .ok_or_else(|| Error::not_found("feature view", name))?;
        let mut join_keys = Vec::new();
        for e in &view.entities {
            let ent = self.entities.get(e).ok_or_else(|| {
                Error::not_found("entity", format!("{e} (used by feature view '{name}')"))
            })?;
            join_keys.extend(ent.join_keys.iter().cloned());
        }
        Ok(ResolvedView::new(view.clone(), join_keys))
    }
}

/// A feature view together with the join keys of its entities: what the stores
/// need to know to read and write its data.
#[derive(Debug, Clone)]
pub struct ResolvedView {
    /// The view.
    pub view: Arc<FeatureView>,
    /// All join keys of the view's entities, in entity order.
    pub join_keys: Vec<JoinKey>,
}

impl ResolvedView {
    /// Binds a view to its join keys.
    pub fn new(view: FeatureView, join_keys: Vec<JoinKey>) -> Self {
        Self {
            view: Arc::new(view),
            join_keys,
        }
    }

    /// The view's name.
    pub fn name(&self) -> &str {
        &self.view.name
    }

    /// The canonical offline schema: join keys, event timestamp, created
    /// timestamp (if any), then every feature. Timestamps are UTC microseconds.
    pub fn arrow_schema(&self) -> SchemaRef {
        let mut fields: Vec<Field> = self
            .join_keys
            .iter()
            .map(|k| Field::new(&k.name, k.value_type.to_arrow(), false))
            .collect();
        fields.push(Field::new(
            &self.view.event_timestamp_column,
            timestamp_type(),
            false,
        ));
        if let Some(c) = &self.view.created_timestamp_column {
            fields.push(Field::new(c, timestamp_type(), false));
        }
        fields.extend(self.view.features.iter().map(FeatureField::to_arrow));
        Arc::new(Schema::new(fields))
    }

    /// Names of the key and timestamp columns (everything in the canonical schema
    /// that is not a feature).
    pub fn key_and_time_columns(&self) -> Vec<&str> {
        let mut v: Vec<&str> = self.join_keys.iter().map(|k| k.name.as_str()).collect();
        v.push(&self.view.event_timestamp_column);
        if let Some(c) = &self.view.created_timestamp_column {
            v.push(c);
        }
        v
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn definitions_round_trip_through_json() {
        let d = Definitions::new()
            .with_entity(Entity::new("driver", "driver_id", ValueType::Int64))
            .with_feature_view(
                FeatureView::new("driver_stats", ["driver"])
                    .with_feature("conv_rate", ValueType::Float32)
                    .with_field(
                        FeatureField::new("trips", ValueType::Int64).with_default(Value::Int64(0)),
                    )
                    .with_feature("emb", ValueType::list(ValueType::Float32))
                    .with_ttl(Duration::from_secs(86_400))
                    .with_created_timestamp_column("created"),
            )
            .with_feature_service(FeatureService::new(
                "model_v1",
                [FeatureRef::new("driver_stats", "conv_rate")],
            ));
        let json = d.to_json();
        assert!(json.contains("\"ttl_seconds\": 86400.0"), "{json}");
        assert!(json.contains("\"list<float32>\""), "{json}");
        assert!(json.contains("\"driver_stats:conv_rate\""), "{json}");
        assert_eq!(Definitions::from_json(&json).unwrap(), d);
    }

    #[test]
    fn feature_ref_parse_errors_name_the_input() {
        assert_eq!(
            "v:f".parse::<FeatureRef>().unwrap(),
            FeatureRef::new("v", "f")
        );
        for bad in ["v", ":f", "v:", "a:b:c"] {
            let e = bad.parse::<FeatureRef>().unwrap_err().to_string();
            assert!(e.contains(bad), "{e}");
        }
    }
}
