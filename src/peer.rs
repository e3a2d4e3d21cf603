//! The read-only HTTP endpoint of `s3lead run --peer-listen ADDR`: `GET /healthz`,
//! `GET /metrics` (the Prometheus text format) and `GET /v1/lease` (the lease as this
//! candidate knows it, in JSON). It serves what the candidate has seen and decides
//! nothing: S3 stays the only authority, and no answer here can change who leads.
//!
//! What it serves is a [`View`], kept up to date by the election's events
//! ([`s3lead::lease::LeaseEvent`]) and the store's request counters. The server is
//! hyper's HTTP/1 connection on the supervisor's runtime; each answer only locks the view
//! for as long as it takes to copy it, so it never holds the stop path.
//!
//! With `--peer-token-file`, `/metrics` and `/v1/lease` ask for `Authorization: Bearer
//! TOKEN` (401 without it); `/healthz` stays open for probes. The token is read from the
//! file once, never taken on the command line, and never logged.
//!
//! The metrics are written by hand rather than through a metrics crate: six families,
//! no histograms, and the text format is a few lines of `writeln!`; a registry crate
//! would bring a derive macro and its own locks for nothing this needs.

use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::header::{AUTHORIZATION, CONTENT_TYPE, HeaderValue, WWW_AUTHENTICATE};
use hyper::service::service_fn;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use s3lead::clock::{Instant, boot_now};
use s3lead::lease::{LeaseEvent, LeaseState};
use s3lead::store::RequestCounters;
use std::fmt::Write as _;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, PoisonError};
use tokio::net::TcpListener;
use tracing::debug;

/// What one candidate knows of its lock, as the endpoint serves it.
#[derive(Debug, Default)]
struct Known {
    /// Whether this candidate holds the lease now (and its command may run).
    is_leader: bool,
    /// The term of the lease last seen: this candidate's own, or another holder's.
    term: Option<u64>,
    /// The holder of that lease, from its record.
    leader: Option<String>,
    /// Whether that lease was released.
    released: bool,
    /// Times the lock's leader changed, as this candidate saw it (its own elections and
    /// the new terms it read), not counting the first lease it saw.
    leader_changes: u64,
    /// Times this candidate's lease was at risk (renewals failed up to the stop point).
    at_risk: u64,
    /// When this candidate's lease was last written (elected or renewed), on the boot
    /// clock.
    last_renewal: Option<Instant>,
}

impl Known {
    fn saw_term(&mut self, term: u64) {
        if self.term.is_some_and(|t| t != term) {
            self.leader_changes += 1;
        }
        self.term = Some(term);
    }

    fn on_event(&mut self, holder: &str, e: &LeaseEvent) {
        match e {
            LeaseEvent::Observed {
                holder,
                term,
                released,
            } => {
                self.saw_term(term.get());
                self.leader = Some(holder.clone());
                self.released = *released;
            }
            LeaseEvent::Elected { term, .. } => {
                self.saw_term(term.get());
                self.leader = Some(holder.to_owned());
                self.released = false;
                self.is_leader = true;
                self.last_renewal = Some(boot_now());
            }
            LeaseEvent::Renewed { .. } => self.last_renewal = Some(boot_now()),
            LeaseEvent::Lost { state, .. } => {
                if *state == LeaseState::AtRisk {
                    self.at_risk += 1;
                }
                self.is_leader = false;
            }
            LeaseEvent::Released { .. } => {
                self.is_leader = false;
                self.released = true;
            }
        }
    }
}

/// The candidate's view of its lock, shared by the election's callback and the server.
#[derive(Clone, Debug)]
pub struct View {
    lock: String,
    holder: String,
    known: Arc<Mutex<Known>>,
    counters: Option<RequestCounters>,
}

impl View {
    /// The view of candidate `holder` of `lock`, whose store counts its requests in
    /// `counters` (the S3 store does).
    pub fn new(lock: &str, holder: &str, counters: Option<RequestCounters>) -> View {
        View {
            lock: lock.to_owned(),
            holder: holder.to_owned(),
            known: Arc::default(),
            counters,
        }
    }

    /// Takes in one event of the election.
    pub fn on_event(&self, e: &LeaseEvent) {
        self.known
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .on_event(&self.holder, e);
    }

