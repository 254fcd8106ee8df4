//! TLS client configuration (crate feature `tls`, rustls).

use std::sync::Arc;

use rustls::RootCertStore;
use rustls::pki_types::CertificateDer;
use rustls::pki_types::pem::PemObject;

/// A rustls client config trusting `ca_file` (PEM) or, without it, the
/// platform's root certificates.
pub(crate) fn client_config(ca_file: Option<&str>) -> Result<Arc<rustls::ClientConfig>, String> {
    let mut roots = RootCertStore::empty();
    match ca_file {
        Some(path) => {
            for cert in CertificateDer::pem_file_iter(path)
                .map_err(|e| format!("tls_ca_file '{path}': {e}"))?
            {
                let cert = cert.map_err(|e| format!("tls_ca_file '{path}': {e}"))?;
                roots
                    .add(cert)
                    .map_err(|e| format!("tls_ca_file '{path}': {e}"))?;
            }
        }
        None => {
            let found = rustls_native_certs::load_native_certs();
            for cert in found.certs {
                // A platform certificate rustls cannot parse is skipped, as browsers do.
                let _ = roots.add(cert);
            }
        }
    }
    if roots.is_empty() {
        return Err("tls: no CA certificate to trust".into());
    }
    // `ClientConfig::builder()` panics when the process has no default crypto
    // provider and several are compiled in; use the process's choice if any,
    // else this crate's rustls default (aws-lc-rs), without installing it.
    let provider = rustls::crypto::CryptoProvider::get_default()
        .map(Arc::clone)
        .unwrap_or_else(|| Arc::new(rustls::crypto::aws_lc_rs::default_provider()));
    Ok(Arc::new(
        rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|e| format!("tls: {e}"))?
            .with_root_certificates(roots)
            .with_no_client_auth(),
    ))
}
