//! `s3lead check`: prove that the lock's store keeps the conditional-write contract that
//! mutual exclusion rests on (docs/design.md §3), before trusting a lock to it. The probe itself,
//! its checks and how each is judged, is the library's (`store/contract.rs`); this file
//! opens the store, prints each finding as it comes (or all of them as one JSON object),
//! and turns the verdict into an exit status.
//!
//! A broken contract is a FAIL and exit 78 ([`exit::UNSAFE_STORE`]). Bad credentials and a
//! missing bucket exit as they do for `run`. Answers too vague to judge (timeouts, 5xx
//! where a definite answer was due) end the check with 69: nothing is proven either way.
//! SIGINT and SIGTERM stop the probe, and its scratch keys are deleted before exiting.
//!
//! Each line ends with the round-trip time of the request it judges (`[rtt 12.3 ms]`), the
//! first line is the offset between this host's clock and the store's `Date`, and an
//! answer the library names (501 NotImplemented, 200 despite a failed precondition) is
//! named first in what the store did.

/// A line on stdout that never panics: `s3lead check … | head` must still delete its
/// scratch keys and give its exit status when nobody reads the rest.
macro_rules! out {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        let _ = writeln!(std::io::stdout(), $($arg)*);
    }};
}

use super::store_failure;
use super::{Failure, S3Args};
use clap::Args;
use s3lead::exit;
use s3lead::signals::Signals;
use s3lead::store::contract::{Finding, Outcome, Probe, Verdict};

#[derive(Debug, Args)]
pub struct CheckArgs {
    /// The lock: s3://BUCKET/KEY, file:///ABS/PATH, or a local path. The check works on
    /// scratch keys next to it and never touches the lock object itself.
    pub lock: String,

    /// Print one JSON object: {"lock", "safe", "verdict", "rounds", "writers", "checks":
    /// [{"check", "result": "ok"|"warn"|"fail", "expected", "got", "rtt_ms", and where
    /// they apply "anomaly": "not-implemented"|"ignored-precondition",
    /// "clock_offset_ms", "clock_uncertainty_ms"}]}.
    #[arg(long)]
    pub json: bool,

    /// Race rounds: each races --writers creates, then as many replaces, on a fresh
    /// scratch key.
    #[arg(long, default_value_t = 20, value_parser = clap::value_parser!(u32).range(1..=10_000))]
    pub rounds: u32,

    /// Concurrent writers in each race.
    #[arg(long, default_value_t = 8, value_parser = clap::value_parser!(u32).range(2..=256))]
    pub writers: u32,

    #[command(flatten)]
    pub s3: S3Args,
}

/// Runs `s3lead check`; returns the exit status.
pub async fn check(args: CheckArgs) -> Result<i32, Failure> {
    let url = super::lock_url(&args.lock)?;
    let lock = &url;
    let store = super::open(&url, &args.s3.options(super::ONE_SHOT_REQUEST_TIMEOUT)).await?;
    // A shutdown signal ends the check early, its scratch keys deleted first.
    let mut signals = Signals::listen()
        .map_err(|e| Failure::new(exit::OS_ERROR, format!("{lock}: cannot catch signals: {e}")))?;
    let mut report = Report {
        json: args.json,
        findings: Vec::new(),
    };
    let mut probe = Probe::new(&store, args.rounds, args.writers as usize);
    let verdict = {
        let mut sink = |finding: Finding| report.add(finding);
        let verdict = tokio::select! {
            verdict = probe.run(&mut sink) => Ok(verdict),
            sig = signals.shutdown() => Err(sig),
        };
        if verdict.is_err() {
            probe.clean_up(&mut sink).await;
        }
        verdict
    };
    let failure = match verdict {
        Ok(Verdict::Kept) => None,
        Ok(Verdict::Broken(failure)) => Some(failure),
        Ok(Verdict::Fatal(e)) => return Err(store_failure(lock, &e)),
        Ok(Verdict::Inconclusive(why)) => {
            return Err(Failure::new(
                exit::UNAVAILABLE,
                format!(
                    "{lock}: the check could not finish: {why}; nothing is proven either way (run it again)"
                ),
            ));
        }
        Err(sig) => {
            return Err(Failure::new(
                128 + sig as i32,
                format!("{lock}: interrupted by {sig}; the check did not finish"),
            ));
        }
    };
    Ok(report.finish(&args, failure.as_ref()))
}

/// The findings so far. As text, each is printed as soon as it is known (the races take
/// a while); as JSON, all of them at the end, in one object.
struct Report {
    json: bool,
    findings: Vec<Finding>,
}

impl Report {
    fn add(&mut self, finding: Finding) {
        if !self.json {
            // The store's answer, named first when it is one of the known ways of not
            // keeping the contract; the round trip last.
            let got = match finding.anomaly {
                Some(anomaly) => format!("{anomaly}: {}", finding.got),
                None => finding.got.clone(),
            };
            let rtt = finding
                .rtt_ms
                .map(|ms| format!(" [rtt {ms:.1} ms]"))
                .unwrap_or_default();
            match finding.outcome {
                Outcome::Ok => out!("ok   {}: {got}{rtt}", finding.check),
                Outcome::Warn => out!(
                    "WARN {}: expected {}; got {got}{rtt}",
                    finding.check,
                    finding.expected
                ),
                Outcome::Fail => out!(
                    "FAIL {}: expected {}; got {got}{rtt}",
                    finding.check,
                    finding.expected
                ),
            }
        }
        self.findings.push(finding);
    }

    /// Prints the verdict (`failure`: the first failed check, if any) and returns the
    /// exit status.
    fn finish(self, args: &CheckArgs, failure: Option<&Finding>) -> i32 {
        let lock = args.lock.as_str();
        let verdict = match failure {
            Some(f) => format!(
                "{lock}: UNSAFE: {}: {}; s3lead cannot guarantee mutual exclusion on this store",
                f.check, f.got
            ),
            None => format!(
                "{lock}: the store keeps the conditional-write contract ({} race rounds x {} writers: one winner each)",
                args.rounds, args.writers
            ),
        };
        if self.json {
            let v = serde_json::json!({
                "lock": lock,
                "safe": failure.is_none(),
                "verdict": verdict,
                "rounds": args.rounds,
                "writers": args.writers,
                "checks": self.findings,
            });
            out!("{v}");
        } else {
            out!("{verdict}");
        }
        if failure.is_none() {
            0
        } else {
            exit::UNSAFE_STORE
        }
    }
}
