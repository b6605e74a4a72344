//! `czc serve`: an HTTP remote over a folder or any configured storage, for labs
//! without S3. It speaks the remote layout (`GET`/`HEAD`/`PUT`/`DELETE
//! /objects/<hex[0:2]>/<hex[2:]>`, `POST /batch`, `GET /list?prefix=`), streams uploads
//! to a temp file while hashing them, and stores nothing whose bytes do not hash to the
//! oid in the URL.

// Handlers answer with a `Response` either way; an early refusal is one too, and boxing
// it would only add an allocation to the error path.
#![allow(clippy::result_large_err)]

use std::collections::HashSet;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use axum::body::Body;
use axum::extract::{Path as UrlPath, Query, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;
use futures_util::StreamExt;
use tokio::io::{AsyncReadExt, AsyncSeekExt, AsyncWriteExt};

use crate::error::{Error, Result};
use crate::oid::Oid;
use crate::packs::{PackWrites, Packed};
use crate::storage::{FolderStorage, LocalStorage, OpenedStorage, ReadStorage, StorageError};

/// How the server runs.
#[derive(Debug, Clone)]
pub struct ServeOptions {
    /// `addr:port`; port 0 picks a free one.
    pub listen: String,
    /// Bearer tokens accepted for writes (and reads unless `public_read`).
    pub tokens: Vec<String>,
    pub public_read: bool,
    /// The largest upload accepted, in bytes.
    pub max_upload: u64,
    /// Where uploads are staged while they are hashed: a folder inside the store (or
    /// the cache), whose leftovers from a killed server are swept at the next start.
    pub staging: PathBuf,
    /// Limits that keep one slow or hostile client from locking out the others.
    pub limits: ServeLimits,
}

/// How long the server waits for clients, and how many it serves at once.
#[derive(Debug, Clone, Copy)]
pub struct ServeLimits {
    /// To receive a request's headers, counted from when the server is ready for them
    /// (idle keep-alive connections included).
    pub header_timeout: std::time::Duration,
    /// Between two chunks of an upload's body.
    pub body_idle_timeout: std::time::Duration,
    /// Open connections in all.
    pub max_connections: usize,
    /// Open connections from one address.
    pub max_connections_per_ip: usize,
    /// After SIGTERM, how long requests in flight (stalled uploads too) may finish.
    pub shutdown_grace: std::time::Duration,
}

impl Default for ServeLimits {
    fn default() -> ServeLimits {
        ServeLimits {
            header_timeout: std::time::Duration::from_secs(10),
            body_idle_timeout: std::time::Duration::from_secs(30),
            max_connections: 1024,
            max_connections_per_ip: 64,
            shutdown_grace: std::time::Duration::from_secs(10),
        }
    }
}

/// What the server serves.
pub enum Backend {
    /// A local folder: files are streamed straight from disk.
    Folder {
        storage: FolderStorage,
        writable: bool,
    },
    /// Any other storage (an S3 bucket, another czc server): objects pass through a
    /// temp file.
    Other(OpenedStorage),
}

impl Backend {
    fn reader(&self) -> Arc<dyn ReadStorage> {
        match self {
            Backend::Folder { storage, .. } => Arc::new(storage.clone()),
            Backend::Other(opened) => opened.reader(),
        }
    }

    fn writer(&self) -> Option<Arc<dyn crate::storage::WriteStorage>> {
        match self {
            Backend::Folder {
                storage,
                writable: true,
            } => Some(Arc::new(storage.clone())),
            Backend::Folder { .. } => None,
            Backend::Other(opened) => opened.writer(),
        }
    }

    /// A description for the startup line.
    pub fn describe(&self) -> String {
        self.reader().describe()
    }
}

struct AppState {
    backend: Backend,
    /// A folder backend's reader that also finds objects in the folder's packs (what
    /// clients pushing packs through `/keys/packs/` left), for clients that ask for
    /// them by `/objects/` (older czc, curl).
    folder_reader: Option<Arc<Packed<FolderStorage>>>,
    tokens: HashSet<String>,
    public_read: bool,
    max_upload: u64,
    uploads: PathBuf,
    body_idle_timeout: std::time::Duration,
}

impl AppState {
    fn reader(&self) -> Arc<dyn ReadStorage> {
        match &self.folder_reader {
            Some(reader) => reader.clone(),
            None => self.backend.reader(),
        }
    }
}

/// Reads bearer tokens: one per line; blank lines and `#` comments are skipped.
pub fn read_tokens(path: &Path) -> Result<Vec<String>> {
    let text = std::fs::read_to_string(path).map_err(|source| Error::Io {
        path: path.into(),
        source,
    })?;
    let tokens: Vec<String> = text
        .lines()
        .map(str::trim)
        .filter(|line| !line.is_empty() && !line.starts_with('#'))
        .map(str::to_owned)
        .collect();
    if tokens.is_empty() {
        return Err(Error::Unsupported {
            path: path.into(),
            reason: "holds no token (one per line)".into(),
        });
    }
    Ok(tokens)
}

/// Serves until SIGTERM or Ctrl-C, then finishes in-flight requests and returns.
/// `ready` is told the bound address (useful with port 0).
pub fn serve(
    backend: Backend,
    options: ServeOptions,
    ready: impl FnOnce(SocketAddr),
) -> Result<()> {
    let io = |source: std::io::Error| Error::Io {
        path: PathBuf::from(&options.listen),
        source,
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(io)?;
    let staging_io = |source: std::io::Error| Error::Io {
        path: options.staging.clone(),
        source,
    };
    std::fs::create_dir_all(&options.staging).map_err(staging_io)?;
    // Uploads a killed server was receiving.
    crate::fsutil::sweep_dead_private_dirs(&options.staging);
    let uploads_dir = crate::fsutil::claim_private_dir(&options.staging).map_err(staging_io)?;
    let uploads = uploads_dir.path().to_path_buf();
    let folder_reader = match &backend {
        Backend::Folder { storage, .. } => Some(Arc::new(Packed::new(
            storage.clone(),
            PackWrites::Loose,
            None,
        ))),
        Backend::Other(_) => None,
    };
    let state = Arc::new(AppState {
        backend,
        folder_reader,
        tokens: options.tokens.iter().cloned().collect(),
        public_read: options.public_read,
        max_upload: options.max_upload,
        uploads: uploads.clone(),
        body_idle_timeout: options.limits.body_idle_timeout,
    });
    let limits = options.limits;
    let served = runtime.block_on(async {
        let listener = tokio::net::TcpListener::bind(&options.listen)
            .await
            .map_err(io)?;
        ready(listener.local_addr().map_err(io)?);
        let app = Router::new()
            .route(
                "/objects/{shard}/{rest}",
                get(get_object)
                    .head(head_object)
                    .put(put_object)
                    .delete(delete_object),
            )
            .route(
                "/keys/{*key}",
                get(get_key).head(head_key).put(put_key).delete(delete_key),
            )
            .route("/batch", post(batch))
            .route("/list", get(list))
            .fallback(not_found)
            .with_state(state);
        accept_loop(listener, app, limits).await;
        Ok(())
    });
    // Blocking tasks of stalled requests are not waited for.
    runtime.shutdown_timeout(std::time::Duration::from_secs(1));
    drop(uploads_dir);
    served
}

/// Accepts connections until SIGTERM or Ctrl-C, within the connection limits, each
/// served by hyper with a header timeout; then lets requests in flight finish for the
/// grace period.
async fn accept_loop(listener: tokio::net::TcpListener, app: Router, limits: ServeLimits) {
    use std::collections::HashMap;
    use std::net::IpAddr;
    let graceful = hyper_util::server::graceful::GracefulShutdown::new();
    let per_ip: Arc<std::sync::Mutex<HashMap<IpAddr, usize>>> = Arc::default();
    let open = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let shutdown = shutdown_signal();
    tokio::pin!(shutdown);
    loop {
        let (tcp, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                // Out of descriptors and the like: wait a moment, keep serving.
                Err(_) => {
                    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                    continue;
                }
            },
            _ = &mut shutdown => break,
        };
        let ip = peer.ip();
        let admitted = {
            let mut counts = per_ip.lock().unwrap_or_else(|p| p.into_inner());
            let mine = counts.entry(ip).or_default();
            if *mine >= limits.max_connections_per_ip
                || open.load(std::sync::atomic::Ordering::Relaxed) >= limits.max_connections
            {
                false
            } else {
                *mine += 1;
                open.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                true
            }
        };
        if !admitted {
            drop(tcp); // closed at once: a flood never fills the backlog
            continue;
        }
        // Without TCP_NODELAY every small response waits ~40 ms for a delayed ACK.
        let _ = tcp.set_nodelay(true);
        let mut http = hyper::server::conn::http1::Builder::new();
        http.timer(hyper_util::rt::TokioTimer::new())
            .header_read_timeout(limits.header_timeout);
        let service = hyper_util::service::TowerToHyperService::new(app.clone());
        let connection =
            graceful.watch(http.serve_connection(hyper_util::rt::TokioIo::new(tcp), service));
        let (per_ip, open) = (per_ip.clone(), open.clone());
        tokio::spawn(async move {
            let _ = connection.await;
            open.fetch_sub(1, std::sync::atomic::Ordering::Relaxed);
            let mut counts = per_ip.lock().unwrap_or_else(|p| p.into_inner());
            if let Some(mine) = counts.get_mut(&ip) {
                *mine -= 1;
                if *mine == 0 {
                    counts.remove(&ip);
                }
            }
        });
    }
    drop(listener);
    let _ = tokio::time::timeout(limits.shutdown_grace, graceful.shutdown()).await;
}

/// Any other path: 404 with a line saying what this server answers.
async fn not_found() -> Response {
    status(
        StatusCode::NOT_FOUND,
        "not found: this czc server answers /objects/<2 hex>/<62 hex>, /keys/<key>, /batch and /list",
    )
}

async fn shutdown_signal() {
    let mut term = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
        Ok(signal) => signal,
        Err(_) => {
            let _ = tokio::signal::ctrl_c().await;
            return;
        }
    };
    tokio::select! {
        _ = term.recv() => {}
        _ = tokio::signal::ctrl_c() => {}
    }
}

