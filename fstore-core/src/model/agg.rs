//! Aggregation features ([semantics §11](crate::docs::semantics)): `(column, function, window, hop, name)`
//! declared on a feature view over an event history.

use std::fmt;
use std::str::FromStr;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::types::ValueType;
use crate::error::{Error, Result};

/// Largest `n` of [`AggFunction::LastN`]: the tile of a `last_n` feature holds
/// up to `n` values, and every read merges them, so `n` is kept small.
pub const LAST_N_CAP: u32 = 100;

/// An aggregation function ([semantics §11](crate::docs::semantics)). SQL semantics: nulls are ignored;
/// over no value `count` is 0 and every other function null.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum AggFunction {
    /// Number of non-null values (int64).
    Count,
    /// Sum: int64 for integer columns (overflow is an error), float64 for floats.
    Sum,
    /// Arithmetic mean (float64).
    Mean,
    /// Smallest value (int64 for integer columns, float64 for floats).
    Min,
    /// Largest value (int64 for integer columns, float64 for floats).
    Max,
    /// Population variance (float64).
    VarPop,
    /// Population standard deviation (float64).
    StddevPop,
    /// Earliest non-null value by `(event_ts, created_ts)`, then write order.
    First,
    /// Latest non-null value by `(event_ts, created_ts)`, then write order.
    Last,
    /// The `n` latest non-null values, newest first (a list); `1 <= n <=` [`LAST_N_CAP`].
    LastN(u32),
    /// Approximate number of distinct non-null values: a HyperLogLog sketch
    /// (2^12 registers over xxHash64, exact below 256 distinct values; see
    /// `agg::sketch`), the same on both paths.
    ApproxCountDistinct,
}

impl AggFunction {
    /// True for functions that need a numeric (int32/int64/float32/float64) column.
    pub fn needs_numeric(&self) -> bool {
        matches!(
            self,
            Self::Sum | Self::Mean | Self::Min | Self::Max | Self::VarPop | Self::StddevPop
        )
    }

    /// The output type for an input column of type `input`.
    pub fn output_type(&self, input: &ValueType) -> ValueType {
        let int = matches!(input, ValueType::Int32 | ValueType::Int64);
        match self {
            Self::Count | Self::ApproxCountDistinct => ValueType::Int64,
            Self::Sum | Self::Min | Self::Max if int => ValueType::Int64,
            Self::Sum | Self::Min | Self::Max => ValueType::Float64,
            Self::Mean | Self::VarPop | Self::StddevPop => ValueType::Float64,
            Self::First | Self::Last => input.clone(),
            Self::LastN(_) => ValueType::list(input.clone()),
        }
    }
}

impl fmt::Display for AggFunction {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Count => f.write_str("count"),
            Self::Sum => f.write_str("sum"),
            Self::Mean => f.write_str("mean"),
            Self::Min => f.write_str("min"),
            Self::Max => f.write_str("max"),
            Self::VarPop => f.write_str("var_pop"),
            Self::StddevPop => f.write_str("stddev_pop"),
            Self::First => f.write_str("first"),
            Self::Last => f.write_str("last"),
            Self::LastN(n) => write!(f, "last_n_{n}"),
            Self::ApproxCountDistinct => f.write_str("approx_count_distinct"),
        }
    }
}

impl FromStr for AggFunction {
    type Err = Error;
    /// Parses the names of [`fmt::Display`]; `last_n` also as `last_n(3)`.
    fn from_str(s: &str) -> Result<Self> {
        Ok(match s.trim() {
            "count" => Self::Count,
            "sum" => Self::Sum,
            "mean" | "avg" => Self::Mean,
            "min" => Self::Min,
            "max" => Self::Max,
            "var_pop" => Self::VarPop,
            "stddev_pop" => Self::StddevPop,
            "first" => Self::First,
            "last" => Self::Last,
            "approx_count_distinct" => Self::ApproxCountDistinct,
            other => {
                let n = other
                    .strip_prefix("last_n_")
                    .or_else(|| {
                        other
                            .strip_prefix("last_n(")
                            .and_then(|r| r.strip_suffix(')'))
                    })
                    .ok_or_else(|| {
                        Error::invalid(format!(
                            "unknown aggregation function '{other}' (count, sum, mean, min, max, var_pop, stddev_pop, first, last, last_n_N, approx_count_distinct)"
                        ))
                    })?;
                let n: u32 = n.parse().map_err(|_| {
                    Error::invalid(format!("aggregation function '{other}': n is not a number"))
                })?;
                Self::LastN(n)
            }
        })
    }
}

