//! The one answer to "may this Postgres failure pass if tried again?",
//! shared by every part that retries: capture, sealing, the Postgres store
//! and (later) the proxy's upstream. Each part's error type asks here
//! instead of keeping its own SQLSTATE list.

/// Whether a SQLSTATE names a condition that may pass by itself: the
/// connection lost (class 08), the server short of a resource (class 53:
/// disk full, out of memory, too many connections), shutting down, crashed
/// or starting (57P01–57P03), or a conflict between transactions (40001
/// serialization failure, 40P01 deadlock).
pub fn sqlstate_may_pass(code: &str) -> bool {
    code.starts_with("08")
        || code.starts_with("53")
        || matches!(code, "57P01" | "57P02" | "57P03" | "40001" | "40P01")
}

/// Whether a tokio-postgres error may pass: the connection closed, an I/O
/// failure before the server answered (refused, reset), or a SQLSTATE of
/// [`sqlstate_may_pass`]. A bad URL, a privilege error or a syntax error
/// will not.
pub fn postgres_error_may_pass(error: &tokio_postgres::Error) -> bool {
    if error.is_closed() {
        return true;
    }
    match error.code() {
        Some(code) => sqlstate_may_pass(code.code()),
        None => std::error::Error::source(error).is_some_and(|s| s.is::<std::io::Error>()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn transient_states_pass_and_others_do_not() {
        for code in [
            "08006", "08001", "53300", "53100", "57P01", "57P03", "40001", "40P01",
        ] {
            assert!(sqlstate_may_pass(code), "{code}");
        }
        // privileges, undefined table, syntax, unique violation, read-only transaction
        for code in ["42501", "42P01", "42601", "23505", "25006", "28P01"] {
            assert!(!sqlstate_may_pass(code), "{code}");
        }
    }
}
