//! A farm's own certificate authority (rcgen): `lathe-coordinator certs` and `make farm` make the
//! CA once and issue from it the servers' certificates (the coordinator, NATS, etcd) and one
//! client certificate per worker, whose common name is the worker's id.
//!
//! Files, all PEM, in one folder: `ca.pem` and `ca-key.pem`; `{file}.pem` and `{file}-key.pem`
//! for each certificate (`server`, `worker-{id}`). Keys are written with mode 0600. An existing CA is kept (its
//! certificates stay valid); an existing certificate is issued again.

use std::path::{Path, PathBuf};

use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose,
};

use crate::error::{Error, Result};

/// What a certificate is for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Usage {
    /// A server reached at these names and addresses (besides `localhost`, `127.0.0.1`, `::1`).
    Server(Vec<String>),
    /// A client (a worker): the name is its identity.
    Client,
}

/// The CA's certificate file in `dir`.
pub fn ca_path(dir: &Path) -> PathBuf {
    dir.join("ca.pem")
}

/// The certificate and key files of `name` in `dir`.
pub fn certificate_paths(dir: &Path, name: &str) -> (PathBuf, PathBuf) {
    (
        dir.join(format!("{name}.pem")),
        dir.join(format!("{name}-key.pem")),
    )
}

fn pki_error(what: &str, error: rcgen::Error) -> Error {
    Error::InvalidRequest(format!("{what}: {error}"))
}

/// Writes `bytes` to `path` through a temporary file renamed into place; `secret` files get
/// mode 0600 before anything is written to them.
fn write_file(path: &Path, bytes: &[u8], secret: bool) -> Result<()> {
    use std::io::Write as _;
    let dir = path.parent().unwrap_or(Path::new("."));
    let mut file = tempfile::NamedTempFile::new_in(dir).map_err(|e| Error::io(dir, e))?;
    if !secret {
        use std::os::unix::fs::PermissionsExt as _;
        std::fs::set_permissions(file.path(), std::fs::Permissions::from_mode(0o644))
            .map_err(|e| Error::io(file.path(), e))?;
    }
    file.write_all(bytes).map_err(|e| Error::io(path, e))?;
    file.persist(path).map_err(|e| Error::io(path, e.error))?;
    Ok(())
}

/// Makes the CA in `dir` unless it exists; returns true when it made one.
pub fn ensure_ca(dir: &Path) -> Result<bool> {
    std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
    if ca_path(dir).exists() {
        return Ok(false);
    }
    let mut params = CertificateParams::default();
    let mut name = DistinguishedName::new();
    name.push(DnType::CommonName, "lathe farm CA");
    params.distinguished_name = name;
    params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    params.not_after = rcgen::date_time_ymd(2036, 1, 1);
    let key = KeyPair::generate().map_err(|e| pki_error("CA key", e))?;
    let certificate = params
        .self_signed(&key)
        .map_err(|e| pki_error("CA certificate", e))?;
    write_file(
        &dir.join("ca-key.pem"),
        key.serialize_pem().as_bytes(),
        true,
    )?;
    write_file(&ca_path(dir), certificate.pem().as_bytes(), false)?;
    Ok(true)
}

/// Issues a certificate for `name` (its common name: a worker's id) from the CA in `dir` (which
/// must exist), into the files of `file` ([`certificate_paths`]); returns them.
pub fn issue(dir: &Path, file: &str, name: &str, usage: &Usage) -> Result<(PathBuf, PathBuf)> {
    if name.is_empty()
        || !name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
    {
        return Err(Error::InvalidRequest(format!(
            "certificate name {name:?}: letters, digits, '-', '_' or '.'"
        )));
    }
    let ca_pem = std::fs::read_to_string(ca_path(dir)).map_err(|e| Error::io(ca_path(dir), e))?;
    let ca_key_path = dir.join("ca-key.pem");
    let ca_key_pem =
        std::fs::read_to_string(&ca_key_path).map_err(|e| Error::io(&ca_key_path, e))?;
    let ca_key = KeyPair::from_pem(&ca_key_pem).map_err(|e| pki_error("CA key", e))?;
    let issuer =
        Issuer::from_ca_cert_pem(&ca_pem, ca_key).map_err(|e| pki_error("CA certificate", e))?;
    let names = match usage {
        Usage::Server(hosts) => {
            let mut names: Vec<String> = ["localhost", "127.0.0.1", "::1"]
                .into_iter()
                .map(str::to_owned)
                .collect();
            names.extend(hosts.iter().cloned());
            names.dedup();
            names
        }
        Usage::Client => Vec::new(),
    };
    let mut params = CertificateParams::new(names).map_err(|e| pki_error(name, e))?;
    let mut subject = DistinguishedName::new();
    subject.push(DnType::CommonName, name);
    params.distinguished_name = subject;
    params.key_usages = vec![
        KeyUsagePurpose::DigitalSignature,
        KeyUsagePurpose::KeyEncipherment,
    ];
    params.extended_key_usages = match usage {
        Usage::Server(_) => vec![
            ExtendedKeyUsagePurpose::ServerAuth,
            // etcd's and NATS's own client connections (peers, the CLI tools) use the same file.
            ExtendedKeyUsagePurpose::ClientAuth,
        ],
        Usage::Client => vec![ExtendedKeyUsagePurpose::ClientAuth],
    };
    params.not_after = rcgen::date_time_ymd(2035, 1, 1);
    let key = KeyPair::generate().map_err(|e| pki_error(name, e))?;
    let certificate = params
        .signed_by(&key, &issuer)
        .map_err(|e| pki_error(name, e))?;
    let (cert_path, key_path) = certificate_paths(dir, file);
    write_file(&key_path, key.serialize_pem().as_bytes(), true)?;
    write_file(&cert_path, certificate.pem().as_bytes(), false)?;
    Ok((cert_path, key_path))
}

/// A CA and a server certificate for `coordinator` made in `dir`, for the unit tests that serve
/// TLS; returns the certificate, its key and the CA's certificate.
#[cfg(test)]
pub(crate) fn test_server_certificate(dir: &Path) -> (PathBuf, PathBuf, PathBuf) {
    ensure_ca(dir).expect("CA");
    let (cert, key) = issue(dir, "server", "coordinator", &Usage::Server(Vec::new()))
        .expect("server certificate");
    (cert, key, ca_path(dir))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_worker_certificate_names_the_worker_and_keys_are_private() {
        use std::os::unix::fs::PermissionsExt as _;
        let dir = tempfile::tempdir().unwrap();
        assert!(ensure_ca(dir.path()).unwrap());
        assert!(!ensure_ca(dir.path()).unwrap(), "an existing CA is kept");
        let (cert, key) = issue(dir.path(), "worker-w7", "w7", &Usage::Client).unwrap();
        let pem = std::fs::read(&cert).unwrap();
        let der = x509_parser::pem::parse_x509_pem(&pem).unwrap().1.contents;
        assert_eq!(crate::tls::certificate_name(&der).as_deref(), Some("w7"));
        for secret in [key, dir.path().join("ca-key.pem")] {
            let mode = std::fs::metadata(&secret).unwrap().permissions().mode();
            assert_eq!(mode & 0o077, 0, "{} is private", secret.display());
        }
        assert!(issue(dir.path(), "x", "../x", &Usage::Client).is_err());
    }
}
