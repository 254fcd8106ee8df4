//! One configuration language for every adapter (the `object_store` pattern).
//!
//! An adapter declares its keys as an enum implementing [`ConfigKey`] (name,
//! aliases, which keys are secret) and keeps the raw strings in a
//! [`ConfigValues`]. Everything else is shared, and so is the meaning of every
//! value:
//!
//! | kind     | accepted                                                       | refused                  |
//! |----------|----------------------------------------------------------------|--------------------------|
//! | duration | a number **with a unit**: `500ms`, `2s`, `1.5s`, `10m`, `1h`, `1d` (units `ns us ms s m h d`) | a bare number (`500`): the unit would be a guess |
//! | boolean  | `true false 1 0 yes no on off` (any case)                      | anything else            |
//! | size     | bytes, optionally with a unit: `4096`, `64KiB`, `256MiB`, `1GiB`, `100MB` (`B kB KB MB GB TB KiB MiB GiB TiB`) | negative, fractional bytes |
//! | number   | a non-negative decimal integer                                 | anything else            |
//!
//! A value that does not parse is an [`Error::InvalidInput`] naming the
//! backend, the key, its environment variable and the accepted forms. A key
//! name that is not known is an [`Error::UnknownConfigKey`] (reported by the
//! adapter's `build`). Secret values (passwords, keys, tokens) print as
//! [`REDACTED`] in `Debug` output and error messages.
//!
//! Keys parse case-insensitively from their name (`command_timeout`), an alias,
//! or their environment variable name (`FSTORE_REDIS_COMMAND_TIMEOUT`):
//! [`ConfigValues::from_env`] reads every `FSTORE_<PREFIX>_*` variable and
//! warns (a `tracing` warning) about the ones that name no key.
//!
//! ```
//! use std::time::Duration;
//! use fstore_core::config::{ConfigKey, ConfigValues};
//!
//! #[derive(Debug, Clone, Copy, PartialEq, Eq)]
//! enum MyKey { Url, Timeout, Password }
//!
//! impl ConfigKey for MyKey {
//!     const BACKEND: &'static str = "my";
//!     const ENV_PREFIX: &'static str = "MY";
//!     const ALL: &'static [Self] = &[Self::Url, Self::Timeout, Self::Password];
//!     fn name(self) -> &'static str {
//!         match self { Self::Url => "url", Self::Timeout => "timeout", Self::Password => "password" }
//!     }
//!     fn is_secret(self) -> bool { self == Self::Password }
//! }
//!
//! let mut c = ConfigValues::<MyKey>::new();
//! c.set_str("FSTORE_MY_TIMEOUT", "250ms");
//! c.set(MyKey::Password, "hunter2");
//! assert_eq!(c.duration(MyKey::Timeout, Duration::from_secs(1))?, Duration::from_millis(250));
//! assert!(!format!("{c:?}").contains("hunter2"));
//! c.set(MyKey::Timeout, "250");
//! let err = c.duration(MyKey::Timeout, Duration::ZERO).unwrap_err().to_string();
//! assert!(err.contains("FSTORE_MY_TIMEOUT") && err.contains("500ms"), "{err}");
//! # Ok::<(), fstore_core::Error>(())
//! ```

use std::fmt;
use std::str::FromStr;
use std::time::Duration;

use crate::error::{Error, Result};

/// The one marker that replaces a secret value wherever it would be printed.
pub const REDACTED: &str = "<redacted>";

/// The forms [`parse_duration`] accepts, quoted in its errors.
pub const DURATION_FORMS: &str = "a number with a unit: 500ms, 2s, 1.5s, 10m, 1h, 1d (units: ns, us, ms, s, m, h, d); a bare number is refused";
/// The forms [`parse_bool`] accepts, quoted in its errors.
pub const BOOL_FORMS: &str = "true/false, 1/0, yes/no or on/off";
/// The forms [`parse_size`] accepts, quoted in its errors.
pub const SIZE_FORMS: &str = "bytes, optionally with a unit: 4096, 64KiB, 256MiB, 1GiB, 100MB (units: B, kB, MB, GB, TB, KiB, MiB, GiB, TiB)";

