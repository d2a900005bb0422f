//! Load generator and upstreams for `make bench-envoy` (bench/envoy_bench.py drives them).
//!
//! ```text
//! loadgen echo ADDR                      TLS upstream: reads one TLS record (the ClientHello),
//!                                        writes one byte, closes. Prints its port.
//! loadgen http-server ADDR               HTTP/1.1 keep-alive upstream: every request gets
//!                                        `200`, body `ok`. Prints its port.
//! loadgen tcp ADDR SNI CONC SECS         new connections at fixed concurrency: connect, send a
//!                                        real ClientHello for SNI, wait for one byte, close.
//! loadgen http ADDR HOST CONC SECS       keep-alive GET requests at fixed concurrency.
//! ```
//!
//! `tcp` and `http` run for SECS seconds (and at most 10 million operations), then print one JSON
//! object: operations, errors, elapsed seconds, rate per second, latency percentiles in µs.
//! Blocking sockets and one thread per concurrent connection; every thread stops at the deadline.

use std::io::{self, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::process::ExitCode;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

/// Upper bound on operations per run, whatever the duration.
const MAX_OPS: u64 = 10_000_000;
/// Socket timeouts: a stuck connection counts as an error, never hangs a run.
const IO_TIMEOUT: Duration = Duration::from_secs(2);

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let argv: Vec<&str> = args.iter().map(String::as_str).collect();
    let result = match argv.as_slice() {
        ["echo", addr] => serve(addr, handle_echo, Some(64)),
        ["http-server", addr] => serve(addr, handle_http, None),
        ["tcp", addr, sni, conc, secs] => load(addr, conc, secs, Load::Tcp(client_hello(sni))),
        ["http", addr, host, conc, secs] => load(addr, conc, secs, Load::Http(request(host))),
        ["hello", sni] => io::stdout()
            .write_all(&client_hello(sni))
            .map_err(|e| e.to_string()),
        _ => Err(
            "usage: loadgen (echo ADDR | http-server ADDR | tcp ADDR SNI CONC SECS | http \
                  ADDR HOST CONC SECS | hello SNI)"
                .to_string(),
        ),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("loadgen: {e}");
            ExitCode::FAILURE
        }
    }
}

/// The first flight of a rustls 0.23 client (TLS 1.3 and 1.2, ALPN h2 and http/1.1) for `sni`.
fn client_hello(sni: &str) -> Vec<u8> {
    use rustls::pki_types::ServerName;
    use rustls::{ClientConfig, ClientConnection, RootCertStore};
    let mut config = ClientConfig::builder()
        .with_root_certificates(RootCertStore::empty())
        .with_no_client_auth();
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    let name = ServerName::try_from(sni.to_string()).expect("SNI is a DNS name");
    let mut conn = ClientConnection::new(Arc::new(config), name).expect("rustls client");
    let mut out = Vec::new();
    while conn.wants_write() {
        conn.write_tls(&mut out).expect("write to a Vec");
    }
    out
}

fn request(host: &str) -> Vec<u8> {
    format!("GET /bench HTTP/1.1\r\nhost: {host}\r\nuser-agent: egress-guard-loadgen\r\n\r\n")
        .into_bytes()
}

// Upstreams ------------------------------------------------------------------------------------

/// Accepts on `addr` until the process is killed. With `pool: Some(n)`, n threads accept and
/// handle their connections inline (short-lived connections: no thread per connection); with
/// `None`, one acceptor and a thread per (long-lived) connection.
fn serve(
    addr: &str,
    handle: fn(TcpStream) -> io::Result<()>,
    pool: Option<usize>,
) -> Result<(), String> {
    let listener = TcpListener::bind(addr).map_err(|e| format!("bind {addr}: {e}"))?;
    let port = listener.local_addr().map_err(|e| e.to_string())?.port();
    println!("{port}");
    io::stdout().flush().map_err(|e| e.to_string())?;
    let mut threads = Vec::new();
    for _ in 0..pool.unwrap_or(1) {
        let listener = listener.try_clone().map_err(|e| e.to_string())?;
        threads.push(thread::spawn(move || loop {
            match listener.accept() {
                Ok((stream, _)) => {
                    if pool.is_some() {
                        let _ = handle(stream);
                    } else {
                        thread::spawn(move || handle(stream));
                    }
                }
                Err(_) => thread::sleep(Duration::from_millis(1)),
            }
        }));
    }
    for t in threads {
        let _ = t.join();
    }
    Ok(())
}

