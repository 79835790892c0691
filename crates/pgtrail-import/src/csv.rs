//! The CSV that Postgres's csvlog and pgAudit's message write: fields
//! separated by commas, a field quoted with `"` when it holds a comma, a
//! quote or a newline, and a quote inside doubled.

/// Splits one record into its fields; `None` when a quoted field never
/// ends (the record is incomplete: more lines belong to it).
pub fn fields(record: &str) -> Option<Vec<String>> {
    let mut out = Vec::new();
    let mut field = String::new();
    let mut chars = record.chars().peekable();
    let mut quoted = false;
    let mut at_start = true;
    while let Some(c) = chars.next() {
        if quoted {
            if c == '"' {
                if chars.peek() == Some(&'"') {
                    chars.next();
                    field.push('"');
                } else {
                    quoted = false;
                }
            } else {
                field.push(c);
            }
        } else if c == '"' && at_start {
            quoted = true;
            at_start = false;
        } else if c == ',' {
            out.push(std::mem::take(&mut field));
            at_start = true;
        } else {
            field.push(c);
            at_start = false;
        }
    }
    if quoted {
        return None;
    }
    out.push(field);
    Some(out)
}

/// Whether `text` ends inside a quoted field, so the record goes on.
pub fn is_open(text: &str) -> bool {
    // Quotes toggle; a doubled quote toggles twice. Only quotes count.
    text.bytes().filter(|&b| b == b'"').count() % 2 == 1
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quoted_fields_keep_commas_quotes_and_newlines() {
        assert_eq!(
            fields(
                r#"a,"b,c","say ""hi""","x
y",,z"#
            )
            .expect("complete"),
            ["a", "b,c", "say \"hi\"", "x\ny", "", "z"]
        );
        assert_eq!(fields("\"open,").as_deref(), None);
        assert!(is_open("a,\"b\nc"));
        assert!(!is_open("a,\"b\"\"c\""));
    }
}
