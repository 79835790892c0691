//! The client side of authentication as a sans-IO state machine.
//!
//! Feed every [`AuthRequest`] the server sends to [`Authenticator::respond`];
//! it appends the answer (if any) to the output buffer. Cleartext, MD5 and
//! SCRAM-SHA-256 (without channel binding: pgtrail's replication link is
//! plaintext or local) are supported; the password never leaves this module
//! except inside the protocol messages.

use bytes::BytesMut;
use postgres_protocol::authentication::md5_hash;
use postgres_protocol::authentication::sasl::{ChannelBinding, ScramSha256, SCRAM_SHA_256};

use crate::backend::AuthRequest;
use crate::frontend::{encode_password, encode_sasl_initial_response, encode_sasl_response};
use crate::WireError;

/// Where authentication stands after a request was answered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AuthProgress {
    /// The server accepted the client.
    Done,
    /// Wait for the server's next request.
    Pending,
}

/// Answers the server's authentication requests for one login.
pub struct Authenticator {
    user: String,
    password: Option<String>,
    scram: Option<ScramSha256>,
}

impl std::fmt::Debug for Authenticator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Authenticator")
            .field("user", &self.user)
            .field("password", &self.password.as_ref().map(|_| "***"))
            .finish_non_exhaustive()
    }
}

impl Authenticator {
    /// For `user`, with the password if one is configured.
    pub fn new(user: &str, password: Option<&str>) -> Self {
        Authenticator {
            user: user.to_string(),
            password: password.map(str::to_string),
            scram: None,
        }
    }

    fn password(&self) -> Result<&str, WireError> {
        self.password.as_deref().ok_or(WireError::PasswordRequired)
    }

    /// Answers `request`, appending any message to send to `out`.
    pub fn respond(
        &mut self,
        request: &AuthRequest,
        out: &mut BytesMut,
    ) -> Result<AuthProgress, WireError> {
        match request {
            AuthRequest::Ok => return Ok(AuthProgress::Done),
            AuthRequest::CleartextPassword => encode_password(out, self.password()?),
            AuthRequest::Md5Password { salt } => {
                let hashed = md5_hash(self.user.as_bytes(), self.password()?.as_bytes(), *salt);
                encode_password(out, &hashed);
            }
            AuthRequest::Sasl { mechanisms } => {
                if !mechanisms.iter().any(|m| m == SCRAM_SHA_256) {
                    return Err(WireError::UnsupportedAuth(format!(
                        "SASL {}",
                        mechanisms.join(", ")
                    )));
                }
                let scram =
                    ScramSha256::new(self.password()?.as_bytes(), ChannelBinding::unsupported());
                encode_sasl_initial_response(out, SCRAM_SHA_256, scram.message());
                self.scram = Some(scram);
            }
            AuthRequest::SaslContinue(data) => {
                let scram = self
                    .scram
                    .as_mut()
                    .ok_or_else(|| out_of_order("SASLContinue"))?;
                scram.update(data).map_err(WireError::Scram)?;
                encode_sasl_response(out, scram.message());
            }
            AuthRequest::SaslFinal(data) => {
                let scram = self
                    .scram
                    .as_mut()
                    .ok_or_else(|| out_of_order("SASLFinal"))?;
                scram.finish(data).map_err(WireError::Scram)?;
            }
            AuthRequest::Other(code) => {
                return Err(WireError::UnsupportedAuth(format!(
                    "authentication request code {code}"
                )))
            }
        }
        Ok(AuthProgress::Pending)
    }
}

fn out_of_order(what: &str) -> WireError {
    WireError::Invalid {
        tag: 'R',
        field: "authentication sequence",
        detail: format!("{what} before SASL started"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backend::BackendMessage;
    use crate::frame::decode_frame;

    #[test]
    fn md5_answer_is_the_postgres_formula() {
        let mut auth = Authenticator::new("alice", Some("secret"));
        let mut out = BytesMut::new();
        let step = auth
            .respond(&AuthRequest::Md5Password { salt: [1, 2, 3, 4] }, &mut out)
            .expect("answered");
        assert_eq!(step, AuthProgress::Pending);
        let frame = decode_frame(&mut out).expect("ok").expect("whole");
        assert_eq!(frame.tag, b'p');
        assert_eq!(
            &frame.body[..],
            format!("{}\0", md5_hash(b"alice", b"secret", [1, 2, 3, 4])).as_bytes()
        );
        assert!(frame.body.starts_with(b"md5"));
    }

    #[test]
    fn ok_finishes_and_missing_password_is_an_error() {
        let mut out = BytesMut::new();
        let mut auth = Authenticator::new("bob", None);
        assert_eq!(
            auth.respond(&AuthRequest::Ok, &mut out).expect("ok"),
            AuthProgress::Done
        );
        assert!(matches!(
            auth.respond(&AuthRequest::CleartextPassword, &mut out),
            Err(WireError::PasswordRequired)
        ));
        assert!(matches!(
            auth.respond(&AuthRequest::Other(7), &mut out),
            Err(WireError::UnsupportedAuth(_))
        ));
        assert!(out.is_empty(), "nothing sent on failure");
    }

    #[test]
    fn scram_starts_with_the_mechanism_and_rejects_a_bad_challenge() {
        let mut auth = Authenticator::new("carol", Some("pw"));
        let mut out = BytesMut::new();
        auth.respond(
            &AuthRequest::Sasl {
                mechanisms: vec!["SCRAM-SHA-256-PLUS".into(), "SCRAM-SHA-256".into()],
            },
            &mut out,
        )
        .expect("started");
        let frame = decode_frame(&mut out).expect("ok").expect("whole");
        assert!(
            frame.body.starts_with(b"SCRAM-SHA-256\0"),
            "{:?}",
            frame.body
        );
        let bad = BackendMessage::Authentication(AuthRequest::SaslContinue(
            bytes::Bytes::from_static(b"garbage"),
        ));
        let BackendMessage::Authentication(request) = bad else {
            unreachable!()
        };
        assert!(matches!(
            auth.respond(&request, &mut out),
            Err(WireError::Scram(_))
        ));
    }
}
