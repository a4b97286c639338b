//! Reaching a farm's coordinator: where it is, the connection, and how a failed call is reported.

use anyhow::Context;
use std::path::{Path, PathBuf};

use lathe_coordinator::client::{Access, DEFAULT_COORDINATOR, FarmClient};
use lathe_coordinator::tls::ClientTls;

/// Where the coordinator is, and what this client presents to it.
#[derive(Debug, Clone, clap::Args)]
pub struct CoordinatorArg {
    /// The coordinator's gRPC address (`https://` on a farm with TLS).
    #[arg(long, env = "LATHE_COORDINATOR", default_value = DEFAULT_COORDINATOR)]
    pub coordinator: String,
    /// The client token (`lathe-coordinator token create` makes one). Prefer LATHE_TOKEN_FILE:
    /// a command line is visible to other users of the machine.
    #[arg(long, env = "LATHE_TOKEN", hide_env_values = true)]
    pub token: Option<String>,
    /// A file holding the client token, readable by its owner only (mode 0600).
    #[arg(long, env = "LATHE_TOKEN_FILE", conflicts_with = "token")]
    pub token_file: Option<PathBuf>,
    /// The farm's CA certificate (PEM), which the coordinator's certificate must chain to.
    #[arg(long, env = "LATHE_CA")]
    pub ca: Option<PathBuf>,
}

impl CoordinatorArg {
    /// How to reach the coordinator: the address, the token (given, or read from its file), and
    /// the CA to trust.
    pub(crate) fn access(&self) -> anyhow::Result<Access> {
        let token = match (&self.token, &self.token_file) {
            (Some(token), _) => Some(token.trim().to_owned()),
            (None, Some(file)) => Some(read_token_file(file)?),
            (None, None) => None,
        };
        let tls = self
            .ca
            .as_deref()
            .map(|ca| ClientTls::load(ca, None))
            .transpose()?;
        Ok(Access {
            url: self.coordinator.clone(),
            token,
            tls,
        })
    }
}

/// The token in `path`, refused when the file is readable by anyone but its owner.
fn read_token_file(path: &Path) -> anyhow::Result<String> {
    use std::os::unix::fs::PermissionsExt as _;
    let metadata =
        std::fs::metadata(path).with_context(|| format!("token file {}", path.display()))?;
    let mode = metadata.permissions().mode() & 0o777;
    if mode & 0o077 != 0 {
        anyhow::bail!(
            "token file {} has mode {mode:o}: others may read it; chmod 600 it",
            path.display()
        );
    }
    let text =
        std::fs::read_to_string(path).with_context(|| format!("token file {}", path.display()))?;
    let token = text.trim();
    anyhow::ensure!(!token.is_empty(), "token file {} is empty", path.display());
    Ok(token.to_owned())
}

/// The runtime the farm commands run their calls on.
pub(crate) fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .context("cannot start the async runtime")
}

/// Connects to the coordinator.
pub(crate) async fn connect(coordinator: &CoordinatorArg) -> anyhow::Result<FarmClient> {
    Ok(FarmClient::connect(&coordinator.access()?).await?)
}

/// A failed call to the coordinator as the CLI reports it: the coordinator's own message.
pub(crate) fn rpc_error(status: tonic::Status) -> anyhow::Error {
    anyhow::anyhow!("{}", status.message())
}
