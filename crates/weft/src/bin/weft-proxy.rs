//! The data plane alone: what `weft proxy` runs.
//!
//! `weft proxy …` replaces itself with this binary when it sits next to `weft` (see `main.rs`):
//! it links only the proxy, so an idle sidecar maps and touches a fraction of the pages the
//! full `weft` binary (api server, controllers, agent) would. Run directly, it takes the same
//! flags: `weft-proxy --listen ADDR --upstream ADDR`.
#![forbid(unsafe_code)]

use std::process::ExitCode;

fn main() -> ExitCode {
    let mut args: Vec<std::ffi::OsString> = std::env::args_os().collect();
    // Started by `weft proxy …` (argv[0] kept as `weft`): the flags follow the `proxy` word.
    if args.get(1).is_some_and(|a| a == "proxy") {
        args.remove(0);
    }
    weft_proxy::main_from_args(args)
}
