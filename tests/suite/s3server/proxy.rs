//! A fault-injecting HTTP proxy on a loopback port, in front of the S3 test server (or any
//! HTTP server): it forwards every request unchanged (the Host header too, so SigV4
//! signatures stay valid) and misbehaves on the ones a rule matches, the way a broken
//! network or a lying server does. Every request it sees is logged, so a test can count
//! retries.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full, StreamBody};
use hyper::body::Frame;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto::Builder as ConnBuilder;

/// What the proxy does to a matched request.
#[derive(Clone, Debug)]
pub enum Fault {
    /// Answer this status without forwarding (nothing reaches the server).
    StatusBefore(u16),
    /// Forward (so a write happens), then answer this status instead of the real answer.
    StatusAfter(u16),
    /// Close the connection without an answer; nothing reaches the server.
    ResetBefore,
    /// Forward, then close the connection without an answer.
    ResetAfter,
    /// Wait this long before forwarding.
    Delay(Duration),
    /// Send the headers (full Content-Length) and half the body, then close.
    CutBody,
    /// Flip one byte in the middle of the body.
    FlipByte,
    /// Send the body this many bytes short, with a Content-Length that agrees.
    ShortBy(usize),
    /// Send this many bytes more than the real body (a server that lies about sizes).
    PadBy(usize),
    /// Remove the ETag header from the answer.
    DropETag,
    /// Answer 200 with this body instead of the real one (a server that lies).
    ReplaceBody(&'static str),
}

struct Rule {
    method: String,
    target_contains: String,
    remaining: usize,
    fault: Fault,
}

#[derive(Default)]
struct State {
    rules: Vec<Rule>,
    seen: Vec<String>,
    applied: Vec<String>,
    /// Per request line: bytes sent up (request body) and down (response body).
    moved: Vec<(String, u64, u64)>,
}

/// A running proxy; stopped when dropped.
pub struct FaultProxy {
    pub endpoint: String,
    state: Arc<Mutex<State>>,
    shutdown: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl FaultProxy {
    /// Starts a proxy forwarding to `upstream` (`http://host:port`).
    pub fn start(upstream: &str) -> FaultProxy {
        let state = Arc::new(Mutex::new(State::default()));
        let (addr_sender, addr_receiver) = std::sync::mpsc::channel();
        let (shutdown, stop) = tokio::sync::oneshot::channel::<()>();
        let upstream = upstream.trim_end_matches('/').to_string();
        let shared = state.clone();
        let thread = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .enable_all()
                .build()
                .expect("runtime");
            runtime.block_on(serve(upstream, shared, addr_sender, stop));
        });
        let addr: SocketAddr = addr_receiver.recv().expect("proxy started");
        FaultProxy {
            endpoint: format!("http://{addr}"),
            state,
            shutdown: Some(shutdown),
            thread: Some(thread),
        }
    }

    /// Applies `fault` to the next `times` requests whose method is `method` (`""`: any)
    /// and whose path-and-query contains `target_contains`. Rules are tried in order.
    pub fn inject(&self, method: &str, target_contains: &str, times: usize, fault: Fault) {
        self.state.lock().unwrap().rules.push(Rule {
            method: method.to_string(),
            target_contains: target_contains.to_string(),
            remaining: times,
            fault,
        });
    }

    /// Drops every rule not yet used up.
    pub fn clear(&self) {
        self.state.lock().unwrap().rules.clear();
    }

    /// Every request seen so far, as `METHOD /path?query`.
    pub fn requests(&self) -> Vec<String> {
        self.state.lock().unwrap().seen.clone()
    }

    /// The requests a fault was applied to, as `METHOD /path?query: fault`.
    pub fn applied(&self) -> Vec<String> {
        self.state.lock().unwrap().applied.clone()
    }

    /// Bytes that went up (request bodies) and down (response bodies) in requests
    /// that matched `method` and contained `target_contains`.
    pub fn bytes(&self, method: &str, target_contains: &str) -> (u64, u64) {
        let prefix = format!("{method} ");
        self.state
            .lock()
            .unwrap()
            .moved
            .iter()
            .filter(|(line, _, _)| line.starts_with(&prefix) && line.contains(target_contains))
            .fold((0, 0), |(up, down), (_, u, d)| (up + u, down + d))
    }

    /// How many requests matched `method` and contained `target_contains`.
    pub fn count(&self, method: &str, target_contains: &str) -> usize {
        self.requests()
            .iter()
            .filter(|line| {
                line.starts_with(&format!("{method} ")) && line.contains(target_contains)
            })
            .count()
    }
}

impl Drop for FaultProxy {
    fn drop(&mut self) {
        if let Some(shutdown) = self.shutdown.take() {
            let _ = shutdown.send(());
        }
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

async fn serve(
    upstream: String,
    state: Arc<Mutex<State>>,
    addr: std::sync::mpsc::Sender<SocketAddr>,
    mut stop: tokio::sync::oneshot::Receiver<()>,
) {
    let listener = tokio::net::TcpListener::bind(("127.0.0.1", 0))
        .await
        .expect("bind a loopback port");
    addr.send(listener.local_addr().expect("local addr"))
        .expect("starter waits");
    let client = reqwest::Client::builder()
        .no_proxy()
        .build()
        .expect("client");
    let http = ConnBuilder::new(TokioExecutor::new());
    loop {
        let socket = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((socket, _)) => socket,
                Err(_) => continue,
            },
            _ = &mut stop => break,
        };
        let _ = socket.set_nodelay(true);
        // A second handle on the socket, to make its close a reset (RST) on demand.
        let handle = {
            use std::os::fd::AsFd;
            Arc::new(socket.as_fd().try_clone_to_owned().expect("dup the socket"))
        };
        let (upstream, state, client) = (upstream.clone(), state.clone(), client.clone());
        let service = hyper::service::service_fn(move |request| {
            let handle = handle.clone();
            let answer = forward(request, upstream.clone(), state.clone(), client.clone());
            async move {
                let answer = answer.await;
                if answer.is_err() {
                    // Linger 0: closing sends RST, as a crashed server or a middlebox does.
                    let _ = rustix::net::sockopt::set_socket_linger(&*handle, Some(Duration::ZERO));
                }
                answer
            }
        });
        let connection = http
            .serve_connection(TokioIo::new(socket), service)
            .into_owned();
        tokio::spawn(async move {
            let _ = connection.await;
        });
    }
}

