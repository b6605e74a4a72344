//! The client of `czc serve`: an HTTP remote that holds objects under the remote layout
//! and any other key under `/keys/`. Objects are immutable on such a server (an upload
//! must hash to its oid), so their conditional writes reduce to "is it there yet"; keys
//! are written under `If-None-Match`/`If-Match: <oid>`, checked by the server.

use std::fs::File;
use std::io::{self, ErrorKind};
use std::path::Path;
use std::time::{Duration, SystemTime};

use reqwest::blocking::{Client, RequestBuilder, Response};
use reqwest::StatusCode;

use super::{check_key, ReadStorage, StorageError, Timeouts, WriteStorage};
use crate::oid::Oid;

/// Batches of existence checks are split at this size (the server takes up to 10,000).
const BATCH: usize = 1000;

/// An upload may take the read timeout plus its size at this rate: a server that takes
/// the connection and never reads the body times out instead of hanging.
const MIN_UPLOAD_BYTES_PER_SEC: u64 = 256 << 10;

/// An HTTP remote served by `czc serve`.
///
/// ```no_run
/// use czcache::storage::{HttpStorage, ReadStorage};
/// let remote = HttpStorage::new("http://127.0.0.1:8080", Some("secret".into()))?;
/// let there = remote.exists("objects/ab/cdef")?;
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Debug, Clone)]
pub struct HttpStorage {
    base: String,
    token: Option<String>,
    client: Client,
    timeouts: Timeouts,
    token_var: String,
}

impl HttpStorage {
    /// `base` is `http(s)://host:port[/prefix]`; `token` is sent as a bearer token.
    pub fn new(base: &str, token: Option<String>) -> Result<HttpStorage, StorageError> {
        HttpStorage::with_timeouts(base, token, Timeouts::default())
    }

    /// [`HttpStorage::new`] with other connect and read timeouts.
    pub fn with_timeouts(
        base: &str,
        token: Option<String>,
        timeouts: Timeouts,
    ) -> Result<HttpStorage, StorageError> {
        let client = Client::builder()
            .connect_timeout(timeouts.connect)
            // Each request sets its own: the read timeout, or more for an upload.
            .timeout(None)
            .tcp_nodelay(true)
            .build()
            .map_err(|source| StorageError::Client {
                url: base.into(),
                source,
            })?;
        Ok(HttpStorage {
            base: base.trim_end_matches('/').to_string(),
            token,
            client,
            timeouts,
            token_var: "CZC_REMOTE_<NAME>_TOKEN".into(),
        })
    }

    /// Names the variable the token comes from in errors (`CZC_REMOTE_LAB_TOKEN`).
    pub fn set_token_var(&mut self, var: &str) {
        self.token_var = var.into();
    }

    fn url(&self, path: &str) -> String {
        format!("{}/{path}", self.base)
    }

    /// The URL path of a key: `objects/<2 hex>/<62 hex>` as it is (an object, checked
    /// by the server against its oid), any other key under `keys/`, percent-encoded.
    fn route(&self, key: &str) -> Result<Route, StorageError> {
        check_key(self, key)?;
        if let Some(rest) = key.strip_prefix("objects/") {
            let hex: String = rest.split('/').collect();
            if rest.len() != 65 || Oid::from_hex(&hex).is_err() {
                return Err(StorageError::BadKey {
                    storage: self.describe(),
                    key: key.into(),
                    reason: "objects/ holds objects only (objects/<2 hex>/<62 hex>)",
                });
            }
            return Ok(Route::Object(key.to_string()));
        }
        let encoded: Vec<String> = key.split('/').map(percent_encode).collect();
        Ok(Route::Key(format!("keys/{}", encoded.join("/"))))
    }

    fn with_auth(&self, request: RequestBuilder) -> RequestBuilder {
        match &self.token {
            Some(token) => request.bearer_auth(token),
            None => request,
        }
    }

    fn io(&self, key: &str, kind: ErrorKind, message: String) -> StorageError {
        StorageError::Io {
            storage: self.describe(),
            key: key.into(),
            source: io::Error::new(kind, message),
        }
    }