fn status(code: StatusCode, message: impl Into<String>) -> Response {
    let mut text = message.into();
    text.push('\n');
    (code, text).into_response()
}

/// Checks the bearer token; `write` requests always need one.
fn authorize(state: &AppState, headers: &HeaderMap, write: bool) -> Result<(), Response> {
    if !write && state.public_read {
        return Ok(());
    }
    let token = headers
        .get(header::AUTHORIZATION)
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.strip_prefix("Bearer "));
    match token {
        Some(token) if state.tokens.contains(token.trim()) => Ok(()),
        Some(_) => Err(status(StatusCode::UNAUTHORIZED, "wrong token")),
        None => Err(status(
            StatusCode::UNAUTHORIZED,
            "missing token: send Authorization: Bearer <token>",
        )),
    }
}

/// The oid a `/objects/<shard>/<rest>` URL names; anything else is a bad request.
fn url_oid(shard: &str, rest: &str) -> Result<Oid, Response> {
    if shard.len() != 2 || rest.len() != 62 {
        return Err(status(StatusCode::BAD_REQUEST, "not an object path"));
    }
    Oid::from_hex(&format!("{shard}{rest}"))
        .map_err(|_| status(StatusCode::BAD_REQUEST, "malformed oid"))
}

/// The preamble of every object request: the token, then the oid in the URL.
fn authorized_oid(
    state: &AppState,
    headers: &HeaderMap,
    write: bool,
    shard: &str,
    rest: &str,
) -> Result<Oid, Response> {
    authorize(state, headers, write)?;
    url_oid(shard, rest)
}