type ProxyBody = http_body_util::combinators::BoxBody<Bytes, std::io::Error>;

/// An error from the service makes hyper drop the connection without an answer.
#[derive(Debug)]
struct Reset;

impl std::fmt::Display for Reset {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("connection reset by the fault proxy")
    }
}

impl std::error::Error for Reset {}

fn full(bytes: impl Into<Bytes>) -> ProxyBody {
    Full::new(bytes.into())
        .map_err(|never: Infallible| match never {})
        .boxed()
}

async fn forward(
    request: hyper::Request<hyper::body::Incoming>,
    upstream: String,
    state: Arc<Mutex<State>>,
    client: reqwest::Client,
) -> Result<hyper::Response<ProxyBody>, Reset> {
    let method = request.method().clone();
    let target = request
        .uri()
        .path_and_query()
        .map(|pq| pq.as_str().to_string())
        .unwrap_or_else(|| "/".into());
    let line = format!("{method} {target}");
    let fault = {
        let mut state = state.lock().unwrap();
        state.seen.push(line.clone());
        let fault = state
            .rules
            .iter_mut()
            .find(|rule| {
                rule.remaining > 0
                    && (rule.method.is_empty() || rule.method == method.as_str())
                    && target.contains(&rule.target_contains)
            })
            .map(|rule| {
                rule.remaining -= 1;
                rule.fault.clone()
            });
        if let Some(fault) = &fault {
            state.applied.push(format!("{line}: {fault:?}"));
        }
        fault
    };
    let (parts, body) = request.into_parts();
    let body = body.collect().await.map_err(|_| Reset)?.to_bytes();
    let up = body.len() as u64;
    match &fault {
        Some(Fault::StatusBefore(status)) => return Ok(status_answer(*status)),
        Some(Fault::ResetBefore) => return Err(Reset),
        Some(Fault::Delay(pause)) => tokio::time::sleep(*pause).await,
        _ => {}
    }
    let mut upstream_request = client.request(method.clone(), format!("{upstream}{target}"));
    for (name, value) in &parts.headers {
        if !is_hop_by_hop(name.as_str()) {
            upstream_request = upstream_request.header(name, value);
        }
    }
    let answer = upstream_request
        .body(body)
        .send()
        .await
        .map_err(|_| Reset)?;
    let status = answer.status();
    let headers = answer.headers().clone();
    let mut body = answer.bytes().await.map_err(|_| Reset)?.to_vec();
    state
        .lock()
        .unwrap()
        .moved
        .push((line.clone(), up, body.len() as u64));
    match &fault {
        Some(Fault::StatusAfter(status)) => return Ok(status_answer(*status)),
        Some(Fault::ResetAfter) => return Err(Reset),
        _ => {}
    }
    let mut response = hyper::Response::builder().status(status);
    for (name, value) in &headers {
        let name = name.as_str();
        let dropped = is_hop_by_hop(name)
            // hyper sets the length of the body it sends; a HEAD keeps the real one.
            || (name == "content-length" && method != hyper::Method::HEAD)
            || (name == "etag" && matches!(fault, Some(Fault::DropETag)));
        if !dropped {
            response = response.header(name, value);
        }
    }
    let body = match fault {
        Some(Fault::FlipByte) if !body.is_empty() => {
            let middle = body.len() / 2;
            body[middle] ^= 0x01;
            full(body)
        }
        Some(Fault::PadBy(extra)) => {
            body.resize(body.len() + extra, b'#');
            full(body)
        }
        Some(Fault::ReplaceBody(text)) => full(text.as_bytes().to_vec()),
        Some(Fault::ShortBy(short)) => {
            body.truncate(body.len().saturating_sub(short));
            full(body)
        }
        Some(Fault::CutBody) => {
            response = response.header("content-length", body.len().to_string());
            let half = Bytes::from(body[..body.len() / 2].to_vec());
            let frames: Vec<Result<Frame<Bytes>, std::io::Error>> = vec![
                Ok(Frame::data(half)),
                Err(std::io::Error::other("body cut by the fault proxy")),
            ];
            StreamBody::new(futures_util::stream::iter(frames)).boxed()
        }
        _ => full(body),
    };
    Ok(response.body(body).expect("a valid response"))
}

fn status_answer(status: u16) -> hyper::Response<ProxyBody> {
    let reason = match status {
        500 => "InternalError",
        503 => "SlowDown",
        _ => "ServiceUnavailable",
    };
    let xml = format!(
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?><Error><Code>{reason}</Code><Message>injected by the fault proxy</Message></Error>"
    );
    hyper::Response::builder()
        .status(status)
        .header("content-type", "application/xml")
        .body(full(xml))
        .expect("a valid response")
}

fn is_hop_by_hop(name: &str) -> bool {
    matches!(
        name,
        "connection" | "keep-alive" | "transfer-encoding" | "te" | "trailer" | "upgrade"
    )
}
