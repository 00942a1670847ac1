//! Integration tests: the proxy in-process on 127.0.0.1 against real upstream sockets (plain
//! mode, static sidecars from a file, a dynamic sidecar against a fake control plane).

mod balance;
mod drain;
mod dynamic;
mod errors;
mod fuzz;
mod gateway;
mod h2;
mod http1;
mod inbound;
mod mesh;
mod parse_fuzz;
mod resilience;
mod routing;
mod support;
mod tcp;
mod tracing;
mod upgrade;