/// The backend failed: its error (endpoint urls, upload ids, paths) goes to the server's
/// log, the client gets a plain 502.
/// One line of the server's log, through the front end's reporter (the CLI writes it
/// to stderr and never panics a request when stderr is closed).
fn log_line(line: std::fmt::Arguments) {
    crate::report::process_reporter().notice(&line.to_string());
}

fn storage_error(err: StorageError) -> Response {
    log_line(format_args!("serve: backend error: {err}"));
    status(
        StatusCode::BAD_GATEWAY,
        "the server's storage failed; its log says why",
    )
}

async fn blocking<T: Send + 'static>(
    work: impl FnOnce() -> T + Send + 'static,
) -> Result<T, Response> {
    tokio::task::spawn_blocking(work)
        .await
        .map_err(|err| status(StatusCode::INTERNAL_SERVER_ERROR, err.to_string()))
}

/// Bytes to serve: `len` bytes of `file` from `offset` (a loose file from 0, a packed
/// object from its place in the pack).
struct Served {
    file: tokio::fs::File,
    offset: u64,
    len: u64,
}

/// The object's bytes as a local file: the folder's own file, its place in one of the
/// folder's packs, or a temp copy.
async fn local_copy(state: &Arc<AppState>, oid: Oid) -> Result<Option<Served>, Response> {
    if let Some(found) = local_copy_of(state, oid.object_key()).await? {
        return Ok(Some(found));
    }
    let (Backend::Folder { storage, .. }, Some(reader)) = (&state.backend, &state.folder_reader)
    else {
        return Ok(None);
    };
    let (storage, reader) = (storage.clone(), reader.clone());
    let located = blocking(move || reader.locate_object(&oid))
        .await?
        .map_err(storage_error)?;
    let Some(at) = located else {
        return Ok(None);
    };
    let path = storage.path(&at.pack).map_err(storage_error)?;
    match open_sized(&path).await? {
        // The index was checked against the pack's size when read; a pack cut since
        // must not serve another object's bytes.
        Some((file, size)) if at.offset + at.len <= size => Ok(Some(Served {
            file,
            offset: at.offset,
            len: at.len,
        })),
        Some(_) => Err(status(
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("{} is shorter than its index says", at.pack),
        )),
        None => Ok(None),
    }
}

/// A file and its length; `None` if it is not there.
async fn open_sized(path: &Path) -> Result<Option<(tokio::fs::File, u64)>, Response> {
    match tokio::fs::File::open(path).await {
        Ok(file) => {
            let len = file
                .metadata()
                .await
                .map_err(|e| status(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))?
                .len();
            Ok(Some((file, len)))
        }
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(err) => Err(status(StatusCode::INTERNAL_SERVER_ERROR, err.to_string())),
    }
}