impl Serialize for AggFunction {
    fn serialize<S: serde::Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        s.serialize_str(&self.to_string())
    }
}

impl<'de> Deserialize<'de> for AggFunction {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

/// Formats a duration with the largest unit that divides it: `7d`, `90m`, `1h`, `30s`
/// (sub-second durations as `250ms` or `1500us`; sub-microsecond parts are dropped).
pub fn format_duration(d: Duration) -> String {
    let s = d.as_secs();
    if d.subsec_nanos() != 0 || s == 0 {
        if d.subsec_nanos().is_multiple_of(1_000_000) {
            return format!("{}ms", d.as_millis());
        }
        return format!("{}us", d.as_micros());
    }
    for (unit, secs) in [("d", 86_400), ("h", 3_600), ("m", 60)] {
        if s.is_multiple_of(secs) {
            return format!("{}{unit}", s / secs);
        }
    }
    format!("{s}s")
}

/// Parses `30s`, `5m`, `1h`, `7d` (and `250ms`, `1500us`).
///
/// # Errors
/// [`Error::InvalidInput`] naming the text.
pub fn parse_duration(s: &str) -> Result<Duration> {
    let t = s.trim();
    let bad = || {
        Error::invalid(format!(
            "duration '{s}': expected a number and a unit s, m, h or d"
        ))
    };
    let (num, mult_us) = if let Some(n) = t.strip_suffix("us") {
        (n, 1u64)
    } else if let Some(n) = t.strip_suffix("ms") {
        (n, 1_000)
    } else if let Some(n) = t.strip_suffix('s') {
        (n, 1_000_000)
    } else if let Some(n) = t.strip_suffix('m') {
        (n, 60_000_000)
    } else if let Some(n) = t.strip_suffix('h') {
        (n, 3_600_000_000)
    } else if let Some(n) = t.strip_suffix('d') {
        (n, 86_400_000_000)
    } else {
        return Err(bad());
    };
    let n: u64 = num.parse().map_err(|_| bad())?;
    let us = n.checked_mul(mult_us).ok_or_else(bad)?;
    Ok(Duration::from_micros(us))
}

/// The serialised form: windows and hops as text (`"7d"`, `"lifetime"`), the
/// name filled in with its default when absent.
#[derive(Serialize, Deserialize)]
struct AggregationDef {
    name: Option<String>,
    column: String,
    function: AggFunction,
    window: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    hop: Option<String>,
}

/// An aggregation feature: `function` of `column` over the sawtooth window
/// `floor_hop(t − window) <= event_ts <= t` ([semantics §11](crate::docs::semantics)).
///
/// ```
/// use std::time::Duration;
/// use fstore_core::{AggFunction, Aggregation};
/// let a = Aggregation::new("amount", AggFunction::Sum, Some(Duration::from_secs(7 * 86_400)));
/// assert_eq!(a.name, "amount_sum_7d");
/// assert_eq!(a.effective_hop(), Duration::from_secs(3_600));
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "AggregationDef", into = "AggregationDef")]
pub struct Aggregation {
    /// Feature name (default `{column}_{function}_{window}`), unique in its view.
    pub name: String,
    /// Input column: a feature of the view.
    pub column: String,
    /// The function.
    pub function: AggFunction,
    /// Window length; `None` = lifetime (every event up to `t`).
    pub window: Option<Duration>,
    /// Hop (tile size); `None` = the default of [`Aggregation::default_hop`].
    pub hop: Option<Duration>,
}

impl TryFrom<AggregationDef> for Aggregation {
    type Error = Error;
    fn try_from(d: AggregationDef) -> Result<Self> {
        let window = match d.window.trim() {
            "lifetime" => None,
            w => Some(parse_duration(w)?),
        };
        let hop = d.hop.as_deref().map(parse_duration).transpose()?;
        let mut a = Self::new(d.column, d.function, window);
        a.hop = hop;
        if let Some(n) = d.name {
            a.name = n;
        }
        Ok(a)
    }
}