/// A configuration key of one adapter: an enum listing every key.
///
/// An adapter implements this (name, aliases, secrets) and gets parsing from
/// names and environment variables, typed values and redaction from
/// [`ConfigValues`]. See the [module docs](self).
pub trait ConfigKey: Copy + Eq + fmt::Debug + Send + Sync + 'static {
    /// Backend id used in errors (`"redis"`); the same id as the adapter's
    /// `backend()`.
    const BACKEND: &'static str;
    /// The upper-case adapter part of the environment variable names: `REDIS`
    /// for `FSTORE_REDIS_*`.
    const ENV_PREFIX: &'static str;
    /// Every key.
    const ALL: &'static [Self];

    /// The canonical name (`command_timeout`), lower case.
    fn name(self) -> &'static str;

    /// Other accepted names, lower case (default: none).
    fn aliases(self) -> &'static [&'static str] {
        &[]
    }

    /// True when the value must never be printed (default: false).
    fn is_secret(self) -> bool {
        false
    }

    /// How a value of this key is printed (`Debug`, error messages): the value
    /// itself, or [`REDACTED`] for a secret key. Override to redact part of a
    /// value (the password in a URL), using the same marker.
    fn display_value(self, value: &str) -> String {
        if self.is_secret() {
            REDACTED.to_owned()
        } else {
            value.to_owned()
        }
    }

    /// The environment variable [`ConfigValues::from_env`] reads:
    /// `FSTORE_<ENV_PREFIX>_<NAME>`.
    fn env_var(self) -> String {
        format!(
            "FSTORE_{}_{}",
            Self::ENV_PREFIX,
            self.name().to_ascii_uppercase()
        )
    }
}

/// Parses a key from its name, an alias or its environment variable name
/// (any case). Adapters call this from their `FromStr` impl.
///
/// # Errors
/// [`Error::UnknownConfigKey`] with the name as given.
pub fn parse_key<K: ConfigKey>(s: &str) -> Result<K> {
    let lower = s.trim().to_ascii_lowercase();
    let env_prefix = format!("fstore_{}_", K::ENV_PREFIX.to_ascii_lowercase());
    let name = lower.strip_prefix(&env_prefix).unwrap_or(&lower);
    K::ALL
        .iter()
        .copied()
        .find(|k| k.name() == name || k.aliases().contains(&name))
        .ok_or_else(|| Error::UnknownConfigKey {
            backend: K::BACKEND,
            key: s.to_owned(),
        })
}

/// Parses a duration: a non-negative number (integer or decimal) followed by a
/// unit, `ns`, `us`, `ms`, `s`, `m`, `h` or `d` (`500ms`, `1.5s`, `1d`).
/// A bare number is refused: it would mean milliseconds to one reader and
/// seconds to another.
///
/// # Errors
/// A message listing the accepted forms ([`DURATION_FORMS`]).
pub fn parse_duration(s: &str) -> std::result::Result<Duration, String> {
    let bad = || format!("'{s}' is not a duration; expected {DURATION_FORMS}");
    let t = s.trim();
    let split = t
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .ok_or_else(bad)?;
    let (num, unit) = t.split_at(split);
    let unit_nanos: u128 = match unit.trim() {
        "ns" => 1,
        "us" | "µs" => 1_000,
        "ms" => 1_000_000,
        "s" => 1_000_000_000,
        "m" => 60_000_000_000,
        "h" => 3_600_000_000_000,
        "d" => 86_400_000_000_000,
        _ => return Err(bad()),
    };
    let (int, frac) = num.split_once('.').unwrap_or((num, ""));
    if int.is_empty() && frac.is_empty() || !frac.bytes().all(|b| b.is_ascii_digit()) {
        return Err(bad());
    }
    let int: u128 = if int.is_empty() {
        0
    } else {
        int.parse().map_err(|_| bad())?
    };
    let mut nanos = int.checked_mul(unit_nanos).ok_or_else(bad)?;
    // The fraction, exactly up to the nanosecond (digits beyond are dropped).
    let mut scale = unit_nanos;
    for d in frac.bytes() {
        scale /= 10;
        nanos += u128::from(d - b'0') * scale;
    }
    let secs = u64::try_from(nanos / 1_000_000_000).map_err(|_| bad())?;
    Ok(Duration::new(secs, (nanos % 1_000_000_000) as u32))
}