    fn snapshot(
        &self,
    ) -> (
        bool,
        Option<u64>,
        Option<String>,
        bool,
        u64,
        u64,
        Option<Instant>,
    ) {
        let k = self.known.lock().unwrap_or_else(PoisonError::into_inner);
        (
            k.is_leader,
            k.term,
            k.leader.clone(),
            k.released,
            k.leader_changes,
            k.at_risk,
            k.last_renewal,
        )
    }

    /// `GET /v1/lease`: the lease as this candidate knows it.
    fn lease_json(&self) -> String {
        let (is_leader, term, leader, released, ..) = self.snapshot();
        let state = match (is_leader, &term, released) {
            (true, ..) => "leading",
            (false, None, _) => "campaigning",
            (false, Some(_), true) => "released",
            (false, Some(_), false) => "following",
        };
        serde_json::json!({
            "lock": self.lock,
            "candidate": self.holder,
            "state": state,
            "is_leader": is_leader,
            "term": term,
            "holder": leader,
            "released": released,
        })
        .to_string()
    }

    /// `GET /metrics`, in the Prometheus text format (version 0.0.4).
    fn metrics(&self) -> String {
        let (is_leader, term, _, _, changes, at_risk, last_renewal) = self.snapshot();
        let lock = label_value(&self.lock);
        let mut out = String::new();
        let mut family = |name: &str, kind: &str, help: &str, samples: &[(String, String)]| {
            let _ = writeln!(out, "# HELP {name} {help}");
            let _ = writeln!(out, "# TYPE {name} {kind}");
            for (labels, value) in samples {
                let _ = writeln!(out, "{name}{{lock=\"{lock}\"{labels}}} {value}");
            }
        };
        family(
            "s3lead_is_leader",
            "gauge",
            "1 while this candidate holds the lease, else 0.",
            &[(String::new(), u8::from(is_leader).to_string())],
        );
        family(
            "s3lead_term",
            "gauge",
            "The term of the lease last seen (this candidate's or another's); 0 before any.",
            &[(String::new(), term.unwrap_or(0).to_string())],
        );
        family(
            "s3lead_leader_changes_total",
            "counter",
            "Times the lock's leader changed, as this candidate saw it.",
            &[(String::new(), changes.to_string())],
        );
        family(
            "s3lead_renewals_at_risk_total",
            "counter",
            "Times this candidate's lease was at risk: renewals failed up to the stop point.",
            &[(String::new(), at_risk.to_string())],
        );
        if let Some(c) = &self.counters {
            let samples: Vec<_> = c
                .snapshot()
                .into_iter()
                .map(|(o, n)| (format!(",outcome=\"{}\"", o.name()), n.to_string()))
                .collect();
            family(
                "s3lead_store_requests_total",
                "counter",
                "Requests to the store, by outcome (get, not_modified and missing are reads; put and precondition_failed writes).",
                &samples,
            );
        }
        let since = match (is_leader, last_renewal) {
            (true, Some(t)) => vec![(
                String::new(),
                format!("{:.3}", boot_now().saturating_since(t).as_secs_f64()),
            )],
            _ => Vec::new(),
        };
        family(
            "s3lead_seconds_since_last_renewal",
            "gauge",
            "Seconds since this leader's lease was last written (absent while not leading).",
            &since,
        );
        out
    }
}

/// A label value with `\`, `"` and newlines escaped, as the text format asks.
fn label_value(s: &str) -> String {
    s.replace('\\', r"\\")
        .replace('"', "\\\"")
        .replace('\n', r"\n")
}

/// The endpoint: where it listens, what it serves, and the token it asks for.
pub struct Endpoint {
    listener: TcpListener,
    view: View,
    token: Option<Arc<str>>,
}

impl Endpoint {
    /// Binds `addr` now, so that a port in use is an error before any request to the
    /// store.
    pub async fn bind(
        addr: SocketAddr,
        view: View,
        token: Option<String>,
    ) -> std::io::Result<Endpoint> {
        Ok(Endpoint {
            listener: TcpListener::bind(addr).await?,
            view,
            token: token.map(Arc::from),
        })
    }

