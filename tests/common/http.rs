//! A small real HTTP/1.1 server on 127.0.0.1, std only (a thread per connection), for smoke
//! tests, health probes and webhooks.
//!
//! Routes are set at run time by method and path; anything else gets 404. Every request is
//! recorded (before it is answered, so a hung request is visible too). Each answer carries
//! `Connection: close` and the connection is closed after it.

use std::collections::HashMap;
use std::io::{self, BufRead, BufReader, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::os::fd::AsRawFd;
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

/// How long a `hang` route holds a connection at most, if the server is never stopped.
pub const MAX_HANG: Duration = Duration::from_secs(300);
/// Per-read bound while receiving a request.
const READ_TIMEOUT: Duration = Duration::from_secs(10);
const MAX_HEAD: usize = 64 * 1024;
const MAX_BODY: usize = 16 * 1024 * 1024;

/// One request as the server received it.
#[derive(Clone, Debug)]
pub struct Request {
    pub method: String,
    /// The request target as sent: path and query (`/v1/x?a=b`).
    pub path: String,
    /// Header names as sent; look up with [`Request::header`] (case-insensitive).
    pub headers: Vec<(String, String)>,
    /// The body, decoded from Content-Length or chunked framing (lossy UTF-8).
    pub body: String,
    /// When the request was fully received.
    pub at: Instant,
}

impl Request {
    /// The first header of that name (case-insensitive).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// The path without the query.
    pub fn path_only(&self) -> &str {
        self.path.split('?').next().unwrap_or(&self.path)
    }

    /// The query string, without `?`.
    pub fn query(&self) -> Option<&str> {
        self.path.split_once('?').map(|(_, q)| q)
    }

    /// The body parsed as JSON; panics (with the body) when it is not.
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.body)
            .unwrap_or_else(|e| panic!("request body is not JSON ({e}): {:?}", self.body))
    }
}

#[derive(Clone, Debug)]
enum Route {
    Respond {
        status: u16,
        body: String,
        delay: Duration,
    },
    /// 503 before `from`, then `status`.
    RespondFrom {
        from: Instant,
        status: u16,
        body: String,
    },
    /// One answer per request in order; the last repeats.
    Sequence {
        answers: Vec<(u16, String)>,
        next: usize,
    },
    Hang,
}

#[derive(Default)]
struct State {
    stopped: bool,
    routes: HashMap<(String, String), Route>,
    requests: Vec<Request>,
    /// Clones of open connections, to shut them down on stop.
    conns: HashMap<u64, TcpStream>,
    workers: Vec<JoinHandle<()>>,
    next_conn: u64,
}

struct Shared {
    state: Mutex<State>,
    /// Notified on every recorded request and on stop.
    changed: Condvar,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        // A panicking worker must not take the whole server (and the test's assertions) down.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Waits until stopped or `timeout` passes; true when stopped.
    fn wait_stopped(&self, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        let mut st = self.lock();
        while !st.stopped {
            let now = Instant::now();
            if now >= deadline {
                return false;
            }
            st = self
                .changed
                .wait_timeout(st, deadline - now)
                .unwrap_or_else(|e| e.into_inner())
                .0;
        }
        true
    }
}

/// A running server; dropping it stops it.
pub struct HttpServer {
    addr: SocketAddr,
    shared: Arc<Shared>,
    acceptor: Option<JoinHandle<()>>,
}

impl HttpServer {
    /// Binds 127.0.0.1:0 and starts accepting.
    pub fn start() -> HttpServer {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0");
        let addr = listener.local_addr().expect("local addr");
        listener
            .set_nonblocking(true)
            .expect("nonblocking listener");
        let shared = Arc::new(Shared {
            state: Mutex::new(State::default()),
            changed: Condvar::new(),
        });
        let acceptor = {
            let shared = Arc::clone(&shared);
            thread::Builder::new()
                .name(format!("http-{}", addr.port()))
                .spawn(move || accept_loop(listener, shared))
                .expect("spawn the accept thread")
        };
        HttpServer {
            addr,
            shared,
            acceptor: Some(acceptor),
        }
    }

    /// `http://127.0.0.1:PORT`, no trailing slash.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// `url()` + `path` (which should start with `/`).
    pub fn url_for(&self, path: &str) -> String {
        format!("{}{path}", self.url())
    }