/// Formats a duration so that [`parse_duration`] gives it back exactly, in the
/// largest unit that divides it (`2s`, `1500us`, `1h`).
pub fn format_duration(d: Duration) -> String {
    let nanos = d.as_nanos();
    for (unit, n) in [
        ("d", 86_400_000_000_000u128),
        ("h", 3_600_000_000_000),
        ("m", 60_000_000_000),
        ("s", 1_000_000_000),
        ("ms", 1_000_000),
        ("us", 1_000),
    ] {
        if nanos != 0 && nanos.is_multiple_of(n) {
            return format!("{}{unit}", nanos / n);
        }
    }
    if nanos == 0 {
        "0s".to_owned()
    } else {
        format!("{nanos}ns")
    }
}

/// Parses a boolean: `true false 1 0 yes no on off`, any case.
///
/// # Errors
/// A message listing the accepted forms ([`BOOL_FORMS`]).
pub fn parse_bool(s: &str) -> std::result::Result<bool, String> {
    match s.trim().to_ascii_lowercase().as_str() {
        "true" | "1" | "yes" | "on" => Ok(true),
        "false" | "0" | "no" | "off" => Ok(false),
        _ => Err(format!("'{s}' is not a boolean; expected {BOOL_FORMS}")),
    }
}

/// Parses a size in bytes: a non-negative integer, optionally followed by a
/// unit (`B`, decimal `kB MB GB TB`, binary `KiB MiB GiB TiB`; any case).
///
/// # Errors
/// A message listing the accepted forms ([`SIZE_FORMS`]).
pub fn parse_size(s: &str) -> std::result::Result<u64, String> {
    let bad = || format!("'{s}' is not a size; expected {SIZE_FORMS}");
    let t = s.trim();
    let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let n: u64 = num.parse().map_err(|_| bad())?;
    let mult: u64 = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "kb" => 1_000,
        "mb" => 1_000_000,
        "gb" => 1_000_000_000,
        "tb" => 1_000_000_000_000,
        "kib" => 1 << 10,
        "mib" => 1 << 20,
        "gib" => 1 << 30,
        "tib" => 1 << 40,
        _ => return Err(bad()),
    };
    n.checked_mul(mult).ok_or_else(bad)
}

/// The raw string values of one adapter's configuration, as set by name, by
/// key or from the environment; typed and validated by the getters (called
/// from the adapter's `build`).
#[derive(Clone)]
pub struct ConfigValues<K: ConfigKey> {
    values: Vec<(K, String)>,
    unknown: Vec<String>,
}

impl<K: ConfigKey> Default for ConfigValues<K> {
    fn default() -> Self {
        Self {
            values: Vec::new(),
            unknown: Vec::new(),
        }
    }
}

impl<K: ConfigKey> fmt::Debug for ConfigValues<K> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut m = f.debug_map();
        for (k, v) in &self.values {
            m.entry(&k.name(), &k.display_value(v));
        }
        for u in &self.unknown {
            m.entry(u, &"<unknown key>");
        }
        m.finish()
    }
}

impl<K: ConfigKey> ConfigValues<K> {
    /// No value set.
    pub fn new() -> Self {
        Self::default()
    }

    /// Every `FSTORE_<PREFIX>_*` environment variable that names a key; the
    /// others are ignored with a `tracing` warning (a typo would otherwise
    /// silently leave a default in place).
    pub fn from_env() -> Self {
        Self::from_vars(std::env::vars())
    }

