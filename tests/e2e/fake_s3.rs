//! A fake S3 server on 127.0.0.1, for answers the test S3 servers do not give on demand:
//! HTTP/1.1, one request per connection, no signature checked. Each request is answered
//! by a function of it: a script ([`serve`]: a fixed status, a silent server, a body that
//! never ends, a store with one provider's quirk), or an in-memory bucket that breaks the
//! conditional-write contract on purpose ([`serve_bucket`]).

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// A request as it reached the server.
#[derive(Clone, Debug)]
pub struct Request {
    pub method: String,
    /// As sent: the bucket, the key and the query.
    pub path: String,
    /// Without the bucket and the query (path-style addressing).
    pub key: String,
    /// Names lowercased.
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Request {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }

    /// `METHOD` and the conditional header, if any.
    pub fn summary(&self) -> String {
        match (self.header("if-match"), self.header("if-none-match")) {
            (Some(m), _) => format!("{} If-Match {m}", self.method),
            (_, Some(m)) => format!("{} If-None-Match {m}", self.method),
            _ => self.method.clone(),
        }
    }
}

/// How to answer one request.
#[derive(Clone, Debug)]
pub enum Reply {
    Full {
        status: u16,
        headers: Vec<(String, String)>,
        body: Vec<u8>,
    },
    /// These bytes, then nothing until the client closes.
    Headers(String),
    /// A body without a length, in chunks, until `total` bytes or the client gives up.
    Chunked {
        etag: String,
        chunk: usize,
        total: usize,
    },
    /// Never answer.
    Silent,
}

impl Reply {
    pub fn status(status: u16) -> Reply {
        Reply::Full {
            status,
            headers: vec![],
            body: vec![],
        }
    }

    /// An S3 error document.
    pub fn error(status: u16, code: &str) -> Reply {
        let body = format!(
            "<?xml version=\"1.0\" encoding=\"UTF-8\"?><Error><Code>{code}</Code>\
             <Message>scripted</Message><RequestId>1</RequestId></Error>"
        );
        Reply::Full {
            status,
            headers: vec![("Content-Type".into(), "application/xml".into())],
            body: body.into_bytes(),
        }
    }

    pub fn object(etag: &str, body: Vec<u8>) -> Reply {
        Reply::Full {
            status: 200,
            headers: vec![("ETag".into(), etag.into())],
            body,
        }
    }

    pub fn written(etag: &str) -> Reply {
        Reply::object(etag, vec![])
    }
}

/// A running fake server; it lives as long as the test.
pub struct Server {
    pub endpoint: String,
    log: Arc<Mutex<Vec<Request>>>,
}

impl Server {
    /// Every request so far, in the order they were read.
    pub fn requests(&self) -> Vec<Request> {
        self.log.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }
}

/// Serves every request with `handler`, each connection on its own thread (so that a
/// handler may sleep to widen a race).
pub fn serve(handler: impl Fn(&Request) -> Reply + Send + Sync + 'static) -> Server {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let endpoint = format!("http://{}", listener.local_addr().expect("addr"));
    let log = Arc::new(Mutex::new(Vec::new()));
    let handler = Arc::new(handler);
    let server_log = log.clone();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(stream) = stream else { return };
            let (handler, log) = (handler.clone(), server_log.clone());
            std::thread::spawn(move || {
                let _ = answer(stream, &*handler, &log);
            });
        }
    });
    Server { endpoint, log }
}

/// How an in-memory bucket breaks the contract.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    /// Every PUT succeeds with a fresh ETag; `If-None-Match` on GET is ignored too
    /// (Garage 2.5 ignores `If-None-Match`).
    IgnoresConditions,
    /// Conditions are checked, then the write happens a little later without a lock,
    /// so that concurrent writers all pass the same check (s3s-fs; moto now and then).
    ChecksWithoutAtomicity,
    /// Keeps the contract, as Ceph RGW 16.2 does: `If-Match` matches only the ETag
    /// unquoted, and `If-Match` on a missing key is answered 412.
    WantsUnquotedIfMatch,
    /// Ignores `If-None-Match: *` on PUT (a create overwrites, as on Garage 2.5) and keeps
    /// `If-Match`.
    IgnoresIfNoneMatch,
    /// Ignores `If-Match` on PUT (a replace with any ETag lands) and keeps
    /// `If-None-Match: *`.
    IgnoresIfMatch,
    /// Keeps the contract as AWS does (each conditional write checked and done in one
    /// step; `If-Match` on a missing key is 404).
    Keeps,
    /// Answers every conditional PUT with 501 NotImplemented, as Backblaze B2 does.
    NotImplemented,
}

