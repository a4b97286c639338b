//! How the farm's processes reach NATS and etcd: TLS (the CA that signed the servers'
//! certificates, and a client certificate when the server asks for one) and credentials (a user and
//! its password), from flags, the environment and files.
//!
//! - [`NatsAccessArgs`] / [`NatsAccess`]: what [`crate::queue::JetStreamQueue::connect_with`] needs.
//!   The coordinator and the workers both take it (with different NATS users: see `deploy/README.md`
//!   for the permissions of each).
//! - [`EtcdAccessArgs`] / [`EtcdAccess`]: what [`crate::state::EtcdStore::connect_with`] needs. Only
//!   the coordinator (and its administrative commands) talks to etcd.
//! - [`StoreArgs`]: both, as the coordinator's options.
//! - [`crate::etcd_users`] sets up the etcd users these connect as.
//!
//! Passwords come from files (`--nats-password-file`, `--etcd-password-file`: a Kubernetes or
//! compose secret) or from the environment (`LATHE_NATS_PASSWORD`, `LATHE_ETCD_PASSWORD`). The
//! options `--nats-password` and `--etcd-password` exist for a quick test, but a command line is
//! visible to every user of the machine in `ps`. Nothing here prints a password: [`Credentials`]
//! shows only its user when debugged.
//!
//! With none of these options the connections are plain `nats://` and `http://` without
//! credentials, as the tests and the embedded mode use them.

use std::path::{Path, PathBuf};

use clap::Args;

use crate::error::{Error, Result};

/// A user and its password. `Debug` shows the user only.
#[derive(Clone, PartialEq, Eq)]
pub struct Credentials {
    /// The user name.
    pub user: String,
    password: String,
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Credentials")
            .field("user", &self.user)
            .field("password", &"<redacted>")
            .finish()
    }
}

impl Credentials {
    /// `user` with `password`.
    pub fn new(user: impl Into<String>, password: impl Into<String>) -> Self {
        Self {
            user: user.into(),
            password: password.into(),
        }
    }

    /// The password.
    pub fn password(&self) -> &str {
        &self.password
    }
}

/// A client certificate and its private key (PEM files).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientIdentity {
    /// The certificate (with its chain, if any).
    pub cert: PathBuf,
    /// Its private key.
    pub key: PathBuf,
}

/// TLS to a store: the CA that signed the server's certificate and, when the server verifies
/// clients, this client's certificate. Either one given means the connection is TLS.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TlsFiles {
    /// The CA certificate (PEM) the server's certificate must chain to.
    pub ca: Option<PathBuf>,
    /// This client's certificate and key.
    pub identity: Option<ClientIdentity>,
}

impl TlsFiles {
    /// True when the connection must be TLS.
    pub fn enabled(&self) -> bool {
        self.ca.is_some() || self.identity.is_some()
    }
}

/// How to reach NATS: TLS and credentials. The default is plaintext without credentials.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct NatsAccess {
    /// TLS files; with any, the client refuses a server that does not speak TLS.
    pub tls: TlsFiles,
    /// The NATS user.
    pub credentials: Option<Credentials>,
}

/// How to reach etcd: TLS and credentials. The default is plain `http://` without credentials.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct EtcdAccess {
    /// TLS files; with any, every endpoint must be `https://`.
    pub tls: TlsFiles,
    /// The etcd user (the coordinator's, whose role reads and writes the namespace).
    pub credentials: Option<Credentials>,
}

/// NATS options: TLS and the NATS user. Workers and the coordinator both take them.
#[derive(Debug, Clone, Default, Args)]
pub struct NatsAccessArgs {
    /// CA certificate (PEM) that signed the NATS server's certificate; with it (or a client
    /// certificate) the connection must be TLS.
    #[arg(long, env = "LATHE_NATS_CA")]
    pub nats_ca: Option<PathBuf>,
    /// Client certificate (PEM) for a NATS server that verifies clients (`tls { verify: true }`).
    #[arg(long, env = "LATHE_NATS_CERT", requires = "nats_key")]
    pub nats_cert: Option<PathBuf>,
    /// The client certificate's private key (PEM).
    #[arg(long, env = "LATHE_NATS_KEY", requires = "nats_cert")]
    pub nats_key: Option<PathBuf>,
    /// NATS user (the server's `authorization { users }`).
    #[arg(long, env = "LATHE_NATS_USER")]
    pub nats_user: Option<String>,
    /// File holding the NATS user's password (a trailing newline is ignored).
    #[arg(long, env = "LATHE_NATS_PASSWORD_FILE", requires = "nats_user")]
    pub nats_password_file: Option<PathBuf>,
    /// The NATS user's password. Prefer --nats-password-file or the environment: a command line
    /// is visible to every user of the machine.
    #[arg(
        long,
        env = "LATHE_NATS_PASSWORD",
        hide_env_values = true,
        requires = "nats_user",
        conflicts_with = "nats_password_file"
    )]
    pub nats_password: Option<String>,
}

