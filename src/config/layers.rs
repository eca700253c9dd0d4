//! The settings table, and the layers above the config file: the `RINGCAST_*` environment
//! variables and the command line.
//!
//! The table is not kept by hand. It is read off the default [`ServerConfig`] serialized to
//! TOML: every leaf (a value that is not a table) is a setting, named by its key, with the
//! environment variable `RINGCAST_` + the key in upper case. A setting added to any config
//! struct therefore gets its variable, its place in the layering and its round-trip test by
//! existing. Leaf keys are unique across tables, so the variable needs no section in its name.
//!
//! A layer above the file is an overlay of TOML values on the file's table, so that the values
//! a layer gives are parsed and checked by the same code as the file's (serde's `Deserialize`
//! of [`ServerConfig`]). Each value is checked on its own when the layer is built, so that an
//! error names the variable or flag that gave it.

use serde::{Deserialize, Serialize};

use super::ServerConfig;
use super::error::ConfigError;

/// What every ringcast environment variable starts with.
pub const VARIABLE_PREFIX: &str = "RINGCAST_";

/// The variable of the log filter (`--log`), read beside the settings; `RUST_LOG` is its
/// fallback.
pub const LOG_VARIABLE: &str = "RINGCAST_LOG";

/// One setting of the table: a leaf of the config's TOML document.
#[derive(Clone, Debug, PartialEq)]
pub struct Setting {
    /// The keys from the top of the document down to the leaf, such as `["broker",
    /// "history_bytes_max"]`.
    pub path: Vec<String>,
    /// The leaf's default, as TOML (its type is the type a value must have).
    pub default: toml::Value,
}

impl Setting {
    /// The leaf's key: `history_bytes_max`.
    pub fn name(&self) -> &str {
        self.path.last().expect("a setting's path is never empty")
    }

    /// The environment variable that sets it: `RINGCAST_HISTORY_BYTES_MAX`.
    pub fn variable(&self) -> String {
        format!("{VARIABLE_PREFIX}{}", self.name().to_ascii_uppercase())
    }

    /// Where it lives in the file: `broker.history_bytes_max`.
    pub fn dotted_path(&self) -> String {
        self.path.join(".")
    }
}

/// The default configuration as a TOML table.
pub fn default_table() -> toml::Table {
    // Every config type is plain data of TOML types; a field that is not would be our bug, and
    // the tests serialize the defaults on every run.
    toml::Table::try_from(ServerConfig::default()).expect("the default config serializes to TOML")
}

/// Every setting, ordered by path. Walks the default config's tables with a work list.
pub fn settings() -> Vec<Setting> {
    let mut settings = Vec::new();
    let mut tables = vec![(Vec::new(), default_table())];
    while let Some((prefix, table)) = tables.pop() {
        for (key, value) in table {
            let mut path: Vec<String> = prefix.clone();
            path.push(key);
            match value {
                toml::Value::Table(inner) => tables.push((path, inner)),
                default => settings.push(Setting { path, default }),
            }
        }
    }
    settings.sort_by(|left, right| left.path.cmp(&right.path));
    settings
}

/// The setting whose leaf key is `name`.
pub fn setting_named(name: &str) -> Option<Setting> {
    settings()
        .into_iter()
        .find(|setting| setting.name() == name)
}

/// Settings given by a layer above the config file (the environment or the command line): a
/// TOML value for each, each already checked against its setting's type and range.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct ConfigOverrides {
    values: Vec<(Vec<String>, toml::Value)>,
}

impl ConfigOverrides {
    /// Reads every setting's `RINGCAST_*` variable through `environment`, a lookup that
    /// returns a variable's value, so that tests need not touch the process's environment.
    /// String settings take the value as it is; the others take it in TOML syntax (`4096`,
    /// `true`, `["a", "b"]`). A value that does not parse is an error naming the variable.
    pub fn from_environment(
        environment: impl Fn(&str) -> Option<String>,
    ) -> Result<Self, ConfigError> {
        let mut overrides = Self::default();
        for setting in settings() {
            let variable = setting.variable();
            let Some(text) = environment(&variable) else {
                continue;
            };
            let checked = environment_value(&setting, &text).and_then(|value| {
                check_value(&setting, &value)?;
                Ok(value)
            });
            match checked {
                Ok(value) => overrides.values.push((setting.path, value)),
                Err(reason) => {
                    return Err(ConfigError::Environment {
                        variable,
                        value: text,
                        reason,
                    });
                }
            }
        }
        Ok(overrides)
    }

