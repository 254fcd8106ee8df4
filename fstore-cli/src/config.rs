//! `fstore.toml`: which registry, offline store and online store to use, each
//! with its adapter's own keys; environment variables override file values.

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use fstore_core::{
    DynOfflineStore, DynOnlineStore, DynRegistry, FeatureStore, FileRegistry, InMemoryOfflineStore,
    InMemoryOnlineStore, InMemoryRegistry,
};

use crate::CliError;

/// Where a value came from (for errors and `config show`).
#[derive(Debug, Clone)]
pub(crate) enum Source {
    /// `file:line`.
    File(PathBuf, usize),
    /// An environment variable.
    Env(String),
    /// Built-in default.
    Default,
}

impl fmt::Display for Source {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::File(p, l) => write!(f, "{}:{l}", p.display()),
            Self::Env(v) => write!(f, "env {v}"),
            Self::Default => f.write_str("default"),
        }
    }
}

/// One of `[registry]`, `[offline]`, `[online]`.
#[derive(Debug, Clone)]
pub(crate) struct Section {
    pub(crate) name: &'static str,
    pub(crate) backend: String,
    pub(crate) backend_source: Source,
    /// Adapter keys (without `backend`), with their source.
    pub(crate) keys: BTreeMap<String, (String, Source)>,
}

/// The resolved configuration.
#[derive(Debug, Clone)]
pub(crate) struct Config {
    /// The file read, if any.
    pub(crate) file: Option<PathBuf>,
    pub(crate) registry: Section,
    pub(crate) offline: Section,
    pub(crate) online: Section,
    /// `[serving] online_timeout`.
    pub(crate) online_timeout: Option<(Duration, Source)>,
}

const SECTIONS: [&str; 3] = ["registry", "offline", "online"];

fn backends(section: &str) -> &'static [&'static str] {
    match section {
        "registry" => &["file", "delta", "memory"],
        "offline" => &["delta", "memory"],
        _ => &["redis", "dynamo", "scylla", "memory"],
    }
}

fn default_backend(section: &str) -> (&'static str, &'static [(&'static str, &'static str)]) {
    match section {
        "registry" => ("file", &[("path", ".fstore/registry")]),
        "offline" => ("delta", &[("root", ".fstore/data")]),
        _ => ("memory", &[]),
    }
}

/// The environment prefix of a backend's own keys (`FSTORE_REDIS_URL`…).
fn env_prefix(backend: &str) -> Option<String> {
    match backend {
        "memory" => None,
        "file" => Some("FSTORE_FILE_REGISTRY_".into()),
        b => Some(format!("FSTORE_{}_", b.to_ascii_uppercase())),
    }
}

fn line_of(text: &str, offset: usize) -> usize {
    text[..offset.min(text.len())].matches('\n').count() + 1
}

/// Duration with a unit: `500ms`, `2s`, `5m`, `1h`, `7d`.
pub(crate) fn parse_duration(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    let split = s
        .find(|c: char| !c.is_ascii_digit() && c != '.')
        .ok_or_else(|| format!("duration '{s}' needs a unit (ms, s, m, h, d)"))?;
    let (n, unit) = s.split_at(split);
    let n: f64 = n
        .parse()
        .map_err(|_| format!("duration '{s}': '{n}' is not a number"))?;
    let secs = match unit.trim() {
        "ms" => n / 1000.0,
        "s" => n,
        "m" => n * 60.0,
        "h" => n * 3600.0,
        "d" => n * 86_400.0,
        u => {
            return Err(format!(
                "duration '{s}': unknown unit '{u}' (ms, s, m, h, d)"
            ));
        }
    };
    Duration::try_from_secs_f64(secs).map_err(|e| format!("duration '{s}': {e}"))
}

