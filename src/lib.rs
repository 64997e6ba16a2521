//! recover: run a power-failure recovery runbook against a machine over SSH.

pub mod audit;
pub mod cli;
pub mod cmd;
pub mod drill;
pub mod duration;
pub mod engine;
pub mod error;
pub mod exit;
pub mod export;
pub mod hold;
pub mod incident;
pub mod journal;
pub mod lock;
pub mod plan;
pub mod power;
pub mod previous_boot;
pub mod private;
pub mod rehearsal;
pub mod remedy;
pub mod report;
pub mod runbook;
pub mod schema;
pub mod secrets;
pub mod signals;
pub mod state;
pub mod status;
pub mod sudoers;
pub mod target;
pub mod template;
pub mod verdict;
pub mod watch;

pub use error::Error;
pub use exit::Exit;
