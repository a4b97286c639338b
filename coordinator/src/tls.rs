//! TLS for the farm's gRPC (rustls through tonic): what the coordinator serves with (its
//! certificate, and the CA its workers' client certificates must chain to), what a client trusts
//! (the farm's CA) and presents (a worker's certificate), and the name a worker's certificate
//! carries, which is the worker's identity.

use std::path::Path;

use tonic::transport::{Certificate, ClientTlsConfig, Identity, ServerTlsConfig};

use crate::error::{Error, Result};

/// How the coordinator's gRPC port is served.
#[derive(Debug, Clone)]
pub enum Transport {
    /// TLS with the coordinator's certificate; workers must present a client certificate that
    /// chains to the farm's CA, and clients may not.
    Tls(ServerTls),
    /// Plain HTTP/2, allowed only on a loopback address (`--insecure-loopback`): tests, and the
    /// embedded farm of `lathe master`, whose port lives as long as the command.
    InsecureLoopback,
}

impl Transport {
    /// True when workers are known by their certificates.
    pub fn verifies_workers(&self) -> bool {
        matches!(self, Self::Tls(_))
    }
}

/// The coordinator's TLS files, read.
#[derive(Debug, Clone)]
pub struct ServerTls {
    cert_pem: Vec<u8>,
    key_pem: Vec<u8>,
    client_ca_pem: Vec<u8>,
}

fn read(path: &Path) -> Result<Vec<u8>> {
    std::fs::read(path).map_err(|e| Error::io(path, e))
}

impl ServerTls {
    /// Reads the server's certificate chain and key and the CA of the workers' certificates (PEM).
    pub fn load(cert: &Path, key: &Path, client_ca: &Path) -> Result<Self> {
        Ok(Self {
            cert_pem: read(cert)?,
            key_pem: read(key)?,
            client_ca_pem: read(client_ca)?,
        })
    }

    /// tonic's server configuration: a client certificate is optional at the handshake (clients
    /// have none), and the worker API refuses a call without one.
    pub(crate) fn config(&self) -> ServerTlsConfig {
        ServerTlsConfig::new()
            .identity(Identity::from_pem(&self.cert_pem, &self.key_pem))
            .client_ca_root(Certificate::from_pem(&self.client_ca_pem))
            .client_auth_optional(true)
    }
}

/// What a client uses to reach a coordinator over TLS.
#[derive(Debug, Clone, Default)]
pub struct ClientTls {
    /// The farm's CA (PEM), which the coordinator's certificate must chain to.
    pub ca_pem: Vec<u8>,
    /// A worker's certificate chain and key (PEM); none for a user's client.
    pub identity: Option<(Vec<u8>, Vec<u8>)>,
}

impl ClientTls {
    /// Reads the CA, and a worker's certificate and key when given.
    pub fn load(ca: &Path, identity: Option<(&Path, &Path)>) -> Result<Self> {
        Ok(Self {
            ca_pem: read(ca)?,
            identity: identity
                .map(|(cert, key)| Ok::<_, Error>((read(cert)?, read(key)?)))
                .transpose()?,
        })
    }

    /// tonic's client configuration.
    pub(crate) fn config(&self) -> ClientTlsConfig {
        let config = ClientTlsConfig::new().ca_certificate(Certificate::from_pem(&self.ca_pem));
        match &self.identity {
            Some((cert, key)) => config.identity(Identity::from_pem(cert, key)),
            None => config,
        }
    }
}

/// The name a certificate (DER) is issued to: its subject's common name. A worker's is its id.
pub fn certificate_name(der: &[u8]) -> Option<String> {
    let (_, certificate) = x509_parser::parse_x509_certificate(der).ok()?;
    let name = certificate
        .subject()
        .iter_common_name()
        .next()?
        .as_str()
        .ok()?
        .to_owned();
    Some(name)
}

/// The name in the first certificate of a PEM file.
pub fn pem_certificate_name(pem: &[u8]) -> Option<String> {
    let (_, pem) = x509_parser::pem::parse_x509_pem(pem).ok()?;
    certificate_name(&pem.contents)
}

/// True for an address on the loopback interface (`127.0.0.0/8`, `::1`, `localhost`), the only
/// place plain HTTP/2 is allowed.
pub fn is_loopback(address: &str) -> bool {
    let host = address
        .rsplit_once(':')
        .map_or(address, |(host, _)| host)
        .trim_start_matches('[')
        .trim_end_matches(']');
    host == "localhost"
        || host
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_loopback_addresses_are_loopback() {
        for address in [
            "127.0.0.1:7480",
            "127.1.2.3:1",
            "[::1]:7480",
            "localhost:7480",
        ] {
            assert!(is_loopback(address), "{address}");
        }
        for address in [
            "0.0.0.0:7480",
            "10.0.0.1:7480",
            "[::]:7480",
            "example.org:7480",
        ] {
            assert!(!is_loopback(address), "{address}");
        }
    }
}
