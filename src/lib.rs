//! recover: run a power-failure recovery runbook against a machine over SSH.

pub mod app;
pub mod audit;
pub mod cli;
pub mod drill;
pub mod engine;
pub mod export;
pub mod journal;
pub mod plan;
pub mod previous_boot;
pub mod rehearsal;
pub mod remedy;
pub mod report;
pub mod runbook;
pub mod show;
pub mod target;
pub mod template;
pub mod verdict;