impl From<Aggregation> for AggregationDef {
    fn from(a: Aggregation) -> Self {
        Self {
            name: Some(a.name),
            column: a.column,
            function: a.function,
            window: a
                .window
                .map_or_else(|| "lifetime".to_owned(), format_duration),
            hop: a.hop.map(format_duration),
        }
    }
}

impl Aggregation {
    /// `function` of `column` over `window` (`None` = lifetime), default hop and name.
    pub fn new(column: impl Into<String>, function: AggFunction, window: Option<Duration>) -> Self {
        let column = column.into();
        let name = Self::default_name(&column, function, window);
        Self {
            name,
            column,
            function,
            window,
            hop: None,
        }
    }

    /// `{column}_{function}_{window}`, e.g. `amount_sum_7d`, `txn_count_lifetime`.
    pub fn default_name(column: &str, function: AggFunction, window: Option<Duration>) -> String {
        let w = window.map_or_else(|| "lifetime".to_owned(), format_duration);
        format!("{column}_{function}_{w}")
    }

    /// Sets the hop (it must divide the window).
    pub fn with_hop(mut self, hop: Duration) -> Self {
        self.hop = Some(hop);
        self
    }

    /// Sets the feature name.
    pub fn with_name(mut self, name: impl Into<String>) -> Self {
        self.name = name.into();
        self
    }

    /// The default hop for a window: 1 day for W ≥ 12 days, 1 hour for W ≥ 12
    /// hours, else 5 minutes; lifetime windows hop by 1 day.
    pub fn default_hop(window: Option<Duration>) -> Duration {
        const DAY: u64 = 86_400;
        match window {
            None => Duration::from_secs(DAY),
            Some(w) if w >= Duration::from_secs(12 * DAY) => Duration::from_secs(DAY),
            Some(w) if w >= Duration::from_secs(12 * 3_600) => Duration::from_secs(3_600),
            Some(_) => Duration::from_secs(300),
        }
    }

    /// The hop in force (declared or default).
    pub fn effective_hop(&self) -> Duration {
        self.hop.unwrap_or_else(|| Self::default_hop(self.window))
    }