/// etcd's TLS options: the coordinator's and `lathe-coordinator etcd-users`'.
#[derive(Debug, Clone, Default, Args)]
pub struct EtcdTlsArgs {
    /// CA certificate (PEM) that signed etcd's server certificate; with it the endpoints must be
    /// `https://`.
    #[arg(long, env = "LATHE_ETCD_CA")]
    pub etcd_ca: Option<PathBuf>,
    /// Client certificate (PEM) for an etcd that verifies clients (`--client-cert-auth`).
    #[arg(long, env = "LATHE_ETCD_CERT", requires = "etcd_key")]
    pub etcd_cert: Option<PathBuf>,
    /// The client certificate's private key (PEM).
    #[arg(long, env = "LATHE_ETCD_KEY", requires = "etcd_cert")]
    pub etcd_key: Option<PathBuf>,
}

impl EtcdTlsArgs {
    /// The TLS files these options name.
    pub fn files(&self) -> TlsFiles {
        tls_files(
            self.etcd_ca.as_ref(),
            self.etcd_cert.as_ref(),
            self.etcd_key.as_ref(),
        )
    }
}

/// etcd options: TLS and the etcd user. Only the coordinator and its administrative commands take
/// them; workers never talk to etcd.
#[derive(Debug, Clone, Default, Args)]
pub struct EtcdAccessArgs {
    /// TLS to etcd.
    #[command(flatten)]
    pub tls: EtcdTlsArgs,
    /// etcd user (with authentication on; `lathe` in the deploy files).
    #[arg(long, env = "LATHE_ETCD_USER")]
    pub etcd_user: Option<String>,
    /// File holding the etcd user's password (a trailing newline is ignored).
    #[arg(long, env = "LATHE_ETCD_PASSWORD_FILE", requires = "etcd_user")]
    pub etcd_password_file: Option<PathBuf>,
    /// The etcd user's password. Prefer --etcd-password-file or the environment: a command line
    /// is visible to every user of the machine.
    #[arg(
        long,
        env = "LATHE_ETCD_PASSWORD",
        hide_env_values = true,
        requires = "etcd_user",
        conflicts_with = "etcd_password_file"
    )]
    pub etcd_password: Option<String>,
}

/// The coordinator's options for both stores.
#[derive(Debug, Clone, Default, Args)]
pub struct StoreArgs {
    /// NATS: TLS and user.
    #[command(flatten)]
    pub nats: NatsAccessArgs,
    /// etcd: TLS and user.
    #[command(flatten)]
    pub etcd: EtcdAccessArgs,
}

/// Reads a password from `path`, without its trailing line break.
///
/// # Errors
/// The file cannot be read, or holds an empty password.
pub fn read_password_file(path: &Path) -> Result<String> {
    let text = std::fs::read_to_string(path).map_err(|e| Error::io(path, e))?;
    let password = text.trim_end_matches(['\n', '\r']);
    if password.is_empty() {
        return Err(Error::InvalidRequest(format!(
            "{}: the password file is empty",
            path.display()
        )));
    }
    Ok(password.to_owned())
}

/// The credentials of `user`, with the password from `file` or `password`.
fn credentials(
    what: &str,
    user: Option<&String>,
    file: Option<&PathBuf>,
    password: Option<&String>,
) -> Result<Option<Credentials>> {
    let Some(user) = user else {
        return Ok(None);
    };
    let password = match (file, password) {
        (Some(file), _) => read_password_file(file)?,
        (None, Some(password)) => password.clone(),
        (None, None) => {
            return Err(Error::InvalidRequest(format!(
                "the {what} user {user} needs a password (--{what}-password-file)"
            )));
        }
    };
    Ok(Some(Credentials::new(user.clone(), password)))
}

