//! The servers with TLS and users, as the farm runs them: a throwaway CA and certificates
//! ([`TestPki`]), `nats-server` with TLS and the farm's users and permissions (the file
//! `deploy/nats-auth.conf` itself), and `etcd` with TLS and client certificates (users are made with
//! [`crate::etcd_users::setup_etcd_users`], as `make farm` makes them).

use std::path::{Path, PathBuf};

use crate::pki::Usage;
use crate::store_access::{ClientIdentity, TlsFiles};

/// The farm's NATS users and their permissions, as deployed.
pub const NATS_AUTH_CONF: &str = include_str!("../../../deploy/nats-auth.conf");

/// A CA, a server certificate for `localhost` and `127.0.0.1` signed by it, and a client
/// certificate, in a temporary folder (removed on drop).
#[derive(Debug)]
pub struct TestPki {
    dir: tempfile::TempDir,
}

impl TestPki {
    /// Makes them, with the farm's own [`crate::pki`].
    ///
    /// # Panics
    /// If a certificate cannot be made or written.
    pub fn new() -> Self {
        let dir = tempfile::tempdir().expect("temporary folder for certificates");
        crate::pki::ensure_ca(dir.path()).expect("the test CA");
        crate::pki::issue(dir.path(), "server", "server", &Usage::Server(Vec::new()))
            .expect("the test server's certificate");
        crate::pki::issue(dir.path(), "client", "lathe-test-client", &Usage::Client)
            .expect("the test client's certificate");
        Self { dir }
    }

    /// The folder holding `ca.pem`, `server.pem`, `server-key.pem`, `client.pem`, `client-key.pem`.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// The CA's certificate.
    pub fn ca(&self) -> PathBuf {
        self.dir().join("ca.pem")
    }

    /// The server's certificate and key.
    pub fn server(&self) -> ClientIdentity {
        ClientIdentity {
            cert: self.dir().join("server.pem"),
            key: self.dir().join("server-key.pem"),
        }
    }

    /// The client's certificate and key.
    pub fn client(&self) -> ClientIdentity {
        ClientIdentity {
            cert: self.dir().join("client.pem"),
            key: self.dir().join("client-key.pem"),
        }
    }

    /// TLS to the servers with the CA and, with `identity`, the client certificate.
    pub fn tls(&self, identity: bool) -> TlsFiles {
        TlsFiles {
            ca: Some(self.ca()),
            identity: identity.then(|| self.client()),
        }
    }
}

impl Default for TestPki {
    fn default() -> Self {
        Self::new()
    }
}

/// How a secure `nats-server` runs: its certificate, whether it requires client certificates,
/// and the passwords of the farm's two users (`coordinator`, `worker`).
#[derive(Debug, Clone)]
pub struct NatsSecurity {
    /// The CA (clients' certificates are checked against it).
    pub ca: PathBuf,
    /// The server's certificate and key.
    pub server: ClientIdentity,
    /// Require a client certificate (`tls { verify: true }`).
    pub verify_clients: bool,
    /// The `coordinator` user's password.
    pub coordinator_password: String,
    /// The `worker` user's password.
    pub worker_password: String,
}

impl NatsSecurity {
    /// TLS with `pki`'s server certificate, clients verified, the users with these passwords.
    pub fn new(pki: &TestPki, coordinator_password: &str, worker_password: &str) -> Self {
        Self {
            ca: pki.ca(),
            server: pki.server(),
            verify_clients: true,
            coordinator_password: coordinator_password.to_owned(),
            worker_password: worker_password.to_owned(),
        }
    }

    /// Writes the server's configuration (and the included `nats-auth.conf`) into `data`, for
    /// port `port`; returns its path.
    pub(super) fn write_config(&self, data: &Path, port: u16) -> PathBuf {
        let quote = |path: &Path| format!("{:?}", path.display().to_string());
        let config = format!(
            "listen: \"127.0.0.1:{port}\"\n\
             jetstream {{ store_dir: {store} }}\n\
             tls {{\n  cert_file: {cert}\n  key_file: {key}\n  ca_file: {ca}\n  verify: {verify}\n  timeout: 2\n}}\n\
             include ./nats-auth.conf\n",
            store = quote(&data.join("jetstream")),
            cert = quote(&self.server.cert),
            key = quote(&self.server.key),
            ca = quote(&self.ca),
            verify = self.verify_clients,
        );
        std::fs::write(data.join("nats-auth.conf"), NATS_AUTH_CONF).expect("write nats-auth.conf");
        let path = data.join("nats.conf");
        std::fs::write(&path, config).expect("write nats.conf");
        path
    }

    /// The environment nats-server reads the passwords from.
    pub(super) fn environment(&self) -> [(&'static str, &str); 2] {
        [
            ("NATS_COORDINATOR_PASSWORD", &self.coordinator_password),
            ("NATS_WORKER_PASSWORD", &self.worker_password),
        ]
    }
}

/// How a secure `etcd` runs: its certificate, and the CA whose certificates clients must present
/// (etcd's `--trusted-ca-file` makes it require one). `--client-cert-auth` stays off, as the farm
/// runs it: with it etcd would take a certificate's common name as a user name.
#[derive(Debug, Clone)]
pub struct EtcdSecurity {
    /// The CA (clients' certificates are checked against it).
    pub ca: PathBuf,
    /// The server's certificate and key.
    pub server: ClientIdentity,
}

impl EtcdSecurity {
    /// TLS with `pki`'s server certificate.
    pub fn new(pki: &TestPki) -> Self {
        Self {
            ca: pki.ca(),
            server: pki.server(),
        }
    }

    /// etcd's TLS options.
    pub(super) fn arguments(&self) -> Vec<std::ffi::OsString> {
        vec![
            "--cert-file".into(),
            self.server.cert.clone().into(),
            "--key-file".into(),
            self.server.key.clone().into(),
            "--trusted-ca-file".into(),
            self.ca.clone().into(),
        ]
    }
}