    /// As [`from_env`](Self::from_env), from the given `(name, value)` pairs.
    pub fn from_vars(vars: impl IntoIterator<Item = (String, String)>) -> Self {
        let prefix = format!("FSTORE_{}_", K::ENV_PREFIX);
        let mut c = Self::new();
        for (name, value) in vars {
            if !name.starts_with(&prefix) {
                continue;
            }
            match parse_key::<K>(&name) {
                Ok(k) => c.set(k, value),
                Err(_) => tracing::warn!(
                    backend = K::BACKEND,
                    variable = %name,
                    "environment variable names no configuration key; ignored"
                ),
            }
        }
        c
    }

    /// Sets one key (replacing an earlier value).
    pub fn set(&mut self, key: K, value: impl Into<String>) {
        self.values.retain(|(k, _)| *k != key);
        self.values.push((key, value.into()));
    }

    /// Sets a key given by name; an unknown name is kept and reported by
    /// [`check_unknown`](Self::check_unknown).
    pub fn set_str(&mut self, key: &str, value: impl Into<String>) {
        match parse_key::<K>(key) {
            Ok(k) => self.set(k, value),
            Err(_) => self.unknown.push(key.to_owned()),
        }
    }

    /// The raw value of a key, trimmed; `None` when unset or empty.
    pub fn get(&self, key: K) -> Option<&str> {
        self.values
            .iter()
            .find(|(k, _)| *k == key)
            .map(|(_, v)| v.trim())
            .filter(|v| !v.is_empty())
    }

    /// The first key set by a name no key has.
    ///
    /// # Errors
    /// [`Error::UnknownConfigKey`].
    pub fn check_unknown(&self) -> Result<()> {
        match self.unknown.first() {
            None => Ok(()),
            Some(k) => Err(Error::UnknownConfigKey {
                backend: K::BACKEND,
                key: k.clone(),
            }),
        }
    }

    /// An [`Error::InvalidInput`] about `key`'s value (redacted when secret):
    /// `"<backend>: config key '<key>' (<ENV>) = '<value>': <what>"`.
    pub fn invalid(&self, key: K, what: impl fmt::Display) -> Error {
        let value = key.display_value(self.get(key).unwrap_or(""));
        Error::invalid(format!(
            "{}: config key '{}' ({}) = '{value}': {what}",
            K::BACKEND,
            key.name(),
            key.env_var()
        ))
    }

    /// An [`Error::InvalidInput`] for a required key that is not set.
    pub fn missing(&self, key: K) -> Error {
        Error::invalid(format!(
            "{}: config key '{}' ({}) is required",
            K::BACKEND,
            key.name(),
            key.env_var()
        ))
    }

    /// The value of a required key.
    ///
    /// # Errors
    /// [`ConfigValues::missing`] when unset or empty.
    pub fn required(&self, key: K) -> Result<&str> {
        self.get(key).ok_or_else(|| self.missing(key))
    }

    fn typed<T>(
        &self,
        key: K,
        parse: impl FnOnce(&str) -> std::result::Result<T, String>,
    ) -> Result<Option<T>> {
        match self.get(key) {
            None => Ok(None),
            Some(v) => parse(v).map(Some).map_err(|e| {
                // The parser's message quotes the value: not when it is redacted.
                if key.display_value(v) != v {
                    self.invalid(key, "malformed value")
                } else {
                    self.invalid(key, e)
                }
            }),
        }
    }

    /// A duration ([`parse_duration`]), or `default` when unset.
    ///
    /// # Errors
    /// [`Error::InvalidInput`] naming the key and the accepted forms.
    pub fn duration(&self, key: K, default: Duration) -> Result<Duration> {
        Ok(self.duration_opt(key)?.unwrap_or(default))
    }

    /// A duration ([`parse_duration`]), `None` when unset.
    ///
    /// # Errors
    /// As [`duration`](Self::duration).
    pub fn duration_opt(&self, key: K) -> Result<Option<Duration>> {
        self.typed(key, parse_duration)
    }

