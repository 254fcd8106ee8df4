//! Definition files: the registry's own JSON form (`Definitions`), or the same
//! schema in TOML. Several files (or directories of `*.json` / `*.toml`) merge
//! into one set; every object remembers where it was defined so errors name
//! file, line and key.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use fstore_core::{Definitions, Entity, FeatureService, FeatureView, OnDemandView};
use serde::de::DeserializeOwned;
use serde_json::Value;

use crate::CliError;

/// The four sections of a definition file.
const SECTIONS: [&str; 4] = [
    "entities",
    "feature_views",
    "on_demand_views",
    "feature_services",
];

/// Merged definitions plus the origin (`file:line`) of every object.
#[derive(Debug, Default)]
pub(crate) struct Loaded {
    pub(crate) defs: Definitions,
    /// (section, name) → `file:line`.
    pub(crate) origin: BTreeMap<(String, String), String>,
}

impl Loaded {
    /// Appends the origin of the first object named in `msg` (`'name'`).
    pub(crate) fn locate(&self, msg: &str) -> Option<&str> {
        self.origin
            .iter()
            .filter(|((_, name), _)| msg.contains(&format!("'{name}'")))
            .max_by_key(|((_, name), _)| name.len())
            .map(|(_, o)| o.as_str())
    }
}

fn files_of(p: &Path, out: &mut Vec<PathBuf>) -> Result<(), CliError> {
    if p.is_dir() {
        let mut entries: Vec<PathBuf> = std::fs::read_dir(p)
            .map_err(|e| CliError::msg(format!("{}: {e}", p.display())))?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .collect();
        entries.sort();
        for e in entries {
            if e.is_dir() {
                files_of(&e, out)?;
            } else if matches!(
                e.extension().and_then(|x| x.to_str()),
                Some("json" | "toml")
            ) {
                out.push(e);
            }
        }
        Ok(())
    } else if p.exists() {
        out.push(p.to_path_buf());
        Ok(())
    } else {
        Err(CliError::msg(format!(
            "{}: no such definition file or directory",
            p.display()
        )))
    }
}

/// Loads and merges every file under `paths`.
pub(crate) fn load(paths: &[PathBuf]) -> Result<Loaded, CliError> {
    let mut files = Vec::new();
    for p in paths {
        files_of(p, &mut files)?;
    }
    if files.is_empty() {
        return Err(CliError::msg(
            "no definition files (*.json, *.toml) found".to_string(),
        ));
    }
    let mut out = Loaded::default();
    for f in files {
        let text = std::fs::read_to_string(&f)
            .map_err(|e| CliError::msg(format!("{}: {e}", f.display())))?;
        load_text(&f, &text, &mut out)?;
    }
    Ok(out)
}

fn toml_to_json(v: toml::Value) -> Value {
    match v {
        toml::Value::String(s) => Value::String(s),
        toml::Value::Integer(i) => Value::from(i),
        toml::Value::Float(f) => Value::from(f),
        toml::Value::Boolean(b) => Value::Bool(b),
        toml::Value::Datetime(d) => Value::String(d.to_string()),
        toml::Value::Array(a) => Value::Array(a.into_iter().map(toml_to_json).collect()),
        toml::Value::Table(t) => {
            Value::Object(t.into_iter().map(|(k, v)| (k, toml_to_json(v))).collect())
        }
    }
}

/// True when `line` holds `key` as a key (TOML `key =`, `[a.key]`,
/// `{ key = …`; JSON `"key":`).
fn key_on_line(line: &str, key: &str) -> bool {
    let quoted = format!("\"{key}\"");
    if let Some(i) = line.find(&quoted) {
        let rest = line[i + quoted.len()..].trim_start();
        if rest.starts_with(':')
            || rest.starts_with('=')
            || rest.starts_with(']')
            || rest.starts_with('.')
        {
            return true;
        }
    }
    let mut from = 0;
    while let Some(i) = line[from..].find(key) {
        let s = from + i;
        let before = line[..s].chars().next_back();
        let after = line[s + key.len()..].trim_start();
        let boundary = before.is_none_or(|c| matches!(c, ' ' | '\t' | '[' | '.' | '{' | ','));
        if boundary && (after.starts_with('=') || after.starts_with(']') || after.starts_with('.'))
        {
            return true;
        }
        from = s + key.len();
    }
    false
}

