//! recover: run a power-failure recovery runbook against a machine over SSH.

pub mod app;
pub mod cli;
pub mod engine;
pub mod plan;
pub mod report;
pub mod runbook;
pub mod show;
pub mod template;
pub mod verdict;