    /// Sends a request without a body: it must be answered within the read timeout
    /// (which then also bounds each read of the answer's body).
    fn send(&self, key: &str, request: RequestBuilder) -> Result<Response, StorageError> {
        self.send_within(key, request, self.timeouts.read)
    }

    fn send_within(
        &self,
        key: &str,
        request: RequestBuilder,
        timeout: Duration,
    ) -> Result<Response, StorageError> {
        self.with_auth(request)
            .timeout(timeout)
            .send()
            .map_err(|err| {
                if err.is_timeout() {
                    return self.timed_out(key, timeout);
                }
                let kind = if err.is_connect() {
                    ErrorKind::ConnectionRefused
                } else {
                    ErrorKind::ConnectionReset
                };
                self.io(key, kind, format!("cannot reach {}: {err}", self.base))
            })
    }

    fn timed_out(&self, key: &str, timeout: Duration) -> StorageError {
        self.io(
            key,
            ErrorKind::TimedOut,
            format!(
                "no answer from {} within {}s (raise the remote's timeout, or CZC_TIMEOUT)",
                self.base,
                timeout.as_secs_f64()
            ),
        )
    }

    /// Turns an unexpected status into an error that says what to do.
    fn unexpected(&self, key: &str, response: Response) -> StorageError {
        let status = response.status();
        let body = response.text().unwrap_or_default();
        let body = body.trim();
        match status {
            StatusCode::UNAUTHORIZED => self.io(
                key,
                ErrorKind::PermissionDenied,
                format!(
                    "unauthorized ({body}); set {} to a token the server accepts",
                    self.token_var
                ),
            ),
            _ => self.io(key, ErrorKind::Other, format!("HTTP {status}: {body}")),
        }
    }

    fn head(&self, key: &str, want_oid: bool) -> Result<Option<Response>, StorageError> {
        let route = self.route(key)?;
        let mut request = self.client.head(self.url(route.path()));
        if want_oid {
            request = request.header("x-czc-want-oid", "1");
        }
        let response = self.send(key, request)?;
        match response.status() {
            StatusCode::OK => Ok(Some(response)),
            StatusCode::NOT_FOUND => Ok(None),
            _ => Err(self.unexpected(key, response)),
        }
    }

    fn upload(
        &self,
        key: &str,
        src: &Path,
        condition: Option<(&str, String)>,
    ) -> Result<(), StorageError> {
        let local = |e: io::Error| self.io(key, e.kind(), format!("{}: {e}", src.display()));
        let file = File::open(src).map_err(local)?;
        let len = file.metadata().map(|m| m.len()).unwrap_or(0);
        let body = reqwest::blocking::Body::sized(file, len);
        // The server checks the bytes it receives against this, as it does an object's.
        let oid = match self.route(key)? {
            Route::Key(_) => Some(crate::oid::hash_file(src).map_err(local)?.0),
            _ => None,
        };
        self.send_upload(key, body, len, oid, condition)
    }

    /// Sends one PUT of `body` (`len` bytes; `oid` its hash, for keys) under `key`.
    fn send_upload(
        &self,
        key: &str,
        body: reqwest::blocking::Body,
        len: u64,
        oid: Option<Oid>,
        condition: Option<(&str, String)>,
    ) -> Result<(), StorageError> {
        let route = self.route(key)?;
        let mut request = self
            .client
            .put(self.url(route.path()))
            .header(reqwest::header::CONTENT_LENGTH, len)
            .body(body);
        if let Some(oid) = oid {
            request = request.header("x-czc-oid", oid.to_string());
        }
        let only_if_absent = matches!(condition, Some(("if-none-match", _)));
        if let Some((name, value)) = condition {
            request = request.header(name, value);
        }
        let timeout =
            self.timeouts.read + Duration::from_secs(len.div_ceil(MIN_UPLOAD_BYTES_PER_SEC));
        let response = match self.send_within(key, request, timeout) {
            Ok(response) => response,
            // A server refusing early (412) may close the connection while the body is
            // still on its way; if the object is there now, the condition simply failed.
            Err(err) if only_if_absent && self.exists(key).unwrap_or(false) => {
                return Err(StorageError::LostRace {
                    storage: self.describe(),
                    key: key.into(),
                    found: format!("it already exists ({err})"),
                })
            }
            Err(err) => return Err(err),
        };
        match response.status() {
            StatusCode::OK | StatusCode::CREATED => Ok(()),
            StatusCode::PRECONDITION_FAILED => Err(StorageError::LostRace {
                storage: self.describe(),
                key: key.into(),
                found: response.text().unwrap_or_default().trim().to_string(),
            }),
            _ => Err(self.unexpected(key, response)),
        }
    }

