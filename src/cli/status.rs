//! `s3lead status`: one read of the lock object, shown to a person or (`--json`) to a
//! program, and an exit status a script can branch on: 0 when the lock *appears live*
//! (held, and renewed within its lease by this host's reading of `renewed_at`), 1 when it
//! is absent, released or stale. It writes nothing. One read cannot prove a holder alive:
//! only watching the record change can (docs/design.md §3), and `renewed_at` was written
//! by another host's clock. So "appears live" is information for people and scripts; no
//! safety decision rests on it.
//!
//! A holder that advertises a peer endpoint is asked once for the followers it hears
//! (`peer.rs`), at no cost in store requests.
//!
//! `--watch` keeps reading, and prints one line each time the holder, the term or the
//! release state changes (renewals change none of them, so they print nothing), until
//! SIGINT or SIGTERM ends it with status 0. It reads on a follower's cheap schedule: a
//! conditional read (304 when nothing changed) every third of the lease seen, at most
//! every 10 s, or every `--every`.

use super::{Failure, S3Args};
use crate::peer::{PeerClient, PeerFollower};
use clap::Args;
use s3lead::exit;
use s3lead::record::{LastRun, LockRecord};
use s3lead::signals::Signals;
use s3lead::store::{AnyStore, Etag, StoreError};
use s3lead::store::{LockStore, ReadReply};
use s3lead::timing::{Dur, parse_duration};
use std::time::{Duration, SystemTime};

#[derive(Debug, Args)]
pub struct StatusArgs {
    /// The lock: s3://BUCKET/KEY, file:///ABS/PATH, or a local path.
    pub lock: String,

    /// Print one JSON object: {"lock", "state": "held"|"released"|"absent",
    /// "appears_live": bool, "record", "last_run_age_s", "followers",
    /// "followers_error"}; the record's "last_run" is the last --once-per run;
    /// "followers" lists the candidates the holder's endpoint hears (peer mode: each
    /// {"id", "last_heard", "heard_ms_ago"}), null when it advertises none or cannot be
    /// asked (then "followers_error" says why).
    #[arg(long)]
    pub json: bool,

    /// Keep reading, and print one line each time the holder, the term or the release
    /// state changes (not at renewals), until interrupted (SIGINT or SIGTERM: exit 0).
    /// With --json, one object per line: {"at", "lock", "state", "holder", "term",
    /// "lease_id"}.
    #[arg(long)]
    pub watch: bool,

    /// With --watch, read this often [default: a third of the lease seen, at most 10s].
    #[arg(long, value_name = "DUR", value_parser = parse_duration, requires = "watch")]
    pub every: Option<Duration>,

    /// The bearer token of the leader's endpoint (the first line of FILE), to list its
    /// followers when it asks for one (`run --peer-token-file`).
    #[arg(long, value_name = "FILE", env = "S3LEAD_PEER_TOKEN_FILE")]
    pub peer_token_file: Option<std::path::PathBuf>,

    #[command(flatten)]
    pub s3: S3Args,
}

/// How long `status` waits for the leader's endpoint to list its followers.
const PEER_TIMEOUT: Duration = Duration::from_secs(2);

/// The followers the holder's endpoint hears (peer mode), asked once; `None` when the
/// record advertises no endpoint or the lock is not held.
async fn followers(
    record: Option<&LockRecord>,
    token: Option<String>,
) -> Option<Result<Vec<PeerFollower>, String>> {
    let url = record.filter(|r| !r.released)?.advertise.as_deref()?;
    let client = PeerClient::new(token, "");
    let asked = tokio::time::timeout(PEER_TIMEOUT, client.lease(url, "")).await;
    Some(match asked {
        Ok(Ok(lease)) => Ok(lease.followers),
        Ok(Err(e)) => Err(e),
        Err(_) => Err(format!("{url} did not answer within {}", Dur(PEER_TIMEOUT))),
    })
}

/// Runs `s3lead status`; returns the exit status.
pub async fn status(args: StatusArgs) -> Result<i32, Failure> {
    let url = super::lock_url(&args.lock)?;
    let lock = url.as_str();
    let store = super::open(&url, &args.s3.options(super::ONE_SHOT_REQUEST_TIMEOUT)).await?;
    if args.watch {
        return watch(&store, lock, args.json, args.every).await;
    }
    let reply = store
        .read(None)
        .await
        .map_err(|e| super::store_failure(lock, &e))?;
    let record = match reply {
        ReadReply::Found { body, .. } => Some(
            LockRecord::decode(&body)
                .map_err(|e| Failure::new(exit::BAD_RECORD, format!("{lock}: {e}")))?,
        ),
        ReadReply::Missing | ReadReply::NotModified => None,
    };
    let token = match &args.peer_token_file {
        Some(path) => Some(super::read_token(&url, path)?),
        None => None,
    };
    let followers = followers(record.as_ref(), token).await;
    let shown = Shown::new(lock, record, followers);
    if args.json {
        shown.print_json();
    } else {
        shown.print_text();
    }
    Ok(if shown.appears_live {
        exit::STATUS_LIVE
    } else {
        exit::STATUS_NOT_LIVE
    })
}