    /// Sets the setting `name` to `value` (any serializable value of its type), as given by the
    /// flag `--name`. An error names the flag.
    pub fn set_flag(&mut self, name: &str, value: impl Serialize) -> Result<(), ConfigError> {
        let flag = format!("--{}", name.replace('_', "-"));
        let error = |reason: String| ConfigError::Flag {
            flag: flag.clone(),
            reason,
        };
        let setting = setting_named(name).ok_or_else(|| error("no setting of this name".into()))?;
        let value = toml::Value::try_from(value).map_err(|source| error(source.to_string()))?;
        check_value(&setting, &value).map_err(error)?;
        self.values.push((setting.path, value));
        Ok(())
    }

    /// Writes every value of this layer into `table`, a config document, over what it holds.
    pub(super) fn apply_to(&self, table: &mut toml::Table) {
        for (path, value) in &self.values {
            let (leaf, sections) = path.split_last().expect("a setting's path is never empty");
            let mut current = &mut *table;
            for section in sections {
                let entry = current
                    .entry(section.clone())
                    .or_insert_with(|| toml::Value::Table(toml::Table::new()));
                // The file's own table passed the typed parse, so a section is a table; a
                // value there would have been refused before any layer applies.
                if !entry.is_table() {
                    *entry = toml::Value::Table(toml::Table::new());
                }
                current = entry.as_table_mut().expect("made a table just above");
            }
            current.insert(leaf.clone(), value.clone());
        }
    }
}

/// An environment variable's text as the TOML value of `setting`'s type.
fn environment_value(setting: &Setting, text: &str) -> Result<toml::Value, String> {
    if setting.default.is_str() {
        return Ok(toml::Value::String(text.to_owned()));
    }
    let kind = setting.default.type_str();
    // An empty default shows nothing of the syntax, so an array gets an example instead.
    let example = match &setting.default {
        toml::Value::Array(items) if items.is_empty() => r#"["a", "b"]"#.to_owned(),
        default => default.to_string(),
    };
    let expected = || {
        format!(
            "expected {} {kind} in TOML syntax, such as {example}",
            article(kind)
        )
    };
    let value: toml::Value = text.parse().map_err(|_| expected())?;
    if value.type_str() != kind {
        return Err(expected());
    }
    Ok(value)
}

fn article(kind: &str) -> &'static str {
    match kind.as_bytes().first() {
        Some(b'a' | b'e' | b'i' | b'o' | b'u') => "an",
        _ => "a",
    }
}

/// Checks `value` for `setting` with the file's own parser: the default document with this one
/// leaf replaced must deserialize. Catches what the type alone does not: a negative count, an
/// address that does not parse, a policy of no known name.
fn check_value(setting: &Setting, value: &toml::Value) -> Result<(), String> {
    let mut table = default_table();
    let overrides = ConfigOverrides {
        values: vec![(setting.path.clone(), value.clone())],
    };
    overrides.apply_to(&mut table);
    ServerConfig::deserialize(table)
        .map(drop)
        .map_err(|error| error.message().trim_end().to_owned())
}

/// A `RINGCAST_*` variable that names no setting, with the valid variable nearest to it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct UnknownVariable {
    pub variable: String,
    pub nearest: String,
}

/// Every variable among `names` that starts with `RINGCAST_` (in any case) and is neither a
/// setting's variable nor `RINGCAST_LOG`, with the nearest valid variable by edit distance
/// (compared in upper case, so `ringcast_shards` points at `RINGCAST_SHARDS`).
pub fn unknown_variables<'a>(names: impl IntoIterator<Item = &'a str>) -> Vec<UnknownVariable> {
    let mut known: Vec<String> = settings().iter().map(Setting::variable).collect();
    known.push(LOG_VARIABLE.to_owned());
    let mut unknown = Vec::new();
    for name in names {
        let upper = name.to_ascii_uppercase();
        if !upper.starts_with(VARIABLE_PREFIX) || known.iter().any(|known| known == name) {
            continue;
        }
        let nearest = known
            .iter()
            .min_by_key(|known| edit_distance(upper.as_bytes(), known.as_bytes()))
            .expect("the table has settings");
        unknown.push(UnknownVariable {
            variable: name.to_owned(),
            nearest: nearest.clone(),
        });
    }
    unknown
}

/// The Levenshtein distance: insertions, deletions and substitutions of one byte each. Two
/// rows of the table, no recursion.
pub fn edit_distance(left: &[u8], right: &[u8]) -> usize {
    let mut previous: Vec<usize> = (0..=right.len()).collect();
    let mut current = vec![0; right.len() + 1];
    for (left_index, left_byte) in left.iter().enumerate() {
        current[0] = left_index + 1;
        for (right_index, right_byte) in right.iter().enumerate() {
            let substitution = previous[right_index] + usize::from(left_byte != right_byte);
            let deletion = previous[right_index + 1] + 1;
            let insertion = current[right_index] + 1;
            current[right_index + 1] = substitution.min(deletion).min(insertion);
        }
        std::mem::swap(&mut previous, &mut current);
    }
    previous[right.len()]
}