    /// Copies a response body to `out`, refusing more than `max` bytes.
    fn copy_body(
        &self,
        key: &str,
        response: Response,
        out: &mut dyn io::Write,
        max: u64,
    ) -> Result<u64, StorageError> {
        if response.content_length().is_some_and(|length| length > max) {
            return Err(super::too_long(self, key, max));
        }
        let broken = |err: io::Error| {
            if err.kind() == ErrorKind::TimedOut || is_timeout(&err) {
                return self.io(
                    key,
                    ErrorKind::TimedOut,
                    format!(
                        "download stalled: no bytes from {} for {}s (raise the remote's timeout, or CZC_TIMEOUT)",
                        self.base,
                        self.timeouts.read.as_secs_f64()
                    ),
                );
            }
            self.io(
                key,
                ErrorKind::ConnectionReset,
                format!("download broken off: {err}"),
            )
        };
        // Never more than `max` (+1 to notice): an endless body stops here.
        let mut body = io::Read::take(response, max.saturating_add(1));
        let copied = io::copy(&mut body, out).map_err(broken)?;
        if copied > max {
            return Err(super::too_long(self, key, max));
        }
        Ok(copied)
    }

    fn remove(&self, key: &str, expected: Option<&Oid>) -> Result<bool, StorageError> {
        let route = self.route(key)?;
        let mut request = self.client.delete(self.url(route.path()));
        if let Some(expected) = expected {
            request = request.header(reqwest::header::IF_MATCH, expected.to_string());
        }
        let response = self.send(key, request)?;
        match response.status() {
            StatusCode::NO_CONTENT | StatusCode::OK => Ok(true),
            StatusCode::NOT_FOUND => Ok(false),
            StatusCode::PRECONDITION_FAILED => Err(StorageError::LostRace {
                storage: self.describe(),
                key: key.into(),
                found: response.text().unwrap_or_default().trim().to_string(),
            }),
            _ => Err(self.unexpected(key, response)),
        }
    }
}

impl ReadStorage for HttpStorage {
    fn describe(&self) -> String {
        format!("http remote {}", self.base)
    }

    fn copy_into(&self, key: &str, out: &mut File, max: u64) -> Result<Option<u64>, StorageError> {
        let route = self.route(key)?;
        let response = self.send(key, self.client.get(self.url(route.path())))?;
        match response.status() {
            StatusCode::OK => {}
            StatusCode::NOT_FOUND => return Ok(None),
            _ => return Err(self.unexpected(key, response)),
        }
        self.copy_body(key, response, out, max).map(Some)
    }

    fn copy_range_into(
        &self,
        key: &str,
        range: std::ops::Range<u64>,
        out: &mut dyn io::Write,
    ) -> Result<Option<u64>, StorageError> {
        let want = range.end.saturating_sub(range.start);
        if want == 0 {
            return Ok(self.exists(key)?.then_some(0));
        }
        let route = self.route(key)?;
        let request = self.client.get(self.url(route.path())).header(
            reqwest::header::RANGE,
            format!("bytes={}-{}", range.start, range.end - 1),
        );
        let response = self.send(key, request)?;
        match response.status() {
            StatusCode::PARTIAL_CONTENT => {}
            StatusCode::NOT_FOUND => return Ok(None),
            // The key is shorter than the range starts.
            StatusCode::RANGE_NOT_SATISFIABLE => {
                return Err(super::short_range(self, key, want, 0))
            }
            // A server that ignores Range would send the whole key: refused, not read.
            _ => return Err(self.unexpected(key, response)),
        }
        let copied = self.copy_body(key, response, out, want)?;
        if copied != want {
            return Err(super::short_range(self, key, want, copied));
        }
        Ok(Some(copied))
    }