/// A key's bytes as a local file: the folder's own file, or a temp copy.
async fn local_copy_of(state: &Arc<AppState>, key: String) -> Result<Option<Served>, Response> {
    match &state.backend {
        Backend::Folder { storage, .. } => {
            let path = storage.path(&key).map_err(storage_error)?;
            Ok(open_sized(&path).await?.map(|(file, len)| Served {
                file,
                offset: 0,
                len,
            }))
        }
        Backend::Other(opened) => {
            let reader = opened.reader();
            let dir = state.uploads.clone();
            let copied = blocking(move || -> Result<Option<std::fs::File>, StorageError> {
                let io = |source| StorageError::Io {
                    storage: "serve".into(),
                    key: key.clone(),
                    source,
                };
                // Unnamed: the open handle keeps the bytes, nothing is left behind.
                let mut file = tempfile::tempfile_in(&dir).map_err(io)?;
                // Never more than the backend says the object holds (a lying backend
                // cannot fill this server's disk); the client hashes what it gets.
                let Some(size) = reader.size(&key)? else {
                    return Ok(None);
                };
                if reader.copy_into(&key, &mut file, size)?.is_none() {
                    return Ok(None);
                }
                std::io::Seek::rewind(&mut file).map_err(io)?;
                Ok(Some(file))
            })
            .await?
            .map_err(storage_error)?;
            match copied {
                None => Ok(None),
                Some(file) => {
                    let len = file.metadata().map(|m| m.len()).unwrap_or(0);
                    Ok(Some(Served {
                        file: tokio::fs::File::from_std(file),
                        offset: 0,
                        len,
                    }))
                }
            }
        }
    }
}

async fn last_modified(state: &Arc<AppState>, oid: Oid) -> Option<HeaderValue> {
    let reader = state.reader();
    let key = oid.object_key();
    let time = blocking(move || reader.last_modified(&key))
        .await
        .ok()?
        .ok()??;
    HeaderValue::from_str(&httpdate::fmt_http_date(time)).ok()
}

fn object_headers(response: &mut Response, oid: Oid, len: u64, modified: Option<HeaderValue>) {
    let headers = response.headers_mut();
    headers.insert(header::ACCEPT_RANGES, HeaderValue::from_static("bytes"));
    if let Ok(value) = HeaderValue::from_str(&oid.to_string()) {
        headers.insert("x-czc-oid", value);
    }
    if let Some(modified) = modified {
        headers.insert(header::LAST_MODIFIED, modified);
    }
    headers.insert(header::CONTENT_LENGTH, HeaderValue::from(len));
}

async fn head_object(
    State(state): State<Arc<AppState>>,
    UrlPath((shard, rest)): UrlPath<(String, String)>,
    headers: HeaderMap,
) -> Response {
    let oid = match authorized_oid(&state, &headers, false, &shard, &rest) {
        Ok(oid) => oid,
        Err(response) => return response,
    };
    let found = match &state.backend {
        // Opening the file answers "absent" too: one lookup.
        Backend::Folder { .. } => local_copy(&state, oid)
            .await
            .map(|found| found.map(|served| served.len)),
        // Elsewhere ask for the size alone (an S3 HEAD), never download.
        Backend::Other(opened) => {
            let reader = opened.reader();
            let key = oid.object_key();
            match blocking(move || reader.size(&key)).await {
                Ok(sized) => sized.map_err(storage_error),
                Err(response) => Err(response),
            }
        }
    };
    let len = match found {
        Ok(Some(len)) => len,
        Ok(None) => return StatusCode::NOT_FOUND.into_response(),
        Err(response) => return response,
    };
    let mut response = StatusCode::OK.into_response();
    object_headers(&mut response, oid, len, last_modified(&state, oid).await);
    response
}

/// `bytes=a-b`, `bytes=a-`, `bytes=-n` for a body of `len` bytes.
fn parse_range(value: &str, len: u64) -> Option<(u64, u64)> {
    let spec = value.strip_prefix("bytes=")?;
    if spec.contains(',') {
        return None;
    }
    let (start, end) = spec.split_once('-')?;
    let (start, end) = match (start.trim(), end.trim()) {
        ("", suffix) => {
            let n: u64 = suffix.parse().ok()?;
            (len.checked_sub(n.min(len))?, len.checked_sub(1)?)
        }
        (start, "") => (start.parse().ok()?, len.checked_sub(1)?),
        (start, end) => (
            start.parse().ok()?,
            end.parse::<u64>().ok()?.min(len.checked_sub(1)?),
        ),
    };
    (start <= end && end < len).then_some((start, end))
}

async fn get_object(
    State(state): State<Arc<AppState>>,
    UrlPath((shard, rest)): UrlPath<(String, String)>,
    headers: HeaderMap,
) -> Response {
    let oid = match authorized_oid(&state, &headers, false, &shard, &rest) {
        Ok(oid) => oid,
        Err(response) => return response,
    };
    let served = match local_copy(&state, oid).await {
        Ok(Some(found)) => found,
        Ok(None) => return status(StatusCode::NOT_FOUND, "no such object"),
        Err(response) => return response,
    };
    let modified = last_modified(&state, oid).await;
    ranged_body(served, &headers, |response, count| {
        object_headers(response, oid, count, modified)
    })
    .await
}

