//! Integration tests: the proxy in-process on 127.0.0.1 against real upstream sockets.

mod drain;
mod errors;
mod fuzz;
mod h2;
mod http1;
mod support;
mod upgrade;