    fn describe_key(&self, key: &str) -> Result<Option<super::KeyInfo>, StorageError> {
        Ok(self.head(key, false)?.map(|response| {
            let header = |name: &str| {
                response
                    .headers()
                    .get(name)
                    .and_then(|value| value.to_str().ok())
                    .map(str::to_owned)
            };
            super::KeyInfo {
                size: header("content-length").and_then(|v| v.parse().ok()),
                hash: header("x-czc-oid").and_then(|v| v.parse().ok()),
                last_modified: header("last-modified")
                    .and_then(|v| httpdate::parse_http_date(&v).ok()),
                version: header("etag"),
            }
        }))
    }

    fn hash(&self, key: &str) -> Result<Option<Oid>, StorageError> {
        Ok(self.head(key, true)?.and_then(|response| {
            response
                .headers()
                .get("x-czc-oid")
                .and_then(|value| value.to_str().ok())
                .and_then(|value| value.parse().ok())
        }))
    }

    fn last_modified(&self, key: &str) -> Result<Option<SystemTime>, StorageError> {
        Ok(self.head(key, false)?.map(|response| {
            response
                .headers()
                .get(reqwest::header::LAST_MODIFIED)
                .and_then(|value| value.to_str().ok())
                .and_then(|value| httpdate::parse_http_date(value).ok())
                .unwrap_or(SystemTime::UNIX_EPOCH)
        }))
    }

    fn exists(&self, key: &str) -> Result<bool, StorageError> {
        Ok(self.head(key, false)?.is_some())
    }

    fn size(&self, key: &str) -> Result<Option<u64>, StorageError> {
        Ok(self.head(key, false)?.map(|response| {
            response
                .headers()
                .get(reqwest::header::CONTENT_LENGTH)
                .and_then(|value| value.to_str().ok())
                .and_then(|value| value.parse().ok())
                .unwrap_or(0)
        }))
    }

    fn list(&self, prefix: &str) -> Result<Vec<String>, StorageError> {
        let response = self.send(
            prefix,
            self.client
                .get(self.url("list"))
                .query(&[("prefix", prefix)]),
        )?;
        if response.status() != StatusCode::OK {
            return Err(self.unexpected(prefix, response));
        }
        response
            .json()
            .map_err(|err| self.io(prefix, ErrorKind::InvalidData, err.to_string()))
    }

    fn exists_many(&self, keys: &[String]) -> Result<Vec<bool>, StorageError> {
        if !keys.iter().all(|key| key.starts_with("objects/")) {
            return keys.iter().map(|key| self.exists(key)).collect();
        }
        let mut present = Vec::with_capacity(keys.len());
        for chunk in keys.chunks(BATCH) {
            let mut oids = Vec::with_capacity(chunk.len());
            for key in chunk {
                self.route(key)?;
                let hex: String = key["objects/".len()..].split('/').collect();
                oids.push(format!("blake3:{hex}"));
            }
            let response = self.send(
                "batch",
                self.client
                    .post(self.url("batch"))
                    .json(&serde_json::json!({ "oids": oids })),
            )?;
            if response.status() != StatusCode::OK {
                return Err(self.unexpected("batch", response));
            }
            #[derive(serde::Deserialize)]
            struct Answer {
                present: Vec<bool>,
            }
            let answer: Answer = response
                .json()
                .map_err(|err| self.io("batch", ErrorKind::InvalidData, err.to_string()))?;
            if answer.present.len() != chunk.len() {
                return Err(self.io(
                    "batch",
                    ErrorKind::InvalidData,
                    "batch answer of the wrong length".into(),
                ));
            }
            present.extend(answer.present);
        }
        Ok(present)
    }
}

impl WriteStorage for HttpStorage {
    fn put(&self, key: &str, src: &Path) -> Result<(), StorageError> {
        self.upload(key, src, None)
    }

