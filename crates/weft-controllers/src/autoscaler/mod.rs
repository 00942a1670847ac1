//! The autoscaler controller (DESIGN.md "Autoscaling loop": aggregate → decide → act). After
//! every scrape round it feeds each Autoscaler's windows from [`crate::scrape::LiveMetrics`],
//! asks [`weft_autoscale::decide`], writes the target Deployment's `spec.replicas` when that
//! changes, and reports in the Autoscaler's status. Its [`vertical`] half feeds the same
//! figures to a recommender of cpu and memory requests and, in mode `auto`, applies them.
//!
//! [`status`] builds the status (pure); [`controller`] does the I/O.

pub(crate) mod controller;
pub mod status;
pub(crate) mod vertical;