impl Config {
    /// Reads `path` (or, when `None`, `./fstore.toml` if it exists, else the
    /// embedded defaults), then applies environment overrides.
    pub(crate) fn load(path: Option<&Path>) -> Result<Self, CliError> {
        let (file, text) = match path {
            Some(p) => {
                let t = std::fs::read_to_string(p)
                    .map_err(|e| CliError::msg(format!("config file {}: {e}", p.display())))?;
                (Some(p.to_path_buf()), t)
            }
            None if Path::new("fstore.toml").exists() => {
                let p = PathBuf::from("fstore.toml");
                let t = std::fs::read_to_string(&p)
                    .map_err(|e| CliError::msg(format!("config file fstore.toml: {e}")))?;
                (Some(p), t)
            }
            None => (None, String::new()),
        };
        Self::parse(
            file,
            &text,
            |k| std::env::var(k).ok(),
            std::env::vars().collect(),
        )
    }

    fn parse(
        file: Option<PathBuf>,
        text: &str,
        env: impl Fn(&str) -> Option<String>,
        all_env: Vec<(String, String)>,
    ) -> Result<Self, CliError> {
        let fname = file
            .as_deref()
            .map_or_else(|| "<defaults>".into(), |p| p.display().to_string());
        let raw: BTreeMap<String, toml::Spanned<toml::Value>> =
            toml::from_str(text).map_err(|e| {
                let line = e.span().map_or(0, |s| line_of(text, s.start));
                CliError::msg(format!("{fname}:{line}: {}", e.message()))
            })?;
        let src = |span: std::ops::Range<usize>| match &file {
            Some(p) => Source::File(p.clone(), line_of(text, span.start)),
            None => Source::Default,
        };
        let mut sections: BTreeMap<&str, Section> = BTreeMap::new();
        let mut online_timeout = None;
        for (name, value) in &raw {
            let span = value.span();
            let here = src(span.clone());
            let toml::Value::Table(t) = value.get_ref() else {
                return Err(CliError::msg(format!(
                    "{here}: unknown key '{name}' in {fname} (expected sections [registry], [offline], [online], [serving])"
                )));
            };
            if name == "serving" {
                for (k, v) in t {
                    let line = find_key_line(text, span.start, k);
                    let at = Source::File(file.clone().unwrap_or_default(), line);
                    if k != "online_timeout" {
                        return Err(CliError::msg(format!(
                            "{at}: unknown key 'serving.{k}' in {fname} (known: online_timeout)"
                        )));
                    }
                    let s = v.as_str().ok_or_else(|| {
                        CliError::msg(format!(
                            "{at}: serving.online_timeout must be a string like \"500ms\""
                        ))
                    })?;
                    let d = parse_duration(s)
                        .map_err(|e| CliError::msg(format!("{at}: serving.online_timeout: {e}")))?;
                    online_timeout = Some((d, at));
                }
                continue;
            }
            let Some(sec) = SECTIONS.iter().find(|s| **s == name) else {
                return Err(CliError::msg(format!(
                    "{here}: unknown key '{name}' in {fname} (expected sections [registry], [offline], [online], [serving])"
                )));
            };
            let mut keys = BTreeMap::new();
            let mut backend = None;
            for (k, v) in t {
                let line = find_key_line(text, span.start, k);
                let at = Source::File(file.clone().unwrap_or_default(), line);
                let s = match v {
                    toml::Value::String(s) => s.clone(),
                    toml::Value::Integer(i) => i.to_string(),
                    toml::Value::Boolean(b) => b.to_string(),
                    toml::Value::Float(f) => f.to_string(),
                    _ => {
                        return Err(CliError::msg(format!(
                            "{at}: key '{sec}.{k}' in {fname} must be a string, number or boolean"
                        )));
                    }
                };
                if k == "backend" {
                    backend = Some((s, at));
                } else {
                    keys.insert(k.clone(), (s, at));
                }
            }
            let (backend, backend_source) = backend.ok_or_else(|| {
                CliError::msg(format!(
                    "{here}: section [{sec}] in {fname} has no 'backend' (one of {})",
                    backends(sec).join(", ")
                ))
            })?;
            sections.insert(
                sec,
                Section {
                    name: sec,
                    backend,
                    backend_source,
                    keys,
                },
            );
        }
        let mut out = Vec::new();
        for sec in SECTIONS {
            let mut s = sections.remove(sec).unwrap_or_else(|| {
                let (b, keys) = default_backend(sec);
                Section {
                    name: sec,
                    backend: b.into(),
                    backend_source: Source::Default,
                    keys: keys
                        .iter()
                        .map(|(k, v)| ((*k).to_owned(), ((*v).to_owned(), Source::Default)))
                        .collect(),
                }
            });
            let var = format!("FSTORE_{}_BACKEND", sec.to_ascii_uppercase());
            if let Some(b) = env(&var) {
                if b != s.backend {
                    s.keys.clear();
                }
                s.backend = b;
                s.backend_source = Source::Env(var);
            }
            if !backends(sec).contains(&s.backend.as_str()) || !compiled_in(&s.backend) {
                return Err(CliError::msg(format!(
                    "{}: unknown {sec} backend '{}' (this build supports: {})",
                    s.backend_source,
                    s.backend,
                    backends(sec)
                        .iter()
                        .filter(|b| compiled_in(b))
                        .copied()
                        .collect::<Vec<_>>()
                        .join(", ")
                )));
            }
            if let Some(prefix) = env_prefix(&s.backend) {
                for (k, v) in &all_env {
                    if let Some(key) = k.strip_prefix(&prefix)
                        && !key.is_empty()
                        && key != "BACKEND"
                    {
                        s.keys.insert(
                            key.to_ascii_lowercase(),
                            (v.clone(), Source::Env(k.clone())),
                        );
                    }
                }
            }
            check_keys(&s, &fname)?;
            out.push(s);
        }
        let online = out.pop().expect("three sections");
        let offline = out.pop().expect("three sections");
        let registry = out.pop().expect("three sections");
        Ok(Self {
            file,
            registry,
            offline,
            online,
            online_timeout,
        })
    }

