//! TLS between the nodes of a cluster: mutual, against the cluster's own CA.
//!
//! Each node holds a certificate and key issued by the cluster CA (`[cluster] tls_cert`,
//! `tls_key`, `ca`). A link is made only when both ends present a certificate that chains to
//! that CA: the listener asks every peer for one and refuses the handshake without it, and the
//! dialer checks the listener's. Nodes dial each other by address, so the certificate's names
//! are not checked against it: membership of the cluster is holding a certificate of its CA
//! (keep that CA for the cluster alone). The cookie handshake still runs inside the link.
//!
//! `switchboard cluster-certs` makes a CA and one certificate per node for trying this out
//! and for small deployments (see `deploy/`).

use super::{TlsError, read_certs, read_private_key};
use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose,
};
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::server::WebPkiClientVerifier;
use rustls::{CertificateError, ClientConfig, DigitallySignedStruct, RootCertStore, ServerConfig, SignatureScheme};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime};
use switchboard_cluster::ClusterTls;

/// The three files of a node's cluster TLS.
#[derive(Clone, Debug)]
pub struct ClusterTlsFiles {
    /// This node's certificate (PEM chain, its own first), issued by the cluster CA.
    pub cert: PathBuf,
    /// Its private key (PEM).
    pub key: PathBuf,
    /// The cluster CA's certificate (PEM): peers must present a certificate it issued.
    pub ca: PathBuf,
}

impl ClusterTlsFiles {
    /// Reads the files and builds both ends of the links.
    pub fn load(&self) -> Result<ClusterTls, TlsError> {
        let chain = read_certs("cluster.tls_cert", &self.cert)?;
        let key = read_private_key("cluster.tls_key", &self.key)?;
        let mut roots = RootCertStore::empty();
        for ca in read_certs("cluster.ca", &self.ca)? {
            roots.add(ca).map_err(TlsError::Config)?;
        }
        let roots = Arc::new(roots);
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let clients = WebPkiClientVerifier::builder_with_provider(roots.clone(), provider.clone())
            .build()
            .map_err(|e| TlsError::Config(rustls::Error::General(e.to_string())))?;
        let server = ServerConfig::builder_with_provider(provider.clone())
            .with_safe_default_protocol_versions()?
            .with_client_cert_verifier(clients)
            .with_single_cert(chain.clone(), key.clone_key())?;
        let servers = rustls::client::WebPkiServerVerifier::builder_with_provider(roots, provider.clone())
            .build()
            .map_err(|e| TlsError::Config(rustls::Error::General(e.to_string())))?;
        let client = ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()?
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(IssuedByClusterCa(servers)))
            .with_client_auth_cert(chain, key)?;
        Ok(ClusterTls {
            acceptor: tokio_rustls::TlsAcceptor::from(Arc::new(server)),
            connector: tokio_rustls::TlsConnector::from(Arc::new(client)),
        })
    }
}

/// The dialer's check of a listener: the full WebPKI check against the cluster CA (chain,
/// validity, key usage, signatures), except that the certificate need not name the address
/// dialled.
#[derive(Debug)]
struct IssuedByClusterCa(Arc<rustls::client::WebPkiServerVerifier>);

impl ServerCertVerifier for IssuedByClusterCa {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        match self.0.verify_server_cert(end_entity, intermediates, server_name, ocsp_response, now) {
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
        self.0.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.0.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.supported_verify_schemes()
    }
}

/// How long generated certificates are valid.
const VALID_FOR: Duration = Duration::from_secs(2 * 365 * 24 * 3600);

fn validity(params: &mut CertificateParams) {
    let now = SystemTime::now();
    params.not_before = (now - Duration::from_secs(3600)).into();
    params.not_after = (now + VALID_FOR).into();
}

/// `switchboard cluster-certs`: writes `ca.pem` (and `ca-key.pem`, to issue more later) and,
/// per node, `NODE.pem` and `NODE-key.pem` into `dir`. Refuses to overwrite unless `force`.
/// Returns the files written.
pub fn write_cluster_certs(dir: &Path, nodes: &[String], force: bool) -> Result<Vec<PathBuf>, TlsError> {
    let mut names = vec![dir.join("ca.pem"), dir.join("ca-key.pem")];
    for n in nodes {
        names.push(dir.join(format!("{n}.pem")));
        names.push(dir.join(format!("{n}-key.pem")));
    }
    if !force && let Some(existing) = names.iter().find(|p| p.exists()) {
        return Err(TlsError::Exists(existing.clone()));
    }
    std::fs::create_dir_all(dir).map_err(|source| TlsError::Write { path: dir.to_path_buf(), source })?;
    let ca_key = KeyPair::generate()?;
    let mut ca = CertificateParams::default();
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, "Switchboard cluster CA");
    ca.distinguished_name = dn;
    ca.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    ca.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    validity(&mut ca);
    let ca_cert = ca.self_signed(&ca_key)?;
    super::dev_cert::write_file(&names[1], &ca_key.serialize_pem(), force, true)?;
    super::dev_cert::write_file(&names[0], &ca_cert.pem(), force, false)?;
    let issuer = Issuer::new(ca, ca_key);
    for n in nodes {
        let key = KeyPair::generate()?;
        let mut params =
            CertificateParams::new(vec![switchboard_cluster::dialer::CLUSTER_SERVER_NAME.to_owned(), n.clone()])?;
        let mut dn = DistinguishedName::new();
        dn.push(DnType::CommonName, n.as_str());
        params.distinguished_name = dn;
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth, ExtendedKeyUsagePurpose::ClientAuth];
        validity(&mut params);
        let cert = params.signed_by(&key, &issuer)?;
        super::dev_cert::write_file(&dir.join(format!("{n}-key.pem")), &key.serialize_pem(), force, true)?;
        super::dev_cert::write_file(&dir.join(format!("{n}.pem")), &cert.pem(), force, false)?;
    }
    Ok(names)
}
