//! Certificates made for a test: a certificate authority and server
//! certificates it signs, so a cluster can run with `ssl = on` and clients
//! can be checked at every `sslmode` (a wrong CA, a wrong host name).

use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, KeyPair, KeyUsagePurpose};

use crate::TestkitError;

/// A throwaway certificate authority.
pub struct TestCa {
    cert: rcgen::Certificate,
    key: KeyPair,
}

impl std::fmt::Debug for TestCa {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TestCa").finish_non_exhaustive()
    }
}

/// A server certificate and its private key, PEM-encoded.
#[derive(Debug, Clone)]
pub struct ServerTls {
    /// The certificate (`ssl_cert_file`).
    pub cert_pem: String,
    /// The private key (`ssl_key_file`).
    pub key_pem: String,
}

impl TestCa {
    /// A new CA named `name`.
    pub fn new(name: &str) -> Result<Self, TestkitError> {
        let key = KeyPair::generate().map_err(cert_error)?;
        let mut params = CertificateParams::new(Vec::<String>::new()).map_err(cert_error)?;
        params.distinguished_name.push(DnType::CommonName, name);
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        let cert = params.self_signed(&key).map_err(cert_error)?;
        Ok(TestCa { cert, key })
    }

    /// The CA's certificate, PEM (a client's `sslrootcert`).
    pub fn cert_pem(&self) -> String {
        self.cert.pem()
    }

    /// A server certificate for `names` (DNS names or IP addresses, each a
    /// subject alternative name), signed by this CA.
    pub fn server(&self, names: &[&str]) -> Result<ServerTls, TestkitError> {
        let key = KeyPair::generate().map_err(cert_error)?;
        let names: Vec<String> = names.iter().map(|n| n.to_string()).collect();
        let mut params = CertificateParams::new(names).map_err(cert_error)?;
        params
            .distinguished_name
            .push(DnType::CommonName, "pgtrail test server");
        let cert = params
            .signed_by(&key, &self.cert, &self.key)
            .map_err(cert_error)?;
        Ok(ServerTls {
            cert_pem: cert.pem(),
            key_pem: key.serialize_pem(),
        })
    }
}

fn cert_error(e: rcgen::Error) -> TestkitError {
    TestkitError::Command {
        command: "rcgen".into(),
        detail: e.to_string(),
    }
}
