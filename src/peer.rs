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
//! `GET /v1/lease?after=ETAG&wait=MS` is the long-poll of a follower in peer mode: it
//! answers as soon as this candidate's ETag is no longer `ETAG` (a renewal) or it leads
//! no more (a release, a loss), and otherwise after `wait` (at most a minute) with the
//! same ETag. [`PeerClient`] is the follower's side of it (docs/design.md §3 "Peer mode").
//! A follower names itself in it (`candidate=ID`, its `--id`): the candidates heard that
//! way are this endpoint's [`Followers`], which `s3lead status` lists and `--quorum`
//! counts. They cost no request to the store.
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
use s3lead::election::{PeerAnswer, Watch};
use s3lead::lease::{LeaseEvent, LeaseState, PeerLink};
use s3lead::store::{Etag, RequestCounters};
use std::fmt::Write as _;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;
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
    /// The lock object's ETag after this candidate's last write.
    etag: Option<Etag>,
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
            LeaseEvent::Elected { term, etag, .. } => {
                self.etag.clone_from(etag);
                self.saw_term(term.get());
                self.leader = Some(holder.to_owned());
                self.released = false;
                self.is_leader = true;
                self.last_renewal = Some(boot_now());
            }
            LeaseEvent::Renewed { etag, .. } => {
                self.etag.clone_from(etag);
                self.last_renewal = Some(boot_now());
            }
            LeaseEvent::Lost { state, .. } => {
                // Told by the supervisor's timer and again by the renewal task: once.
                if *state == LeaseState::AtRisk && self.is_leader {
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
    /// Bumped after every event, for the long-polls waiting on a change.
    changed: Arc<tokio::sync::watch::Sender<()>>,
    counters: Option<RequestCounters>,
    followers: Followers,
}

impl View {
    /// The view of candidate `holder` of `lock`, whose store counts its requests in
    /// `counters` (the S3 store does).
    pub fn new(lock: &str, holder: &str, counters: Option<RequestCounters>) -> View {
        View {
            lock: lock.to_owned(),
            holder: holder.to_owned(),
            known: Arc::default(),
            changed: Arc::new(tokio::sync::watch::Sender::new(())),
            counters,
            followers: Followers::new(holder),
        }
    }

    /// The candidates heard following this one.
    pub fn followers(&self) -> &Followers {
        &self.followers
    }

    /// Takes in one event of the election.
    pub fn on_event(&self, e: &LeaseEvent) {
        self.known
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .on_event(&self.holder, e);
        self.changed.send_replace(());
    }

    /// `GET /v1/lease?after=ETAG&wait=MS`: waits until this candidate's ETag is no
    /// longer `after` or it leads no more, or `wait` has passed, and answers the lease.
    async fn lease_after(&self, after: Option<&str>, wait: Duration) -> String {
        let mut changed = self.changed.subscribe();
        let deadline = tokio::time::Instant::now() + wait.min(MAX_HOLD);
        loop {
            let news = {
                let k = self.known.lock().unwrap_or_else(PoisonError::into_inner);
                let etag = k.etag.as_ref().map(Etag::normalized);
                after.is_none() || !k.is_leader || etag != after
            };
            if news {
                break;
            }
            tokio::select! {
                r = changed.changed() => if r.is_err() { break },
                _ = tokio::time::sleep_until(deadline) => break,
            }
        }
        self.lease_json()
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
        let etag = self
            .known
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .etag
            .as_ref()
            .filter(|_| is_leader)
            .map(|e| e.normalized().to_owned());
        let state = match (is_leader, &term, released) {
            (true, ..) => "leading",
            (false, None, _) => "campaigning",
            (false, Some(_), true) => "released",
            (false, Some(_), false) => "following",
        };
        let now = boot_now();
        let followers: Vec<_> = self
            .followers
            .live(now)
            .into_iter()
            .map(|h| {
                serde_json::json!({
                    "id": h.id,
                    "last_heard": humantime::format_rfc3339_millis(h.wall).to_string(),
                    "heard_ms_ago": u64::try_from(now.saturating_since(h.at).as_millis())
                        .unwrap_or(u64::MAX),
                })
            })
            .collect();
        serde_json::json!({
            "lock": self.lock,
            "candidate": self.holder,
            "state": state,
            "is_leader": is_leader,
            "term": term,
            "holder": leader,
            "released": released,
            "etag": etag,
            "followers": followers,
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
            "s3lead_followers",
            "gauge",
            "Candidates heard following this one through its endpoint (peer mode), within their long-poll's hold.",
            &[(
                String::new(),
                self.followers.live(boot_now()).len().to_string(),
            )],
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

/// The longest a long-poll is held, whatever it asks for.
const MAX_HOLD: Duration = Duration::from_secs(60);

/// A follower counts as live for this long after the end of the hold it asked for: the
/// time it takes to read the answer and ask again, on a loaded host.
pub const LIVE_GRACE: Duration = Duration::from_secs(2);

/// The most followers remembered: an endpoint without a token must not grow without
/// bound for whoever sends made-up names.
const MAX_FOLLOWERS: usize = 1024;

/// One follower, as its long-polls were heard.
#[derive(Clone, Debug)]
pub struct Heard {
    /// The follower's `--id`.
    pub id: String,
    /// When its last long-poll arrived, on the boot clock.
    pub at: Instant,
    /// The same, by this host's wall clock (for people).
    pub wall: std::time::SystemTime,
    /// It counts as live until then: the end of the hold it asked for, and
    /// [`LIVE_GRACE`].
    pub live_until: Instant,
}

/// The candidates that follow this one through its endpoint: each long-poll that names
/// its candidate (`candidate=ID`) is a sign of life until the hold it asked for has
/// ended, and [`LIVE_GRACE`] after. Nothing here touches the lease: it is what
/// `s3lead status` shows and what `--quorum` counts, an availability policy.
#[derive(Clone, Debug)]
pub struct Followers {
    /// This candidate's own id: a long-poll in its name is not a follower.
    own: String,
    heard: Arc<Mutex<Vec<Heard>>>,
    /// Bumped when a follower is heard that was not live before.
    news: Arc<tokio::sync::watch::Sender<()>>,
}

impl Followers {
    /// No follower heard yet, for the candidate named `own`.
    pub fn new(own: &str) -> Followers {
        Followers {
            own: own.to_owned(),
            heard: Arc::default(),
            news: Arc::new(tokio::sync::watch::Sender::new(())),
        }
    }

    /// A long-poll of follower `id` arrived now, asking to be held for `hold`.
    pub fn heard(&self, id: &str, hold: Duration) {
        if id.is_empty() || id == self.own {
            return;
        }
        let now = boot_now();
        let entry = Heard {
            id: id.to_owned(),
            at: now,
            wall: std::time::SystemTime::now(),
            live_until: now + hold.min(MAX_HOLD) + LIVE_GRACE,
        };
        let new = {
            let mut heard = self.heard.lock().unwrap_or_else(PoisonError::into_inner);
            heard.retain(|h| h.live_until > now);
            if let Some(h) = heard.iter_mut().find(|h| h.id == id) {
                *h = entry;
                false
            } else if heard.len() < MAX_FOLLOWERS {
                heard.push(entry);
                true
            } else {
                false
            }
        };
        if new {
            self.news.send_replace(());
        }
    }

    /// The followers live at `now`, by id.
    pub fn live(&self, now: Instant) -> Vec<Heard> {
        let mut live: Vec<Heard> = self
            .heard
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .iter()
            .filter(|h| h.live_until > now)
            .cloned()
            .collect();
        live.sort_by(|a, b| a.id.cmp(&b.id));
        live
    }

    /// When the first of the followers live at `now` stops counting, unless heard again.
    fn next_expiry(&self, now: Instant) -> Option<Instant> {
        self.heard
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .iter()
            .map(|h| h.live_until)
            .filter(|t| *t > now)
            .min()
    }
}

/// `--quorum N`: the command runs only while at least `need` candidates are live, this
/// one included (the leader, which counts itself, and the [`Followers`] it hears).
#[derive(Clone, Debug)]
pub struct Quorum {
    /// N.
    pub need: usize,
    /// Who follows this candidate.
    pub followers: Followers,
}

impl Quorum {
    /// The candidates live at `now`, this one included.
    pub fn live(&self, now: Instant) -> usize {
        1 + self.followers.live(now).len()
    }

    /// Whether the quorum is met at `now`.
    pub fn met(&self, now: Instant) -> bool {
        self.live(now) >= self.need
    }

    /// Resolves once whether the quorum is met is `met`: a new follower heard, or the
    /// last sign of life of one running out. Cancel-safe.
    pub async fn until(&self, met: bool) {
        loop {
            let mut news = self.followers.news.subscribe();
            let now = boot_now();
            if self.met(now) == met {
                return;
            }
            let expiry = self.followers.next_expiry(now);
            tokio::select! {
                _ = news.changed() => {}
                () = async {
                    match expiry {
                        Some(t) => s3lead::clock::sleep_until(t).await,
                        None => std::future::pending().await,
                    }
                } => {}
            }
        }
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
                    let (view, token) = (view.clone(), token.clone());
                    async move {
                        Ok::<_, std::convert::Infallible>(
                            answer(&view, token.as_deref(), &req).await,
                        )
                    }
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
async fn answer(
    view: &View,
    token: Option<&str>,
    req: &Request<Incoming>,
) -> Response<Full<Bytes>> {
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
        let (mut after, mut wait, mut candidate) = (None, Duration::ZERO, None);
        for pair in req.uri().query().unwrap_or("").split('&') {
            match pair.split_once('=') {
                Some(("after", v)) => after = Some(percent_decode(v)),
                Some(("wait", v)) => {
                    wait = Duration::from_millis(v.parse().unwrap_or(0));
                }
                Some(("candidate", v)) => candidate = Some(percent_decode(v)),
                _ => {}
            }
        }
        if let Some(id) = candidate {
            view.followers.heard(&id, wait);
        }
        let after = after.map(|a| Etag::new(a).normalized().to_owned());
        let body = view.lease_after(after.as_deref(), wait).await;
        let mut r = plain(StatusCode::OK, body);
        r.headers_mut()
            .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
        r
    }
}

/// `%XX` escapes undone (an ETag is hex, but a store may put anything in it).
fn percent_decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        let hex = b
            .get(i + 1..i + 3)
            .and_then(|h| std::str::from_utf8(h).ok());
        match (b[i], hex.and_then(|h| u8::from_str_radix(h, 16).ok())) {
            (b'%', Some(v)) => {
                out.push(v);
                i += 3;
            }
            (c, _) => {
                out.push(c);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Every byte but `[A-Za-z0-9._~-]` escaped, for a query value.
fn percent_encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"._~-".contains(&b) {
            out.push(b as char);
        } else {
            let _ = write!(out, "%{b:02X}");
        }
    }
    out
}

/// The follower's side of peer mode: `GET URL/v1/lease?after=ETAG&wait=MS` over one
/// HTTP/1 connection per long-poll, with the bearer token of `--peer-token-file` if
/// given. Only `http://` URLs: the endpoint serves nothing secret, and no answer of it
/// can cause a takeover (docs/design.md §3 "Peer mode").
pub struct PeerClient {
    token: Option<String>,
    /// This candidate's `--id`, named in each long-poll so that the leader can list
    /// and count its followers.
    id: String,
}

impl std::fmt::Debug for PeerClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never the token.
        f.debug_struct("PeerClient")
            .field("token", &self.token.as_ref().map(|_| "…"))
            .field("id", &self.id)
            .finish()
    }
}

/// The largest answer read from a peer.
const MAX_ANSWER: usize = 64 * 1024;

/// What a peer's `/v1/lease` answers, as far as a follower or `status` reads it.
#[derive(Debug, serde::Deserialize)]
pub struct PeerLease {
    /// The peer leads.
    pub is_leader: bool,
    /// Its lock object's ETag after its last write, while it leads.
    pub etag: Option<String>,
    /// The followers it hears (older endpoints answer none).
    #[serde(default)]
    pub followers: Vec<PeerFollower>,
}

/// One follower in a [`PeerLease`].
#[derive(Debug, serde::Deserialize, serde::Serialize)]
pub struct PeerFollower {
    /// Its `--id`.
    pub id: String,
    /// When it was last heard, by the leader's wall clock.
    pub last_heard: String,
    /// How long ago, by the leader's boot clock (exact, whatever the clocks' offset).
    pub heard_ms_ago: u64,
}

impl PeerClient {
    /// A client for candidate `id` that sends `token` as `Authorization: Bearer`, if
    /// given.
    pub fn new(token: Option<String>, id: &str) -> PeerClient {
        PeerClient {
            token,
            id: id.to_owned(),
        }
    }

    /// `GET URL/v1/lease?QUERY` over one HTTP/1 connection.
    pub async fn lease(&self, url: &str, query: &str) -> Result<PeerLease, String> {
        use http_body_util::BodyExt as _;
        let rest = url
            .strip_prefix("http://")
            .ok_or_else(|| format!("{url}: only http:// peer URLs are followed"))?;
        let (authority, prefix) = rest.split_once('/').unwrap_or((rest, ""));
        let prefix = prefix.trim_end_matches('/');
        let stream = tokio::net::TcpStream::connect(authority)
            .await
            .map_err(|e| format!("cannot connect to {authority}: {e}"))?;
        let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .map_err(|e| format!("{authority}: {e}"))?;
        tokio::spawn(async move {
            let _ = conn.await;
        });
        let path = if prefix.is_empty() {
            String::new()
        } else {
            format!("/{prefix}")
        };
        let mut req = Request::builder()
            .method(Method::GET)
            .uri(format!("{path}/v1/lease?{query}"))
            .header(hyper::header::HOST, authority);
        if let Some(t) = &self.token {
            req = req.header(AUTHORIZATION, format!("Bearer {t}"));
        }
        let req = req
            .body(http_body_util::Empty::<Bytes>::new())
            .map_err(|e| format!("{url}: {e}"))?;
        let answer = sender
            .send_request(req)
            .await
            .map_err(|e| format!("{url}: {e}"))?;
        let status = answer.status();
        let body = http_body_util::Limited::new(answer.into_body(), MAX_ANSWER)
            .collect()
            .await
            .map_err(|e| format!("{url}: {e}"))?
            .to_bytes();
        if status != StatusCode::OK {
            return Err(format!("{url} answered {status}"));
        }
        serde_json::from_slice(&body).map_err(|e| format!("{url} answered no lease: {e}"))
    }

    async fn ask(&self, w: &Watch) -> Result<PeerAnswer, String> {
        let query = format!(
            "after={}&wait={}&candidate={}",
            percent_encode(w.after.normalized()),
            w.hold.as_millis(),
            percent_encode(&self.id)
        );
        let lease = self.lease(&w.url, &query).await?;
        Ok(PeerAnswer {
            etag: lease.etag.map(Etag::new),
            leading: lease.is_leader,
        })
    }
}

impl PeerLink for PeerClient {
    fn watch<'a>(
        &'a self,
        watch: &'a Watch,
    ) -> Pin<Box<dyn Future<Output = Result<PeerAnswer, String>> + Send + 'a>> {
        Box::pin(self.ask(watch))
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
            etag: Some(Etag::new("\"abc\"")),
        });
        assert!(v.lease_json().contains("\"etag\":\"abc\""));
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
    fn query_values_round_trip() {
        for s in ["abc-1", "\"q\" &=%/", "é"] {
            assert_eq!(percent_decode(&percent_encode(s)), s);
        }
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