    pub fn port(&self) -> u16 {
        self.addr.port()
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Answers `method path` with `status` and `body`. A route's path matches the request's
    /// path with its query first, then without. Replaces an earlier route for the same pair.
    pub fn respond(&self, method: &str, path: &str, status: u16, body: impl Into<String>) {
        self.route(
            method,
            path,
            Route::Respond {
                status,
                body: body.into(),
                delay: Duration::ZERO,
            },
        );
    }

    /// Like `respond`, after sleeping `delay` (cut short when the server stops).
    pub fn respond_after(
        &self,
        method: &str,
        path: &str,
        delay: Duration,
        status: u16,
        body: impl Into<String>,
    ) {
        self.route(
            method,
            path,
            Route::Respond {
                status,
                body: body.into(),
                delay,
            },
        );
    }

    /// "Becomes healthy at `from`": 503 before that instant, `status` and `body` from then on.
    pub fn respond_from(
        &self,
        method: &str,
        path: &str,
        from: Instant,
        status: u16,
        body: impl Into<String>,
    ) {
        self.route(
            method,
            path,
            Route::RespondFrom {
                from,
                status,
                body: body.into(),
            },
        );
    }

    /// One answer per request, in order; the last one repeats (e.g. `[(503, ""), (200, "ok")]`).
    pub fn respond_seq(&self, method: &str, path: &str, answers: &[(u16, &str)]) {
        assert!(!answers.is_empty(), "respond_seq needs at least one answer");
        self.route(
            method,
            path,
            Route::Sequence {
                answers: answers.iter().map(|(s, b)| (*s, b.to_string())).collect(),
                next: 0,
            },
        );
    }

    /// Reads the request, records it, and never answers: the connection stays open until the
    /// server stops (or [`MAX_HANG`]), like a hung model server.
    pub fn hang(&self, method: &str, path: &str) {
        self.route(method, path, Route::Hang);
    }

    /// Every request so far, in arrival order.
    pub fn requests(&self) -> Vec<Request> {
        self.shared.lock().requests.clone()
    }

    /// The requests whose path (with or without its query) is `path`.
    pub fn requests_to(&self, path: &str) -> Vec<Request> {
        self.shared
            .lock()
            .requests
            .iter()
            .filter(|r| r.path == path || r.path_only() == path)
            .cloned()
            .collect()
    }

    /// Forgets the recorded requests (routes stay).
    pub fn clear_requests(&self) {
        self.shared.lock().requests.clear();
    }

    /// Waits until at least `n` requests to `path` were recorded; false after `timeout`.
    pub fn wait_for_requests(&self, path: &str, n: usize, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        let mut st = self.shared.lock();
        loop {
            let count = st
                .requests
                .iter()
                .filter(|r| r.path == path || r.path_only() == path)
                .count();
            if count >= n {
                return true;
            }
            let now = Instant::now();
            if now >= deadline || st.stopped {
                return false;
            }
            st = self
                .shared
                .changed
                .wait_timeout(st, deadline - now)
                .unwrap_or_else(|e| e.into_inner())
                .0;
        }
    }

    /// Stops accepting, closes every open connection (hung ones included) and joins the
    /// threads. Afterwards the port refuses connections. Idempotent.
    pub fn stop(&mut self) {
        {
            let mut st = self.shared.lock();
            st.stopped = true;
            for conn in st.conns.values() {
                let _ = conn.shutdown(Shutdown::Both);
            }
            self.shared.changed.notify_all();
        }
        if let Some(acceptor) = self.acceptor.take() {
            let _ = acceptor.join();
        }
        // The acceptor has exited: no worker is added after this.
        let workers = std::mem::take(&mut self.shared.lock().workers);
        for w in workers {
            let _ = w.join();
        }
    }

    fn route(&self, method: &str, path: &str, route: Route) {
        self.shared
            .lock()
            .routes
            .insert((method.to_ascii_uppercase(), path.to_string()), route);
    }
}

impl Drop for HttpServer {
    fn drop(&mut self) {
        self.stop();
    }
}

/// `http://127.0.0.1:PORT` where nothing listens (a port bound and released a moment ago): for
/// "the webhook is down". Connections are refused.
pub fn closed_port_url() -> String {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0");
    let port = listener.local_addr().expect("local addr").port();
    // As in `stop`: refuse at once even if a concurrently forked child holds a copy.
    // SAFETY: shutdown(2) on a descriptor we own; no memory involved.
    unsafe {
        libc::shutdown(listener.as_raw_fd(), libc::SHUT_RDWR);
    }
    format!("http://127.0.0.1:{port}")
}

fn accept_loop(listener: TcpListener, shared: Arc<Shared>) {
    // Closing our descriptor is not enough: a process forked by another test thread (ssh,
    // sshd, recover) holds a copy until it execs, and the kernel would keep accepting on it.
    // shutdown(2) on a listening socket stops the socket itself, whoever holds it.
    let stop_listening = |listener: &TcpListener| {
        // SAFETY: shutdown(2) on a descriptor we own; no memory involved.
        unsafe {
            libc::shutdown(listener.as_raw_fd(), libc::SHUT_RDWR);
        }
    };
    loop {
        if shared.lock().stopped {
            stop_listening(&listener);
            return;
        }
        match listener.accept() {
            Ok((stream, _)) => {
                let mut st = shared.lock();
                if st.stopped {
                    stop_listening(&listener);
                    return;
                }
                let id = st.next_conn;
                st.next_conn += 1;
                if let Ok(clone) = stream.try_clone() {
                    st.conns.insert(id, clone);
                }
                let worker = {
                    let shared = Arc::clone(&shared);
                    thread::spawn(move || {
                        serve(&shared, stream);
                        shared.lock().conns.remove(&id);
                    })
                };
                st.workers.push(worker);
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                thread::sleep(Duration::from_millis(2));
            }
            Err(_) => thread::sleep(Duration::from_millis(10)),
        }
    }
}

fn serve(shared: &Shared, stream: TcpStream) {
    let _ = stream.set_nonblocking(false);
    let _ = stream.set_read_timeout(Some(READ_TIMEOUT));
    let _ = stream.set_write_timeout(Some(READ_TIMEOUT));
    let mut writer = match stream.try_clone() {
        Ok(w) => w,
        Err(_) => return,
    };
    let mut reader = BufReader::new(stream);
    let request = match read_request(&mut reader, &mut writer) {
        Ok(r) => r,
        Err(_) => return,
    };

    let route = {
        let mut st = shared.lock();
        let key_full = (request.method.clone(), request.path.clone());
        let key_path = (request.method.clone(), request.path_only().to_string());
        let route = match st.routes.get_mut(&key_full) {
            Some(r) => Some(r),
            None => st.routes.get_mut(&key_path),
        };
        let chosen = match route {
            Some(Route::Sequence { answers, next }) => {
                let i = (*next).min(answers.len() - 1);
                *next += 1;
                let (status, body) = answers[i].clone();
                Some(Route::Respond {
                    status,
                    body,
                    delay: Duration::ZERO,
                })
            }
            Some(other) => Some(other.clone()),
            None => None,
        };
        st.requests.push(request.clone());
        shared.changed.notify_all();
        chosen
    };

    let (status, body) = match route {
        None => (404, "not found\n".to_string()),
        Some(Route::Hang) => {
            shared.wait_stopped(MAX_HANG);
            return; // dropping the stream closes the connection without an answer
        }
        Some(Route::Respond {
            status,
            body,
            delay,
        }) => {
            if !delay.is_zero() && shared.wait_stopped(delay) {
                return;
            }
            (status, body)
        }
        Some(Route::RespondFrom { from, status, body }) => {
            if Instant::now() < from {
                (503, "not yet\n".to_string())
            } else {
                (status, body)
            }
        }
        Some(Route::Sequence { .. }) => unreachable!("resolved above"),
    };
    let _ = write_response(&mut writer, &request.method, status, &body);
    let _ = writer.flush();
    let _ = writer.shutdown(Shutdown::Write);
}

fn read_request(reader: &mut BufReader<TcpStream>, writer: &mut TcpStream) -> io::Result<Request> {
    let bad = |what: &str| io::Error::new(io::ErrorKind::InvalidData, what.to_string());
    let mut head_len = 0;
    let mut line = String::new();
    let mut read_line = |reader: &mut BufReader<TcpStream>, line: &mut String| -> io::Result<()> {
        line.clear();
        let n = reader.by_ref().take(MAX_HEAD as u64).read_line(line)?;
        head_len += n;
        if n == 0 {
            return Err(io::ErrorKind::UnexpectedEof.into());
        }
        if head_len > MAX_HEAD {
            return Err(bad("request head too large"));
        }
        Ok(())
    };

    read_line(reader, &mut line)?;
    let mut parts = line.split_whitespace();
    let method = parts.next().ok_or_else(|| bad("no method"))?.to_string();
    let path = parts.next().ok_or_else(|| bad("no target"))?.to_string();

    let mut headers = Vec::new();
    for _ in 0..1000 {
        read_line(reader, &mut line)?;
        let l = line.trim_end_matches(['\r', '\n']);
        if l.is_empty() {
            break;
        }
        let (k, v) = l.split_once(':').ok_or_else(|| bad("bad header"))?;
        headers.push((k.trim().to_string(), v.trim().to_string()));
    }
    let get = |name: &str| {
        headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.clone())
    };