    /// Checks this aggregation against its view's input column type
    /// (`None` = the column is not a feature of the view).
    ///
    /// # Errors
    /// [`Error::InvalidInput`] naming `view:name` and what is wrong: unknown
    /// column, non-numeric input of a numeric function, list input, window or
    /// hop ≤ 0, a hop that does not divide the window, `last_n` with n = 0 or
    /// above [`LAST_N_CAP`], sub-microsecond durations.
    pub fn validate(&self, view: &str, input: Option<&ValueType>) -> Result<()> {
        let me = format!("aggregation feature '{view}:{}'", self.name);
        let input = input.ok_or_else(|| {
            Error::invalid(format!(
                "{me}: column '{}' is not a feature of view '{view}'",
                self.column
            ))
        })?;
        if input.is_list() {
            return Err(Error::invalid(format!(
                "{me}: column '{}' is a list ({input}); aggregations take scalar columns",
                self.column
            )));
        }
        let numeric = matches!(
            input,
            ValueType::Int32 | ValueType::Int64 | ValueType::Float32 | ValueType::Float64
        );
        if self.function.needs_numeric() && !numeric {
            return Err(Error::invalid(format!(
                "{me}: {} needs a numeric column, '{}' is {input}",
                self.function, self.column
            )));
        }
        if let AggFunction::LastN(n) = self.function
            && (n == 0 || n > LAST_N_CAP)
        {
            return Err(Error::invalid(format!(
                "{me}: last_n needs 1 <= n <= {LAST_N_CAP}, got {n}"
            )));
        }
        let micros = |d: Duration| d.as_nanos().is_multiple_of(1_000) && d.as_micros() > 0;
        if let Some(w) = self.window
            && !micros(w)
        {
            return Err(Error::invalid(format!(
                "{me}: window must be > 0 and a whole number of microseconds, got {w:?}"
            )));
        }
        let hop = self.effective_hop();
        if !micros(hop) {
            return Err(Error::invalid(format!(
                "{me}: hop must be > 0 and a whole number of microseconds, got {hop:?}"
            )));
        }
        if let Some(w) = self.window
            && w.as_micros() % hop.as_micros() != 0
        {
            return Err(Error::invalid(format!(
                "{me}: hop {} does not divide window {}",
                format_duration(hop),
                format_duration(w)
            )));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_durations_and_functions_round_trip() {
        let d = Duration::from_secs(7 * 86_400);
        let a = Aggregation::new("amount", AggFunction::Sum, Some(d));
        assert_eq!(a.name, "amount_sum_7d");
        assert_eq!(
            Aggregation::new(
                "amount",
                AggFunction::LastN(3),
                Some(Duration::from_secs(86_400))
            )
            .name,
            "amount_last_n_3_1d"
        );
        assert_eq!(
            Aggregation::new("x", AggFunction::Count, None).name,
            "x_count_lifetime"
        );
        for s in ["30s", "5m", "1h", "7d", "90m", "250ms", "1500us"] {
            assert_eq!(format_duration(parse_duration(s).unwrap()), s);
        }
        for bad in ["", "7", "d", "-1h", "1w"] {
            assert!(parse_duration(bad).unwrap_err().to_string().contains(bad));
        }
        for f in [
            AggFunction::Count,
            AggFunction::Sum,
            AggFunction::Mean,
            AggFunction::Min,
            AggFunction::Max,
            AggFunction::VarPop,
            AggFunction::StddevPop,
            AggFunction::First,
            AggFunction::Last,
            AggFunction::LastN(7),
            AggFunction::ApproxCountDistinct,
        ] {
            assert_eq!(f.to_string().parse::<AggFunction>().unwrap(), f);
        }
        assert_eq!(
            "last_n(4)".parse::<AggFunction>().unwrap(),
            AggFunction::LastN(4)
        );
        assert!(
            "median"
                .parse::<AggFunction>()
                .unwrap_err()
                .to_string()
                .contains("median")
        );
        let json = serde_json::to_string(&a.clone().with_hop(Duration::from_secs(3_600))).unwrap();
        assert_eq!(
            json,
            r#"{"name":"amount_sum_7d","column":"amount","function":"sum","window":"7d","hop":"1h"}"#
        );
        let back: Aggregation =
            serde_json::from_str(r#"{"column":"amount","function":"sum","window":"7d"}"#).unwrap();
        assert_eq!(back, a);
    }

    #[test]
    fn default_hops_follow_design() {
        let h = |secs: u64| Aggregation::default_hop(Some(Duration::from_secs(secs))).as_secs();
        assert_eq!(h(3_600), 300);
        assert_eq!(h(12 * 3_600), 3_600);
        assert_eq!(h(7 * 86_400), 3_600);
        assert_eq!(h(12 * 86_400), 86_400);
        assert_eq!(Aggregation::default_hop(None).as_secs(), 86_400);
    }

    #[test]
    fn validation_names_the_feature() {
        let w = Some(Duration::from_secs(3_600));
        let check = |a: Aggregation, t: Option<ValueType>, needle: &str| {
            let e = a.validate("txn", t.as_ref()).unwrap_err().to_string();
            assert!(e.contains(needle) && e.contains("txn:"), "{e}");
        };
        check(
            Aggregation::new("nope", AggFunction::Sum, w),
            None,
            "not a feature",
        );
        check(
            Aggregation::new("m", AggFunction::Sum, w),
            Some(ValueType::String),
            "needs a numeric column",
        );
        check(
            Aggregation::new("a", AggFunction::Sum, Some(Duration::ZERO)),
            Some(ValueType::Int64),
            "window must be > 0",
        );
        check(
            Aggregation::new("a", AggFunction::Sum, w).with_hop(Duration::from_secs(7 * 60)),
            Some(ValueType::Int64),
            "does not divide",
        );
        check(
            Aggregation::new("a", AggFunction::LastN(0), w),
            Some(ValueType::Int64),
            "last_n needs",
        );
        check(
            Aggregation::new("a", AggFunction::LastN(LAST_N_CAP + 1), w),
            Some(ValueType::Int64),
            "last_n needs",
        );
        check(
            Aggregation::new("a", AggFunction::Last, w),
            Some(ValueType::list(ValueType::Float32)),
            "list",
        );
        Aggregation::new("m", AggFunction::ApproxCountDistinct, w)
            .validate("txn", Some(&ValueType::String))
            .unwrap();
    }
}