/// Reads one TLS record (the ClientHello), writes one byte, closes.
fn handle_echo(mut stream: TcpStream) -> io::Result<()> {
    stream.set_nodelay(true)?;
    stream.set_read_timeout(Some(IO_TIMEOUT))?;
    // A TLS record is at most 5 + 2^14 (+ 2048 for the rare oversize) bytes.
    let mut buf = [0u8; 5 + 16384 + 2048];
    let mut have = 0;
    let mut want = 5;
    while have < want && have < buf.len() {
        let n = stream.read(&mut buf[have..])?;
        if n == 0 {
            return Ok(());
        }
        have += n;
        if have >= 5 && want == 5 {
            want = 5 + usize::from(u16::from_be_bytes([buf[3], buf[4]]));
        }
    }
    stream.write_all(b"k")?;
    Ok(())
}

/// HTTP/1.1 keep-alive: answers every request head with `200`, body `ok`.
fn handle_http(mut stream: TcpStream) -> io::Result<()> {
    stream.set_nodelay(true)?;
    let mut buf = vec![0u8; 16384];
    let mut have = 0;
    loop {
        while let Some(end) = find(&buf[..have], b"\r\n\r\n") {
            stream.write_all(
                b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\ncontent-type: text/plain\r\n\r\nok",
            )?;
            buf.copy_within(end + 4..have, 0);
            have -= end + 4;
        }
        if have == buf.len() {
            return Ok(());
        }
        let n = stream.read(&mut buf[have..])?;
        if n == 0 {
            return Ok(());
        }
        have += n;
    }
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

// Load -----------------------------------------------------------------------------------------

#[derive(Clone)]
enum Load {
    /// New connection per operation, carrying this ClientHello.
    Tcp(Vec<u8>),
    /// Keep-alive request per operation.
    Http(Vec<u8>),
}

struct Tally {
    ops: u64,
    errors: u64,
    /// Latency of each operation in µs.
    latencies: Vec<u32>,
}

fn load(addr: &str, conc: &str, secs: &str, kind: Load) -> Result<(), String> {
    let addr: SocketAddr = addr.parse().map_err(|e| format!("{addr}: {e}"))?;
    let conc: usize = conc
        .parse()
        .map_err(|e| format!("concurrency {conc}: {e}"))?;
    let secs: f64 = secs.parse().map_err(|e| format!("seconds {secs}: {e}"))?;
    if conc == 0 || !(secs > 0.0 && secs <= 600.0) {
        return Err("concurrency must be > 0 and seconds in (0, 600]".into());
    }
    let started = Instant::now();
    let deadline = started + Duration::from_secs_f64(secs);
    let budget = Arc::new(AtomicU64::new(MAX_OPS));
    let threads: Vec<_> = (0..conc)
        .map(|_| {
            let kind = kind.clone();
            let budget = budget.clone();
            thread::spawn(move || match kind {
                Load::Tcp(hello) => tcp_worker(addr, &hello, deadline, &budget),
                Load::Http(req) => http_worker(addr, &req, deadline, &budget),
            })
        })
        .collect();
    let mut total = Tally {
        ops: 0,
        errors: 0,
        latencies: Vec::new(),
    };
    for t in threads {
        let t = t.join().map_err(|_| "a load thread panicked".to_string())?;
        total.ops += t.ops;
        total.errors += t.errors;
        total.latencies.extend(t.latencies);
    }
    let elapsed = started.elapsed().as_secs_f64();
    total.latencies.sort_unstable();
    let pct = |p: f64| -> u32 {
        let l = &total.latencies;
        if l.is_empty() {
            return 0;
        }
        let i = ((p / 100.0) * (l.len() - 1) as f64).round() as usize;
        l[i.min(l.len() - 1)]
    };
    let mean = if total.latencies.is_empty() {
        0.0
    } else {
        total.latencies.iter().map(|&l| f64::from(l)).sum::<f64>() / total.latencies.len() as f64
    };
    println!(
        "{{\"ops\":{},\"errors\":{},\"elapsed_s\":{:.4},\"rate\":{:.1},\"concurrency\":{},\
         \"p50_us\":{},\"p90_us\":{},\"p99_us\":{},\"mean_us\":{:.1}}}",
        total.ops,
        total.errors,
        elapsed,
        total.ops as f64 / elapsed,
        conc,
        pct(50.0),
        pct(90.0),
        pct(99.0),
        mean
    );
    Ok(())
}

fn take(budget: &AtomicU64) -> bool {
    budget
        .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |b| b.checked_sub(1))
        .is_ok()
}

