//! TLS as libpq's `sslmode` asks for it, on rustls (provider `aws-lc-rs`).
//!
//! | sslmode | TLS | certificate checked |
//! | --- | --- | --- |
//! | `disable` | never | — |
//! | `allow`, `prefer` (default) | when the server offers it | no |
//! | `require` | always | no; like `verify-ca` when a root certificate is configured (libpq's rule) |
//! | `verify-ca` | always | signed by `sslrootcert` |
//! | `verify-full` | always | signed by `sslrootcert` and issued for the host name |
//!
//! `allow` tries TLS first, like `prefer` (libpq tries plaintext first); a
//! server that accepts either is then reached over TLS, never less safely.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::client::WebPkiServerVerifier;
use rustls::crypto::WebPkiSupportedAlgorithms;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::{
    CertificateError, ClientConfig, DigitallySignedStruct, RootCertStore, SignatureScheme,
};

use crate::ConnectError;

/// libpq's `sslmode`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SslMode {
    /// Plaintext only.
    Disable,
    /// TLS when the server offers it (pgtrail tries TLS first, as `prefer`).
    Allow,
    /// TLS when the server offers it, without checking its certificate.
    Prefer,
    /// TLS always; the certificate is checked only against a configured root.
    Require,
    /// TLS always, the certificate signed by a trusted root.
    VerifyCa,
    /// TLS always, the certificate signed by a trusted root and naming the host.
    VerifyFull,
}

impl SslMode {
    /// Parses libpq's spelling.
    pub fn parse(text: &str) -> Result<Self, ConnectError> {
        Ok(match text {
            "disable" => SslMode::Disable,
            "allow" => SslMode::Allow,
            "prefer" => SslMode::Prefer,
            "require" => SslMode::Require,
            "verify-ca" => SslMode::VerifyCa,
            "verify-full" => SslMode::VerifyFull,
            other => {
                return Err(ConnectError::Invalid {
                    reason: format!(
                        "invalid sslmode '{other}': use disable, allow, prefer, require, verify-ca or verify-full"
                    ),
                })
            }
        })
    }

    /// libpq's spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            SslMode::Disable => "disable",
            SslMode::Allow => "allow",
            SslMode::Prefer => "prefer",
            SslMode::Require => "require",
            SslMode::VerifyCa => "verify-ca",
            SslMode::VerifyFull => "verify-full",
        }
    }

    /// Whether a server without TLS is refused.
    pub fn requires_tls(self) -> bool {
        matches!(
            self,
            SslMode::Require | SslMode::VerifyCa | SslMode::VerifyFull
        )
    }
}

/// Where trusted root certificates come from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RootCerts {
    /// None configured (`~/.postgresql/root.crt` absent, no `sslrootcert`).
    None,
    /// A PEM file of one or more certificates.
    File(PathBuf),
    /// The operating system's trust store (`sslrootcert=system`).
    System,
}

/// How the server's certificate is checked, decided from the mode and roots.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Check {
    Nothing,
    Ca,
    Full,
}

/// Builds the rustls client configuration for `mode` and `roots`; `None`
/// when the mode never uses TLS.
pub(crate) fn client_config(
    mode: SslMode,
    roots: &RootCerts,
) -> Result<Option<Arc<ClientConfig>>, ConnectError> {
    let check = match (mode, roots) {
        (SslMode::Disable, _) => return Ok(None),
        (SslMode::Allow | SslMode::Prefer, _) => Check::Nothing,
        (SslMode::Require, RootCerts::None) => Check::Nothing,
        (SslMode::Require | SslMode::VerifyCa, _) => Check::Ca,
        (SslMode::VerifyFull, _) => Check::Full,
    };
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let builder = ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|e| tls_setup(e.to_string()))?;
    let verifier: Arc<dyn ServerCertVerifier> = match check {
        Check::Nothing => Arc::new(AnyCertificate {
            algorithms: provider.signature_verification_algorithms,
        }),
        Check::Ca | Check::Full => {
            let store = Arc::new(root_store(mode, roots)?);
            let webpki = WebPkiServerVerifier::builder_with_provider(store, provider)
                .build()
                .map_err(|e| tls_setup(e.to_string()))?;
            if check == Check::Full {
                webpki
            } else {
                Arc::new(AnyName { inner: webpki })
            }
        }
    };
    let mut config = builder
        .dangerous()
        .with_custom_certificate_verifier(verifier)
        .with_no_client_auth();
    // PostgreSQL 17's ALPN name; older servers ignore it.
    config.alpn_protocols = vec![b"postgresql".to_vec()];
    Ok(Some(Arc::new(config)))
}

