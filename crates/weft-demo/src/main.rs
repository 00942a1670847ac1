//! weft-demo: the demo shop, one binary with a subcommand per service, and a load generator.
//!
//! ```text
//!   gateway --> frontend --> catalog --> pricing
//!                   |
//!                   +------> cart
//! ```
//!
//! Services call each other by name (`http://catalog/...`) through their sidecars
//! (`HTTP_PROXY`), see [`mesh`]. Each one's latency, error rate and cpu cost can be turned up
//! at start (`DEMO_*` env) or live (`POST /knobs`), see [`knobs`]. The manifests that run it
//! under weft are in `examples/shop/`.
#![forbid(unsafe_code)]

mod cart;
mod catalog;
mod frontend;
mod knobs;
mod load;
mod mesh;
mod pricing;
mod server;

use std::io::IsTerminal as _;
use std::net::{Ipv4Addr, SocketAddr};
use std::process::ExitCode;
use std::time::Duration;

use clap::{Args, Parser, Subcommand};
use tracing_subscriber::EnvFilter;

use crate::knobs::{KnobState, Knobs};

#[derive(Parser)]
#[command(
    name = "weft-demo",
    version,
    about = "weft's demo shop: run one of its services, or load it"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// The shop's page (GET /) and /api/home; calls catalog and cart.
    Frontend(ServeArgs),
    /// Products (GET /api/products); calls pricing.
    Catalog(ServeArgs),
    /// Prices (GET /api/prices?ids=...).
    Pricing(ServeArgs),
    /// Carts kept in memory (GET/DELETE /api/carts/USER, POST /api/carts/USER/items).
    Cart(ServeArgs),
    /// Open-loop load: GET a URL at a fixed rate and print a line per second.
    Load(load::LoadArgs),
}

#[derive(Clone, Copy)]
enum Service {
    Frontend,
    Catalog,
    Pricing,
    Cart,
}

impl Service {
    fn name(self) -> &'static str {
        match self {
            Service::Frontend => "frontend",
            Service::Catalog => "catalog",
            Service::Pricing => "pricing",
            Service::Cart => "cart",
        }
    }
}

/// Where a demo service listens when neither `--listen` nor `PORT` says, so that the four
/// started by hand find each other without flags.
pub(crate) fn default_port(name: &str) -> Option<u16> {
    match name {
        "frontend" => Some(9000),
        "catalog" => Some(9001),
        "pricing" => Some(9002),
        "cart" => Some(9003),
        _ => None,
    }
}

#[derive(Debug, Args)]
struct ServeArgs {
    /// Address to listen on [default: 127.0.0.1:$PORT, else the service's own port 9000-9003].
    #[arg(long, value_name = "ADDR")]
    listen: Option<SocketAddr>,
    /// Reach a service directly rather than through HTTP_PROXY, e.g. catalog=127.0.0.1:9001
    /// (repeatable).
    #[arg(long = "upstream", value_name = "NAME=HOST:PORT", value_parser = parse_upstream)]
    upstreams: Vec<(String, String)>,
    /// Added delay per request, e.g. 50ms.
    #[arg(long, env = "DEMO_LATENCY", default_value = "0", value_parser = duration("latency"))]
    latency: Duration,
    /// Random extra delay, between 0 and this, per request.
    #[arg(long, env = "DEMO_JITTER", default_value = "0", value_parser = duration("jitter"))]
    jitter: Duration,
    /// Fraction of requests (0 to 1) answered with 503.
    #[arg(long, env = "DEMO_ERROR_RATE", default_value_t = 0.0)]
    error_rate: f64,
    /// Cpu busy-work per request, e.g. 5ms.
    #[arg(long, env = "DEMO_CPU", default_value = "0", value_parser = duration("cpu"))]
    cpu: Duration,
    /// Make /healthz answer 503.
    #[arg(long, env = "DEMO_FAIL_HEALTH")]
    fail_health: bool,
    /// Time calls to other services may take (the sidecar's own timeouts usually end them
    /// sooner).
    #[arg(long, default_value = "10s", value_parser = duration("call-timeout"))]
    call_timeout: Duration,
    /// Time in-flight requests get to finish after SIGTERM.
    #[arg(long, default_value = "8s", value_parser = duration("shutdown-timeout"))]
    shutdown_timeout: Duration,
}

