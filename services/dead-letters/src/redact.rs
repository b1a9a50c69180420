//! What people see of a dead letter: bodies, error texts and headers with card
//! tokens and card-like numbers hidden.

use serde_json::{Value, json};

/// Body fields that hold secrets: shown as `[redacted]`.
const SECRET_FIELDS: &[&str] = &["paymentToken"];

/// A body for people: pretty JSON with secrets redacted, or the text with card
/// tokens and card-like numbers masked.
#[must_use]
pub fn display_body(body: &[u8]) -> Value {
    match serde_json::from_slice::<Value>(body) {
        Ok(mut v) => {
            redact(&mut v);
            v
        }
        Err(_) => json!(mask_secrets(&String::from_utf8_lossy(body))),
    }
}

/// Any field whose name mentions a token (`paymentToken`, `payment_token`,
/// `token`), in any case, is redacted; every other string is masked.
fn redact(v: &mut Value) {
    match v {
        Value::Object(map) => {
            for (k, x) in map.iter_mut() {
                let key = k.to_ascii_lowercase();
                let secret = SECRET_FIELDS.iter().any(|f| f.eq_ignore_ascii_case(k))
                    || key.contains("token");
                if secret && !x.is_null() {
                    *x = json!("[redacted]");
                } else {
                    redact(x);
                }
            }
        }
        Value::Array(items) => items.iter_mut().for_each(redact),
        Value::String(text) => *text = mask_secrets(text),
        _ => {}
    }
}

/// Text with card tokens (`tok_…`) and card-like numbers (12 digits or more)
/// masked: for error texts, headers and bodies that are not JSON, where a serde
/// message or a malformed body may repeat a secret.
#[must_use]
pub fn mask_secrets(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let chars: Vec<char> = text.chars().collect();
    let mut i = 0;
    while i < chars.len() {
        let rest: String = chars[i..chars.len().min(i + 4)].iter().collect();
        if rest == "tok_" && (i == 0 || !chars[i - 1].is_ascii_alphanumeric()) {
            let mut j = i + 4;
            while j < chars.len() && (chars[j].is_ascii_alphanumeric() || chars[j] == '_') {
                j += 1;
            }
            out.push_str("tok_[redacted]");
            i = j;
            continue;
        }
        if chars[i].is_ascii_digit() {
            let mut j = i;
            while j < chars.len() && chars[j].is_ascii_digit() {
                j += 1;
            }
            if j - i >= 12 {
                out.push_str("[redacted number]");
            } else {
                out.extend(&chars[i..j]);
            }
            i = j;
            continue;
        }
        out.push(chars[i]);
        i += 1;
    }
    out
}

/// A JSON value (headers) with every string masked.
pub(crate) fn mask_json(v: &mut Value) {
    match v {
        Value::String(text) => *text = mask_secrets(text),
        Value::Array(items) => items.iter_mut().for_each(mask_json),
        Value::Object(map) => map.values_mut().for_each(mask_json),
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_and_card_numbers_are_masked_in_text() {
        assert_eq!(
            mask_secrets(
                "bad body {\"paymentToken\":\"tok_visa_123\", pan 4111111111111111, id 42"
            ),
            "bad body {\"paymentToken\":\"tok_[redacted]\", pan [redacted number], id 42"
        );
        assert_eq!(mask_secrets("stok_x is a word"), "stok_x is a word");
        let shown = display_body(b"{\"paymentToken\":\"tok_visa\"");
        assert!(!shown.to_string().contains("tok_visa"), "{shown}");
        let shown = display_body(br#"{"payment_token":"x","Token":"y","note":"tok_abc"}"#);
        assert_eq!(
            shown,
            json!({"payment_token":"[redacted]","Token":"[redacted]","note":"tok_[redacted]"})
        );
    }

    #[test]
    fn payment_tokens_never_show() {
        let shown = display_body(
            br#"{"bookingId":"b","paymentToken":"tok_visa","nested":[{"paymentToken":"x"}]}"#,
        );
        let text = shown.to_string();
        assert!(
            !text.contains("tok_visa") && !text.contains("\"x\""),
            "{text}"
        );
        assert_eq!(display_body(b"not json"), json!("not json"));
    }
}
