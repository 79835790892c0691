//! Field-level differences between two row images.
//!
//! Events stored by earlier versions carried `numeric` values from logical
//! replication as strings (`"12.50"`); newer ones carry them as JSON numbers
//! with the same digits (`12.50`), as Postgres's `to_jsonb` does. Stored
//! events keep the form they were hashed in, so a row's history can mix
//! both: [`same_value`] reads them as one value.

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::event::JsonObject;
use crate::json;

/// One column's change: its value before and after. `None` means the image
/// did not have the column (an INSERT has no old side, a DELETE no new side).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FieldChange {
    /// Column name.
    pub column: String,
    /// Value before, if the old image had the column.
    pub old: Option<Value>,
    /// Value after, if the new image had the column.
    pub new: Option<Value>,
}

/// The columns whose values differ between `old` and `new`, in column-name order.
/// A column missing on one side counts as changed.
pub fn diff_rows(old: Option<&JsonObject>, new: Option<&JsonObject>) -> Vec<FieldChange> {
    let empty = JsonObject::new();
    let old = old.unwrap_or(&empty);
    let new = new.unwrap_or(&empty);
    let mut columns: Vec<&String> = old.keys().chain(new.keys()).collect();
    columns.sort();
    columns.dedup();
    columns
        .into_iter()
        .filter_map(|column| {
            let (before, after) = (old.get(column), new.get(column));
            let unchanged = match (before, after) {
                (Some(a), Some(b)) => same_value(a, b),
                (None, None) => true,
                _ => false,
            };
            (!unchanged).then(|| FieldChange {
                column: column.clone(),
                old: before.cloned(),
                new: after.cloned(),
            })
        })
        .collect()
}

/// Whether two column values are the same value: equal JSON, or a number
/// and a string holding exactly its digits (the older form of `numeric`),
/// also as elements of arrays (`numeric[]`).
pub fn same_value(a: &Value, b: &Value) -> bool {
    if json::eq(a, b) {
        return true;
    }
    match (a, b) {
        (Value::Number(n), Value::String(s)) | (Value::String(s), Value::Number(n)) => {
            n.to_string() == *s
        }
        // Arrays as deep as Postgres allows (6 dimensions) are walked; a
        // deeper array (only a json document) compares strictly above.
        (Value::Array(x), Value::Array(y)) => {
            json::within(a, 6)
                && json::within(b, 6)
                && x.len() == y.len()
                && x.iter().zip(y).all(|(x, y)| same_value(x, y))
        }
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn obj(v: Value) -> JsonObject {
        v.as_object().cloned().expect("object")
    }

    #[test]
    fn update_lists_only_changed_columns() {
        let old = obj(json!({"id": 1, "name": "bob", "email": "b@x"}));
        let new = obj(json!({"id": 1, "name": "robert", "email": "b@x"}));
        let d = diff_rows(Some(&old), Some(&new));
        assert_eq!(d.len(), 1);
        assert_eq!(d[0].column, "name");
        assert_eq!(d[0].old, Some(json!("bob")));
        assert_eq!(d[0].new, Some(json!("robert")));
    }

    /// `"12.50"` is how logical replication wrote numeric before; `12.50`
    /// how every path writes it now. History must not show a change.
    #[test]
    fn numeric_as_string_and_as_number_is_one_value() {
        let older: JsonObject = json::parse(
            r#"{"id": 1, "amount": "12.50", "rates": ["1.10", "NaN", null], "n": "NaN"}"#,
        )
        .expect("json")
        .as_object()
        .cloned()
        .expect("object");
        let newer: JsonObject =
            json::parse(r#"{"id": 1, "amount": 12.50, "rates": [1.10, "NaN", null], "n": "NaN"}"#)
                .expect("json")
                .as_object()
                .cloned()
                .expect("object");
        assert_eq!(diff_rows(Some(&older), Some(&newer)), vec![]);
        assert_eq!(diff_rows(Some(&newer), Some(&older)), vec![]);

        // Different digits are a change, in either form.
        let changed: JsonObject =
            json::parse(r#"{"id": 1, "amount": 12.5, "rates": ["1.1", "NaN", null], "n": 0}"#)
                .expect("json")
                .as_object()
                .cloned()
                .expect("object");
        let columns: Vec<String> = diff_rows(Some(&older), Some(&changed))
            .into_iter()
            .map(|c| c.column)
            .collect();
        assert_eq!(columns, ["amount", "n", "rates"]);
    }

    #[test]
    fn a_number_and_other_text_differ() {
        assert!(!same_value(&json!(1), &json!("01")));
        assert!(!same_value(&json!(1), &json!("one")));
        assert!(!same_value(&json!([1]), &json!([1, 2])));
        assert!(!same_value(&json!({"a": 1}), &json!({"a": "1"})));
        assert!(!same_value(&json!(true), &json!("true")));
    }

    #[test]
    fn insert_and_null_are_distinct() {
        let new = obj(json!({"id": 1, "note": null}));
        let d = diff_rows(None, Some(&new));
        assert_eq!(d.len(), 2);
        assert_eq!(d[1].column, "note");
        assert_eq!(
            (d[1].old.clone(), d[1].new.clone()),
            (None, Some(Value::Null))
        );
    }
}
