//! etcd's users: `lathe-coordinator etcd-users` makes etcd's `root` user and the coordinator's user
//! (a role that reads and writes the farm's namespace and nothing else), then turns authentication
//! on; run again, it sets the passwords it is given (rotation).

use std::path::PathBuf;

use clap::Args;

use crate::error::{Error, Result};
use crate::store_access::{Credentials, EtcdAccess, EtcdTlsArgs, TlsFiles, read_password_file};
/// The built-in user and role that may do everything, auth administration included.
pub const ETCD_ROOT: &str = "root";

/// What [`setup_etcd_users`] sets up: etcd's `root` user and one user for the coordinator.
#[derive(Debug, Clone)]
pub struct EtcdUsers {
    /// etcd endpoints, comma-separated.
    pub endpoints: String,
    /// TLS to etcd.
    pub tls: TlsFiles,
    /// The `root` user's password: set when the user is made, used to log in once
    /// authentication is on.
    pub root_password: String,
    /// The coordinator's user (made, or its password changed to this one).
    pub coordinator: Credentials,
    /// The namespace (key prefix) the coordinator's user may read and write, and nothing else.
    pub namespace: String,
}

/// `lathe-coordinator etcd-users`: the options of [`setup_etcd_users`].
#[derive(Debug, Clone, Args)]
pub struct EtcdUsersArgs {
    /// etcd endpoints, comma-separated.
    #[arg(long, env = "LATHE_ETCD", default_value = "http://127.0.0.1:2379")]
    pub etcd: String,
    /// The namespace (key prefix) the coordinator's user may read and write.
    #[arg(long, env = "LATHE_NAMESPACE", default_value = "/lathe/")]
    pub namespace: String,
    /// TLS to etcd.
    #[command(flatten)]
    pub tls: EtcdTlsArgs,
    /// File holding the password of etcd's `root` user.
    #[arg(long)]
    pub root_password_file: PathBuf,
    /// The coordinator's etcd user.
    #[arg(long, env = "LATHE_ETCD_USER", default_value = "lathe")]
    pub etcd_user: String,
    /// File holding the coordinator's etcd password.
    #[arg(long, env = "LATHE_ETCD_PASSWORD_FILE")]
    pub etcd_password_file: PathBuf,
}

impl EtcdUsersArgs {
    /// The setup these options describe, passwords read from their files.
    ///
    /// # Errors
    /// A password file that cannot be read or is empty.
    pub fn users(&self) -> Result<EtcdUsers> {
        Ok(EtcdUsers {
            endpoints: self.etcd.clone(),
            tls: self.tls.files(),
            root_password: read_password_file(&self.root_password_file)?,
            coordinator: Credentials::new(
                self.etcd_user.clone(),
                read_password_file(&self.etcd_password_file)?,
            ),
            namespace: self.namespace.clone(),
        })
    }
}

/// Runs `lathe-coordinator etcd-users`: [`setup_etcd_users`] with the options' files.
///
/// # Errors
/// As [`EtcdUsersArgs::users`] and [`setup_etcd_users`].
pub async fn run_etcd_users(args: &EtcdUsersArgs) -> Result<()> {
    let users = args.users()?;
    setup_etcd_users(&users).await?;
    tracing::info!(
        user = %users.coordinator.user,
        namespace = %users.namespace,
        "etcd users set up and authentication on"
    );
    Ok(())
}

fn etcd_admin_error(context: &str) -> impl Fn(etcd_client::Error) -> Error + '_ {
    move |error| Error::State(format!("etcd {context}: {error}"))
}

/// True when `error` says that a user, role or grant exists already.
fn exists_already(error: &etcd_client::Error) -> bool {
    error.to_string().contains("already exists")
}

/// Makes etcd's `root` user (granted the `root` role) and the coordinator's user, granted a role
/// of the same name that reads and writes every key under the namespace and nothing else, then
/// turns authentication on. Safe to run again: a user that exists gets the password it is given
/// (so rotating a password is running it again with the new one), and on an etcd whose
/// authentication is on it logs in as `root` with `root_password`.
///
/// # Errors
/// etcd cannot be reached, refuses `root`'s password, or refuses a change.
pub async fn setup_etcd_users(users: &EtcdUsers) -> Result<()> {
    use etcd_client::{Client, Permission};
    let root = Credentials::new(ETCD_ROOT, users.root_password.clone());
    // Authentication may be on already (a setup that ran before): log in as root then.
    let mut as_root = true;
    let mut client = match crate::state::connect_etcd(
        &users.endpoints,
        &EtcdAccess {
            tls: users.tls.clone(),
            credentials: Some(root.clone()),
        },
    )
    .await
    {
        Ok(client) => client,
        Err(error) if error.to_string().contains("authentication is not enabled") => {
            as_root = false;
            crate::state::connect_etcd(
                &users.endpoints,
                &EtcdAccess {
                    tls: users.tls.clone(),
                    credentials: None,
                },
            )
            .await?
        }
        Err(error) => return Err(error),
    };
    let add_user = async |client: &mut Client, credentials: &Credentials| -> Result<()> {
        match client
            .user_add(credentials.user.clone(), credentials.password(), None)
            .await
        {
            Ok(_) => Ok(()),
            Err(error) if exists_already(&error) => client
                .user_change_password(credentials.user.clone(), credentials.password())
                .await
                .map(drop)
                .map_err(etcd_admin_error("change a password")),
            Err(error) => Err(etcd_admin_error("add a user")(error)),
        }
    };
    // Logged in as root, its password is right already (and changing it would end this login).
    if !as_root {
        add_user(&mut client, &root).await?;
        client
            .user_grant_role(ETCD_ROOT, ETCD_ROOT)
            .await
            .map_err(etcd_admin_error("grant root the root role"))?;
    }
    let user = &users.coordinator.user;
    if user == ETCD_ROOT {
        return Err(Error::InvalidRequest(
            "the coordinator's etcd user must not be root".to_owned(),
        ));
    }
    match client.role_add(user.clone()).await {
        Ok(_) => {}
        Err(error) if exists_already(&error) => {}
        Err(error) => return Err(etcd_admin_error("add a role")(error)),
    }
    client
        .role_grant_permission(
            user.clone(),
            Permission::read_write(users.namespace.clone()).with_prefix(),
        )
        .await
        .map_err(etcd_admin_error("grant the namespace"))?;
    add_user(&mut client, &users.coordinator).await?;
    client
        .user_grant_role(user.clone(), user.clone())
        .await
        .map_err(etcd_admin_error("grant the coordinator's role"))?;
    match client.auth_enable().await {
        Ok(_) => Ok(()),
        Err(error) => Err(etcd_admin_error("enable authentication")(error)),
    }
}
