//! A certificate pgtrail presents (the proxy to its clients, `serve` to
//! browsers): a PEM chain and its key made into a rustls server config.
//! Both listeners read it the same way, so they fail the same way.

use std::path::Path;
use std::sync::Arc;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::ServerConfig;

/// Why a certificate cannot be presented.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CertificateError {
    /// The certificate or key file cannot be read or holds no PEM item.
    #[error("cannot read {what} {path}: {reason}")]
    Pem {
        /// `certificate` or `private key`.
        what: &'static str,
        /// The file.
        path: String,
        /// What went wrong.
        reason: String,
    },
    /// rustls refused the pair (e.g. the key does not match the certificate).
    #[error("cannot use the certificate and key: {0}")]
    Config(#[source] rustls::Error),
}

/// A server config from a PEM certificate chain file (the presenter's own
/// certificate first) and its PEM private key file (PKCS#8, PKCS#1 or
/// SEC1), offering `alpn`.
pub fn from_pem_files(
    cert: &Path,
    key: &Path,
    alpn: Vec<Vec<u8>>,
) -> Result<ServerConfig, CertificateError> {
    let pem_error = |what, path: &Path| {
        let path = path.display().to_string();
        move |e: rustls::pki_types::pem::Error| CertificateError::Pem {
            what,
            path,
            reason: e.to_string(),
        }
    };
    let chain = CertificateDer::pem_file_iter(cert)
        .map_err(pem_error("certificate", cert))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(pem_error("certificate", cert))?;
    let key = PrivateKeyDer::from_pem_file(key).map_err(pem_error("private key", key))?;
    config(chain, key, &cert.display().to_string(), alpn)
}

/// The same from PEM text.
pub fn from_pem(
    cert_pem: &str,
    key_pem: &str,
    alpn: Vec<Vec<u8>>,
) -> Result<ServerConfig, CertificateError> {
    let pem_error = |what| {
        move |e: rustls::pki_types::pem::Error| CertificateError::Pem {
            what,
            path: "(PEM text)".into(),
            reason: e.to_string(),
        }
    };
    let chain = CertificateDer::pem_slice_iter(cert_pem.as_bytes())
        .collect::<Result<Vec<_>, _>>()
        .map_err(pem_error("certificate"))?;
    let key =
        PrivateKeyDer::from_pem_slice(key_pem.as_bytes()).map_err(pem_error("private key"))?;
    config(chain, key, "(PEM text)", alpn)
}

fn config(
    chain: Vec<CertificateDer<'static>>,
    key: PrivateKeyDer<'static>,
    path: &str,
    alpn: Vec<Vec<u8>>,
) -> Result<ServerConfig, CertificateError> {
    if chain.is_empty() {
        return Err(CertificateError::Pem {
            what: "certificate",
            path: path.to_string(),
            reason: "no certificate in it".into(),
        });
    }
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let mut config = ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(CertificateError::Config)?
        .with_no_client_auth()
        .with_single_cert(chain, key)
        .map_err(CertificateError::Config)?;
    config.alpn_protocols = alpn;
    Ok(config)
}