/// One operation: connect, send the ClientHello, read one byte, close.
fn tcp_once(addr: SocketAddr, hello: &[u8]) -> io::Result<()> {
    let mut s = TcpStream::connect_timeout(&addr, IO_TIMEOUT)?;
    s.set_nodelay(true)?;
    s.set_read_timeout(Some(IO_TIMEOUT))?;
    s.write_all(hello)?;
    let mut byte = [0u8; 1];
    if s.read(&mut byte)? != 1 {
        return Err(io::Error::new(
            io::ErrorKind::UnexpectedEof,
            "closed without a byte",
        ));
    }
    let _ = s.shutdown(Shutdown::Both);
    Ok(())
}

fn tcp_worker(addr: SocketAddr, hello: &[u8], deadline: Instant, budget: &AtomicU64) -> Tally {
    let mut t = Tally {
        ops: 0,
        errors: 0,
        latencies: Vec::with_capacity(1 << 16),
    };
    while Instant::now() < deadline && take(budget) {
        let start = Instant::now();
        match tcp_once(addr, hello) {
            Ok(()) => {
                t.ops += 1;
                t.latencies.push(micros(start.elapsed()));
            }
            Err(_) => {
                t.errors += 1;
                thread::sleep(Duration::from_millis(1));
            }
        }
    }
    t
}

fn http_worker(addr: SocketAddr, req: &[u8], deadline: Instant, budget: &AtomicU64) -> Tally {
    let mut t = Tally {
        ops: 0,
        errors: 0,
        latencies: Vec::with_capacity(1 << 16),
    };
    let mut buf = vec![0u8; 16384];
    let mut conn: Option<TcpStream> = None;
    while Instant::now() < deadline && take(budget) {
        if conn.is_none() {
            match TcpStream::connect_timeout(&addr, IO_TIMEOUT).and_then(|s| {
                s.set_nodelay(true)?;
                s.set_read_timeout(Some(IO_TIMEOUT))?;
                Ok(s)
            }) {
                Ok(s) => conn = Some(s),
                Err(_) => {
                    t.errors += 1;
                    thread::sleep(Duration::from_millis(1));
                    continue;
                }
            }
        }
        let Some(s) = conn.as_mut() else { continue };
        let start = Instant::now();
        match http_once(s, req, &mut buf) {
            Ok(200) => {
                t.ops += 1;
                t.latencies.push(micros(start.elapsed()));
            }
            Ok(_) | Err(_) => {
                t.errors += 1;
                conn = None;
            }
        }
    }
    t
}

/// Sends one request and reads its response (head and content-length body); the status.
fn http_once(s: &mut TcpStream, req: &[u8], buf: &mut [u8]) -> io::Result<u16> {
    s.write_all(req)?;
    let mut have = 0;
    let head_end = loop {
        if have == buf.len() {
            return Err(io::Error::other("response head too large"));
        }
        let n = s.read(&mut buf[have..])?;
        if n == 0 {
            return Err(io::Error::new(io::ErrorKind::UnexpectedEof, "closed"));
        }
        have += n;
        if let Some(end) = find(&buf[..have], b"\r\n\r\n") {
            break end + 4;
        }
    };
    let head = String::from_utf8_lossy(&buf[..head_end]).to_ascii_lowercase();
    let status: u16 = head.get(9..12).and_then(|s| s.parse().ok()).unwrap_or(0);
    let length: usize = head
        .lines()
        .find_map(|l| l.strip_prefix("content-length:"))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0);
    let mut body = have - head_end;
    while body < length {
        let n = s.read(&mut buf[..])?;
        if n == 0 {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "closed in body",
            ));
        }
        body += n;
    }
    Ok(status)
}

fn micros(d: Duration) -> u32 {
    u32::try_from(d.as_micros()).unwrap_or(u32::MAX)
}