    /// The registry, offline store and (when `with_online`) online store;
    /// without `with_online` the online store is in-memory (no connection).
    pub(crate) async fn store(&self, with_online: bool) -> Result<FeatureStore, CliError> {
        let mut b = FeatureStore::builder()
            .with_registry(build_registry(&self.registry)?)
            .with_offline(build_offline(&self.offline)?);
        if with_online {
            b = b.with_online(build_online(&self.online).await?);
        } else {
            b = b.with_online(Arc::new(InMemoryOnlineStore::new()));
        }
        if let Some((t, _)) = &self.online_timeout {
            b = b.with_online_timeout(*t);
        }
        b.build().map_err(CliError::from)
    }

    /// The configuration with secrets redacted, as TOML with sources in comments.
    pub(crate) fn show(&self) -> String {
        let mut out = String::new();
        out.push_str(&format!(
            "# config file: {}\n",
            self.file.as_deref().map_or_else(
                || "(none: embedded defaults)".into(),
                |p| p.display().to_string()
            )
        ));
        for s in [&self.registry, &self.offline, &self.online] {
            out.push_str(&format!("\n[{}]\n", s.name));
            out.push_str(&format!(
                "backend = {:?}  # {}\n",
                s.backend, s.backend_source
            ));
            for (k, (v, src)) in &s.keys {
                out.push_str(&format!("{k} = {:?}  # {src}\n", redact(k, v)));
            }
        }
        if let Some((t, src)) = &self.online_timeout {
            out.push_str(&format!(
                "\n[serving]\nonline_timeout = \"{}ms\"  # {src}\n",
                t.as_millis()
            ));
        }
        out
    }
}

fn compiled_in(backend: &str) -> bool {
    match backend {
        "delta" => cfg!(feature = "delta"),
        "redis" => cfg!(feature = "redis"),
        "dynamo" => cfg!(feature = "dynamo"),
        "scylla" => cfg!(feature = "scylla"),
        _ => true,
    }
}

/// The line of key `key` at or after byte `from` (the section's span start).
fn find_key_line(text: &str, from: usize, key: &str) -> usize {
    let start_line = line_of(text, from);
    for (i, l) in text.lines().enumerate().skip(start_line.saturating_sub(2)) {
        let t = l.trim_start();
        if let Some(rest) = t.strip_prefix(key).or_else(|| {
            t.strip_prefix('"')
                .and_then(|r| r.strip_prefix(key))
                .and_then(|r| r.strip_prefix('"'))
        }) && rest.trim_start().starts_with('=')
        {
            return i + 1;
        }
    }
    start_line
}