/// A client configuration for pgtrail's TLS clients other than libpq's (the
/// syslog sink): the peer's certificate must chain to `roots` and name the
/// host (`verify-full`'s rule), and `identity`, a PEM certificate chain file
/// and its private key file, is presented when the peer asks for one.
pub fn verified_client_config(
    roots: &RootCerts,
    identity: Option<(&Path, &Path)>,
) -> Result<Arc<ClientConfig>, ConnectError> {
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let store = Arc::new(root_store(SslMode::VerifyFull, roots)?);
    let verifier = WebPkiServerVerifier::builder_with_provider(store, provider.clone())
        .build()
        .map_err(|e| tls_setup(e.to_string()))?;
    let builder = ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| tls_setup(e.to_string()))?
        .with_webpki_verifier(verifier);
    let config = match identity {
        None => builder.with_no_client_auth(),
        Some((cert, key)) => {
            let unreadable = |what: &str, path: &Path, reason: String| {
                tls_setup(format!(
                    "cannot read the client {what} {}: {reason}",
                    path.display()
                ))
            };
            let chain = CertificateDer::pem_file_iter(cert)
                .map_err(|e| unreadable("certificate", cert, e.to_string()))?
                .collect::<Result<Vec<_>, _>>()
                .map_err(|e| unreadable("certificate", cert, e.to_string()))?;
            if chain.is_empty() {
                return Err(unreadable(
                    "certificate",
                    cert,
                    "no certificate in it".into(),
                ));
            }
            let key = PrivateKeyDer::from_pem_file(key)
                .map_err(|e| unreadable("private key", key, e.to_string()))?;
            builder
                .with_client_auth_cert(chain, key)
                .map_err(|e| tls_setup(e.to_string()))?
        }
    };
    Ok(Arc::new(config))
}

fn tls_setup(reason: String) -> ConnectError {
    ConnectError::Invalid {
        reason: format!("cannot set up TLS: {reason}"),
    }
}

fn root_store(mode: SslMode, roots: &RootCerts) -> Result<RootCertStore, ConnectError> {
    let mut store = RootCertStore::empty();
    match roots {
        RootCerts::None => {
            return Err(ConnectError::RootCert {
                path: default_root_cert().unwrap_or_else(|| PathBuf::from("~/.postgresql/root.crt")),
                reason: format!(
                    "sslmode={} checks the server's certificate, and no root certificate is configured: set sslrootcert=FILE (or PGSSLROOTCERT), or sslrootcert=system for the system's trust store",
                    mode.as_str()
                ),
            })
        }
        RootCerts::File(path) => {
            let certs = CertificateDer::pem_file_iter(path)
                .map_err(|e| root_cert_error(path, e.to_string()))?
                .collect::<Result<Vec<_>, _>>()
                .map_err(|e| root_cert_error(path, e.to_string()))?;
            let (added, _) = store.add_parsable_certificates(certs);
            if added == 0 {
                return Err(root_cert_error(path, "no certificate in it".into()));
            }
        }
        RootCerts::System => {
            let loaded = rustls_native_certs::load_native_certs();
            let (added, _) = store.add_parsable_certificates(loaded.certs);
            if added == 0 {
                return Err(ConnectError::RootCert {
                    path: PathBuf::from("system"),
                    reason: "the system's trust store holds no certificate pgtrail could read"
                        .into(),
                });
            }
        }
    }
    Ok(store)
}

fn root_cert_error(path: &Path, reason: String) -> ConnectError {
    ConnectError::RootCert {
        path: path.to_path_buf(),
        reason,
    }
}

/// libpq's default root certificate file, when it exists.
pub(crate) fn default_root_cert() -> Option<PathBuf> {
    let home = std::env::var_os("HOME")?;
    let path = PathBuf::from(home).join(".postgresql").join("root.crt");
    path.exists().then_some(path)
}

/// The server name to present (SNI) and check the certificate against.
pub(crate) fn server_name(host: &str) -> Result<ServerName<'static>, ConnectError> {
    ServerName::try_from(host.to_string()).map_err(|_| ConnectError::Invalid {
        reason: format!("'{host}' is not a valid host name for TLS"),
    })
}

/// `sslmode=verify-ca`: the chain must lead to a trusted root; the name is
/// not checked (libpq's meaning).
#[derive(Debug)]
struct AnyName {
    inner: Arc<WebPkiServerVerifier>,
}

impl ServerCertVerifier for AnyName {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        match self.inner.verify_server_cert(
            end_entity,
            intermediates,
            server_name,
            ocsp_response,
            now,
        ) {
            Err(rustls::Error::InvalidCertificate(
                CertificateError::NotValidForName | CertificateError::NotValidForNameContext { .. },
            )) => Ok(ServerCertVerified::assertion()),
            other => other,
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.inner.supported_verify_schemes()
    }
}

/// `sslmode=prefer`/`require` without a root: encryption without
/// authentication of the server, as in libpq. The handshake's signatures
/// are still checked, so the session is bound to the certificate presented.
#[derive(Debug)]
struct AnyCertificate {
    algorithms: WebPkiSupportedAlgorithms,
}

impl ServerCertVerifier for AnyCertificate {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.algorithms.supported_schemes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn modes_parse_and_round_trip() {
        for text in [
            "disable",
            "allow",
            "prefer",
            "require",
            "verify-ca",
            "verify-full",
        ] {
            assert_eq!(SslMode::parse(text).expect(text).as_str(), text);
        }
        let error = SslMode::parse("verify_full")
            .expect_err("invalid")
            .to_string();
        assert!(error.contains("verify-full"), "{error}");
    }

    #[test]
    fn verifying_modes_need_a_root() {
        for mode in [SslMode::VerifyCa, SslMode::VerifyFull] {
            let error = client_config(mode, &RootCerts::None)
                .expect_err("no root")
                .to_string();
            assert!(error.contains("sslrootcert"), "{error}");
        }
        assert!(client_config(SslMode::Require, &RootCerts::None)
            .expect("no check")
            .is_some());
        assert!(client_config(SslMode::Disable, &RootCerts::None)
            .expect("plain")
            .is_none());
    }
}
