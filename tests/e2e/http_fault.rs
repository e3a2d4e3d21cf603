//! An HTTP/1.1-aware fault proxy on 127.0.0.1, for faults a byte pump cannot make: a
//! request that reaches the store and takes effect, answered with something else. It
//! understands just what s3lead's S3 client sends (requests with a Content-Length body,
//! keep-alive, `Expect: 100-continue`) and what an S3 server answers (Content-Length
//! bodies; none for HEAD, 204 and 304).

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
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

fn read_body(r: &mut impl Read, head: &[String]) -> std::io::Result<Vec<u8>> {
    let len: usize = header(head, "content-length")
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    let mut body = vec![0; len];
    r.read_exact(&mut body)?;
    Ok(body)
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
        let method = req[0].split(' ').next().unwrap_or_default().to_owned();
        write_message(&mut to_server, &req, &body)?;
        let mut resp = loop {
            let Some(r) = read_head(&mut from_server)? else {
                return Ok(());
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
        let resp_body = if method == "HEAD" || status == 204 || status == 304 {
            Vec::new()
        } else {
            read_body(&mut from_server, &resp)?
        };
        if method == "PUT" && status == 200 {
            let mut st = state.lock().unwrap();
            if st.armed.take() == Some(Fault::StripEtag) {
                st.faulted_at.push(received);
                resp.retain(|l| !l.to_ascii_lowercase().starts_with("etag:"));
            }
        }
        write_message(&mut to_client, &resp, &resp_body)?;
    }
}