/// The line of the key path `path` (segments in order; each found at or
/// after the previous one's line). Falls back to the deepest segment found.
pub(crate) fn locate_path(text: &str, path: &[&str]) -> usize {
    let lines: Vec<&str> = text.lines().collect();
    let mut at = 0;
    for seg in path {
        if let Some(i) = (at..lines.len()).find(|&i| key_on_line(lines[i], seg)) {
            at = i;
        }
    }
    at + 1
}

fn section_object<T: DeserializeOwned>(
    file: &Path,
    text: &str,
    section: &str,
    name: &str,
    v: Value,
) -> Result<T, CliError> {
    let mut ignored = Vec::new();
    let res: Result<T, _> = serde_ignored::deserialize(v, |p| ignored.push(p.to_string()));
    match res {
        Ok(t) => {
            if let Some(k) = ignored.first() {
                let segs: Vec<&str> = k.split(['.', '?']).filter(|s| !s.is_empty()).collect();
                let mut path = vec![section, name];
                path.extend(segs.iter().filter(|s| s.parse::<usize>().is_err()));
                let line = locate_path(text, &path);
                return Err(CliError::msg(format!(
                    "{}:{line}: unknown key '{section}.{name}.{k}'",
                    file.display()
                )));
            }
            Ok(t)
        }
        Err(e) => {
            let line = locate_path(text, &[section, name]);
            Err(CliError::msg(format!(
                "{}:{line}: {section}.{name}: {e}",
                file.display()
            )))
        }
    }
}

