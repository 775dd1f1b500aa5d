//! TLS for the QUIC listener: load a certificate chain and key, or generate a self-signed
//! development certificate into the data directory; optional client-certificate
//! verification (mutual TLS). TLS 1.3 only (QUIC requires it), ring as the provider.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};

use super::QuicError;

/// Where the listener's certificate comes from.
#[derive(Debug, Clone, Default)]
pub struct TlsSettings {
    /// PEM certificate chain; with `key`. When both are None a development certificate is
    /// generated (or reused) under `<data dir>/tls/`.
    pub cert: Option<PathBuf>,
    pub key: Option<PathBuf>,
    /// PEM CA bundle: when set, clients must present a certificate it signed.
    pub client_ca: Option<PathBuf>,
}

/// The files a development certificate lives in.
pub fn dev_cert_paths(data_dir: &Path) -> (PathBuf, PathBuf) {
    let dir = data_dir.join("tls");
    (dir.join("cert.pem"), dir.join("key.pem"))
}

/// Names a development certificate is valid for.
fn dev_cert_names() -> Vec<String> {
    vec![
        "localhost".to_string(),
        "127.0.0.1".to_string(),
        "::1".to_string(),
    ]
}

/// Reuses `<data>/tls/{cert,key}.pem` or writes a new self-signed pair there. The
/// certificate is its own CA: clients trust it with `--ca-file <data>/tls/cert.pem`.
pub fn ensure_dev_cert(data_dir: &Path) -> Result<(PathBuf, PathBuf), QuicError> {
    let (cert_path, key_path) = dev_cert_paths(data_dir);
    if cert_path.exists() && key_path.exists() {
        return Ok((cert_path, key_path));
    }
    let dir = cert_path.parent().unwrap_or(data_dir);
    std::fs::create_dir_all(dir).map_err(|e| QuicError::io("create", dir, e))?;
    let certified = rcgen::generate_simple_self_signed(dev_cert_names())
        .map_err(|e| QuicError::Tls(format!("generating a development certificate: {e}")))?;
    std::fs::write(&cert_path, certified.cert.pem())
        .map_err(|e| QuicError::io("write", &cert_path, e))?;
    write_private(&key_path, certified.signing_key.serialize_pem().as_bytes())?;
    Ok((cert_path, key_path))
}

fn write_private(path: &Path, bytes: &[u8]) -> Result<(), QuicError> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)
        .map_err(|e| QuicError::io("create", path, e))?;
    f.write_all(bytes)
        .map_err(|e| QuicError::io("write", path, e))
}

pub fn load_certs(path: &Path) -> Result<Vec<CertificateDer<'static>>, QuicError> {
    let certs: Vec<_> = CertificateDer::pem_file_iter(path)
        .map_err(|e| QuicError::Tls(format!("{}: {e}", path.display())))?
        .collect::<Result<_, _>>()
        .map_err(|e| QuicError::Tls(format!("{}: {e}", path.display())))?;
    if certs.is_empty() {
        return Err(QuicError::Tls(format!(
            "{}: no PEM certificate found",
            path.display()
        )));
    }
    Ok(certs)
}

pub fn load_key(path: &Path) -> Result<PrivateKeyDer<'static>, QuicError> {
    PrivateKeyDer::from_pem_file(path)
        .map_err(|e| QuicError::Tls(format!("{}: no usable private key: {e}", path.display())))
}

pub fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// The rustls server config for `quiver/1`. Returns it and the certificate path in use
/// (logged so that people know which file to give their clients).
pub fn server_config(
    settings: &TlsSettings,
    data_dir: &Path,
) -> Result<(rustls::ServerConfig, PathBuf), QuicError> {
    let (cert_path, key_path) = match (&settings.cert, &settings.key) {
        (Some(c), Some(k)) => (c.clone(), k.clone()),
        (None, None) => ensure_dev_cert(data_dir)?,
        _ => {
            return Err(QuicError::Tls(
                "--tls-cert and --tls-key must be given together".to_string(),
            ))
        }
    };
    let certs = load_certs(&cert_path)?;
    let key = load_key(&key_path)?;
    let builder = rustls::ServerConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13])
        .map_err(|e| QuicError::Tls(e.to_string()))?;
    let builder = match &settings.client_ca {
        None => builder.with_no_client_auth(),
        Some(ca) => {
            let mut roots = rustls::RootCertStore::empty();
            for c in load_certs(ca)? {
                roots
                    .add(c)
                    .map_err(|e| QuicError::Tls(format!("{}: {e}", ca.display())))?;
            }
            let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(
                Arc::new(roots),
                provider(),
            )
            .build()
            .map_err(|e| QuicError::Tls(format!("client CA {}: {e}", ca.display())))?;
            builder.with_client_cert_verifier(verifier)
        }
    };
    let mut config = builder
        .with_single_cert(certs, key)
        .map_err(|e| QuicError::Tls(format!("{}: {e}", cert_path.display())))?;
    config.alpn_protocols = vec![quiver_protocol::ALPN.to_vec()];
    config.max_early_data_size = 0;
    Ok((config, cert_path))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dev_cert_is_generated_once_and_loads() {
        let base = std::env::current_dir()
            .unwrap()
            .join("target")
            .join("test-tls");
        let dir = tempfile::Builder::new().tempdir_in({
            std::fs::create_dir_all(&base).unwrap();
            &base
        });
        let dir = dir.unwrap();
        let (c1, k1) = ensure_dev_cert(dir.path()).unwrap();
        let first = std::fs::read(&c1).unwrap();
        let (c2, _) = ensure_dev_cert(dir.path()).unwrap();
        assert_eq!(
            first,
            std::fs::read(&c2).unwrap(),
            "reused, not regenerated"
        );
        assert_eq!(load_certs(&c1).unwrap().len(), 1);
        load_key(&k1).unwrap();
        let (config, path) = server_config(&TlsSettings::default(), dir.path()).unwrap();
        assert_eq!(path, c1);
        assert_eq!(config.alpn_protocols, vec![b"quiver/1".to_vec()]);
    }
}