    if get("expect").is_some_and(|v| v.eq_ignore_ascii_case("100-continue")) {
        writer.write_all(b"HTTP/1.1 100 Continue\r\n\r\n")?;
    }

    let mut body = Vec::new();
    if get("transfer-encoding").is_some_and(|v| v.to_ascii_lowercase().contains("chunked")) {
        for _ in 0..100_000 {
            let mut size_line = String::new();
            reader.by_ref().take(1024).read_line(&mut size_line)?;
            let size_hex = size_line.trim().split(';').next().unwrap_or("");
            let size = usize::from_str_radix(size_hex, 16).map_err(|_| bad("bad chunk size"))?;
            if size == 0 {
                // Trailers, up to the empty line.
                for _ in 0..100 {
                    let mut t = String::new();
                    if reader.by_ref().take(MAX_HEAD as u64).read_line(&mut t)? == 0
                        || t.trim().is_empty()
                    {
                        break;
                    }
                }
                break;
            }
            if body.len() + size > MAX_BODY {
                return Err(bad("body too large"));
            }
            let start = body.len();
            body.resize(start + size, 0);
            reader.read_exact(&mut body[start..])?;
            let mut crlf = [0u8; 2];
            reader.read_exact(&mut crlf)?;
        }
    } else if let Some(len) = get("content-length") {
        let len: usize = len.parse().map_err(|_| bad("bad content-length"))?;
        if len > MAX_BODY {
            return Err(bad("body too large"));
        }
        body.resize(len, 0);
        reader.read_exact(&mut body)?;
    }