fn load_text(file: &Path, text: &str, out: &mut Loaded) -> Result<(), CliError> {
    let ext = file.extension().and_then(|e| e.to_str()).unwrap_or("");
    let root: Value = match ext {
        "toml" => {
            let v: toml::Value = toml::from_str(text).map_err(|e| {
                let line = e.span().map_or(0, |s| {
                    text[..s.start.min(text.len())].matches('\n').count() + 1
                });
                CliError::msg(format!("{}:{line}: {}", file.display(), e.message().trim()))
            })?;
            toml_to_json(v)
        }
        "json" => serde_json::from_str(text)
            .map_err(|e| CliError::msg(format!("{}:{}: {e}", file.display(), e.line())))?,
        _ => {
            return Err(CliError::msg(format!(
                "{}: unknown definition file type (use .json or .toml)",
                file.display()
            )));
        }
    };
    let Value::Object(root) = root else {
        return Err(CliError::msg(format!(
            "{}:1: a definition file is a table/object with sections {}",
            file.display(),
            SECTIONS.join(", ")
        )));
    };
    for (section, objs) in root {
        if !SECTIONS.contains(&section.as_str()) {
            let line = locate_path(text, &[&section]);
            return Err(CliError::msg(format!(
                "{}:{line}: unknown key '{section}' (sections: {})",
                file.display(),
                SECTIONS.join(", ")
            )));
        }
        let Value::Object(objs) = objs else {
            let line = locate_path(text, &[&section]);
            return Err(CliError::msg(format!(
                "{}:{line}: '{section}' must be a table of definitions by name",
                file.display()
            )));
        };
        for (name, mut obj) in objs {
            let line = locate_path(text, &[&section, &name]);
            let here = format!("{}:{line}", file.display());
            // The name may be omitted: it is the table's key.
            if let Value::Object(m) = &mut obj {
                match m.get("name") {
                    None => {
                        m.insert("name".into(), Value::String(name.clone()));
                    }
                    Some(Value::String(n)) if *n == name => {}
                    Some(other) => {
                        return Err(CliError::msg(format!(
                            "{here}: {section}.{name}.name is {other}, but the table key is '{name}'"
                        )));
                    }
                }
            }
            let key = (section.clone(), name.clone());
            if let Some(prev) = out.origin.get(&key) {
                return Err(CliError::msg(format!(
                    "{here}: {section}.{name} is already defined at {prev}"
                )));
            }
            let d = &mut out.defs;
            match section.as_str() {
                "entities" => {
                    let e: Entity = section_object(file, text, &section, &name, obj)?;
                    d.entities.insert(name.clone(), e);
                }
                "feature_views" => {
                    let v: FeatureView = section_object(file, text, &section, &name, obj)?;
                    d.feature_views.insert(name.clone(), v);
                }
                "on_demand_views" => {
                    let v: OnDemandView = section_object(file, text, &section, &name, obj)?;
                    d.on_demand_views.insert(name.clone(), v);
                }
                _ => {
                    let s: FeatureService = section_object(file, text, &section, &name, obj)?;
                    d.feature_services.insert(name.clone(), s);
                }
            }
            out.origin.insert(key, here);
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = r#"
[entities.driver]
join_keys = [{ name = "driver_id", type = "int64" }]

[feature_views.driver_stats]
entities = ["driver"]
ttl_seconds = 86400
features = [
  { name = "conv_rate", type = "float64" },
  { name = "trips", type = "int64" },
]
"#;

    fn load_one(name: &str, text: &str) -> Result<Loaded, CliError> {
        let mut out = Loaded::default();
        load_text(Path::new(name), text, &mut out).map(|()| out)
    }

    #[test]
    fn toml_and_json_give_the_same_definitions() {
        let t = load_one("a.toml", GOOD).unwrap();
        let j = load_one("a.json", &t.defs.to_json()).unwrap();
        assert_eq!(t.defs, j.defs);
        assert_eq!(t.defs.feature_views["driver_stats"].features.len(), 2);
        assert_eq!(
            t.origin[&("feature_views".into(), "driver_stats".into())],
            "a.toml:5"
        );
    }

    #[test]
    fn unknown_key_names_file_line_and_key() {
        let bad = GOOD.replace("ttl_seconds = 86400", "ttl_secnds = 86400");
        let e = load_one("defs/a.toml", &bad).unwrap_err().to_string();
        assert_eq!(
            e,
            "defs/a.toml:7: unknown key 'feature_views.driver_stats.ttl_secnds'"
        );
        let bad = GOOD.replace(
            r#"{ name = "trips", type = "int64" }"#,
            r#"{ name = "trips", typ = "int64" }"#,
        );
        let e = load_one("a.toml", &bad).unwrap_err().to_string();
        assert_eq!(
            e,
            "a.toml:5: feature_views.driver_stats: missing field `type`"
        );
    }

    #[test]
    fn syntax_and_type_errors_name_the_line() {
        let e = load_one("a.toml", "[entities.driver]\njoin_keys = [\n")
            .unwrap_err()
            .to_string();
        assert!(e.starts_with("a.toml:"), "{e}");
        let e = load_one("b.json", "{\n \"entities\": {\n  \"x\": 3,\n}\n}")
            .unwrap_err()
            .to_string();
        assert!(e.starts_with("b.json:4"), "{e}");
        let bad = GOOD.replace("\"float64\"", "\"float65\"");
        let e = load_one("a.toml", &bad).unwrap_err().to_string();
        assert!(
            e.starts_with("a.toml:5: feature_views.driver_stats:"),
            "{e}"
        );
        assert!(e.contains("float65"), "{e}");
    }

    #[test]
    fn duplicates_across_files_are_errors() {
        let mut out = Loaded::default();
        load_text(Path::new("a.toml"), GOOD, &mut out).unwrap();
        let e = load_text(Path::new("b.toml"), GOOD, &mut out)
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("b.toml:2") && e.contains("already defined at a.toml:2"),
            "{e}"
        );
    }
}