/// The response for a file's bytes: all of them, or the one `Range` the request asks
/// for (206, 416 for a range the file does not have).
async fn ranged_body(
    served: Served,
    headers: &HeaderMap,
    describe: impl FnOnce(&mut Response, u64),
) -> Response {
    let Served {
        mut file,
        offset,
        len,
    } = served;
    let range = headers
        .get(header::RANGE)
        .and_then(|value| value.to_str().ok());
    let (code, start, end) = match range {
        None => (StatusCode::OK, 0, len.saturating_sub(1)),
        Some(value) => match parse_range(value, len) {
            Some((start, end)) => (StatusCode::PARTIAL_CONTENT, start, end),
            None => {
                let mut response = status(StatusCode::RANGE_NOT_SATISFIABLE, "bad range");
                if let Ok(value) = HeaderValue::from_str(&format!("bytes */{len}")) {
                    response.headers_mut().insert(header::CONTENT_RANGE, value);
                }
                return response;
            }
        },
    };
    let count = if len == 0 { 0 } else { end - start + 1 };
    if offset + start > 0 {
        if let Err(err) = file.seek(std::io::SeekFrom::Start(offset + start)).await {
            return status(StatusCode::INTERNAL_SERVER_ERROR, err.to_string());
        }
    }
    let stream = tokio_util::io::ReaderStream::with_capacity(file.take(count), 1 << 20);
    let mut response = Response::new(Body::from_stream(stream));
    *response.status_mut() = code;
    describe(&mut response, count);
    response
        .headers_mut()
        .insert(header::CONTENT_LENGTH, HeaderValue::from(count));
    if code == StatusCode::PARTIAL_CONTENT {
        if let Ok(value) = HeaderValue::from_str(&format!("bytes {start}-{end}/{len}")) {
            response.headers_mut().insert(header::CONTENT_RANGE, value);
        }
    }
    response
}

/// Uploads up to this size are read whole before they are checked.
const SMALL_BODY: u64 = 1 << 20;

/// An upload's declared length, and its body, read whole first when small: the client
/// then gets the answer to a refusal instead of a connection closed under its bytes.
async fn small_body_first(
    headers: &HeaderMap,
    body: Body,
) -> Result<(Body, Option<u64>), Response> {
    let declared = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.parse::<u64>().ok());
    let body = match declared {
        Some(len) if len <= SMALL_BODY => axum::body::to_bytes(body, SMALL_BODY as usize)
            .await
            .map(Body::from)
            .map_err(|err| status(StatusCode::BAD_REQUEST, format!("upload broken off: {err}")))?,
        _ => body,
    };
    Ok((body, declared))
}

async fn put_object(
    State(state): State<Arc<AppState>>,
    UrlPath((shard, rest)): UrlPath<(String, String)>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let (body, declared) = match small_body_first(&headers, body).await {
        Ok(read) => read,
        Err(response) => return response,
    };
    let oid = match authorized_oid(&state, &headers, true, &shard, &rest) {
        Ok(oid) => oid,
        Err(response) => return response,
    };
    let Some(writer) = state.backend.writer() else {
        return status(StatusCode::METHOD_NOT_ALLOWED, "this remote is read-only");
    };
    if declared.is_some_and(|len| len > state.max_upload) {
        return status(
            StatusCode::PAYLOAD_TOO_LARGE,
            format!("uploads are limited to {} bytes", state.max_upload),
        );
    }
    let key = oid.object_key();
    // Conditional forms: objects are immutable, so a match means "it is already this".
    let exists = {
        let reader = state.reader();
        let key = key.clone();
        match blocking(move || reader.exists(&key)).await {
            Ok(Ok(exists)) => exists,
            Ok(Err(err)) => return storage_error(err),
            Err(response) => return response,
        }
    };
    let if_none_match = headers.get(header::IF_NONE_MATCH).is_some();
    if if_none_match && exists {
        return status(StatusCode::PRECONDITION_FAILED, "the object already exists");
    }
    if let Some(expected) = headers.get(header::IF_MATCH) {
        if !exists || expected.to_str().ok() != Some(oid.to_string().as_str()) {
            return status(
                StatusCode::PRECONDITION_FAILED,
                "the object is not the expected one",
            );
        }
    }
    let (temp, actual) = match receive_upload(&state, body, declared).await {
        Ok(received) => received,
        Err(response) => return response,
    };
    if actual != oid {
        return status(
            StatusCode::UNPROCESSABLE_ENTITY,
            format!("the bytes hash to {actual}, not {oid}; nothing stored"),
        );
    }
    if exists {
        return StatusCode::OK.into_response();
    }
    match blocking(move || writer.put_if_absent(&key, &temp)).await {
        Ok(Ok(())) => StatusCode::CREATED.into_response(),
        // A concurrent upload of the same object won: same bytes, so a plain PUT succeeds
        // too; one that asked for "only if absent" lost.
        Ok(Err(StorageError::LostRace { .. })) if if_none_match => {
            status(StatusCode::PRECONDITION_FAILED, "the object already exists")
        }
        Ok(Err(StorageError::LostRace { .. })) => StatusCode::OK.into_response(),
        Ok(Err(err)) => storage_error(err),
        Err(response) => response,
    }
}