/// Secrets never printed: passwords, secret keys, tokens, and the password
/// part of URLs.
pub(crate) fn redact(key: &str, value: &str) -> String {
    let k = key.to_ascii_lowercase();
    if ["password", "secret", "token", "credential"]
        .iter()
        .any(|s| k.contains(s))
    {
        return "***".into();
    }
    redact_url(value)
}

fn redact_url(v: &str) -> String {
    v.split(',')
        .map(|u| match (u.find("://"), u.find('@')) {
            (Some(s), Some(at)) if at > s => {
                let userinfo = &u[s + 3..at];
                match userinfo.split_once(':') {
                    Some((user, _)) => format!("{}{user}:***{}", &u[..s + 3], &u[at..]),
                    None => u.to_owned(),
                }
            }
            _ => u.to_owned(),
        })
        .collect::<Vec<_>>()
        .join(",")
}

fn unknown_key(s: &Section, key: &str, src: &Source, fname: &str, known: &[&str]) -> CliError {
    let in_file = match src {
        Source::File(..) => format!(" in {fname}"),
        _ => String::new(),
    };
    CliError::msg(format!(
        "{src}: unknown key '{}.{key}'{in_file} for backend '{}' (known: {})",
        s.name,
        s.backend,
        known.join(", ")
    ))
}

/// Every key must be one the adapter knows (parsed by the adapter's own key type).
fn check_keys(s: &Section, fname: &str) -> Result<(), CliError> {
    for (k, (_, src)) in &s.keys {
        let ok = match s.backend.as_str() {
            "file" => k == "path",
            "memory" => false,
            #[cfg(feature = "delta")]
            "delta" => k.parse::<fstore_offline_delta::DeltaConfigKey>().is_ok(),
            #[cfg(feature = "redis")]
            "redis" => k.parse::<fstore_online_redis::RedisConfigKey>().is_ok(),
            #[cfg(feature = "dynamo")]
            "dynamo" => k.parse::<fstore_online_dynamo::DynamoConfigKey>().is_ok(),
            #[cfg(feature = "scylla")]
            "scylla" => k.parse::<fstore_online_scylla::ScyllaConfigKey>().is_ok(),
            _ => false,
        };
        if !ok {
            let known: &[&str] = match s.backend.as_str() {
                "file" => &["path"],
                "memory" => &["(none)"],
                _ => &["see the adapter's ConfigKey docs"],
            };
            return Err(unknown_key(s, k, src, fname, known));
        }
    }
    Ok(())
}

fn at(s: &Section) -> impl Fn(fstore_core::Error) -> CliError + '_ {
    move |e| {
        let src = s
            .keys
            .values()
            .map(|(_, src)| src.to_string())
            .next()
            .unwrap_or_else(|| s.backend_source.to_string());
        CliError::msg(format!("[{}] {} ({src}…): {e}", s.name, s.backend))
    }
}

#[cfg(feature = "delta")]
fn delta_builder(s: &Section) -> fstore_offline_delta::DeltaOfflineStoreBuilder {
    let mut b = fstore_offline_delta::DeltaOfflineStoreBuilder::new();
    for (k, (v, _)) in &s.keys {
        b = b.with_config_str(k, v.clone());
    }
    b
}

fn build_registry(s: &Section) -> Result<Arc<DynRegistry>, CliError> {
    match s.backend.as_str() {
        "file" => {
            let path = s
                .keys
                .get("path")
                .map_or(".fstore/registry", |(v, _)| v.as_str());
            Ok(Arc::new(FileRegistry::open(path).map_err(at(s))?))
        }
        #[cfg(feature = "delta")]
        "delta" => Ok(Arc::new(delta_builder(s).build_registry().map_err(at(s))?)),
        _ => Ok(Arc::new(InMemoryRegistry::new())),
    }
}

fn build_offline(s: &Section) -> Result<Arc<DynOfflineStore>, CliError> {
    match s.backend.as_str() {
        #[cfg(feature = "delta")]
        "delta" => Ok(Arc::new(delta_builder(s).build().map_err(at(s))?)),
        _ => Ok(Arc::new(InMemoryOfflineStore::new())),
    }
}