/// What one read of the lock shows, with what this host makes of it.
struct Shown<'a> {
    lock: &'a str,
    record: Option<LockRecord>,
    /// How long ago the record was renewed, by this host's clock.
    renewed_ago: Option<Duration>,
    /// Held, and renewed within its lease by this host's clock.
    appears_live: bool,
    followers: Option<Result<Vec<PeerFollower>, String>>,
}

impl<'a> Shown<'a> {
    fn new(
        lock: &'a str,
        record: Option<LockRecord>,
        followers: Option<Result<Vec<PeerFollower>, String>>,
    ) -> Shown<'a> {
        let renewed_ago = record.as_ref().and_then(|r| {
            let renewed = humantime::parse_rfc3339(&r.renewed_at).ok()?;
            // A renewal "in the future" by this host's clock is a clock offset: age zero.
            Some(
                SystemTime::now()
                    .duration_since(renewed)
                    .unwrap_or(Duration::ZERO),
            )
        });
        let appears_live = match (&record, renewed_ago) {
            (Some(r), Some(ago)) => !r.released && ago <= r.lease(),
            _ => false,
        };
        Shown {
            lock,
            record,
            renewed_ago,
            appears_live,
            followers,
        }
    }

    fn print_json(&self) {
        let state = match &self.record {
            None => "absent",
            Some(r) if r.released => "released",
            Some(_) => "held",
        };
        let last_run_age_s = self
            .record
            .as_ref()
            .and_then(|r| r.last_run.as_ref())
            .and_then(|run| age(&run.started_at))
            .map(|d| d.as_secs());
        let (list, error) = match &self.followers {
            None => (None, None),
            Some(Ok(list)) => (Some(list), None),
            Some(Err(e)) => (None, Some(e)),
        };
        let v = serde_json::json!({
            "lock": self.lock,
            "state": state,
            "appears_live": self.appears_live,
            "record": self.record,
            "last_run_age_s": last_run_age_s,
            "followers": list,
            "followers_error": error,
        });
        println!("{v}");
    }

    fn print_text(&self) {
        let lock = self.lock;
        let Some(r) = &self.record else {
            println!("{lock}: free (no lock object yet; the first holder gets term 1)");
            return;
        };
        if r.released {
            match r.term.next() {
                Some(next) => println!(
                    "{lock}: free (released by {}, term {}; the next holder gets term {next})",
                    r.holder, r.term
                ),
                None => println!(
                    "{lock}: released by {}, but its term {} is the highest: no holder can take it (use a new lock key)",
                    r.holder, r.term
                ),
            }
        } else {
            self.print_held(r);
        }
        if let Some(run) = &r.last_run {
            print_last_run(run);
        }
    }

    fn print_held(&self, r: &LockRecord) {
        let age = self
            .renewed_ago
            .map(|d| {
                format!(
                    ", {} ago by this host's clock",
                    Dur(Duration::from_secs(d.as_secs()))
                )
            })
            .unwrap_or_default();
        println!("{}: held by {}", self.lock, r.holder);
        println!("  term       {}", r.term);
        println!("  lease      {}", Dur(r.lease()));
        println!("  acquired   {}", r.acquired_at);
        println!("  renewed    {}{age}", r.renewed_at);
        println!("  lease id   {}", r.lease_id);
        if let Some(url) = &r.advertise {
            println!("  peer       {url} (followers long-poll it for renewals)");
        }
        match &self.followers {
            None => {}
            Some(Ok(list)) if list.is_empty() => {
                println!("  followers  none heard on its endpoint");
            }
            Some(Ok(list)) => {
                let each: Vec<String> = list
                    .iter()
                    .map(|f| {
                        format!(
                            "{} (heard {} ago)",
                            f.id,
                            Dur(Duration::from_millis(f.heard_ms_ago))
                        )
                    })
                    .collect();
                println!(
                    "  followers  {} heard on its endpoint: {}",
                    list.len(),
                    each.join(", ")
                );
            }
            Some(Err(e)) => println!("  followers  unknown ({e})"),
        }
        if self.appears_live {
            println!(
                "  appears    live (renewed within its lease by this host's clock; one read cannot prove it)"
            );
        } else {
            println!(
                "  appears    stale (not renewed within its lease by this host's clock: its holder may be gone, or the clocks differ)"
            );
        }
    }
}

/// How long ago `t` (RFC 3339) was by this host's clock.
fn age(t: &str) -> Option<Duration> {
    let t = humantime::parse_rfc3339(t).ok()?;
    SystemTime::now().duration_since(t).ok()
}