    Ok(Request {
        method: method.to_ascii_uppercase(),
        path,
        headers,
        body: String::from_utf8_lossy(&body).into_owned(),
        at: Instant::now(),
    })
}

fn write_response(w: &mut TcpStream, method: &str, status: u16, body: &str) -> io::Result<()> {
    let no_body = method == "HEAD" || status == 204 || status == 304 || status < 200;
    let trimmed = body.trim_start();
    let content_type = if trimmed.starts_with('{') || trimmed.starts_with('[') {
        "application/json"
    } else {
        "text/plain; charset=utf-8"
    };
    let mut out = format!(
        "HTTP/1.1 {status} {}\r\nContent-Type: {content_type}\r\nConnection: close\r\n",
        reason(status)
    );
    if !(status == 204 || status == 304 || status < 200) {
        out.push_str(&format!("Content-Length: {}\r\n", body.len()));
    }
    out.push_str("\r\n");
    if !no_body {
        out.push_str(body);
    }
    w.write_all(out.as_bytes())
}

fn reason(status: u16) -> &'static str {
    match status {
        200 => "OK",
        201 => "Created",
        202 => "Accepted",
        204 => "No Content",
        301 => "Moved Permanently",
        302 => "Found",
        304 => "Not Modified",
        400 => "Bad Request",
        401 => "Unauthorized",
        403 => "Forbidden",
        404 => "Not Found",
        405 => "Method Not Allowed",
        408 => "Request Timeout",
        429 => "Too Many Requests",
        500 => "Internal Server Error",
        502 => "Bad Gateway",
        503 => "Service Unavailable",
        504 => "Gateway Timeout",
        _ => "Status",
    }
}
