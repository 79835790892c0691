use thiserror::Error;

/// Why bytes could not be decoded, or a protocol step failed.
#[derive(Debug, Error)]
#[non_exhaustive]
pub enum WireError {
    /// A message announced a length that cannot be right.
    #[error("invalid length {length} in message '{tag}'")]
    BadLength {
        /// The message tag (as a character).
        tag: char,
        /// The announced length.
        length: i64,
    },
    /// A message body ended before all its fields were read.
    #[error("message '{tag}' is truncated while reading {field}")]
    Truncated {
        /// The message tag.
        tag: char,
        /// The field being read.
        field: &'static str,
    },
    /// A field held a value the protocol does not allow.
    #[error("message '{tag}': invalid {field}: {detail}")]
    Invalid {
        /// The message tag.
        tag: char,
        /// The field.
        field: &'static str,
        /// What was wrong.
        detail: String,
    },
    /// The server asked for an authentication method this client lacks.
    #[error("the server asked for an unsupported authentication method ({0})")]
    UnsupportedAuth(String),
    /// The server asked for a password but none was given.
    #[error("the server asked for a password, but none was given")]
    PasswordRequired,
    /// The SCRAM exchange failed (wrong password or a bad server message).
    #[error("SCRAM authentication failed")]
    Scram(#[source] std::io::Error),
}
