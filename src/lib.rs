//! recover: run a power-failure recovery runbook against a machine over SSH.

pub mod cli;
pub mod cmd;
pub mod engine;
pub mod error;
pub mod exit;
pub mod export;
pub mod journal;
pub mod lock;
pub mod plan;
pub mod rehearsal;
pub mod report;
pub mod runbook;
pub mod secrets;
pub mod signals;
pub mod state;
pub mod target;
pub mod template;
pub mod verdict;

pub use error::Error;
pub use exit::Exit;