/// Streams an upload's body into a private temp file in the staging folder, hashing as
/// the bytes arrive, within the size limit and the idle timeout; its length must be the
/// one declared. The temp file goes when the path is dropped.
async fn receive_upload(
    state: &AppState,
    body: Body,
    declared: Option<u64>,
) -> Result<(tempfile::TempPath, Oid), Response> {
    let internal = |err: std::io::Error| status(StatusCode::INTERNAL_SERVER_ERROR, err.to_string());
    let temp = tempfile::NamedTempFile::new_in(&state.uploads)
        .map_err(internal)?
        .into_temp_path();
    let mut file = tokio::fs::File::create(&temp).await.map_err(internal)?;
    let mut hasher = blake3::Hasher::new();
    let mut size = 0u64;
    let mut stream = body.into_data_stream();
    loop {
        let chunk = match tokio::time::timeout(state.body_idle_timeout, stream.next()).await {
            Ok(Some(chunk)) => chunk,
            Ok(None) => break,
            // A client that stops sending mid-body loses its slot, not everyone theirs.
            Err(_) => {
                return Err(status(
                    StatusCode::REQUEST_TIMEOUT,
                    format!(
                        "no bytes of the upload for {}s; nothing stored",
                        state.body_idle_timeout.as_secs()
                    ),
                ))
            }
        };
        // The client went away mid-body: the temp file is dropped, nothing stored.
        let chunk = chunk
            .map_err(|err| status(StatusCode::BAD_REQUEST, format!("upload broken off: {err}")))?;
        size += chunk.len() as u64;
        if size > state.max_upload {
            return Err(status(
                StatusCode::PAYLOAD_TOO_LARGE,
                format!("uploads are limited to {} bytes", state.max_upload),
            ));
        }
        hasher.update(&chunk);
        file.write_all(&chunk).await.map_err(internal)?;
    }
    if declared.is_some_and(|len| len != size) {
        return Err(status(
            StatusCode::BAD_REQUEST,
            "upload shorter than its Content-Length",
        ));
    }
    file.flush().await.map_err(internal)?;
    drop(file);
    Ok((temp, Oid::from_hash(hasher.finalize())))
}

/// The key a `/keys/<key>` URL names, if the server may serve it: a valid relative key,
/// not an object (those are under `/objects/`, checked against their oid), not the
/// server's own temp files.
fn url_key(key: &str) -> Result<String, Response> {
    crate::storage::check_key_of("czc serve", key)
        .map_err(|err| status(StatusCode::BAD_REQUEST, err.to_string()))?;
    if key.starts_with("objects/") || key == "objects" {
        return Err(status(
            StatusCode::BAD_REQUEST,
            "objects are served under /objects/<2 hex>/<62 hex>, not /keys/",
        ));
    }
    if key.split('/').any(|part| part.starts_with(".czc-")) {
        return Err(status(
            StatusCode::BAD_REQUEST,
            "names starting with .czc- are the server's own",
        ));
    }
    Ok(key.to_string())
}

fn key_headers(response: &mut Response, info: &crate::storage::KeyInfo, oid: Option<Oid>) {
    let headers = response.headers_mut();
    if let Some(size) = info.size {
        headers.insert(header::CONTENT_LENGTH, HeaderValue::from(size));
    }
    if let Some(value) = info
        .last_modified
        .and_then(|time| HeaderValue::from_str(&httpdate::fmt_http_date(time)).ok())
    {
        headers.insert(header::LAST_MODIFIED, value);
    }
    // The storage's version, else one made of the time to the nanosecond and the size:
    // an overwrite within the same second still changes it.
    let version = info.version.clone().or_else(|| {
        info.last_modified.map(|time| {
            let ns = crate::fsutil::since_epoch(time).as_nanos();
            format!("\"{ns:x}-{:x}\"", info.size.unwrap_or(0))
        })
    });
    if let Some(value) = version.and_then(|v| HeaderValue::from_str(&v).ok()) {
        headers.insert(header::ETAG, value);
    }
    if let Some(value) = oid.and_then(|oid| HeaderValue::from_str(&oid.to_string()).ok()) {
        headers.insert("x-czc-oid", value);
    }
}

