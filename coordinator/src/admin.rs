//! The coordinator's administrative commands: `lathe-coordinator token ...` (client tokens, in
//! the farm's etcd), `lathe-coordinator certs` (the farm's CA and certificates, on disk) and
//! `lathe-coordinator etcd-users` (etcd's users, and authentication on).
//! Serving is `lathe-coordinator` with no command ([`crate::service`]).

use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Subcommand};

use crate::auth::{Role, create_token, list_tokens, revoke_token};
use crate::error::Result;
use crate::etcd_users::{EtcdUsersArgs, run_etcd_users};
use crate::pki::{Usage, ensure_ca, issue};
use crate::state::{EtcdStore, MAX_PAGE};
use crate::store_access::EtcdAccessArgs;

/// A command besides serving.
#[derive(Debug, Subcommand)]
pub enum AdminCommand {
    /// Client tokens: create (printed once), list, revoke.
    #[command(subcommand)]
    Token(TokenCommand),
    /// The farm's CA (made once) and certificates issued from it: the servers' (the coordinator,
    /// NATS, etcd) and one per worker, whose name is the worker's id.
    Certs(CertsArgs),
    /// etcd's users: `root` and the coordinator's (reads and writes the namespace, nothing else),
    /// then authentication on. Run again to change a password.
    EtcdUsers(EtcdUsersArgs),
}

/// Where the farm's etcd is (the tokens live there).
#[derive(Debug, Clone, Args)]
pub struct EtcdArgs {
    /// etcd endpoints, comma-separated.
    #[arg(long, env = "LATHE_ETCD", default_value = "http://127.0.0.1:2379")]
    pub etcd: String,
    /// Prefix of every etcd key (as the coordinator's).
    #[arg(long, env = "LATHE_NAMESPACE", default_value = "/lathe/")]
    pub namespace: String,
    /// TLS and the etcd user.
    #[command(flatten)]
    pub access: EtcdAccessArgs,
}

/// `lathe-coordinator token ...`.
#[derive(Debug, Subcommand)]
pub enum TokenCommand {
    /// Makes a token and prints it once; only its hash is stored.
    Create {
        /// Who holds it: the owner recorded on the jobs it submits.
        #[arg(long)]
        name: String,
        /// submit (its own jobs), read (every job, read only) or admin (everything).
        #[arg(long, value_parser = ["submit", "read", "admin"])]
        role: String,
        /// Where the farm's etcd is.
        #[command(flatten)]
        etcd: EtcdArgs,
    },
    /// Lists the tokens (id, name, role, made, revoked), never their secrets.
    List {
        /// Where the farm's etcd is.
        #[command(flatten)]
        etcd: EtcdArgs,
    },
    /// Revokes a token by its id (the 16 characters after `lathe_`).
    Revoke {
        /// The token's id.
        id: String,
        /// Where the farm's etcd is.
        #[command(flatten)]
        etcd: EtcdArgs,
    },
}

/// `lathe-coordinator certs`.
#[derive(Debug, Args)]
pub struct CertsArgs {
    /// Folder of the CA and the certificates (keys are written with mode 0600).
    #[arg(long, default_value = "farm/tls")]
    pub dir: PathBuf,
    /// A server certificate named `server`, valid for localhost, 127.0.0.1, ::1 and each of these
    /// host names or addresses (the coordinator's, NATS's and etcd's).
    #[arg(long = "host")]
    pub hosts: Vec<String>,
    /// A worker certificate for each of these worker ids (`worker-{id}.pem`).
    #[arg(long = "worker")]
    pub workers: Vec<String>,
}

async fn etcd(args: &EtcdArgs) -> Result<EtcdStore> {
    let access = args.access.access()?;
    crate::service::patiently("etcd", &args.etcd, Duration::from_secs(10), || {
        EtcdStore::connect_with(&args.etcd, &args.namespace, &access)
    })
    .await
}

/// Runs an administrative command, printing what it made or found.
pub async fn run_admin(command: AdminCommand) -> Result<()> {
    match command {
        AdminCommand::Token(TokenCommand::Create {
            name,
            role,
            etcd: at,
        }) => {
            let state = etcd(&at).await?;
            let (record, text) = create_token(&state, &name, Role::parse(&role)?).await?;
            eprintln!(
                "token {} for {} ({}); it is shown only now:",
                record.id,
                record.name,
                record.role.name()
            );
            println!("{text}");
        }
        AdminCommand::Token(TokenCommand::List { etcd: at }) => {
            let state = etcd(&at).await?;
            let mut after: Option<String> = None;
            println!(
                "{:<16}  {:<24}  {:<6}  {:<13}  revoked",
                "id", "name", "role", "made (ms)"
            );
            loop {
                let (records, next) = list_tokens(&state, after.as_deref(), MAX_PAGE).await?;
                for record in records {
                    let revoked = match record.revoked_unix_ms {
                        0 => "no".to_owned(),
                        at => at.to_string(),
                    };
                    println!(
                        "{:<16}  {:<24}  {:<6}  {:<13}  {revoked}",
                        record.id,
                        record.name,
                        record.role.name(),
                        record.created_unix_ms
                    );
                }
                match next {
                    Some(next) => after = Some(next),
                    None => break,
                }
            }
        }
        AdminCommand::Token(TokenCommand::Revoke { id, etcd: at }) => {
            let state = etcd(&at).await?;
            if revoke_token(&state, &id).await? {
                println!("token {id} revoked");
            } else {
                println!("token {id} was revoked already");
            }
        }
        AdminCommand::Certs(args) => {
            if ensure_ca(&args.dir)? {
                println!(
                    "made the farm's CA: {}",
                    crate::pki::ca_path(&args.dir).display()
                );
            }
            let (cert, _) = issue(
                &args.dir,
                "server",
                "server",
                &Usage::Server(args.hosts.clone()),
            )?;
            println!("server certificate: {}", cert.display());
            for worker in &args.workers {
                let (cert, _) = issue(
                    &args.dir,
                    &format!("worker-{worker}"),
                    worker,
                    &Usage::Client,
                )?;
                println!("worker {worker}: {}", cert.display());
            }
        }
        AdminCommand::EtcdUsers(args) => run_etcd_users(&args).await?,
    }
    Ok(())
}
