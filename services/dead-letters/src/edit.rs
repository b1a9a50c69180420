//! Correcting a dead letter: an edited body stored beside the original, which a
//! replay sends instead.

use airline_contracts::Message;
use serde_json::{Value, json};
use sqlx::{PgPool, Row};

use crate::Refusal;
use crate::redact::display_body;

/// How to change a body.
#[derive(Debug, Clone)]
pub enum Edit {
    /// Set fields: (path, value) pairs.
    Set(Vec<(String, String)>),
    /// Replace the whole body.
    Body(Vec<u8>),
}

/// Stores an edited body for a stored dead letter (starting from an earlier edit, if
/// any). When the message type is one of the contract's, the edited body must decode
/// as that message. Returns the edited body as shown.
///
/// # Errors
/// [`Refusal`] for a missing or already resolved dead letter, a bad path or a body
/// that does not decode; database errors otherwise.
pub async fn edit(pool: &PgPool, id: i64, edit: Edit, by: &str) -> anyhow::Result<Value> {
    let mut tx = pool.begin().await?;
    let row = sqlx::query(
        "SELECT status, message_type, body, edited_body FROM messaging.dead_letters
          WHERE id = $1 FOR UPDATE",
    )
    .bind(id)
    .fetch_optional(&mut *tx)
    .await?
    .ok_or(Refusal::NotFound(id))?;
    let status: String = row.try_get("status")?;
    if status != "stored" {
        return Err(Refusal::Conflict(format!(
            "dead letter {id} is {status}; only a stored dead letter can be edited"
        ))
        .into());
    }
    let message_type: Option<String> = row.try_get("message_type")?;
    let current: Vec<u8> = match row.try_get::<Option<Vec<u8>>, _>("edited_body")? {
        Some(b) => b,
        None => row.try_get("body")?,
    };
    let new_body = match edit {
        Edit::Body(b) => b,
        Edit::Set(pairs) => {
            let mut v: Value = serde_json::from_slice(&current).map_err(|e| {
                Refusal::Invalid(format!(
                    "the body is not JSON ({e}); replace it whole with --body"
                ))
            })?;
            for (path, value) in &pairs {
                set_path(&mut v, path, value)?;
            }
            serde_json::to_vec(&v)?
        }
    };
    let known = message_type
        .as_deref()
        .is_some_and(|t| Message::TYPES.iter().any(|k| k.to_string() == t));
    if known && let Err(e) = Message::decode(message_type.as_deref(), &new_body) {
        return Err(Refusal::Invalid(format!(
            "the edited body is not a valid {}: {e}",
            message_type.unwrap_or_default()
        ))
        .into());
    }
    sqlx::query(
        "UPDATE messaging.dead_letters SET edited_body = $2, edited_at = now(), edited_by = $3
          WHERE id = $1",
    )
    .bind(id)
    .bind(&new_body)
    .bind(by)
    .execute(&mut *tx)
    .await?;
    tx.commit().await?;
    Ok(display_body(&new_body))
}

/// Sets `path` (fields separated by `.`, array indexes as numbers) to `value` in
/// `body`. The value is read as JSON when it parses, as a string otherwise.
///
/// # Errors
/// When the body is no JSON object or the path cannot be followed.
pub fn set_path(body: &mut Value, path: &str, value: &str) -> Result<(), Refusal> {
    let value: Value = serde_json::from_str(value).unwrap_or_else(|_| json!(value));
    let parts: Vec<&str> = path.split('.').collect();
    if path.is_empty() || parts.iter().any(|p| p.is_empty()) {
        return Err(Refusal::Invalid(format!(
            "`{path}` is not a field path like a.b.0.c"
        )));
    }
    let mut at = body;
    for (i, part) in parts.iter().enumerate() {
        let last = i + 1 == parts.len();
        at = match at {
            Value::Object(map) if last => {
                map.insert((*part).to_owned(), value);
                return Ok(());
            }
            Value::Object(map) => map.entry((*part).to_owned()).or_insert_with(|| json!({})),
            Value::Array(items) => {
                let idx: usize = part.parse().map_err(|_| {
                    Refusal::Invalid(format!("`{part}` in `{path}` is not an array index"))
                })?;
                let slot = items.get_mut(idx).ok_or_else(|| {
                    Refusal::Invalid(format!("index {idx} in `{path}` is out of range"))
                })?;
                if last {
                    *slot = value;
                    return Ok(());
                }
                slot
            }
            _ => {
                return Err(Refusal::Invalid(format!(
                    "`{path}`: `{part}` is inside a value that is not an object"
                )));
            }
        };
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_set_fields_and_refuse_what_they_cannot_follow() {
        let mut v = json!({"a": {"b": 1}, "list": [1, 2]});
        set_path(&mut v, "a.b", "2").expect("set");
        set_path(&mut v, "a.c", "text").expect("set");
        set_path(&mut v, "list.1", "{\"x\":true}").expect("set");
        assert_eq!(
            v,
            json!({"a": {"b": 2, "c": "text"}, "list": [1, {"x": true}]})
        );
        assert!(set_path(&mut v, "list.9", "1").is_err());
        assert!(set_path(&mut v, "a.b.c", "1").is_err());
        assert!(set_path(&mut v, "", "1").is_err());
        assert!(set_path(&mut v, "a..b", "1").is_err());
    }
}