/// `HEAD /keys/<key>`: size, time, version; the oid when the storage keeps one, or when
/// asked for with `X-Czc-Want-Oid` (a folder then hashes the file).
async fn head_key(
    State(state): State<Arc<AppState>>,
    UrlPath(key): UrlPath<String>,
    headers: HeaderMap,
) -> Response {
    if let Err(response) = authorize(&state, &headers, false) {
        return response;
    }
    let key = match url_key(&key) {
        Ok(key) => key,
        Err(response) => return response,
    };
    let want_oid = headers.contains_key("x-czc-want-oid");
    let reader = state.reader();
    let described = blocking(move || -> Result<_, StorageError> {
        let Some(info) = reader.describe_key(&key)? else {
            return Ok(None);
        };
        let oid = match (info.hash, want_oid) {
            (Some(hash), _) => Some(hash),
            (None, true) => reader.hash(&key)?,
            (None, false) => None,
        };
        Ok(Some((info, oid)))
    })
    .await;
    match described {
        Ok(Ok(Some((info, oid)))) => {
            let mut response = StatusCode::OK.into_response();
            key_headers(&mut response, &info, oid);
            response
        }
        Ok(Ok(None)) => StatusCode::NOT_FOUND.into_response(),
        Ok(Err(err)) => storage_error(err),
        Err(response) => response,
    }
}

/// `GET /keys/<key>`: the key's bytes, never more than its size.
async fn get_key(
    State(state): State<Arc<AppState>>,
    UrlPath(key): UrlPath<String>,
    headers: HeaderMap,
) -> Response {
    if let Err(response) = authorize(&state, &headers, false) {
        return response;
    }
    let key = match url_key(&key) {
        Ok(key) => key,
        Err(response) => return response,
    };
    let info = {
        let reader = state.reader();
        let key = key.clone();
        match blocking(move || reader.describe_key(&key)).await {
            Ok(Ok(Some(info))) => info,
            Ok(Ok(None)) => return status(StatusCode::NOT_FOUND, "no such key"),
            Ok(Err(err)) => return storage_error(err),
            Err(response) => return response,
        }
    };
    let served = match local_copy_of(&state, key).await {
        Ok(Some(found)) => found,
        Ok(None) => return status(StatusCode::NOT_FOUND, "no such key"),
        Err(response) => return response,
    };
    ranged_body(served, &headers, |response, _| {
        key_headers(response, &info, None)
    })
    .await
}

/// `PUT /keys/<key>`: stores the body (checked against `X-Czc-Oid` when sent) under the
/// key; `If-None-Match: *` only if absent, `If-Match: <oid>` only if it holds that oid
/// (412 otherwise, nothing written).
async fn put_key(
    State(state): State<Arc<AppState>>,
    UrlPath(key): UrlPath<String>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let (body, declared) = match small_body_first(&headers, body).await {
        Ok(read) => read,
        Err(response) => return response,
    };
    if let Err(response) = authorize(&state, &headers, true) {
        return response;
    }
    let key = match url_key(&key) {
        Ok(key) => key,
        Err(response) => return response,
    };
    let Some(writer) = state.backend.writer() else {
        return status(StatusCode::METHOD_NOT_ALLOWED, "this remote is read-only");
    };
    if declared.is_some_and(|len| len > state.max_upload) {
        return status(
            StatusCode::PAYLOAD_TOO_LARGE,
            format!("uploads are limited to {} bytes", state.max_upload),
        );
    }
    let (declared_oid, if_match) = match (
        header_oid(&headers, "X-Czc-Oid"),
        header_oid(&headers, "If-Match"),
    ) {
        (Ok(declared_oid), Ok(if_match)) => (declared_oid, if_match),
        (Err(response), _) | (_, Err(response)) => return response,
    };
    let if_none_match = headers.contains_key(header::IF_NONE_MATCH);
    let (temp, actual) = match receive_upload(&state, body, declared).await {
        Ok(received) => received,
        Err(response) => return response,
    };
    if declared_oid.is_some_and(|declared| declared != actual) {
        return status(
            StatusCode::UNPROCESSABLE_ENTITY,
            format!("the bytes hash to {actual}, not the X-Czc-Oid sent; nothing stored"),
        );
    }
    let written = blocking(move || match (if_none_match, if_match) {
        (true, _) => writer.put_if_absent(&key, &temp),
        (false, Some(expected)) => writer.put_if_hash_matches(&key, &temp, &expected),
        (false, None) => writer.put(&key, &temp),
    })
    .await;
    match written {
        Ok(Ok(())) => StatusCode::CREATED.into_response(),
        Ok(Err(StorageError::LostRace { found, .. })) => {
            status(StatusCode::PRECONDITION_FAILED, found)
        }
        Ok(Err(err)) => storage_error(err),
        Err(response) => response,
    }
}

/// `DELETE /keys/<key>`: as an object's delete.
async fn delete_key(
    State(state): State<Arc<AppState>>,
    UrlPath(key): UrlPath<String>,
    headers: HeaderMap,
) -> Response {
    if let Err(response) = authorize(&state, &headers, true) {
        return response;
    }
    match url_key(&key) {
        Ok(key) => delete_stored(&state, key, &headers).await,
        Err(response) => response,
    }
}

