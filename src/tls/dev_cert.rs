//! `switchboard dev-cert`: a self-signed certificate for `localhost`, `127.0.0.1` and `::1`,
//! so that HTTPS and WSS can be tried on one machine. Nothing trusts it until it is trusted by
//! hand (a browser exception, a client's root store); it is not for a public address.

use super::TlsError;
use rcgen::{CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, KeyPair, KeyUsagePurpose};
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

/// The names the certificate is valid for.
pub const NAMES: [&str; 3] = ["localhost", "127.0.0.1", "::1"];

/// How long a development certificate is valid.
const VALID_FOR: Duration = Duration::from_secs(365 * 24 * 3600);

/// What `write` wrote.
#[derive(Debug)]
pub struct DevCert {
    /// The certificate (PEM).
    pub cert: PathBuf,
    /// Its private key (PEM, PKCS#8), readable by its owner only.
    pub key: PathBuf,
}

/// A new self-signed certificate and its key, both PEM.
pub fn generate() -> Result<(String, String), TlsError> {
    let key = KeyPair::generate()?;
    let mut params = CertificateParams::new(NAMES.map(str::to_owned).to_vec())?;
    let mut name = DistinguishedName::new();
    name.push(DnType::CommonName, "Switchboard development certificate");
    params.distinguished_name = name;
    // Starts an hour back so that a clock a little behind still accepts it.
    let now = SystemTime::now();
    params.not_before = (now - Duration::from_secs(3600)).into();
    params.not_after = (now + VALID_FOR).into();
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    let cert = params.self_signed(&key)?;
    Ok((cert.pem(), key.serialize_pem()))
}

/// Writes `dir/cert.pem` and `dir/key.pem`; refuses to replace either unless `force`.
pub fn write(dir: &Path, force: bool) -> Result<DevCert, TlsError> {
    let out = DevCert { cert: dir.join("cert.pem"), key: dir.join("key.pem") };
    // Both are checked before either is written, so a refusal leaves no half-made pair.
    if !force && let Some(existing) = [&out.cert, &out.key].into_iter().find(|p| p.exists()) {
        return Err(TlsError::Exists(existing.clone()));
    }
    std::fs::create_dir_all(dir).map_err(|source| TlsError::Write { path: dir.to_path_buf(), source })?;
    let (cert, key) = generate()?;
    write_file(&out.key, &key, force, true)?;
    write_file(&out.cert, &cert, force, false)?;
    Ok(out)
}

pub(crate) fn write_file(path: &Path, content: &str, force: bool, private: bool) -> Result<(), TlsError> {
    use std::io::Write;
    let fail = |source| TlsError::Write { path: path.to_path_buf(), source };
    let mut options = std::fs::OpenOptions::new();
    options.write(true);
    if force {
        options.create(true).truncate(true);
    } else {
        // Another process may have made the file since the check: still never overwrite.
        options.create_new(true);
    }
    #[cfg(unix)]
    if private {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    let mut file = options.open(path).map_err(|e| match e.kind() {
        std::io::ErrorKind::AlreadyExists => TlsError::Exists(path.to_path_buf()),
        _ => fail(e),
    })?;
    // `mode` applies only to a file it creates: a key written over an older file is made
    // private too.
    #[cfg(unix)]
    if private {
        use std::os::unix::fs::PermissionsExt;
        file.set_permissions(std::fs::Permissions::from_mode(0o600)).map_err(fail)?;
    }
    #[cfg(not(unix))]
    let _ = private;
    file.write_all(content.as_bytes()).map_err(fail)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refuses_to_overwrite_without_force() {
        let dir = tempfile::tempdir().expect("tempdir");
        let first = write(dir.path(), false).expect("written");
        let before = std::fs::read(&first.cert).expect("read");
        let err = write(dir.path(), false).expect_err("refused").to_string();
        assert!(err.contains("--force"), "{err}");
        assert_eq!(std::fs::read(&first.cert).expect("read"), before, "untouched");
        write(dir.path(), true).expect("forced");
        assert_ne!(std::fs::read(&first.cert).expect("read"), before, "a new certificate");
    }

    #[cfg(unix)]
    #[test]
    fn the_key_is_private() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().expect("tempdir");
        let out = write(dir.path(), false).expect("written");
        let mode = std::fs::metadata(&out.key).expect("stat").permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
    }
}
