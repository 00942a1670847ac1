//! One module per subcommand.
pub mod apply;
pub mod delete;
pub mod describe;
pub mod get;
pub mod server;
pub mod token;
