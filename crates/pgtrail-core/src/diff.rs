//! Field-level differences between two row images.

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::event::JsonObject;

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
            (before != after).then(|| FieldChange {
                column: column.clone(),
                old: before.cloned(),
                new: after.cloned(),
            })
        })
        .collect()
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