async fn build_online(s: &Section) -> Result<Arc<DynOnlineStore>, CliError> {
    match s.backend.as_str() {
        #[cfg(feature = "redis")]
        "redis" => {
            let mut b = fstore_online_redis::RedisOnlineStoreBuilder::new();
            for (k, (v, _)) in &s.keys {
                b = b.with_config_str(k, v.clone());
            }
            Ok(Arc::new(b.build().map_err(at(s))?))
        }
        #[cfg(feature = "dynamo")]
        "dynamo" => {
            let mut b = fstore_online_dynamo::DynamoOnlineStoreBuilder::new();
            for (k, (v, _)) in &s.keys {
                let key = k
                    .parse::<fstore_online_dynamo::DynamoConfigKey>()
                    .map_err(at(s))?;
                b = b.with_config(key, v.clone());
            }
            Ok(Arc::new(b.build().map_err(at(s))?))
        }
        #[cfg(feature = "scylla")]
        "scylla" => {
            let mut b = fstore_online_scylla::ScyllaOnlineStoreBuilder::new();
            for (k, (v, _)) in &s.keys {
                b = b.with_config_str(k, v.clone());
            }
            Ok(Arc::new(b.connect().await.map_err(at(s))?))
        }
        _ => Ok(Arc::new(InMemoryOnlineStore::new())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str, env: &[(&str, &str)]) -> Result<Config, CliError> {
        let env: Vec<(String, String)> = env
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        let e2 = env.clone();
        Config::parse(
            Some(PathBuf::from("fstore.toml")),
            text,
            move |k| e2.iter().find(|(n, _)| n == k).map(|(_, v)| v.clone()),
            env,
        )
    }

    #[test]
    fn unknown_key_names_key_file_and_line() {
        let e = parse(
            "[registry]\nbackend = \"file\"\npath = \"r\"\n\n[online]\nbackend = \"redis\"\nurl = \"redis://127.0.0.1:1\"\nurll = \"x\"\n",
            &[],
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("fstore.toml:8"), "{e}");
        assert!(e.contains("'online.urll'"), "{e}");
    }

    #[test]
    fn unknown_backend_and_section_are_errors() {
        let e = parse("[online]\nbackend = \"mongo\"\n", &[])
            .unwrap_err()
            .to_string();
        assert!(e.contains("fstore.toml:2") && e.contains("'mongo'"), "{e}");
        let e = parse("[onlin]\nbackend = \"redis\"\n", &[])
            .unwrap_err()
            .to_string();
        assert!(e.contains("'onlin'") && e.contains("fstore.toml:1"), "{e}");
    }

    #[test]
    fn env_overrides_file() {
        let c = parse(
            "[online]\nbackend = \"redis\"\nurl = \"redis://file:1\"\n",
            &[("FSTORE_REDIS_URL", "redis://env:2")],
        )
        .unwrap();
        let (v, src) = &c.online.keys["url"];
        assert_eq!(v, "redis://env:2");
        assert!(matches!(src, Source::Env(n) if n == "FSTORE_REDIS_URL"));
        let e = parse(
            "[online]\nbackend = \"redis\"\n",
            &[("FSTORE_REDIS_NOPE", "1")],
        )
        .unwrap_err()
        .to_string();
        assert!(
            e.contains("FSTORE_REDIS_NOPE") && e.contains("online.nope"),
            "{e}"
        );
    }

    #[test]
    fn show_redacts_secrets() {
        let c = parse(
            "[online]\nbackend = \"redis\"\nurl = \"redis://u:hunter2@h:1\"\npassword = \"hunter2\"\n",
            &[],
        )
        .unwrap();
        let s = c.show();
        assert!(!s.contains("hunter2"), "{s}");
        assert!(s.contains("redis://u:***@h:1"), "{s}");
    }

    #[test]
    fn durations_need_units() {
        assert_eq!(parse_duration("500ms").unwrap(), Duration::from_millis(500));
        assert_eq!(parse_duration("2h").unwrap(), Duration::from_secs(7200));
        assert!(parse_duration("5").is_err());
        assert!(parse_duration("5y").is_err());
    }
}
