//! s3lead: run a command only while holding a lease kept in one S3 object.
//!
//! This crate is the election the `s3lead` binary runs, for Rust programs that want to
//! embed it. Its promise, when the holder keeps its side: **two holders of one lock never
//! work at once, and every holder carries a larger fencing term than the one before.**
//! The design, with a proof sketch, is `docs/design.md` in the repository.
//!
//! - [`record`]: the lock object, one small JSON record.
//! - [`store`]: where it lives ([`store::LockStore`]: S3 and S3-compatible stores, a file
//!   on one host, and an in-memory reference store), and [`store::contract`], the probe
//!   `s3lead check` runs to prove a store keeps the conditional-write contract.
//! - [`timing`]: the lease's durations, refused when they cannot keep the promise.
//! - [`election`]: the protocol, a state machine with no I/O.
//! - [`lease`]: its driver over a store: [`lease::Candidate::campaign`] returns a
//!   [`lease::Leadership`], renewed in the background until released or lost.
//! - [`stop`]: when a supervised command must get its stop signal and SIGKILL, a state
//!   machine with no I/O; [`signals`]: what each signal to the supervisor means.
//! - [`clock`]: the boot-time clock every deadline is measured on.
//! - [`exit`]: the binary's exit statuses.
//!
//! # What the holder must do
//!
//! The lease only protects work that stops in time. A holder must work only while
//! [`lease::LeaseStatus::state`] is [`lease::LeaseState::Held`] and before
//! [`lease::LeaseStatus::stop_at`], have stopped by `valid_until`, stop at once when the
//! state turns to `AtRisk` or `Lost`, and pass [`lease::Leadership::term`] to whatever
//! it writes to, so that a write carrying a smaller term than one already seen can be
//! refused: a process paused past its lease cannot be stopped by anyone, but it can be
//! fenced.
//!
//! ```no_run
//! use s3lead::lease::{CampaignOptions, Candidate, LeaseState};
//! use s3lead::store::file::FileStore;
//! use s3lead::timing::{Timing, TimingSpec};
//!
//! # async fn example() -> Result<(), Box<dyn std::error::Error>> {
//! let store = FileStore::open(std::path::Path::new("/run/lock/nightly.lock"))?;
//! let timing = Timing::new(&TimingSpec::default())?;
//! let candidate = Candidate::new(store, timing, "web-3", "/run/lock/nightly.lock");
//! let leadership = candidate.campaign(CampaignOptions::default()).await?;
//! let term = leadership.term();
//! // ... work while `leadership.status()` is Held and before its `stop_at`,
//! // every write carrying `term` ...
//! assert_eq!(leadership.release().await, LeaseState::Released);
//! # let _ = term;
//! # Ok(())
//! # }
//! ```
//!
//! `examples/embed.rs` is a whole program that does this over any lock `s3lead run`
//! takes (S3 or a file).
//!
//! The command line, the process supervision (the guard, the watchdog) and the logging
//! belong to the binary and are not part of this API.

#![warn(missing_docs)]

pub mod clock;
pub mod election;
pub mod exit;
pub mod lease;
pub mod record;
pub mod signals;
pub mod stop;
pub mod store;
pub mod timing;
