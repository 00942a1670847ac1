//! One module per subcommand.
pub mod agent;
pub mod apisec;
pub mod apply;
pub mod dashboard;
pub mod delete;
pub mod describe;
pub mod get;
pub mod lead;
pub mod logs;
pub mod rollout;
pub mod scale;
pub mod server;
pub mod sim;
pub mod token;
pub mod top;
pub mod up;
pub mod up_obs;
