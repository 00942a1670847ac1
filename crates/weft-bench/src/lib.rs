//! Benchmark tools that drive the real `weft` binary over real sockets.
//!
//! [`http`] is a deliberately minimal HTTP/1.1 keep-alive client (prebuilt request bytes,
//! Content-Length responses) so that on a small machine the load generator spends as little CPU
//! as possible next to the server it measures. [`server`] starts and stops `weft server`.

pub mod http;
pub mod server;
pub mod stats;
pub mod watchers;
