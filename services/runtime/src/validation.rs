//! Field-by-field checks of JSON input, collecting every problem with the name of
//! the field it is about, for `application/problem+json` answers.

use serde_json::{Map, Value};
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

/// One invalid field.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct FieldError {
    /// The field, as the client spelled it (`paymentToken`).
    pub name: String,
    /// What is wrong with it.
    pub reason: String,
}

impl FieldError {
    /// A problem with `name`.
    #[must_use]
    pub fn new(name: &str, reason: impl Into<String>) -> Self {
        Self {
            name: name.to_owned(),
            reason: reason.into(),
        }
    }
}

/// Reads fields out of a JSON object, remembering every problem.
#[derive(Debug)]
pub struct Fields<'a> {
    object: Option<&'a Map<String, Value>>,
    errors: Vec<FieldError>,
}

impl<'a> Fields<'a> {
    /// Starts reading `value`, which must be a JSON object.
    #[must_use]
    pub fn new(value: &'a Value) -> Self {
        let object = value.as_object();
        let errors = if object.is_some() {
            Vec::new()
        } else {
            vec![FieldError::new("(body)", "must be a JSON object")]
        };
        Self { object, errors }
    }

    fn get(&mut self, name: &str) -> Option<&'a Value> {
        let object = self.object?;
        match object.get(name) {
            None | Some(Value::Null) => {
                self.errors.push(FieldError::new(name, "is required"));
                None
            }
            Some(v) => Some(v),
        }
    }

    /// Records a problem found by the caller.
    pub fn error(&mut self, name: &str, reason: impl Into<String>) {
        self.errors.push(FieldError::new(name, reason));
    }

    /// A required string of 1 to `max` characters (trimmed).
    pub fn string(&mut self, name: &str, max: usize) -> Option<String> {
        let v = self.get(name)?;
        let Some(s) = v.as_str() else {
            self.error(name, "must be a string");
            return None;
        };
        let s = s.trim();
        if s.is_empty() || s.chars().count() > max {
            self.error(name, format!("must have 1 to {max} characters"));
            return None;
        }
        // PostgreSQL text cannot hold NUL.
        if s.contains('\0') {
            self.error(name, "must not contain NUL characters");
            return None;
        }
        Some(s.to_owned())
    }

    /// A required integer within `min..=max`.
    pub fn integer(&mut self, name: &str, min: i64, max: i64) -> Option<i64> {
        let v = self.get(name)?;
        match v.as_i64() {
            Some(n) if (min..=max).contains(&n) => Some(n),
            Some(_) => {
                self.error(name, format!("must be between {min} and {max}"));
                None
            }
            None => {
                self.error(name, "must be an integer");
                None
            }
        }
    }

    /// A required RFC 3339 timestamp.
    pub fn datetime(&mut self, name: &str) -> Option<OffsetDateTime> {
        let s = self.string(name, 64)?;
        OffsetDateTime::parse(&s, &Rfc3339)
            .map_err(|_| {
                self.error(
                    name,
                    "must be an RFC 3339 date-time, e.g. 2027-01-15T08:30:00Z",
                )
            })
            .ok()
    }

    /// A required UUID.
    pub fn uuid(&mut self, name: &str) -> Option<uuid::Uuid> {
        let s = self.string(name, 64)?;
        uuid::Uuid::parse_str(&s)
            .map_err(|_| self.error(name, "must be a UUID"))
            .ok()
    }

    /// Ends reading: the problems found, if any.
    ///
    /// # Errors
    /// Every [`FieldError`] recorded.
    pub fn finish(self) -> Result<(), Vec<FieldError>> {
        if self.errors.is_empty() {
            Ok(())
        } else {
            Err(self.errors)
        }
    }
}

/// Checks a three-letter upper-case code (IATA airport, ISO 4217 currency).
#[must_use]
pub fn is_code3(s: &str) -> bool {
    s.len() == 3 && s.bytes().all(|b| b.is_ascii_uppercase())
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn every_bad_field_is_named() {
        let body = json!({ "a": "", "b": 5, "c": "x", "d": "not a date", "e": null });
        let mut f = Fields::new(&body);
        assert_eq!(f.string("a", 10), None);
        assert_eq!(f.integer("b", 1, 3), None);
        assert_eq!(f.integer("c", 1, 3), None);
        assert_eq!(f.datetime("d"), None);
        assert_eq!(f.string("e", 10), None);
        assert_eq!(f.uuid("missing"), None);
        let errors = f.finish().unwrap_err();
        let names: Vec<_> = errors.iter().map(|e| e.name.as_str()).collect();
        assert_eq!(names, ["a", "b", "c", "d", "e", "missing"]);
    }

    #[test]
    fn good_fields_pass() {
        let body = json!({ "a": " x ", "b": 2, "d": "2027-01-15T08:30:00Z" });
        let mut f = Fields::new(&body);
        assert_eq!(f.string("a", 10).as_deref(), Some("x"));
        assert_eq!(f.integer("b", 1, 3), Some(2));
        assert!(f.datetime("d").is_some());
        assert!(f.finish().is_ok());
        assert!(Fields::new(&json!([1])).finish().is_err());
    }

    #[test]
    fn codes_are_three_capitals() {
        assert!(is_code3("LGW") && !is_code3("lgw") && !is_code3("LG") && !is_code3("LGW1"));
    }
}
