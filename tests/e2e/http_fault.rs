//! An HTTP/1.1-aware proxy on 127.0.0.1 between s3lead and the test S3 server, for faults
//! a byte pump cannot make (a request that reaches the store and takes effect, answered
//! with something else) and for counting requests: it can append one line per request
//! to a log, which is how the benchmark (bench/run.sh, through `count_proxy` in
//! tests/harness.rs) counts what s3lead costs. It understands just what s3lead's S3
//! client sends (requests with a Content-Length body, keep-alive, `Expect: 100-continue`)
//! and what an S3 server answers (Content-Length or chunked bodies; none for HEAD, 204
//! and 304).

use std::fs::File;
use std::io::{BufRead, BufReader, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::Path;
use std::sync::{Arc, Mutex};

/// What to do to the answer of the next PUT.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Fault {
    /// Forward it, let it land, and remove the ETag header from its 200 (an S3-compatible
    /// store or gateway that drops it: s3lead's client reports an error).
    StripEtag,
}

#[derive(Default)]
struct State {
    armed: Option<Fault>,
    /// Boot-clock nanoseconds at which each faulted PUT reached the proxy.
    faulted_at: Vec<u64>,
    /// Where each request is logged once answered (or given up on), if anywhere (see
    /// [`HttpFaultProxy::log_to`]).
    log: Option<File>,
}

impl State {
    /// `<CLOCK_MONOTONIC seconds> <METHOD> <STATUS> <PATH>`, one write per line; status
    /// 000 for a request whose answer never came. The monotonic clock is system-wide, so
    /// a reader can count the requests in a time window it measured itself.
    fn log(&mut self, method: &str, status: u16, path: &str) {
        if let Some(f) = &mut self.log {
            let now = nix::time::clock_gettime(nix::time::ClockId::CLOCK_MONOTONIC)
                .expect("monotonic clock");
            let line = format!(
                "{}.{:06} {method} {status:03} {path}\n",
                now.tv_sec(),
                now.tv_nsec() / 1000
            );
            f.write_all(line.as_bytes())
                .expect("append to the request log");
        }
    }
}

pub struct HttpFaultProxy {
    pub addr: SocketAddr,
    state: Arc<Mutex<State>>,
}

impl HttpFaultProxy {
    pub fn start(upstream: SocketAddr) -> HttpFaultProxy {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind proxy");
        let addr = listener.local_addr().expect("proxy addr");
        let state: Arc<Mutex<State>> = Arc::default();
        let st = state.clone();
        std::thread::spawn(move || {
            for client in listener.incoming().flatten() {
                let st = st.clone();
                std::thread::spawn(move || {
                    let _ = serve(client, upstream, &st);
                });
            }
        });
        HttpFaultProxy { addr, state }
    }

    pub fn endpoint(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// The next PUT's answer gets `fault`.
    pub fn arm(&self, fault: Fault) {
        self.state.lock().unwrap().armed = Some(fault);
    }

    /// Appends a line for every request from now on to the file at `path` (created or
    /// appended to): its time, method, answer status and path, as [`State::log`] says.
    pub fn log_to(&self, path: &Path) {
        let file = File::options()
            .create(true)
            .append(true)
            .open(path)
            .expect("open the request log");
        self.state.lock().unwrap().log = Some(file);
    }

    /// When faulted PUTs reached the proxy (boot clock, ns).
    pub fn faulted_at(&self) -> Vec<u64> {
        self.state.lock().unwrap().faulted_at.clone()
    }
}

fn boot_ns() -> u64 {
    let ts = nix::time::clock_gettime(nix::time::ClockId::CLOCK_BOOTTIME).expect("boot clock");
    ts.tv_sec() as u64 * 1_000_000_000 + ts.tv_nsec() as u64
}

/// A message head: the start line and the header lines, without the blank line.
fn read_head(r: &mut impl BufRead) -> std::io::Result<Option<Vec<String>>> {
    let mut lines = Vec::new();
    loop {
        let mut line = String::new();
        if r.read_line(&mut line)? == 0 {
            return Ok(None);
        }
        let line = line.trim_end_matches(['\r', '\n']).to_owned();
        if line.is_empty() {
            return Ok(Some(lines));
        }
        lines.push(line);
    }
}

fn header<'a>(head: &'a [String], name: &str) -> Option<&'a str> {
    head[1..].iter().find_map(|l| {
        let (k, v) = l.split_once(':')?;
        k.trim().eq_ignore_ascii_case(name).then(|| v.trim())
    })
}

