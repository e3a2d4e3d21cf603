//! An S3 store behind `https`: s3lead sets up TLS only for its first `https` request
//! (`src/store/http_client.rs`), and then trusts exactly the system's roots. The test
//! server speaks plain HTTP, so a small TLS front (Python's `ssl`, with a certificate
//! made by `openssl` for this test) forwards to it; `SSL_CERT_FILE` names the roots.

#[macro_use]
mod e2e;
mod support;

use e2e::{Lock, finish};
use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

const LIMIT: Duration = Duration::from_secs(60);

fn openssl(args: &[&str]) {
    let st = Command::new("openssl")
        .args(args)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .expect("openssl is needed for this test: run scripts/install-test-servers.sh");
    assert!(st.success(), "openssl {args:?} failed");
}

/// A CA, and a certificate it signed for 127.0.0.1, in `dir`: (CA cert, cert, key).
fn certificates(dir: &Path) -> (String, String, String) {
    let p = |name: &str| dir.join(name).to_string_lossy().into_owned();
    let (ca, ca_key, cert, key, csr, ext) = (
        p("ca.pem"),
        p("ca-key.pem"),
        p("cert.pem"),
        p("key.pem"),
        p("cert.csr"),
        p("ext.cnf"),
    );
    let days = ["-days", "2"];
    openssl(
        &[
            &["req", "-x509", "-newkey", "rsa:2048", "-nodes"][..],
            &days,
            &[
                "-subj",
                "/CN=s3lead test CA",
                "-keyout",
                &ca_key,
                "-out",
                &ca,
            ],
        ]
        .concat(),
    );
    openssl(&[
        "req",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-subj",
        "/CN=127.0.0.1",
        "-keyout",
        &key,
        "-out",
        &csr,
    ]);
    std::fs::write(&ext, "subjectAltName=IP:127.0.0.1\n").expect("extensions file");
    openssl(
        &[
            &[
                "x509",
                "-req",
                "-in",
                &csr,
                "-CA",
                &ca,
                "-CAkey",
                &ca_key,
                "-CAcreateserial",
            ][..],
            &days,
            &["-extfile", &ext, "-out", &cert],
        ]
        .concat(),
    );
    (ca, cert, key)
}

const FRONT: &str = r#"
import socket, ssl, sys, threading
cert, key, up_host, up_port = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
ctx.load_cert_chain(cert, key)
ls = socket.socket()
ls.bind(("127.0.0.1", 0))
ls.listen(64)
print(ls.getsockname()[1], flush=True)
def pump(a, b):
    try:
        while True:
            d = a.recv(65536)
            if not d:
                break
            b.sendall(d)
    except OSError:
        pass
    for s in (a, b):
        try:
            s.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
def serve(c):
    try:
        t = ctx.wrap_socket(c, server_side=True)
    except (ssl.SSLError, OSError):
        c.close()
        return
    u = socket.create_connection((up_host, up_port))
    threading.Thread(target=pump, args=(u, t), daemon=True).start()
    pump(t, u)
while True:
    c, _ = ls.accept()
    threading.Thread(target=serve, args=(c,), daemon=True).start()
"#;

/// The TLS front, and the `https` URL it answers on.
struct Front(Child, String);

impl Front {
    fn start(cert: &str, key: &str, upstream: &str) -> Front {
        let hostport = upstream
            .trim_start_matches("http://")
            .trim_end_matches('/')
            .to_owned();
        let (host, port) = hostport
            .rsplit_once(':')
            .expect("the test store's host:port");
        let mut child = Command::new("python3")
            .args(["-c", FRONT, cert, key, host, port])
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("python3 is needed for this test");
        let mut line = String::new();
        let out = child.stdout.take().expect("front's stdout");
        BufReader::new(out)
            .read_line(&mut line)
            .expect("front's port");
        let port = line.trim().to_owned();
        assert!(!port.is_empty(), "the TLS front did not start");
        Front(child, format!("https://127.0.0.1:{port}"))
    }
}

impl Drop for Front {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn https_stores_are_verified_against_the_system_roots(lock: Lock) {
    let (ca, cert, key) = certificates(lock.dir.path());
    let endpoint = support::s3_server().endpoint.clone();
    let front = Front::start(&cert, &key, &endpoint);
    let empty = lock.dir.path().join("no-roots");
    std::fs::create_dir_all(&empty).expect("empty roots dir");
    let run = |roots: &str| {
        let mut c = lock.s3lead();
        c.env("AWS_ENDPOINT_URL", &front.1)
            .env("SSL_CERT_FILE", roots)
            .env("SSL_CERT_DIR", &empty)
            .args(["run", "-w", "3s", &lock.url, "--", "sh", "-c"])
            .arg("echo \"ran under term $S3LEAD_TERM\"");
        finish(c, LIMIT)
    };
    let ok = run(&ca);
    assert_eq!(ok.code, Some(0), "trusted: {}", ok.stderr);
    assert!(ok.stdout.contains("ran under term 1"), "{}", ok.stdout);
    // Roots that do not include the store's certificate: refused, and said so.
    let other = lock.dir.path().join("other");
    std::fs::create_dir_all(&other).expect("other dir");
    let (other_ca, _, _) = certificates(&other);
    let refused = run(&other_ca);
    assert_eq!(refused.code, Some(69), "untrusted: {}", refused.stderr);
    assert!(
        refused.stderr.contains("certificate of https://127.0.0.1")
            && refused.stderr.contains("SSL_CERT_FILE"),
        "names the certificate: {}",
        refused.stderr
    );
    assert!(!refused.stdout.contains("ran under"), "{}", refused.stdout);
}

#[test]
fn https_stores_are_verified_against_the_system_roots_on_s3() {
    https_stores_are_verified_against_the_system_roots(Lock::s3("tls"));
}