fn tls_files(ca: Option<&PathBuf>, cert: Option<&PathBuf>, key: Option<&PathBuf>) -> TlsFiles {
    TlsFiles {
        ca: ca.cloned(),
        identity: cert.zip(key).map(|(cert, key)| ClientIdentity {
            cert: cert.clone(),
            key: key.clone(),
        }),
    }
}

impl NatsAccessArgs {
    /// The access these options describe, its password read from its file.
    ///
    /// # Errors
    /// A password file that cannot be read, or a user without a password.
    pub fn access(&self) -> Result<NatsAccess> {
        Ok(NatsAccess {
            tls: tls_files(
                self.nats_ca.as_ref(),
                self.nats_cert.as_ref(),
                self.nats_key.as_ref(),
            ),
            credentials: credentials(
                "nats",
                self.nats_user.as_ref(),
                self.nats_password_file.as_ref(),
                self.nats_password.as_ref(),
            )?,
        })
    }
}

impl EtcdAccessArgs {
    /// The access these options describe, its password read from its file.
    ///
    /// # Errors
    /// A password file that cannot be read, or a user without a password.
    pub fn access(&self) -> Result<EtcdAccess> {
        Ok(EtcdAccess {
            tls: self.tls.files(),
            credentials: credentials(
                "etcd",
                self.etcd_user.as_ref(),
                self.etcd_password_file.as_ref(),
                self.etcd_password.as_ref(),
            )?,
        })
    }
}

impl StoreArgs {
    /// The access to each store.
    ///
    /// # Errors
    /// As [`NatsAccessArgs::access`] and [`EtcdAccessArgs::access`].
    pub fn access(&self) -> Result<(NatsAccess, EtcdAccess)> {
        Ok((self.nats.access()?, self.etcd.access()?))
    }
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::*;

    #[derive(Debug, Parser)]
    struct Options {
        #[command(flatten)]
        stores: StoreArgs,
    }

    #[test]
    fn no_options_mean_plaintext_without_credentials() {
        let options = Options::try_parse_from(["test"]).expect("parses");
        let (nats, etcd) = options.stores.access().expect("access");
        assert_eq!(nats, NatsAccess::default());
        assert_eq!(etcd, EtcdAccess::default());
        assert!(!nats.tls.enabled() && !etcd.tls.enabled());
    }

    #[test]
    fn passwords_come_from_files_without_their_line_break() {
        let folder = tempfile::tempdir().expect("temporary folder");
        let file = folder.path().join("password");
        std::fs::write(&file, "s3cret\n").expect("write");
        let options = Options::try_parse_from([
            "test",
            "--nats-ca",
            "ca.pem",
            "--nats-user",
            "worker",
            "--nats-password-file",
            file.to_str().expect("utf-8"),
            "--etcd-ca",
            "ca.pem",
            "--etcd-cert",
            "c.pem",
            "--etcd-key",
            "k.pem",
            "--etcd-user",
            "lathe",
            "--etcd-password",
            "other",
        ])
        .expect("parses");
        let (nats, etcd) = options.stores.access().expect("access");
        assert_eq!(nats.credentials, Some(Credentials::new("worker", "s3cret")));
        assert_eq!(nats.tls.ca.as_deref(), Some(Path::new("ca.pem")));
        assert!(nats.tls.identity.is_none());
        assert_eq!(etcd.credentials, Some(Credentials::new("lathe", "other")));
        assert_eq!(
            etcd.tls.identity,
            Some(ClientIdentity {
                cert: "c.pem".into(),
                key: "k.pem".into()
            })
        );
        // The password never shows in logs.
        assert!(!format!("{nats:?}{etcd:?}").contains("s3cret"));
        assert!(!format!("{etcd:?}").contains("other"));
    }

    #[test]
    fn a_user_without_a_password_or_a_certificate_without_its_key_is_refused() {
        let options = Options::try_parse_from(["test", "--etcd-user", "lathe"]).expect("parses");
        let error = options.stores.access().expect_err("no password");
        assert!(error.to_string().contains("needs a password"), "{error}");
        assert!(Options::try_parse_from(["test", "--nats-cert", "c.pem"]).is_err());
        assert!(Options::try_parse_from(["test", "--nats-password-file", "p"]).is_err());
    }

    #[test]
    fn an_empty_password_file_is_refused() {
        let folder = tempfile::tempdir().expect("temporary folder");
        let file = folder.path().join("password");
        std::fs::write(&file, "\n").expect("write");
        let error = read_password_file(&file).expect_err("empty");
        assert!(error.to_string().contains("empty"), "{error}");
    }
}
