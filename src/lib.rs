//! recover: run a power-failure recovery runbook against a machine over SSH.

pub mod app;
pub mod cli;
pub mod export;
pub mod plan;
pub mod runbook;
pub mod show;
pub mod template;
pub mod verdict;
