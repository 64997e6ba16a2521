//! Eyes and hands on the power: the UPS (NUT's network protocol, [`nut`]), Wake-on-LAN
//! ([`wol`]) and IPMI through the system `ipmitool` ([`ipmi`]).
//!
//! These are clients and pure functions only: the engine decides when to call them, how often
//! and for how long.

pub mod ipmi;
pub mod nut;
pub mod wol;
