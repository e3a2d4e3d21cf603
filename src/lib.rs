//! s3lead: run a command only while holding a lease kept in one S3 object.
#![warn(missing_docs)]
//!
//! The library is what the `s3lead` binary itself uses, so Rust programs can embed the
//! same election: [`record`] is the lock object, [`store`] where it lives, [`clock`] the
//! boot-time clock, [`election`] the protocol as a state machine with no I/O, and
//! [`lease`] the async driver that runs it over a store. [`log`] is the binary's logging,
//! which never blocks on stderr.

pub mod clock;
pub mod election;
pub mod exit;
pub mod lease;
pub mod record;
pub mod signals;
pub mod stop;
pub mod store;
pub mod timing;