/// The last `--once-per` run, under the lock's own lines.
fn print_last_run(run: &LastRun) {
    let ago = age(&run.started_at)
        .map(|d| {
            format!(
                ", {} ago by this host's clock",
                Dur(Duration::from_secs(d.as_secs()))
            )
        })
        .unwrap_or_default();
    let end = match (&run.finished_at, run.exit_status) {
        (Some(at), Some(status)) => format!("finished {at}, exit status {status}"),
        _ => "not finished (running, or its lease was lost)".into(),
    };
    println!(
        "  last run   started {}{ago} by {} (term {}); {end}; window of {} from {}",
        run.started_at,
        run.holder,
        run.term,
        Dur(Duration::from_secs(run.window_s)),
        run.window
    );
}

/// What `--watch` prints a line for: a change of any of these. A renewal changes none.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Seen {
    state: &'static str,
    holder: Option<String>,
    term: Option<u64>,
    lease_id: Option<String>,
}

impl Seen {
    fn of(record: Option<&LockRecord>) -> Seen {
        match record {
            None => Seen {
                state: "absent",
                holder: None,
                term: None,
                lease_id: None,
            },
            Some(r) => Seen {
                state: if r.released { "released" } else { "held" },
                holder: Some(r.holder.clone()),
                term: Some(r.term.get()),
                lease_id: Some(r.lease_id.to_string()),
            },
        }
    }
}

/// A follower's slow poll: a third of the lease, at most 10 s (and at least 100 ms).
const WATCH_CEILING: Duration = Duration::from_secs(10);

/// `status --watch`: a line per change until SIGINT or SIGTERM (exit 0); a store that
/// stops answering is said once on stderr and read again, a fatal answer ends it.
async fn watch(
    store: &AnyStore,
    lock: &str,
    json: bool,
    every: Option<Duration>,
) -> Result<i32, Failure> {
    let mut signals = Signals::listen()
        .map_err(|e| Failure::new(exit::OS_ERROR, format!("{lock}: cannot catch signals: {e}")))?;
    let mut last: Option<Seen> = None;
    let mut etag: Option<Etag> = None;
    let mut period = every.unwrap_or(WATCH_CEILING);
    let mut outage = false;
    loop {
        let read = tokio::select! {
            read = store.read(etag.as_ref()) => read,
            _ = signals.shutdown() => return Ok(0),
        };
        match read {
            Ok(ReadReply::NotModified) => {}
            Ok(reply) => {
                let record =
                    match reply {
                        ReadReply::Found { etag: e, body } => {
                            etag = Some(e);
                            Some(LockRecord::decode(&body).map_err(|e| {
                                Failure::new(exit::BAD_RECORD, format!("{lock}: {e}"))
                            })?)
                        }
                        _ => {
                            etag = None;
                            None
                        }
                    };
                if every.is_none() {
                    period = record
                        .as_ref()
                        .map_or(WATCH_CEILING, |r| r.lease() / 3)
                        .clamp(Duration::from_millis(100), WATCH_CEILING);
                }
                let seen = Seen::of(record.as_ref());
                if last.as_ref() != Some(&seen) {
                    if !print_change(lock, json, &seen) {
                        // Nobody reads stdout any more (`| head -n1`): done.
                        return Ok(0);
                    }
                    last = Some(seen);
                }
                outage = false;
            }
            Err(e @ StoreError::Fatal(..)) => return Err(super::store_failure(lock, &e)),
            Err(e) => {
                if !outage {
                    tracing::warn!(lock, "{e}; reading again");
                    outage = true;
                }
            }
        }
        tokio::select! {
            _ = tokio::time::sleep(period) => {}
            _ = signals.shutdown() => return Ok(0),
        }
    }
}

/// One line for a change; `false` when stdout is gone.
fn print_change(lock: &str, json: bool, seen: &Seen) -> bool {
    use std::io::Write as _;
    let at = humantime::format_rfc3339_seconds(SystemTime::now()).to_string();
    let line = if json {
        serde_json::json!({
            "at": at,
            "lock": lock,
            "state": seen.state,
            "holder": seen.holder,
            "term": seen.term,
            "lease_id": seen.lease_id,
        })
        .to_string()
    } else {
        match (&seen.holder, seen.term) {
            (Some(holder), Some(term)) if seen.state == "held" => {
                format!("{at} {lock}: held by {holder}, term {term}")
            }
            (Some(holder), Some(term)) => {
                format!("{at} {lock}: released by {holder}, term {term}")
            }
            _ => format!("{at} {lock}: absent (no lock object)"),
        }
    };
    let mut out = std::io::stdout().lock();
    writeln!(out, "{line}").and_then(|()| out.flush()).is_ok()
}