async fn delete_object(
    State(state): State<Arc<AppState>>,
    UrlPath((shard, rest)): UrlPath<(String, String)>,
    headers: HeaderMap,
) -> Response {
    let oid = match authorized_oid(&state, &headers, true, &shard, &rest) {
        Ok(oid) => oid,
        Err(response) => return response,
    };
    delete_stored(&state, oid.object_key(), &headers).await
}

/// An `If-Match`, `X-Czc-Oid`… header holding an oid, if sent; 400 if it holds another thing.
fn header_oid(headers: &HeaderMap, name: &str) -> Result<Option<Oid>, Response> {
    match headers
        .get(name)
        .map(|value| value.to_str().map(str::parse::<Oid>))
    {
        None => Ok(None),
        Some(Ok(Ok(oid))) => Ok(Some(oid)),
        Some(_) => Err(status(
            StatusCode::BAD_REQUEST,
            format!("{name} is not an oid"),
        )),
    }
}

/// Deletes `key` (an object's or any other) for an authorized request: 204, 404; with
/// `If-Match: <oid>` 412 unless it holds that oid.
async fn delete_stored(state: &AppState, key: String, headers: &HeaderMap) -> Response {
    let Some(writer) = state.backend.writer() else {
        return status(StatusCode::METHOD_NOT_ALLOWED, "this remote is read-only");
    };
    let expected = match header_oid(headers, "If-Match") {
        Ok(expected) => expected,
        Err(response) => return response,
    };
    let removed = blocking(move || match expected {
        Some(expected) => writer
            .delete_if_hash_matches(&key, &expected)
            .map(|()| true),
        None => writer.delete(&key),
    })
    .await;
    match removed {
        Ok(Ok(true)) => StatusCode::NO_CONTENT.into_response(),
        Ok(Ok(false)) => StatusCode::NOT_FOUND.into_response(),
        Ok(Err(StorageError::LostRace { found, .. })) => {
            status(StatusCode::PRECONDITION_FAILED, found)
        }
        Ok(Err(err)) => storage_error(err),
        Err(response) => response,
    }
}

#[derive(serde::Deserialize)]
struct BatchRequest {
    oids: Vec<String>,
}

#[derive(serde::Serialize, serde::Deserialize)]
struct BatchResponse {
    present: Vec<bool>,
}

/// The most oids one batch request may ask about.
pub const MAX_BATCH: usize = 10_000;

async fn batch(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> Response {
    if let Err(response) = authorize(&state, &headers, false) {
        return response;
    }
    let request: BatchRequest = match serde_json::from_slice(&body) {
        Ok(request) => request,
        Err(err) => return status(StatusCode::BAD_REQUEST, format!("bad batch request: {err}")),
    };
    if request.oids.len() > MAX_BATCH {
        return status(
            StatusCode::PAYLOAD_TOO_LARGE,
            format!("at most {MAX_BATCH} oids per batch"),
        );
    }
    let mut keys = Vec::with_capacity(request.oids.len());
    for text in &request.oids {
        match text.parse::<Oid>() {
            Ok(oid) => keys.push(oid.object_key()),
            Err(err) => return status(StatusCode::BAD_REQUEST, err.to_string()),
        }
    }
    let reader = state.reader();
    match blocking(move || reader.exists_many(&keys)).await {
        Ok(Ok(present)) => axum::Json(BatchResponse { present }).into_response(),
        Ok(Err(err)) => storage_error(err),
        Err(response) => response,
    }
}

#[derive(serde::Deserialize)]
struct ListQuery {
    #[serde(default)]
    prefix: String,
}

async fn list(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    Query(query): Query<ListQuery>,
) -> Response {
    if let Err(response) = authorize(&state, &headers, false) {
        return response;
    }
    let prefix = &query.prefix;
    let inside = !prefix.starts_with('/')
        && !prefix.contains('\\')
        && prefix.split('/').all(|part| part != ".." && part != ".");
    if !inside {
        return status(
            StatusCode::BAD_REQUEST,
            "a prefix is relative, without . or .. (such as objects/ab or runs/)",
        );
    }
    let reader = state.backend.reader();
    match blocking(move || reader.list(&query.prefix)).await {
        Ok(Ok(keys)) => axum::Json(
            keys.into_iter()
                .filter(|key| !key.split('/').any(|part| part.starts_with(".czc-")))
                .collect::<Vec<_>>(),
        )
        .into_response(),
        Ok(Err(err)) => storage_error(err),
        Err(response) => response,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges() {
        assert_eq!(parse_range("bytes=0-9", 100), Some((0, 9)));
        assert_eq!(parse_range("bytes=90-", 100), Some((90, 99)));
        assert_eq!(parse_range("bytes=-10", 100), Some((90, 99)));
        assert_eq!(parse_range("bytes=50-500", 100), Some((50, 99)));
        assert_eq!(parse_range("bytes=100-", 100), None);
        assert_eq!(parse_range("bytes=5-1", 100), None);
        assert_eq!(parse_range("bytes=0-1,3-4", 100), None);
        assert_eq!(parse_range("lines=1-2", 100), None);
    }
}