    /// A boolean ([`parse_bool`]), or `default` when unset.
    ///
    /// # Errors
    /// [`Error::InvalidInput`] naming the key and the accepted forms.
    pub fn bool(&self, key: K, default: bool) -> Result<bool> {
        Ok(self.typed(key, parse_bool)?.unwrap_or(default))
    }

    /// A size in bytes ([`parse_size`]), or `default` when unset.
    ///
    /// # Errors
    /// [`Error::InvalidInput`] naming the key and the accepted forms.
    pub fn size(&self, key: K, default: u64) -> Result<u64> {
        Ok(self.typed(key, parse_size)?.unwrap_or(default))
    }

    /// A non-negative integer, or `default` when unset.
    ///
    /// # Errors
    /// [`Error::InvalidInput`] naming the key.
    pub fn number<T: FromStr>(&self, key: K, default: T) -> Result<T> {
        Ok(self
            .typed(key, |v| {
                v.parse::<T>()
                    .map_err(|_| format!("'{v}' is not a non-negative integer"))
            })?
            .unwrap_or(default))
    }

    /// An integer in `min..=max`, or `default` when unset (a count: pool
    /// size, concurrency, batch size).
    ///
    /// # Errors
    /// [`Error::InvalidInput`] naming the key and the range.
    pub fn count(&self, key: K, default: usize, min: usize, max: usize) -> Result<usize> {
        let n = self.number(key, default)?;
        if (min..=max).contains(&n) {
            Ok(n)
        } else {
            Err(self.invalid(key, format!("must be an integer in {min}..={max}")))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, Clone, Copy, PartialEq, Eq)]
    enum K {
        Timeout,
        Flag,
        Size,
        Secret,
    }

