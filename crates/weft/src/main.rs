//! The `weft` binary: every role of the platform behind one command.
//!
//! Subcommands live in [`cmd`]; [`connect`] finds the server and token; [`exit`] maps errors to
//! the exit codes scripts rely on; [`output`] prints tables, YAML and JSON.

mod cmd;
mod connect;
mod exit;
mod local_pool;
mod manifest;
mod output;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

use crate::connect::Connection;

const ABOUT: &str = "weft: a cloud-native runtime in one binary";
const LONG_ABOUT: &str = "weft: a cloud-native runtime in one binary.\n\n\
Declare deployments, services and autoscalers in Kubernetes-shaped YAML; weft runs them as\n\
processes with sidecars that balance, retry, limit and report.";
const EXAMPLES: &str = "Getting started:\n  weft up -f examples/shop/        the whole platform and the demo shop on this machine\n  weft server                      run the api server alone (state in ~/.weft)\n  weft apply -f app.yaml           create or update objects\n  weft get deploy -w               list deployments and follow changes\n  weft describe svc catalog        everything about one object\n  weft token create --role viewer  a token for someone else\n\nServer and token come from --server/WEFT_SERVER and --token/WEFT_TOKEN, or from what a\nlocal server wrote in its data dir (--data-dir/WEFT_DATA_DIR, default ~/.weft).\n\nExit codes: 0 ok, 1 failure, 64 bad usage or configuration, 69 server unreachable.";

#[derive(Parser)]
#[command(name = "weft", version, about = ABOUT, long_about = LONG_ABOUT, after_help = EXAMPLES)]
struct Cli {
    #[command(flatten)]
    conn: Connection,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the whole platform on this machine (api, controllers, agent, gateway) and apply -f
    Up(cmd::up::UpArgs),
    /// Run the api server, on the embedded store or on etcd (--store etcd://…)
    Server(cmd::server::ServerArgs),
    /// Run the node agent: register this machine and run the instances placed on it
    Agent(Box<weft_agent::AgentArgs>),
    /// Create or update objects from manifests (all or nothing)
    Apply(cmd::apply::ApplyArgs),
    /// List objects, or show one (-o yaml|json|wide|name, -w to follow)
    Get(cmd::get::GetArgs),
    /// Show one object in detail, with its status and conditions
    Describe(cmd::describe::DescribeArgs),
    /// Delete objects by name or by manifest
    Delete(cmd::delete::DeleteArgs),
    /// Print an instance's logs (-f to follow)
    Logs(cmd::logs::LogsArgs),
    /// Set a deployment's replicas
    Scale(cmd::scale::ScaleArgs),
    /// Follow rollouts (`weft rollout status deploy NAME`)
    #[command(subcommand)]
    Rollout(cmd::rollout::RolloutCommand),
    /// Live requests/s, in-flight, latency, cpu and memory per instance, deployment or service
    Top(cmd::top::TopArgs),
    /// Create, list and revoke api tokens
    #[command(subcommand)]
    Token(cmd::token::TokenCommand),
    /// Print the web dashboard's link (with the token), or --open it
    Dashboard(cmd::dashboard::DashboardArgs),
    /// Replay a request-rate trace through an Autoscaler and the Kubernetes HPA, offline
    Sim(cmd::sim::SimArgs),
    /// Run the sidecar proxy (or a plain reverse proxy with --upstream)
    Proxy(Box<weft_proxy::ProxyArgs>),
}

fn main() -> ExitCode {
    // The data plane parses only its own flags: the full CLI costs megabytes of resident memory.
    if std::env::args_os().nth(1).is_some_and(|a| a == "proxy") {
        exec_lean_proxy();
        return weft_proxy::main_from_args(std::env::args_os().skip(1));
    }
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => {
            let code = match e.kind() {
                clap::error::ErrorKind::DisplayHelp
                | clap::error::ErrorKind::DisplayVersion
                | clap::error::ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand => 0,
                _ => exit::USAGE,
            };
            let _ = e.print();
            return ExitCode::from(code);
        }
    };
    init_logging(&cli.command);
    if let Command::Proxy(args) = &cli.command {
        // The proxy builds its own runtimes (one per core) and owns its exit codes.
        return weft_proxy::main((**args).clone());
    }
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::from(exit::FAILURE);
        }
    };
    let result = runtime.block_on(async {
        let conn = &cli.conn;
        // Every api client this process makes (and the sidecars an agent starts) trusts it.
        weft_client::tls::set_default_ca_file(conn.ca_file());
        match cli.command {
            Command::Up(args) => cmd::up::run(conn, args).await,
            Command::Server(args) => cmd::server::run(conn, args).await,
            Command::Agent(args) => cmd::agent::run(conn, *args).await,
            Command::Apply(args) => cmd::apply::run(conn, args).await,
            Command::Get(args) => cmd::get::run(conn, args).await,
            Command::Describe(args) => cmd::describe::run(conn, args).await,
            Command::Delete(args) => cmd::delete::run(conn, args).await,
            Command::Logs(args) => cmd::logs::run(conn, args).await,
            Command::Scale(args) => cmd::scale::run(conn, args).await,
            Command::Rollout(c) => cmd::rollout::run(conn, c).await,
            Command::Token(c) => cmd::token::run(conn, c).await,
            Command::Top(args) => cmd::top::run(conn, args).await,
            Command::Dashboard(args) => cmd::dashboard::run(conn, args).await,
            Command::Sim(args) => cmd::sim::run(args),
            Command::Proxy(args) => weft_proxy::run(*args).await,
        }
    });
    // Watch streams and servers may hold tasks; do not wait for them on the way out.
    runtime.shutdown_background();
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            let (code, line) = exit::classify(&e);
            eprintln!("error: {line}");
            ExitCode::from(code)
        }
    }
}

/// Becomes the `weft-proxy` binary built beside this one, if there is one: same pid, same
/// command line, but a process image holding only the data plane (an idle sidecar's resident
/// memory is mostly the pages of its binary). Returns only when that is not possible, and the
/// proxy then runs in this process. `WEFT_PROXY_IN_PROCESS=1` skips it.
fn exec_lean_proxy() {
    #[cfg(unix)]
    {
        use std::os::unix::process::CommandExt;
        if std::env::var_os("WEFT_PROXY_IN_PROCESS").is_some() {
            return;
        }
        let Ok(exe) = std::env::current_exe() else { return };
        let lean = exe.with_file_name("weft-proxy");
        if !lean.is_file() {
            return;
        }
        let mut args = std::env::args_os();
        let arg0 = args.next().unwrap_or_else(|| "weft".into());
        // `exec` returns only on failure.
        let _ = std::process::Command::new(&lean).arg0(arg0).args(args).exec();
    }
}

/// Long-running roles log to stderr; one-shot commands stay quiet unless WEFT_LOG says otherwise.
fn init_logging(command: &Command) {
    let default = match command {
        Command::Server(_) | Command::Agent(_) | Command::Proxy(_) => "info",
        _ => "warn",
    };
    let filter = tracing_subscriber::EnvFilter::try_from_env("WEFT_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default));
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(ansi)
        .try_init();
}
