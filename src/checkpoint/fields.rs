//! Reading typed fields out of a JSON config: a field that is present must have the type
//! and range we expect, or it is an error naming it; a field that is absent takes the
//! producer's documented default, and every value used is recorded as a [`Setting`] so
//! `fleetmoe inspect` can say which ones were defaults.

use crate::error::{Error, Result};
use serde_json::Value;
use std::cell::RefCell;
use std::path::Path;

/// One config value fleetmoe used, and whether the file said it or a default did.
#[derive(Debug, Clone, PartialEq)]
pub struct Setting {
    /// The field, with its path inside the file (`quantization_config.group_size`).
    pub field: String,
    /// The value used, as JSON would print it.
    pub value: String,
    /// `Some(source)` when the field was absent and the default was taken; `source`
    /// names whose default it is.
    pub default: Option<&'static str>,
}

/// Typed access to one JSON object of one file, recording what it reads.
pub(crate) struct Fields<'a> {
    path: &'a Path,
    obj: &'a Value,
    prefix: String,
    log: &'a RefCell<Vec<Setting>>,
}

impl<'a> Fields<'a> {
    pub fn new(
        path: &'a Path,
        obj: &'a Value,
        prefix: &str,
        log: &'a RefCell<Vec<Setting>>,
    ) -> Self {
        Fields {
            path,
            obj,
            prefix: prefix.to_string(),
            log,
        }
    }

    /// The full name of `key`, for errors and settings.
    pub fn name(&self, key: &str) -> String {
        if self.prefix.is_empty() {
            key.to_string()
        } else {
            format!("{}.{key}", self.prefix)
        }
    }

    /// An error about `key` of this object.
    pub fn err(&self, key: &str, why: impl Into<String>) -> Error {
        Error::checkpoint(self.path.display(), self.name(key), why)
    }

    /// The raw value of `key`; JSON `null` counts as absent (transformers writes `None`
    /// fields as `null`).
    pub fn get(&self, key: &str) -> Option<&'a Value> {
        self.obj.get(key).filter(|v| !v.is_null())
    }

    /// A nested object, for reading its fields.
    pub fn child(&self, key: &str) -> Result<Option<Fields<'a>>> {
        match self.get(key) {
            None => Ok(None),
            Some(v) if v.is_object() => Ok(Some(Fields {
                path: self.path,
                obj: v,
                prefix: self.name(key),
                log: self.log,
            })),
            Some(v) => Err(self.err(key, format!("{v} is not an object"))),
        }
    }

    fn record(&self, key: &str, value: String, default: Option<&'static str>) {
        self.log.borrow_mut().push(Setting {
            field: self.name(key),
            value,
            default,
        });
    }

    /// An integer field (any sign), `None` when absent.
    pub fn int(&self, key: &str) -> Result<Option<i64>> {
        match self.get(key) {
            None => Ok(None),
            Some(v) => v
                .as_i64()
                .map(Some)
                .ok_or_else(|| self.err(key, format!("{v} is not an integer"))),
        }
    }

    /// A non-negative integer field, `None` when absent.
    pub fn count(&self, key: &str) -> Result<Option<usize>> {
        match self.get(key) {
            None => Ok(None),
            Some(v) => v
                .as_u64()
                .and_then(|n| usize::try_from(n).ok())
                .map(Some)
                .ok_or_else(|| self.err(key, format!("{v} is not a non-negative integer"))),
        }
    }

    /// A required non-negative integer, trying `keys` in order (the first is named).
    pub fn need_count(&self, keys: &[&str]) -> Result<usize> {
        for k in keys {
            if let Some(n) = self.count(k)? {
                self.record(k, n.to_string(), None);
                return Ok(n);
            }
        }
        Err(self.err(keys[0], "missing (no default: it sets a tensor shape)"))
    }

    /// A non-negative integer with a default.
    pub fn count_or(&self, key: &str, default: usize, source: &'static str) -> Result<usize> {
        let (v, d) = match self.count(key)? {
            Some(n) => (n, None),
            None => (default, Some(source)),
        };
        self.record(key, v.to_string(), d);
        Ok(v)
    }

    /// An integer (any sign) with a default.
    pub fn int_or(&self, key: &str, default: i64, source: &'static str) -> Result<i64> {
        let (v, d) = match self.int(key)? {
            Some(n) => (n, None),
            None => (default, Some(source)),
        };
        self.record(key, v.to_string(), d);
        Ok(v)
    }

    /// A finite number with a default.
    pub fn number_or(&self, key: &str, default: f64, source: &'static str) -> Result<f64> {
        let (v, d) = match self.get(key) {
            None => (default, Some(source)),
            Some(v) => match v.as_f64() {
                Some(x) if x.is_finite() => (x, None),
                _ => return Err(self.err(key, format!("{v} is not a finite number"))),
            },
        };
        self.record(key, v.to_string(), d);
        Ok(v)
    }

    /// A boolean with a default.
    pub fn bool_or(&self, key: &str, default: bool, source: &'static str) -> Result<bool> {
        let (v, d) = match self.get(key) {
            None => (default, Some(source)),
            Some(v) => (
                v.as_bool()
                    .ok_or_else(|| self.err(key, format!("{v} is not true or false")))?,
                None,
            ),
        };
        self.record(key, v.to_string(), d);
        Ok(v)
    }

    /// A string field, `None` when absent.
    pub fn string(&self, key: &str) -> Result<Option<&'a str>> {
        match self.get(key) {
            None => Ok(None),
            Some(v) => v
                .as_str()
                .map(Some)
                .ok_or_else(|| self.err(key, format!("{v} is not a string"))),
        }
    }

    /// One of `known` strings, or `default` when absent; anything else is an error that
    /// lists the known values.
    pub fn choice_or(
        &self,
        key: &str,
        known: &[&'static str],
        default: &'static str,
        source: &'static str,
    ) -> Result<&'a str> {
        let (v, d) = match self.string(key)? {
            Some(s) => (s, None),
            None => (default, Some(source)),
        };
        if !known.contains(&v) {
            return Err(self.err(
                key,
                format!("unknown value '{v}' (known: {})", known.join(", ")),
            ));
        }
        self.record(key, format!("\"{v}\""), d);
        Ok(v)
    }

    /// Records a value that is derived rather than read (an inferred strategy).
    pub fn note(&self, key: &str, value: impl Into<String>, source: &'static str) {
        self.record(key, value.into(), Some(source));
    }
}
