//! `weft agent`: the node agent, run on every machine that hosts instances.

use weft_agent::{Agent, AgentArgs, AgentError};

use crate::cmd::server::shutdown_signal;
use crate::connect::Connection;
use crate::exit::{self, Exit};

/// The agent's own errors keep their meaning: bad flags exit 64, the rest 1.
pub fn agent_error(e: AgentError) -> anyhow::Error {
    let code = if e.is_config() { exit::USAGE } else { exit::FAILURE };
    Exit { code, message: e.to_string() }.into()
}

pub async fn run(conn: &Connection, mut args: AgentArgs) -> anyhow::Result<()> {
    // Server, token and data dir are weft's global flags, found the way every command finds
    // them (flags, environment, then what a local server wrote in its data dir).
    args.server = Some(args.join.clone().unwrap_or_else(|| conn.server_url()));
    args.token = conn.token();
    args.data_dir = Some(conn.data_dir());
    let options = args.into_options().map_err(agent_error)?;
    eprintln!(
        "weft agent: node {} joining {} (state in {})",
        options.name,
        options.server,
        options.data_dir.join("agent").display()
    );
    Agent::run(options, shutdown_signal()).await.map_err(agent_error)?;
    eprintln!("weft agent stopped");
    Ok(())
}