    fn put_bytes(&self, key: &str, bytes: bytes::Bytes) -> Result<(), StorageError> {
        let oid = match self.route(key)? {
            Route::Key(_) => Some(Oid::of_bytes(&bytes)),
            _ => None,
        };
        let len = bytes.len() as u64;
        self.send_upload(key, reqwest::blocking::Body::from(bytes), len, oid, None)
    }

    fn delete(&self, key: &str) -> Result<bool, StorageError> {
        self.remove(key, None)
    }

    fn put_if_absent(&self, key: &str, src: &Path) -> Result<(), StorageError> {
        // Ask first: no bytes travel for an object the server already has.
        if self.exists(key)? {
            return Err(StorageError::LostRace {
                storage: self.describe(),
                key: key.into(),
                found: "it already exists".into(),
            });
        }
        self.upload(key, src, Some(("if-none-match", "*".into())))
    }

    fn put_if_hash_matches(
        &self,
        key: &str,
        src: &Path,
        expected: &Oid,
    ) -> Result<(), StorageError> {
        self.upload(key, src, Some(("if-match", expected.to_string())))
    }

    fn put_if_newer(&self, key: &str, src: &Path) -> Result<bool, StorageError> {
        if let Route::Object(_) = self.route(key)? {
            // An object never changes: if the server has it, it is as new as it gets.
            if self.exists(key)? {
                return Ok(false);
            }
            return match self.put_if_absent(key, src) {
                Ok(()) => Ok(true),
                Err(StorageError::LostRace { .. }) => Ok(false),
                Err(err) => Err(err),
            };
        }
        let modified = std::fs::metadata(src)
            .and_then(|meta| meta.modified())
            .map_err(|e| self.io(key, e.kind(), format!("{}: {e}", src.display())))?;
        // Compare, then write only over the copy compared with (compare-and-swap): a
        // writer in between makes this look again.
        let mut last_race = None;
        for _ in 0..3 {
            let written = match self.describe_key(key)? {
                None => self.put_if_absent(key, src),
                Some(info) if info.last_modified.is_some_and(|stored| stored >= modified) => {
                    return Ok(false)
                }
                Some(_) => match self.hash(key)? {
                    Some(current) => self.put_if_hash_matches(key, src, &current),
                    None => continue,
                },
            };
            match written {
                Ok(()) => return Ok(true),
                Err(race @ StorageError::LostRace { .. }) => last_race = Some(race),
                Err(err) => return Err(err),
            }
        }
        Err(last_race.unwrap_or_else(|| StorageError::LostRace {
            storage: self.describe(),
            key: key.into(),
            found: "it kept changing".into(),
        }))
    }

    fn delete_if_hash_matches(&self, key: &str, expected: &Oid) -> Result<(), StorageError> {
        match self.remove(key, Some(expected))? {
            true => Ok(()),
            false => Err(StorageError::LostRace {
                storage: self.describe(),
                key: key.into(),
                found: "it no longer exists".into(),
            }),
        }
    }
}

/// Where a key lives on the server.
enum Route {
    Object(String),
    Key(String),
}

impl Route {
    fn path(&self) -> &str {
        match self {
            Route::Object(path) | Route::Key(path) => path,
        }
    }
}

/// A path component with everything but unreserved characters percent-encoded.
fn percent_encode(component: &str) -> String {
    let mut out = String::with_capacity(component.len());
    for byte in component.bytes() {
        if byte.is_ascii_alphanumeric() || b"-._~".contains(&byte) {
            out.push(byte as char);
        } else {
            out.push_str(&format!("%{byte:02X}"));
        }
    }
    out
}

/// Whether an I/O error from reading a response body is reqwest's timeout.
fn is_timeout(err: &io::Error) -> bool {
    let mut source: Option<&(dyn std::error::Error + 'static)> = err.get_ref().map(|e| e as _);
    while let Some(current) = source {
        if current
            .downcast_ref::<reqwest::Error>()
            .is_some_and(reqwest::Error::is_timeout)
        {
            return true;
        }
        source = current.source();
    }
    false
}
