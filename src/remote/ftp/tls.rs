//! FTPS certificate checks: the system's authorities, a CA file, or one
//! pinned certificate.

use super::*;

/// How the connection is protected, and which certificates are trusted.
#[derive(Debug, Clone)]
pub struct Tls {
    /// Implicit TLS (the whole connection, usually port 990) rather than `AUTH TLS`.
    pub implicit: bool,
    pub verifier: Arc<Verifier>,
}

/// Which server certificates are accepted. Remembers the fingerprint of a
/// refused one, for the error message.
#[derive(Debug)]
pub struct Verifier {
    trust: Trust,
    pub(super) provider: Arc<rustls::crypto::CryptoProvider>,
    refused: Mutex<Option<String>>,
}

#[derive(Debug)]
enum Trust {
    /// Certificate authorities: the system's, or those of a `ca_file`.
    Authorities(Arc<WebPkiServerVerifier>),
    /// Exactly one certificate, by the SHA-256 of its DER encoding.
    Pinned([u8; 32]),
}

impl Verifier {
    /// Trusts the certificate authorities in a PEM file.
    pub fn from_ca_file(path: &Path) -> Result<Verifier, String> {
        let mut roots = RootCertStore::empty();
        let certificates = CertificateDer::pem_file_iter(path).map_err(|e| e.to_string())?;
        for certificate in certificates {
            let certificate = certificate.map_err(|e| e.to_string())?;
            roots.add(certificate).map_err(|e| e.to_string())?;
        }
        if roots.is_empty() {
            return Err("holds no PEM certificate".into());
        }
        Self::from_roots(roots)
    }

    /// Trusts the system's certificate authorities.
    pub fn system() -> Result<Verifier, String> {
        // Read from disk once per process, however many endpoints use it.
        static SYSTEM_ROOTS: std::sync::OnceLock<RootCertStore> = std::sync::OnceLock::new();
        let roots = SYSTEM_ROOTS.get_or_init(|| {
            let mut roots = RootCertStore::empty();
            roots.add_parsable_certificates(rustls_native_certs::load_native_certs().certs);
            roots
        });
        if roots.is_empty() {
            return Err(
                "no system certificate authorities found; set `ca_file` or `certificate_fingerprint`"
                    .into(),
            );
        }
        Self::from_roots(roots.clone())
    }

    /// Accepts only the certificate with this SHA-256 fingerprint.
    pub fn pinned(fingerprint: [u8; 32]) -> Verifier {
        Verifier {
            trust: Trust::Pinned(fingerprint),
            provider: provider(),
            refused: Mutex::new(None),
        }
    }

    fn from_roots(roots: RootCertStore) -> Result<Verifier, String> {
        let provider = provider();
        let verifier =
            WebPkiServerVerifier::builder_with_provider(Arc::new(roots), provider.clone())
                .build()
                .map_err(|e| e.to_string())?;
        Ok(Verifier {
            trust: Trust::Authorities(verifier),
            provider,
            refused: Mutex::new(None),
        })
    }

    fn refused(&self, certificate: &CertificateDer<'_>) {
        *self.refused.lock().expect("refused lock") = Some(fingerprint(certificate.as_ref()));
    }

    pub(super) fn take_refused(&self) -> Option<String> {
        self.refused.lock().expect("refused lock").take()
    }
}

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// `AB:CD:...`, as `openssl x509 -fingerprint -sha256` prints it.
pub fn fingerprint(der: &[u8]) -> String {
    use sha2::Digest;
    sha2::Sha256::digest(der)
        .iter()
        .map(|b| format!("{b:02X}"))
        .collect::<Vec<_>>()
        .join(":")
}

/// Reads a fingerprint as hex, with or without colons, any case, with or
/// without a leading `SHA256:`.
pub fn parse_fingerprint(text: &str) -> Option<[u8; 32]> {
    let text = text.trim();
    let text = text
        .strip_prefix("SHA256:")
        .or_else(|| text.strip_prefix("sha256:"))
        .unwrap_or(text);
    let hex: String = text.chars().filter(|c| *c != ':').collect();
    if hex.len() != 64 {
        return None;
    }
    let mut out = [0u8; 32];
    for (i, byte) in out.iter_mut().enumerate() {
        *byte = u8::from_str_radix(hex.get(2 * i..2 * i + 2)?, 16).ok()?;
    }
    Some(out)
}

impl ServerCertVerifier for Verifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let verdict = match &self.trust {
            Trust::Authorities(webpki) => webpki.verify_server_cert(
                end_entity,
                intermediates,
                server_name,
                ocsp_response,
                now,
            ),
            Trust::Pinned(pinned) => {
                use sha2::Digest;
                if sha2::Sha256::digest(end_entity.as_ref()).as_slice() == pinned {
                    Ok(ServerCertVerified::assertion())
                } else {
                    Err(rustls::Error::InvalidCertificate(
                        rustls::CertificateError::ApplicationVerificationFailure,
                    ))
                }
            }
        };
        if verdict.is_err() {
            self.refused(end_entity);
        }
        verdict
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.provider
            .signature_verification_algorithms
            .supported_schemes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fingerprints_read_as_openssl_and_ssh_print_them() {
        let der = b"certificate";
        let printed = fingerprint(der);
        let expected = parse_fingerprint(&printed).unwrap();
        assert_eq!(parse_fingerprint(&printed.to_lowercase()), Some(expected));
        assert_eq!(parse_fingerprint(&printed.replace(':', "")), Some(expected));
        assert_eq!(
            parse_fingerprint(&format!("SHA256:{}", printed.replace(':', ""))),
            Some(expected)
        );
        assert_eq!(parse_fingerprint("AB:CD"), None);
        assert_eq!(parse_fingerprint(&"ZZ".repeat(32)), None);
    }
}
