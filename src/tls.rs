//! TLS on the node's own listener: the certificate and key files of `[http] tls_cert` and
//! `tls_key` become a rustls server configuration, read once at start (where a bad file stops
//! the node with a message naming the key) and again on every SIGHUP (where a bad file is
//! logged and the previous certificate keeps serving).

use axum_server::tls_rustls::RustlsConfig;
use rustls::ServerConfig;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use std::path::{Path, PathBuf};
use std::sync::Arc;

pub mod cluster;
pub mod dev_cert;

/// Why a certificate or key could not be used.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// The file could not be read.
    #[error("{key} {}: cannot read: {source}", path.display())]
    Read {
        /// The config key that names the file.
        key: &'static str,
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The file is not the PEM it should be.
    #[error("{key} {}: {what}", path.display())]
    Pem {
        /// The config key that names the file.
        key: &'static str,
        /// The file.
        path: PathBuf,
        /// What is wrong with it.
        what: String,
    },
    /// rustls refused the pair (a key that does not match the certificate, an unsupported key).
    #[error("http.tls_cert and http.tls_key do not make a usable TLS configuration: {0}")]
    Config(#[from] rustls::Error),
    /// `dev-cert` would overwrite a file.
    #[error("{} exists already; pass --force to overwrite it", .0.display())]
    Exists(PathBuf),
    /// `dev-cert` could not make the certificate.
    #[error("cannot generate the certificate: {0}")]
    Generate(#[from] rcgen::Error),
    /// `dev-cert` could not write a file.
    #[error("cannot write {}: {source}", path.display())]
    Write {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
}

/// The certificate chain and private key files a node serves TLS with.
#[derive(Clone, Debug)]
pub struct TlsFiles {
    /// PEM certificate chain, the node's own certificate first.
    pub cert: PathBuf,
    /// PEM private key (PKCS#8, PKCS#1 or SEC1).
    pub key: PathBuf,
}

impl TlsFiles {
    /// Reads both files and builds the server configuration.
    pub fn load(&self) -> Result<Arc<ServerConfig>, TlsError> {
        let chain = read_chain(&self.cert)?;
        let key = read_key(&self.key)?;
        // The provider is named here rather than taken from the process default: ring and
        // aws-lc-rs are both in the build, and rustls cannot pick between them on its own.
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut config = ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()?
            .with_no_client_auth()
            .with_single_cert(chain, key)?;
        // Only HTTP/1.1: the signaling WebSocket is an HTTP/1.1 upgrade, and browsers open
        // WebSockets over their own HTTP/1.1 connections anyway. Offering h2 would add a
        // second protocol for the REST calls alone.
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        Ok(Arc::new(config))
    }
}

fn read(key: &'static str, path: &Path) -> Result<Vec<u8>, TlsError> {
    std::fs::read(path).map_err(|source| TlsError::Read { key, path: path.to_path_buf(), source })
}

fn read_chain(path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    read_certs("http.tls_cert", path)
}

/// The PEM certificates in `path` (at least one); errors name the config `key`.
pub(crate) fn read_certs(key: &'static str, path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let pem = read(key, path)?;
    let bad = |what: String| TlsError::Pem { key, path: path.to_path_buf(), what };
    let chain = CertificateDer::pem_slice_iter(&pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| bad(format!("not a valid PEM certificate file: {e}")))?;
    if chain.is_empty() {
        return Err(bad("holds no PEM certificate (-----BEGIN CERTIFICATE-----)".into()));
    }
    Ok(chain)
}

fn read_key(path: &Path) -> Result<PrivateKeyDer<'static>, TlsError> {
    read_private_key("http.tls_key", path)
}

/// The PEM private key in `path`; errors name the config `key`.
pub(crate) fn read_private_key(key: &'static str, path: &Path) -> Result<PrivateKeyDer<'static>, TlsError> {
    let pem = read(key, path)?;
    PrivateKeyDer::from_pem_slice(&pem).map_err(|e| TlsError::Pem {
        key,
        path: path.to_path_buf(),
        what: match e {
            rustls::pki_types::pem::Error::NoItemsFound => "holds no PEM private key".into(),
            e => format!("not a valid PEM private key file: {e}"),
        },
    })
}

/// Reads the files again on every SIGHUP and swaps the certificate of new connections;
/// connections already open keep theirs. A file that cannot be used is logged and changes
/// nothing. The signal handler is in place when this returns, so a SIGHUP sent after it
/// never ends the process.
#[cfg(unix)]
pub fn reload_on_hangup(files: TlsFiles, serving: RustlsConfig) -> std::io::Result<tokio::task::JoinHandle<()>> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut hangups = signal(SignalKind::hangup())?;
    Ok(tokio::spawn(async move {
        while hangups.recv().await.is_some() {
            let files = files.clone();
            let loaded = tokio::task::spawn_blocking(move || files.load()).await;
            match loaded {
                Ok(Ok(config)) => {
                    serving.reload_from_config(config);
                    tracing::info!("tls certificate reloaded");
                }
                Ok(Err(e)) => tracing::error!(error = %e, "tls certificate not reloaded; serving the previous one"),
                Err(e) => tracing::error!(error = %e, "tls certificate not reloaded; serving the previous one"),
            }
        }
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn files(dir: &Path) -> TlsFiles {
        TlsFiles { cert: dir.join("cert.pem"), key: dir.join("key.pem") }
    }

    #[test]
    fn a_dev_certificate_loads() {
        let dir = tempfile::tempdir().expect("tempdir");
        dev_cert::write(dir.path(), false).expect("written");
        files(dir.path()).load().expect("loads");
    }

    #[test]
    fn bad_files_are_named_not_panicked_on() {
        let dir = tempfile::tempdir().expect("tempdir");
        let f = files(dir.path());
        let err = f.load().expect_err("missing").to_string();
        assert!(err.contains("http.tls_cert") && err.contains("cannot read"), "{err}");

        dev_cert::write(dir.path(), false).expect("written");
        std::fs::write(&f.key, "not a key").expect("write");
        let err = f.load().expect_err("no key").to_string();
        assert!(err.contains("http.tls_key") && err.contains("no PEM private key"), "{err}");

        std::fs::write(&f.cert, "-----BEGIN CERTIFICATE-----\n!!!\n").expect("write");
        let err = f.load().expect_err("bad pem").to_string();
        assert!(err.contains("http.tls_cert") && err.contains("not a valid PEM"), "{err}");

        std::fs::write(&f.cert, "").expect("write");
        let err = f.load().expect_err("empty").to_string();
        assert!(err.contains("no PEM certificate"), "{err}");
    }

    #[test]
    fn a_key_of_another_certificate_is_refused() {
        let (a, b) = (tempfile::tempdir().expect("tempdir"), tempfile::tempdir().expect("tempdir"));
        dev_cert::write(a.path(), false).expect("written");
        dev_cert::write(b.path(), false).expect("written");
        let mixed = TlsFiles { cert: a.path().join("cert.pem"), key: b.path().join("key.pem") };
        let err = mixed.load().expect_err("mismatch").to_string();
        assert!(err.contains("usable TLS configuration"), "{err}");
    }
}