/// A message's body as it is framed on the wire: `Content-Length` bytes, or (for
/// `Transfer-Encoding: chunked`) the chunks, the last chunk and the trailers, so that it
/// is forwarded under the same head.
fn read_body(r: &mut impl BufRead, head: &[String]) -> std::io::Result<Vec<u8>> {
    if header(head, "transfer-encoding").is_some_and(|v| v.to_ascii_lowercase().contains("chunked"))
    {
        return read_chunked(r);
    }
    let len: usize = header(head, "content-length")
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    let mut body = vec![0; len];
    r.read_exact(&mut body)?;
    Ok(body)
}

fn read_chunked(r: &mut impl BufRead) -> std::io::Result<Vec<u8>> {
    let mut raw = Vec::new();
    loop {
        let mut size_line = String::new();
        if r.read_line(&mut size_line)? == 0 {
            return Err(std::io::ErrorKind::UnexpectedEof.into());
        }
        raw.extend_from_slice(size_line.as_bytes());
        let size_hex = size_line.split(';').next().unwrap_or_default().trim();
        let size = usize::from_str_radix(size_hex, 16)
            .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidData, e))?;
        if size == 0 {
            // Trailers, up to the blank line.
            loop {
                let mut line = String::new();
                if r.read_line(&mut line)? == 0 {
                    return Err(std::io::ErrorKind::UnexpectedEof.into());
                }
                raw.extend_from_slice(line.as_bytes());
                if line.trim_end_matches(['\r', '\n']).is_empty() {
                    return Ok(raw);
                }
            }
        }
        let start = raw.len();
        raw.resize(start + size + 2, 0); // the data and its CRLF
        r.read_exact(&mut raw[start..])?;
    }
}

fn write_message(w: &mut impl Write, head: &[String], body: &[u8]) -> std::io::Result<()> {
    let mut out = head.join("\r\n");
    out.push_str("\r\n\r\n");
    w.write_all(out.as_bytes())?;
    w.write_all(body)?;
    w.flush()
}

fn serve(client: TcpStream, upstream: SocketAddr, state: &Mutex<State>) -> std::io::Result<()> {
    let server = TcpStream::connect(upstream)?;
    let mut from_client = BufReader::new(client.try_clone()?);
    let mut to_client = client;
    let mut from_server = BufReader::new(server.try_clone()?);
    let mut to_server = server;
    loop {
        let Some(mut req) = read_head(&mut from_client)? else {
            return Ok(());
        };
        let received = boot_ns();
        let expects =
            header(&req, "expect").is_some_and(|v| v.eq_ignore_ascii_case("100-continue"));
        if expects {
            // Answer the client's wait ourselves and forward without the expectation.
            to_client.write_all(b"HTTP/1.1 100 Continue\r\n\r\n")?;
            req.retain(|l| !l.to_ascii_lowercase().starts_with("expect:"));
        }
        let body = read_body(&mut from_client, &req)?;
        let mut start = req[0].split(' ');
        let method = start.next().unwrap_or_default().to_owned();
        let path = start.next().unwrap_or_default().to_owned();
        write_message(&mut to_server, &req, &body)?;
        let (mut resp, status, resp_body) = match read_answer(&mut from_server, &method) {
            Ok(Some(answer)) => answer,
            other => {
                state.lock().unwrap().log(&method, 0, &path);
                return other.map(drop);
            }
        };
        if method == "PUT" && status == 200 {
            let mut st = state.lock().unwrap();
            if st.armed.take() == Some(Fault::StripEtag) {
                st.faulted_at.push(received);
                resp.retain(|l| !l.to_ascii_lowercase().starts_with("etag:"));
            }
        }
        write_message(&mut to_client, &resp, &resp_body)?;
        state.lock().unwrap().log(&method, status, &path);
    }
}

/// A message head, its status and its body.
type Answer = (Vec<String>, u16, Vec<u8>);

/// The server's final answer to a `method` request; `None` if it closed the connection
/// first.
fn read_answer(from_server: &mut impl BufRead, method: &str) -> std::io::Result<Option<Answer>> {
    let resp = loop {
        let Some(r) = read_head(from_server)? else {
            return Ok(None);
        };
        // An interim 100 from the server is not the answer.
        if !r[0].contains(" 100 ") {
            break r;
        }
    };
    let status: u16 = resp[0]
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    let body = if method == "HEAD" || status == 204 || status == 304 {
        Vec::new()
    } else {
        read_body(from_server, &resp)?
    };
    Ok(Some((resp, status, body)))
}