    impl ConfigKey for K {
        const BACKEND: &'static str = "test";
        const ENV_PREFIX: &'static str = "TEST";
        const ALL: &'static [Self] = &[Self::Timeout, Self::Flag, Self::Size, Self::Secret];
        fn name(self) -> &'static str {
            match self {
                Self::Timeout => "timeout",
                Self::Flag => "flag",
                Self::Size => "size",
                Self::Secret => "secret",
            }
        }
        fn aliases(self) -> &'static [&'static str] {
            match self {
                Self::Timeout => &["deadline"],
                _ => &[],
            }
        }
        fn is_secret(self) -> bool {
            self == Self::Secret
        }
    }

    #[test]
    fn durations_require_a_unit() {
        let ok = [
            ("500ms", Duration::from_millis(500)),
            ("2s", Duration::from_secs(2)),
            (" 2 s ", Duration::from_secs(2)),
            ("1.5s", Duration::from_millis(1500)),
            (".25s", Duration::from_millis(250)),
            ("10m", Duration::from_secs(600)),
            ("1h", Duration::from_secs(3600)),
            ("1d", Duration::from_secs(86_400)),
            ("1500us", Duration::from_micros(1500)),
            ("7ns", Duration::from_nanos(7)),
            ("0s", Duration::ZERO),
        ];
        for (s, d) in ok {
            assert_eq!(parse_duration(s), Ok(d), "{s}");
        }
        for s in [
            "500", "0", "", "s", "2 weeks", "-1s", "1.2.3s", "1e3ms", "2S",
        ] {
            let e = parse_duration(s).unwrap_err();
            assert!(e.contains("500ms") && e.contains("bare number"), "{s}: {e}");
        }
        assert!(parse_duration("99999999999999999999d").is_err());
    }

    #[test]
    fn format_duration_round_trips_exactly() {
        for d in [
            Duration::ZERO,
            Duration::from_nanos(1),
            Duration::from_micros(1500),
            Duration::from_millis(250),
            Duration::from_secs(2),
            Duration::from_secs(3600),
            Duration::from_secs(86_400 * 3),
            Duration::new(1, 1),
        ] {
            assert_eq!(parse_duration(&format_duration(d)), Ok(d), "{d:?}");
        }
        assert_eq!(format_duration(Duration::from_millis(1500)), "1500ms");
        assert_eq!(format_duration(Duration::from_secs(7200)), "2h");
    }

    #[test]
    fn booleans_and_sizes() {
        for s in ["true", "TRUE", "1", "yes", "on"] {
            assert_eq!(parse_bool(s), Ok(true), "{s}");
        }
        for s in ["false", "0", "No", "off"] {
            assert_eq!(parse_bool(s), Ok(false), "{s}");
        }
        assert!(parse_bool("maybe").unwrap_err().contains("yes/no"));
        assert_eq!(parse_size("4096"), Ok(4096));
        assert_eq!(parse_size("256MiB"), Ok(256 << 20));
        assert_eq!(parse_size("1 GiB"), Ok(1 << 30));
        assert_eq!(parse_size("100MB"), Ok(100_000_000));
        assert_eq!(parse_size("64kb"), Ok(64_000));
        for s in ["-1", "1.5MiB", "10 parsecs", "", "99999999999TiB"] {
            assert!(parse_size(s).unwrap_err().contains("256MiB"), "{s}");
        }
    }

    #[test]
    fn keys_parse_from_names_aliases_and_env_names() {
        for &k in K::ALL {
            assert_eq!(parse_key::<K>(k.name()).unwrap(), k);
            assert_eq!(parse_key::<K>(&k.env_var()).unwrap(), k);
        }
        assert_eq!(parse_key::<K>("DEADLINE").unwrap(), K::Timeout);
        assert_eq!(K::Timeout.env_var(), "FSTORE_TEST_TIMEOUT");
        assert!(matches!(
            parse_key::<K>("colour"),
            Err(Error::UnknownConfigKey { backend: "test", key }) if key == "colour"
        ));
    }

    #[test]
    fn values_are_typed_named_and_redacted() {
        let mut c = ConfigValues::<K>::new();
        c.set_str("timeout", "500");
        let e = c.duration(K::Timeout, Duration::ZERO).unwrap_err();
        let msg = e.to_string();
        assert!(matches!(e, Error::InvalidInput(_)));
        assert!(
            msg.contains("'timeout'") && msg.contains("FSTORE_TEST_TIMEOUT") && msg.contains("1h"),
            "{msg}"
        );
        c.set(K::Timeout, "2s");
        assert_eq!(
            c.duration(K::Timeout, Duration::ZERO).unwrap(),
            Duration::from_secs(2)
        );
        assert!(c.bool(K::Flag, true).unwrap());
        c.set(K::Size, "256MiB");
        assert_eq!(c.size(K::Size, 0).unwrap(), 256 << 20);
        assert!(c.count(K::Size, 1, 1, 10).is_err());

        c.set(K::Secret, "hunter2");
        let debug = format!("{c:?}");
        assert!(
            !debug.contains("hunter2") && debug.contains(REDACTED),
            "{debug}"
        );
        let e = c.bool(K::Secret, false).unwrap_err().to_string();
        assert!(!e.contains("hunter2") && e.contains(REDACTED), "{e}");

        assert!(c.check_unknown().is_ok());
        c.set_str("colour", "blue");
        assert!(matches!(
            c.check_unknown(),
            Err(Error::UnknownConfigKey { key, .. }) if key == "colour"
        ));
    }

    #[test]
    fn from_vars_reads_only_the_prefix() {
        let c = ConfigValues::<K>::from_vars([
            ("FSTORE_TEST_TIMEOUT".to_owned(), "3s".to_owned()),
            ("FSTORE_TEST_TYPO".to_owned(), "1".to_owned()),
            ("FSTORE_OTHER_FLAG".to_owned(), "true".to_owned()),
        ]);
        assert_eq!(c.get(K::Timeout), Some("3s"));
        assert_eq!(c.get(K::Flag), None);
        // An unknown variable is a warning, not an error at build time.
        assert!(c.check_unknown().is_ok());
    }
}
