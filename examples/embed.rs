//! Embedding s3lead's election in a Rust program: campaign for a lock, do work only while
//! the lease is held and before its stop point, carry the fencing term into every write,
//! and release.
//!
//! ```text
//! cargo run --release --example embed -- LOCK [STEPS]
//! ```
//!
//! `LOCK` is what `s3lead run` takes: `./path/to.lock`, `file:///abs/path.lock`, or
//! `s3://bucket/key` (credentials, region and endpoint from the usual AWS environment:
//! `AWS_ACCESS_KEY_ID`, `AWS_REGION`, `AWS_ENDPOINT_URL` …). It does `STEPS` (default 5)
//! steps of 100 ms of "work", printing `term T: step N` for each, then releases the lease
//! and prints `released`. Run two at once: the second waits, and leads with a larger term
//! once the first has released.
//!
//! The rules an embedding program must keep (they are the ones `s3lead run` keeps for
//! its command; docs/design.md §3 and §4):
//! - work only while [`LeaseState::Held`] and before [`LeaseStatus::stop_at`]; by
//!   `valid_until` the work must have stopped, as another candidate may lead soon after;
//! - stop at once on [`LeaseState::AtRisk`] or [`LeaseState::Lost`];
//! - hand [`Leadership::term`] to whatever the work writes to, so that it can refuse a
//!   write carrying a smaller term than one it has seen: a process paused past its lease
//!   (a whole VM stopped) cannot be stopped by anyone, but it can be fenced.

use s3lead::clock::boot_now;
use s3lead::lease::{CampaignOptions, Candidate, Leadership, LeaseState, LeaseStatus};
use s3lead::store::LockUrl;
use s3lead::store::s3::S3Options;
use s3lead::timing::{Timing, TimingSpec};
use std::process::ExitCode;
use std::time::Duration;

#[tokio::main(flavor = "current_thread")]
async fn main() -> ExitCode {
    let mut args = std::env::args().skip(1);
    let (Some(lock), steps) = (args.next(), args.next()) else {
        eprintln!("usage: embed LOCK [STEPS]");
        return ExitCode::from(64);
    };
    let steps: u32 = match steps.as_deref().map(str::parse).unwrap_or(Ok(5)) {
        Ok(n) => n,
        Err(e) => {
            eprintln!("embed: STEPS: {e}");
            return ExitCode::from(64);
        }
    };
    match lead(&lock, steps).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("embed: {lock}: {e}");
            ExitCode::FAILURE
        }
    }
}

async fn lead(lock: &str, steps: u32) -> Result<(), Box<dyn std::error::Error>> {
    // The defaults of `s3lead run`: a 30 s lease renewed every 10 s.
    let timing = Timing::new(&TimingSpec::default())?;
    let url = LockUrl::parse(lock)?;
    let store = url
        .open(&S3Options {
            endpoint_url: None,
            region: None,
            profile: None,
            path_style: false,
            request_timeout: timing.request_timeout(),
        })
        .await?;
    let holder = format!("embed (pid {})", std::process::id());
    let candidate = Candidate::new(store, timing, holder, url.as_str());
    let mut leadership = candidate.campaign(CampaignOptions::default()).await?;
    let term = leadership.term();

    for step in 1..=steps {
        let status = leadership.status();
        if !may_work(&status) {
            // The lease is at risk or gone: stop now, and do not release a lease that
            // is no longer ours to release.
            return Err(format!("lease no longer held at step {step}: {:?}", status.state).into());
        }
        // The work: every write it makes carries `term`.
        println!("term {term}: step {step}");
        work_until_next_step(&mut leadership).await;
    }
    match leadership.release().await {
        LeaseState::Released => {
            println!("released");
            Ok(())
        }
        other => Err(format!("the lease ended as {other:?} before it was released").into()),
    }
}

/// Whether the holder may go on working now.
fn may_work(status: &LeaseStatus) -> bool {
    status.state == LeaseState::Held && boot_now() < status.stop_at
}

/// One step of work (here: 100 ms), ended early when the lease changes for the worse.
async fn work_until_next_step(leadership: &mut Leadership) {
    let step = tokio::time::sleep(Duration::from_millis(100));
    tokio::pin!(step);
    loop {
        tokio::select! {
            () = &mut step => return,
            changed = leadership.changed() => match changed {
                Some(status) if may_work(&status) => {}
                _ => return,
            },
        }
    }
}
