//! `weft token`: create, list and revoke api tokens.

use weft_api::duration::Duration;
use weft_api::wire::Role;

use crate::connect::Connection;
use crate::exit;
use crate::output;

#[derive(Debug, clap::Subcommand)]
pub enum TokenCommand {
    /// Create a token; prints the token alone on stdout (details on stderr)
    #[command(
        after_help = "Example:\n  export WEFT_TOKEN=$(weft token create --role viewer --ttl 24h)"
    )]
    Create {
        /// admin, viewer, agent or proxy
        #[arg(long)]
        role: String,
        /// Lifetime, e.g. 1h or 720h (days are written in hours); no expiry when omitted
        #[arg(long)]
        ttl: Option<String>,
        #[arg(long, default_value = "")]
        description: String,
        /// Bind a proxy token to a node (workload certificates only for that node's
        /// instances), or an agent token (it writes only that Node and its instances; agents
        /// trade a shared join token for such a token themselves)
        #[arg(long, value_name = "NODE")]
        node: Option<String>,
        /// Bind a node-bound proxy token to one instance on that node (NAMESPACE/NAME): its
        /// only certificate is that instance's, and deleting the instance revokes it (agents
        /// give each sidecar such a token)
        #[arg(long, value_name = "NS/NAME", requires = "node")]
        instance: Option<String>,
    },
    /// List tokens (never their secrets)
    List,
    /// Revoke a token by id or by the token itself
    Revoke {
        /// Token id (from `weft token list`) or the token text
        // Not named `token`: that id belongs to the global --token flag, and clap would merge them.
        #[arg(value_name = "TOKEN|ID")]
        target: String,
    },
}

pub async fn run(conn: &Connection, cmd: TokenCommand) -> anyhow::Result<()> {
    let client = conn.client()?;
    match cmd {
        TokenCommand::Create { role, ttl, description, node, instance } => {
            let role: Role = role.parse().map_err(exit::usage)?;
            let ttl = match ttl {
                Some(t) => {
                    Some(t.parse::<Duration>().map_err(|e| exit::usage(format!("--ttl: {e}")))?)
                }
                None => None,
            };
            let req = weft_api::wire::TokenRequest { role, ttl, description, node, instance };
            let created = client.request_token(&req).await?;
            let expires = created.info.expires.clone().unwrap_or_else(|| "never".into());
            eprintln!(
                "created {} token {} (expires: {expires})",
                created.info.role, created.info.id
            );
            println!("{}", created.token);
        }
        TokenCommand::List => {
            let tokens = client.list_tokens().await?;
            let rows: Vec<Vec<String>> = tokens
                .iter()
                .map(|t| {
                    vec![
                        t.id.clone(),
                        t.role.to_string(),
                        output::age(&t.created),
                        t.expires.clone().unwrap_or_else(|| "never".into()),
                        t.node.clone().unwrap_or_else(|| "-".into()),
                        t.instance.clone().unwrap_or_else(|| "-".into()),
                        t.description.clone(),
                    ]
                })
                .collect();
            let header = ["ID", "ROLE", "AGE", "EXPIRES", "NODE", "INSTANCE", "DESCRIPTION"];
            print!("{}", output::table(&header, &rows));
        }
        TokenCommand::Revoke { target } => {
            let info = client.revoke_token(&target).await?;
            println!("token {} ({}) revoked", info.id, info.role);
        }
    }
    Ok(())
}