/// A fake S3 server holding a bucket in memory (any bucket name: path-style, the first
/// path segment is the bucket), with conditional writes broken as its [`Mode`] says.
pub struct Bucket {
    pub server: Server,
    objects: Arc<Mutex<Objects>>,
}

#[derive(Default)]
struct Objects {
    /// Key to ETag and body.
    by_key: HashMap<String, (String, Vec<u8>)>,
    writes: u64,
}

impl Objects {
    /// Stores `body` at `key` under a new ETag, and answers as S3 does.
    fn write(&mut self, key: &str, body: &[u8]) -> Reply {
        self.writes += 1;
        let etag = format!("\"fake{}\"", self.writes);
        self.by_key
            .insert(key.to_owned(), (etag.clone(), body.to_vec()));
        Reply::written(&etag)
    }
}

impl Bucket {
    /// The keys of the objects that exist now, sorted.
    pub fn keys(&self) -> Vec<String> {
        let objects = self.objects.lock().unwrap_or_else(|p| p.into_inner());
        let mut keys: Vec<String> = objects.by_key.keys().cloned().collect();
        keys.sort();
        keys
    }

    /// The bytes of the object at `key`, if there is one.
    pub fn object(&self, key: &str) -> Option<Vec<u8>> {
        let objects = self.objects.lock().unwrap_or_else(|p| p.into_inner());
        objects.by_key.get(key).map(|(_, body)| body.clone())
    }
}

pub fn serve_bucket(mode: Mode) -> Bucket {
    serve_bucket_with_clock(mode, 0)
}

/// [`serve_bucket`], whose answers carry a `Date` header `skew_secs` ahead of this
/// host's clock (behind, if negative).
pub fn serve_bucket_with_clock(mode: Mode, skew_secs: i64) -> Bucket {
    let objects = Arc::new(Mutex::new(Objects::default()));
    let shared = objects.clone();
    let server = serve(move |req| {
        let mut reply = bucket_reply(mode, &shared, req);
        if let Reply::Full { headers, .. } = &mut reply {
            let now = std::time::SystemTime::now();
            let skew = Duration::from_secs(skew_secs.unsigned_abs());
            let date = if skew_secs < 0 {
                now - skew
            } else {
                now + skew
            };
            headers.push(("Date".into(), httpdate::fmt_http_date(date)));
        }
        reply
    });
    Bucket { server, objects }
}

fn unquoted(etag: &str) -> &str {
    etag.trim_matches('"')
}

fn bucket_reply(mode: Mode, objects: &Mutex<Objects>, req: &Request) -> Reply {
    let lock = || objects.lock().unwrap_or_else(|p| p.into_inner());
    let current = lock().by_key.get(&req.key).cloned();
    match req.method.as_str() {
        "GET" | "HEAD" => match current {
            None => Reply::error(404, "NoSuchKey"),
            Some((etag, _))
                if mode != Mode::IgnoresConditions
                    && req
                        .header("if-none-match")
                        .is_some_and(|v| unquoted(v) == unquoted(&etag)) =>
            {
                Reply::status(304)
            }
            Some((etag, data)) => Reply::object(&etag, data),
        },
        "PUT"
            if mode == Mode::NotImplemented
                && (req.header("if-match").is_some() || req.header("if-none-match").is_some()) =>
        {
            Reply::error(501, "NotImplemented")
        }
        "PUT" if mode == Mode::WantsUnquotedIfMatch => {
            let mut objects = lock();
            let current = objects.by_key.get(&req.key).map(|(etag, _)| etag.clone());
            match (req.header("if-none-match"), req.header("if-match"), current) {
                (Some(_), _, Some(_)) | (_, Some(_), None) => {
                    return Reply::error(412, "PreconditionFailed");
                }
                (_, Some(sent), Some(etag)) if sent != unquoted(&etag) => {
                    return Reply::error(412, "PreconditionFailed");
                }
                _ => {}
            }
            objects.write(&req.key, &req.body)
        }
        // Keeps the contract, or ignores one of its two conditions.
        "PUT"
            if matches!(
                mode,
                Mode::Keeps | Mode::IgnoresIfNoneMatch | Mode::IgnoresIfMatch
            ) =>
        {
            let mut objects = lock();
            let current = objects.by_key.get(&req.key).map(|(etag, _)| etag.clone());
            let if_none_match = req
                .header("if-none-match")
                .filter(|_| mode != Mode::IgnoresIfNoneMatch);
            let if_match = req
                .header("if-match")
                .filter(|_| mode != Mode::IgnoresIfMatch);
            match (if_none_match, if_match, current) {
                (Some(_), _, Some(_)) => return Reply::error(412, "PreconditionFailed"),
                (_, Some(_), None) => return Reply::error(404, "NoSuchKey"),
                (_, Some(sent), Some(etag)) if unquoted(sent) != unquoted(&etag) => {
                    return Reply::error(412, "PreconditionFailed");
                }
                _ => {}
            }
            objects.write(&req.key, &req.body)
        }
        "PUT" => {
            if mode == Mode::ChecksWithoutAtomicity {
                let refused = match (
                    req.header("if-none-match"),
                    req.header("if-match"),
                    &current,
                ) {
                    (Some(_), _, Some(_)) => Some(Reply::error(412, "PreconditionFailed")),
                    (_, Some(_), None) => Some(Reply::error(404, "NoSuchKey")),
                    (_, Some(sent), Some((etag, _))) if unquoted(sent) != unquoted(etag) => {
                        Some(Reply::error(412, "PreconditionFailed"))
                    }
                    _ => None,
                };
                if let Some(reply) = refused {
                    return reply;
                }
                // The flaw: the check above and the write below are not one step.
                std::thread::sleep(Duration::from_millis(30));
            }
            lock().write(&req.key, &req.body)
        }
        "DELETE" => {
            lock().by_key.remove(&req.key);
            Reply::status(204)
        }
        _ => Reply::status(405),
    }
}

