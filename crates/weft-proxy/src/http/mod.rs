//! The HTTP side of the proxy: serving client connections and forwarding their requests.

pub(crate) mod body;
pub(crate) mod fast;
pub(crate) mod forward;
pub(crate) mod headers;
pub(crate) mod mesh;
pub(crate) mod server;
pub(crate) mod upgrade;
pub(crate) mod watchdog;
