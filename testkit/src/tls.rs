//! Certificates for the tests' TLS servers, made in-process (no openssl CLI needed).

use std::path::{Path, PathBuf};

use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair, KeyUsagePurpose};

/// PEM files of a private CA and of a server certificate it signed for 127.0.0.1.
#[derive(Debug, Clone)]
pub struct TlsFiles {
    /// The CA's certificate: what a client trusts.
    pub ca_file: PathBuf,
    /// The server's certificate (subject alternative name IP 127.0.0.1; not a CA:
    /// webpki refuses a CA certificate as an end entity's).
    pub cert_file: PathBuf,
    /// The server's private key (PKCS#8).
    pub key_file: PathBuf,
}

/// Makes a fresh CA and a server certificate for 127.0.0.1, written into `dir` as
/// `ca.pem`, `cert.pem` and `key.pem`.
pub fn write_ca_and_server_cert(dir: &Path) -> TlsFiles {
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).expect("CA params");
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca_params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    ca_params
        .distinguished_name
        .push(DnType::CommonName, "liveops test CA");
    let ca_key = KeyPair::generate().expect("a CA key");
    let ca_cert = ca_params.self_signed(&ca_key).expect("a CA certificate");
    let issuer = Issuer::new(ca_params, ca_key);
    let mut params = CertificateParams::new(vec!["127.0.0.1".to_string()]).expect("server params");
    params
        .distinguished_name
        .push(DnType::CommonName, "127.0.0.1");
    let key = KeyPair::generate().expect("a server key");
    let cert = params
        .signed_by(&key, &issuer)
        .expect("a server certificate");
    let files = TlsFiles {
        ca_file: dir.join("ca.pem"),
        cert_file: dir.join("cert.pem"),
        key_file: dir.join("key.pem"),
    };
    for (path, pem) in [
        (&files.ca_file, ca_cert.pem()),
        (&files.cert_file, cert.pem()),
        (&files.key_file, key.serialize_pem()),
    ] {
        std::fs::write(path, pem).unwrap_or_else(|e| panic!("writing {}: {e}", path.display()));
    }
    files
}