    /// Where it listens (the port chosen, for port 0).
    pub fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.listener.local_addr()
    }

    /// Serves until the runtime ends; spawned beside the supervisor.
    pub async fn serve(self) {
        let lock = self.view.lock.clone();
        loop {
            let (stream, peer) = match self.listener.accept().await {
                Ok(s) => s,
                Err(e) => {
                    debug!(lock = %lock, "peer endpoint: accept failed: {e}");
                    // EMFILE and the like: do not spin.
                    tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                    continue;
                }
            };
            let view = self.view.clone();
            let token = self.token.clone();
            let lock = lock.clone();
            tokio::spawn(async move {
                let service = service_fn(move |req| {
                    let answer = answer(&view, token.as_deref(), &req);
                    async move { Ok::<_, std::convert::Infallible>(answer) }
                });
                if let Err(e) = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), service)
                    .await
                {
                    debug!(lock = %lock, %peer, "peer endpoint: connection ended: {e}");
                }
            });
        }
    }
}

/// The answer to one request.
fn answer(view: &View, token: Option<&str>, req: &Request<Incoming>) -> Response<Full<Bytes>> {
    if req.method() != Method::GET && req.method() != Method::HEAD {
        return plain(StatusCode::METHOD_NOT_ALLOWED, "read-only: GET only\n");
    }
    let path = req.uri().path();
    if path == "/healthz" {
        return plain(StatusCode::OK, "ok\n");
    }
    if !matches!(path, "/metrics" | "/v1/lease") {
        return plain(StatusCode::NOT_FOUND, "not found\n");
    }
    if let Some(token) = token {
        let given = req
            .headers()
            .get(AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "));
        if !given.is_some_and(|g| same(g.as_bytes(), token.as_bytes())) {
            let mut r = plain(StatusCode::UNAUTHORIZED, "a bearer token is required\n");
            r.headers_mut()
                .insert(WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
            return r;
        }
    }
    if path == "/metrics" {
        let mut r = plain(StatusCode::OK, view.metrics());
        r.headers_mut().insert(
            CONTENT_TYPE,
            HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"),
        );
        r
    } else {
        let mut r = plain(StatusCode::OK, view.lease_json());
        r.headers_mut()
            .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
        r
    }
}

/// Compares without stopping at the first difference, so that the time an answer takes
/// says nothing about how much of a guessed token was right.
fn same(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

fn plain(status: StatusCode, body: impl Into<Bytes>) -> Response<Full<Bytes>> {
    let mut r = Response::new(Full::new(body.into()));
    *r.status_mut() = status;
    r
}

#[cfg(test)]
mod tests {
    use super::*;
    use s3lead::record::LeaseId;

    #[test]
    fn the_view_follows_the_events() {
        let v = View::new("s3://b/k", "me", None);
        let other = LeaseEvent::Observed {
            holder: "web-1".into(),
            term: s3lead::record::Term::FIRST,
            released: false,
        };
        v.on_event(&other);
        v.on_event(&other);
        assert!(
            v.metrics()
                .contains("s3lead_is_leader{lock=\"s3://b/k\"} 0\n")
        );
        assert!(
            v.metrics()
                .contains("s3lead_leader_changes_total{lock=\"s3://b/k\"} 0\n")
        );
        let term = s3lead::record::Term::FIRST.next().expect("term 2");
        v.on_event(&LeaseEvent::Elected {
            term,
            lease_id: LeaseId::random(),
        });
        let m = v.metrics();
        assert!(m.contains("s3lead_is_leader{lock=\"s3://b/k\"} 1\n"), "{m}");
        assert!(m.contains("s3lead_term{lock=\"s3://b/k\"} 2\n"), "{m}");
        assert!(
            m.contains("s3lead_leader_changes_total{lock=\"s3://b/k\"} 1\n"),
            "{m}"
        );
        assert!(
            m.contains("s3lead_seconds_since_last_renewal{lock=\"s3://b/k\"} "),
            "{m}"
        );
        v.on_event(&LeaseEvent::Lost {
            term,
            state: LeaseState::AtRisk,
        });
        let m = v.metrics();
        assert!(
            m.contains("s3lead_renewals_at_risk_total{lock=\"s3://b/k\"} 1\n"),
            "{m}"
        );
        assert!(!m.contains("s3lead_seconds_since_last_renewal{"), "{m}");
    }

    #[test]
    fn label_values_are_escaped() {
        assert_eq!(label_value("a\"b\\c\nd"), "a\\\"b\\\\c\\nd");
    }

    #[test]
    fn tokens_compare_whole() {
        assert!(same(b"secret", b"secret"));
        assert!(!same(b"secret", b"secreT"));
        assert!(!same(b"secret", b"secret2"));
    }
}
