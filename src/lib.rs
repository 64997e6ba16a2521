//! recover: run a power-failure recovery runbook against a machine over SSH.

pub mod app;
pub mod cli;
pub mod engine;
pub mod export;
pub mod incident;
pub mod journal;
pub mod plan;
pub mod rehearsal;
pub mod report;
pub mod runbook;
pub mod show;
pub mod target;
pub mod template;
pub mod verdict;
