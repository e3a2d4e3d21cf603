//! A fault-injecting TCP proxy on 127.0.0.1 between s3lead and the test S3 server:
//! passes bytes through, or cuts every connection and refuses new ones (the server
//! "stopped"), or blackholes them (accepts, never answers: a partition), or delays them.

use std::io::{Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::{Arc, Mutex};
use std::time::Duration;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    Pass,
    /// Existing connections are reset; new ones are closed at once.
    Refuse,
    /// Bytes are read and dropped; nothing comes back.
    Blackhole,
    /// Each chunk is forwarded after this delay.
    Delay(Duration),
}

pub struct Proxy {
    pub addr: SocketAddr,
    mode: Arc<Mutex<Mode>>,
    conns: Arc<Mutex<Vec<TcpStream>>>,
}

impl Proxy {
    pub fn start(upstream: SocketAddr) -> Proxy {
        Proxy::start_on("127.0.0.1:0".parse().expect("address"), upstream)
    }

    /// A proxy listening on `listen`: a port where nothing listened before, for a store
    /// that "comes up" after refusing connections.
    pub fn start_on(listen: SocketAddr, upstream: SocketAddr) -> Proxy {
        let listener = TcpListener::bind(listen).expect("bind proxy");
        let addr = listener.local_addr().expect("proxy addr");
        let mode = Arc::new(Mutex::new(Mode::Pass));
        let conns: Arc<Mutex<Vec<TcpStream>>> = Arc::default();
        let (m, c) = (mode.clone(), conns.clone());
        std::thread::spawn(move || {
            for client in listener.incoming().flatten() {
                let mode_now = *m.lock().unwrap();
                if mode_now == Mode::Refuse {
                    let _ = client.shutdown(Shutdown::Both);
                    continue;
                }
                let Ok(server) = TcpStream::connect(upstream) else {
                    continue;
                };
                for s in [&client, &server] {
                    if let Ok(s) = s.try_clone() {
                        c.lock().unwrap().push(s);
                    }
                }
                pump(
                    client.try_clone().unwrap(),
                    server.try_clone().unwrap(),
                    m.clone(),
                );
                pump(server, client, m.clone());
            }
        });
        Proxy { addr, mode, conns }
    }

    pub fn endpoint(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub fn set(&self, mode: Mode) {
        *self.mode.lock().unwrap() = mode;
        if mode == Mode::Refuse {
            for s in self.conns.lock().unwrap().drain(..) {
                let _ = s.shutdown(Shutdown::Both);
            }
        }
    }
}

fn pump(mut from: TcpStream, mut to: TcpStream, mode: Arc<Mutex<Mode>>) {
    std::thread::spawn(move || {
        let mut buf = [0u8; 16 * 1024];
        loop {
            let n = match from.read(&mut buf) {
                Ok(0) | Err(_) => break,
                Ok(n) => n,
            };
            let m = *mode.lock().unwrap();
            match m {
                Mode::Pass => {}
                Mode::Refuse => break,
                Mode::Blackhole => continue,
                Mode::Delay(d) => std::thread::sleep(d),
            }
            if to.write_all(&buf[..n]).is_err() {
                break;
            }
        }
        let _ = to.shutdown(Shutdown::Write);
    });
}

/// The `host:port` of an `http://host:port` endpoint.
pub fn endpoint_addr(endpoint: &str) -> SocketAddr {
    let hostport = endpoint.trim_start_matches("http://").trim_end_matches('/');
    hostport.parse().expect("endpoint is http://IP:PORT")
}