fn read_request(reader: &mut BufReader<TcpStream>) -> std::io::Result<Request> {
    let mut line = String::new();
    reader.read_line(&mut line)?;
    let mut parts = line.split_whitespace();
    let method = parts.next().unwrap_or_default().to_owned();
    let path = parts.next().unwrap_or_default().to_owned();
    let without_query = path.split('?').next().unwrap_or_default();
    let key = without_query
        .trim_start_matches('/')
        .split_once('/')
        .map_or("", |(_bucket, key)| key)
        .to_owned();
    let mut headers = Vec::new();
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line)? == 0 || line.trim().is_empty() {
            break;
        }
        if let Some((name, value)) = line.split_once(':') {
            headers.push((name.trim().to_ascii_lowercase(), value.trim().to_owned()));
        }
    }
    let mut request = Request {
        method,
        path,
        key,
        headers,
        body: Vec::new(),
    };
    let length: usize = request
        .header("content-length")
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    request.body = vec![0; length];
    reader.read_exact(&mut request.body)?;
    Ok(request)
}

fn answer(
    stream: TcpStream,
    handler: &dyn Fn(&Request) -> Reply,
    log: &Mutex<Vec<Request>>,
) -> std::io::Result<()> {
    let mut reader = BufReader::new(stream.try_clone()?);
    let request = read_request(&mut reader)?;
    log.lock()
        .unwrap_or_else(|p| p.into_inner())
        .push(request.clone());
    let reply = handler(&request);
    let mut out = stream;
    match reply {
        Reply::Full {
            status,
            headers,
            body,
        } => {
            let mut head = format!("HTTP/1.1 {status} Scripted\r\nConnection: close\r\n");
            for (name, value) in headers {
                head.push_str(&format!("{name}: {value}\r\n"));
            }
            // No body on 304, nor on the answer to HEAD.
            let body = if status == 304 || request.method == "HEAD" {
                vec![]
            } else {
                body
            };
            if status != 304 {
                head.push_str(&format!("Content-Length: {}\r\n", body.len()));
            }
            head.push_str("\r\n");
            out.write_all(head.as_bytes())?;
            out.write_all(&body)?;
            out.flush()?;
        }
        Reply::Headers(head) => {
            out.write_all(head.as_bytes())?;
            out.flush()?;
            wait_for_close(&mut reader);
        }
        Reply::Chunked { etag, chunk, total } => {
            let head = format!(
                "HTTP/1.1 200 OK\r\nETag: {etag}\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n"
            );
            out.write_all(head.as_bytes())?;
            let data = vec![b'x'; chunk];
            let mut sent = 0;
            while sent < total {
                out.write_all(format!("{chunk:x}\r\n").as_bytes())?;
                out.write_all(&data)?;
                out.write_all(b"\r\n")?;
                sent += chunk;
            }
            out.write_all(b"0\r\n\r\n")?;
        }
        Reply::Silent => wait_for_close(&mut reader),
    }
    Ok(())
}

fn wait_for_close(reader: &mut BufReader<TcpStream>) {
    let mut sink = [0u8; 1024];
    while matches!(reader.read(&mut sink), Ok(n) if n > 0) {}
}