fn duration(name: &'static str) -> impl Fn(&str) -> Result<Duration, String> + Clone {
    move |s| knobs::parse_duration(name, s)
}

fn parse_upstream(s: &str) -> Result<(String, String), String> {
    match s.split_once('=') {
        Some((name, addr)) if !name.is_empty() && addr.contains(':') => {
            Ok((name.to_ascii_lowercase(), addr.to_string()))
        }
        _ => Err(format!("{s:?}: expected NAME=HOST:PORT, e.g. catalog=127.0.0.1:9001")),
    }
}

/// Bad usage or configuration (DESIGN.md's exit codes).
const EXIT_CONFIG: u8 = 64;

fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => {
            let _ = e.print();
            return ExitCode::from(if e.use_stderr() { EXIT_CONFIG } else { 0 });
        }
    };
    init_logging(matches!(cli.command, Command::Load(_)));

    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let (service, args) = match cli.command {
        Command::Load(args) => {
            return match runtime.block_on(load::run(args)) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    eprintln!("error: {e:#}");
                    ExitCode::from(EXIT_CONFIG)
                }
            };
        }
        Command::Frontend(a) => (Service::Frontend, a),
        Command::Catalog(a) => (Service::Catalog, a),
        Command::Pricing(a) => (Service::Pricing, a),
        Command::Cart(a) => (Service::Cart, a),
    };
    let opts = match options(service, &args) {
        Ok(o) => o,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::from(EXIT_CONFIG);
        }
    };
    let mesh = match mesh::Routes::from_env(&args.upstreams) {
        Ok(routes) => mesh::Mesh::new(routes, args.call_timeout),
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::from(EXIT_CONFIG);
        }
    };
    let instance = opts.instance.clone();
    let served = runtime.block_on(async move {
        match service {
            Service::Frontend => server::run(frontend::Frontend { instance, mesh }, opts).await,
            Service::Catalog => server::run(catalog::Catalog { instance, mesh }, opts).await,
            Service::Pricing => server::run(pricing::Pricing { instance }, opts).await,
            Service::Cart => server::run(cart::Carts::new(instance), opts).await,
        }
    });
    // Don't wait for connections still open after the shutdown timeout.
    runtime.shutdown_timeout(Duration::from_millis(100));
    match served {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn options(service: Service, args: &ServeArgs) -> Result<server::Options, String> {
    let knobs = Knobs {
        latency: args.latency,
        jitter: args.jitter,
        error_rate: args.error_rate,
        cpu: args.cpu,
        fail_health: args.fail_health,
    };
    knobs.validate()?;
    let port = match std::env::var("PORT") {
        Ok(p) => p.trim().parse::<u16>().map_err(|_| format!("PORT={p:?} is not a port number"))?,
        Err(_) => default_port(service.name()).unwrap_or(0),
    };
    // Loopback by default: under weft the sidecar, on the same machine, is the only caller.
    let listen = args.listen.unwrap_or(SocketAddr::from((Ipv4Addr::LOCALHOST, port)));
    let instance = std::env::var("WEFT_INSTANCE")
        .ok()
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| format!("{}-{}", service.name(), std::process::id()));
    Ok(server::Options {
        listen,
        service: service.name(),
        instance,
        knobs: KnobState::new(knobs),
        shutdown_timeout: args.shutdown_timeout,
    })
}

/// Logs go to stdout (the agent keeps them in the instance's app.log), one line per event;
/// `LOG` (or `RUST_LOG`) sets the level, `LOG_FORMAT=json` gives JSON lines.
fn init_logging(load: bool) {
    let filter = std::env::var("LOG")
        .or_else(|_| std::env::var("RUST_LOG"))
        .unwrap_or_else(|_| if load { "warn" } else { "info" }.to_string());
    let filter = EnvFilter::try_new(&filter).unwrap_or_else(|_| EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt().with_env_filter(filter).with_target(false);
    let json = std::env::var("LOG_FORMAT").is_ok_and(|f| f == "json");
    // The load report owns stdout; its warnings go to stderr.
    if load {
        builder.with_writer(std::io::stderr).with_ansi(std::io::stderr().is_terminal()).init();
    } else if json {
        builder.json().with_writer(std::io::stdout).init();
    } else {
        builder.with_writer(std::io::stdout).with_ansi(std::io::stdout().is_terminal()).init();
    }
}
