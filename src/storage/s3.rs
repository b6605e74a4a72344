//! An S3 bucket (AWS or any S3-compatible service) through the `object_store` crate.
//!
//! The blocking [`ReadStorage`]/[`WriteStorage`] calls run the crate's async requests on
//! a small runtime owned by the storage, so callers on any thread (rayon workers, a
//! `spawn_blocking` task of `czc serve`) can use it. Every upload carries its BLAKE3 in
//! the object's metadata (`x-amz-meta-blake3`), so [`ReadStorage::hash`] is one HEAD.
//! Conditional writes are the service's own `If-None-Match: *` / `If-Match: <etag>`;
//! objects larger than [`MULTIPART_THRESHOLD`] go up in parallel parts, and for those the
//! condition is checked just before the upload (S3 has no conditional multipart
//! completion that `object_store` exposes), which is harmless for content-addressed
//! objects, whose racing writers upload the same bytes.

use std::collections::{HashMap, HashSet, VecDeque};
use std::fs::File;
use std::future::Future;
use std::io::{self, ErrorKind, Read};
use std::path::Path;
use std::sync::{mpsc, Arc, Mutex, OnceLock};
use std::time::{Duration, SystemTime};

use futures_util::StreamExt;
use object_store::aws::{AmazonS3, AmazonS3Builder, AmazonS3ConfigKey};
use object_store::path::Path as ObjectPath;
use object_store::signer::{SignedUrlOptions, Signer};
use object_store::{
    Attribute, AttributeValue, Attributes, BackoffConfig, ClientOptions, GetOptions, ObjectStore,
    ObjectStoreExt, PutMode, PutMultipartOptions, PutOptions, PutPayload, RetryConfig,
    UpdateVersion,
};

use super::{check_key, check_object_bytes, ReadStorage, StorageError, WriteStorage};
use crate::oid::Oid;
use crate::report::Progress;

/// Objects above this size are uploaded in parts of this size.
pub const MULTIPART_THRESHOLD: u64 = 8 << 20;
/// Parts of one upload in flight at once (memory: this many parts).
const PARTS_IN_FLIGHT: usize = 4;
/// Listing requests in flight at once (existence checks of many objects).
const LISTINGS_IN_FLIGHT: usize = 16;
/// The metadata key holding an object's BLAKE3.
const HASH_METADATA: &str = "blake3";

/// An S3 bucket, or a prefix inside one.
///
/// ```no_run
/// use czcache::storage::{ReadStorage, S3Storage, StorageOptions};
/// // Credentials come from the usual AWS_* variables; `anonymous` reads public buckets.
/// let options = StorageOptions {
///     endpoint: Some("http://127.0.0.1:9000".into()),
///     ..StorageOptions::default()
/// };
/// let bucket = S3Storage::new("s3://team-data/czc", &options)?;
/// let there = bucket.exists("objects/ab/cdef")?;
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub struct S3Storage {
    url: String,
    prefix: String,
    store: Arc<AmazonS3>,
    anonymous: bool,
    runtime: Option<tokio::runtime::Runtime>,
    /// Set once the bucket is known to exist (checked at the first miss, because S3
    /// answers a missing bucket with the same 404 as a missing key).
    bucket_checked: OnceLock<()>,
    /// For the requests object_store has no call for (conditional delete, copy in
    /// place, listing multipart uploads), with the same timeouts.
    http: reqwest::Client,
    /// The bucket's URL and region, to sign those requests.
    bucket: String,
    bucket_url: String,
    region: String,
    /// Where credentials come from when no `AWS_*` variable gives them (the instance
    /// metadata service), to explain its failures as missing credentials.
    metadata_endpoint: Option<String>,
    /// When each object key seen by the last shard listings was written, so a push
    /// that found its objects there refreshes only the old ones without a HEAD each.
    listed_times: Mutex<HashMap<String, SystemTime>>,
}

impl std::fmt::Debug for S3Storage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("S3Storage").field("url", &self.url).finish()
    }
}

impl Drop for S3Storage {
    fn drop(&mut self) {
        // Dropping a runtime inside another (czc serve) panics; let it wind down alone.
        if let Some(runtime) = self.runtime.take() {
            runtime.shutdown_background();
        }
    }
}

/// Metadata from one HEAD.
struct Head {
    e_tag: Option<String>,
    version: Option<String>,
    last_modified: SystemTime,
    size: u64,
    blake3: Option<Oid>,
}

impl S3Storage {
    /// `url` is `s3://bucket[/prefix]`. `options.endpoint` selects an S3-compatible
    /// service (path-style requests; `http://` allowed), `options.region` the region
    /// (default `us-east-1`), `options.anonymous` unsigned requests for public buckets.
    /// Other settings come from the `AWS_*` environment variables.
    pub fn new(url: &str, options: &super::StorageOptions) -> Result<S3Storage, StorageError> {
        let bad = |reason: String| StorageError::BadUrl {
            url: url.into(),
            reason,
        };
        let rest = url
            .strip_prefix("s3://")
            .ok_or_else(|| bad("an S3 url starts with s3://".into()))?;
        let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
        if bucket.is_empty() {
            return Err(bad("no bucket name (s3://bucket/prefix)".into()));
        }
        let prefix = prefix.trim_matches('/').to_string();
        if !prefix.is_empty() {
            check_prefix(&prefix).map_err(|reason| bad(reason.into()))?;
        }
        let aws_env: Vec<(String, String)> = match &options.aws_env {
            Some(vars) => vars.clone().into_iter().collect(),
            None => std::env::vars().collect(),
        };
        let has_var = |name: &str| aws_env.iter().any(|(key, _)| key == name);
        let metadata_endpoint = (!options.anonymous
            && !has_var("AWS_ACCESS_KEY_ID")
            && !has_var("AWS_WEB_IDENTITY_TOKEN_FILE")
            && !has_var("AWS_CONTAINER_CREDENTIALS_RELATIVE_URI")
            && !has_var("AWS_CONTAINER_CREDENTIALS_FULL_URI"))
        .then(|| {
            aws_env
                .iter()
                .find(|(key, _)| key == "AWS_METADATA_ENDPOINT")
                .map(|(_, value)| value.trim_start_matches("http://").to_string())
                .unwrap_or_else(|| "169.254.169.254".into())
        });
        let mut builder = AmazonS3Builder::new();
        let mut has_region = false;
        for (name, value) in aws_env {
            if !name.starts_with("AWS_") {
                continue;
            }
            if let Ok(key) = name.to_ascii_lowercase().parse::<AmazonS3ConfigKey>() {
                has_region |= matches!(
                    key,
                    AmazonS3ConfigKey::Region | AmazonS3ConfigKey::DefaultRegion
                );
                builder = builder.with_config(key, value);
            }
        }
        builder = builder
            .with_bucket_name(bucket)
            .with_retry(RetryConfig {
                backoff: BackoffConfig {
                    init_backoff: Duration::from_millis(100),
                    max_backoff: Duration::from_secs(2),
                    base: 3.0,
                },
                max_retries: 3,
                retry_timeout: Duration::from_secs(30),
            })
            .with_client_options(
                ClientOptions::new()
                    .with_timeout_disabled()
                    .with_connect_timeout(options.timeouts.connect)
                    .with_read_timeout(options.timeouts.read)
                    .with_allow_http(true),
            );
        if let Some(endpoint) = &options.endpoint {
            super::check_endpoint(endpoint)?;
            builder = builder
                .with_endpoint(endpoint)
                .with_virtual_hosted_style_request(false);
        }
        if let Some(region) = &options.region {
            builder = builder.with_region(region);
        } else if !has_region {
            builder = builder.with_region("us-east-1");
        }
        if options.anonymous {
            builder = builder.with_skip_signature(true);
        }
        let region = builder
            .get_config_value(&AmazonS3ConfigKey::Region)
            .unwrap_or_else(|| "us-east-1".into());
        let virtual_hosted = builder
            .get_config_value(&AmazonS3ConfigKey::VirtualHostedStyleRequest)
            .is_some_and(|value| value.eq_ignore_ascii_case("true"));
        let bucket_url = match builder.get_config_value(&AmazonS3ConfigKey::Endpoint) {
            Some(endpoint) if virtual_hosted => endpoint.trim_end_matches('/').to_string(),
            Some(endpoint) => format!("{}/{bucket}", endpoint.trim_end_matches('/')),
            None if virtual_hosted => format!("https://{bucket}.s3.{region}.amazonaws.com"),
            None => format!("https://s3.{region}.amazonaws.com/{bucket}"),
        };
        let http = reqwest::Client::builder()
            .connect_timeout(options.timeouts.connect)
            .read_timeout(options.timeouts.read)
            .build()
            .map_err(|err| bad(format!("cannot start the S3 client: {err}")))?;
        let store = builder.build().map_err(|err| bad(err.to_string()))?;
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name("czc-s3")
            .enable_all()
            .build()
            .map_err(|err| bad(format!("cannot start the S3 client: {err}")))?;
        Ok(S3Storage {
            url: url.trim_end_matches('/').to_string(),
            prefix,
            store: Arc::new(store),
            anonymous: options.anonymous,
            runtime: Some(runtime),
            bucket_checked: OnceLock::new(),
            listed_times: Mutex::new(HashMap::new()),
            http,
            bucket: bucket.to_string(),
            bucket_url,
            region,
            metadata_endpoint,
        })
    }

    /// Runs a future on the storage's runtime and waits for it, from any thread.
    fn run<T: Send + 'static>(&self, future: impl Future<Output = T> + Send + 'static) -> T {
        let (sender, receiver) = mpsc::sync_channel(1);
        self.runtime().spawn(async move {
            let _ = sender.send(future.await);
        });
        receiver
            .recv()
            .expect("the S3 runtime finished a request without answering")
    }

    fn runtime(&self) -> &tokio::runtime::Runtime {
        self.runtime.as_ref().expect("runtime lives until drop")
    }

    fn location(&self, key: &str) -> Result<ObjectPath, StorageError> {
        check_key(self, key)?;
        let full = if self.prefix.is_empty() {
            key.to_string()
        } else {
            format!("{}/{key}", self.prefix)
        };
        ObjectPath::parse(&full).map_err(|_| StorageError::BadKey {
            storage: self.describe(),
            key: key.into(),
            reason: "not a valid S3 object name",
        })
    }

    fn error(&self, key: &str, err: object_store::Error) -> StorageError {
        use object_store::Error as E;
        match err {
            E::AlreadyExists { .. } | E::Precondition { .. } | E::NotModified { .. } => {
                StorageError::LostRace {
                    storage: self.describe(),
                    key: key.into(),
                    found: "the object changed or appeared".into(),
                }
            }
            E::PermissionDenied { .. } | E::Unauthenticated { .. } => StorageError::Io {
                storage: self.describe(),
                key: key.into(),
                source: io::Error::new(
                    ErrorKind::PermissionDenied,
                    format!(
                        "{}; check AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY",
                        one_line(&err)
                    ),
                ),
            },
            other => {
                let message = one_line(&other);
                // With no AWS_* credentials object_store asks the EC2 instance metadata
                // service; off EC2 that fails with an address nobody recognizes.
                let from_metadata = self
                    .metadata_endpoint
                    .as_ref()
                    .is_some_and(|endpoint| message.contains(endpoint.as_str()));
                // A listing's refusal reaches us as a generic error with the XML inside.
                let refused = [
                    "SignatureDoesNotMatch",
                    "InvalidAccessKeyId",
                    "403 Forbidden",
                ]
                .iter()
                .any(|code| message.contains(code));
                if refused && !from_metadata {
                    return self.io(
                        key,
                        ErrorKind::PermissionDenied,
                        format!("{message}; check AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY"),
                    );
                }
                if from_metadata {
                    return self.io(
                        key,
                        ErrorKind::PermissionDenied,
                        "no S3 credentials: set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY \
                         (no instance metadata service answered), or anonymous = true for \
                         a public bucket"
                            .into(),
                    );
                }
                self.io(key, transport_kind(&other), message)
            }
        }
    }

    fn io(&self, key: &str, kind: ErrorKind, message: String) -> StorageError {
        StorageError::Io {
            storage: self.describe(),
            key: key.into(),
            source: io::Error::new(kind, message),
        }
    }

    /// A 404 from S3 may mean "no such bucket": make sure, once, before calling it a miss.
    fn confirm_miss(&self, key: &str) -> Result<(), StorageError> {
        if self.bucket_checked.get().is_some() {
            return Ok(());
        }
        let store = self.store.clone();
        let prefix = (!self.prefix.is_empty()).then(|| ObjectPath::from(self.prefix.as_str()));
        let listed = self.run(async move {
            let mut listing = store.list(prefix.as_ref());
            listing.next().await.transpose().map(|_| ())
        });
        match listed {
            Ok(()) => {
                let _ = self.bucket_checked.set(());
                Ok(())
            }
            Err(err) if is_missing_bucket(&err) => {
                Err(self.io(key, ErrorKind::NotFound, "the bucket does not exist".into()))
            }
            // Listing may be forbidden on a public bucket; the key's 404 stands.
            Err(
                object_store::Error::PermissionDenied { .. }
                | object_store::Error::Unauthenticated { .. },
            ) => Ok(()),
            Err(err) => Err(self.error(key, err)),
        }
    }

    fn head(&self, key: &str) -> Result<Option<Head>, StorageError> {
        let location = self.location(key)?;
        let store = self.store.clone();
        let result = self.run(async move {
            let options = GetOptions {
                head: true,
                ..GetOptions::default()
            };
            store.get_opts(&location, options).await
        });
        match result {
            Ok(got) => {
                let blake3 = match got
                    .attributes
                    .get(&Attribute::Metadata(HASH_METADATA.into()))
                {
                    Some(value) => Oid::from_hex(value.as_ref()).ok(),
                    None => None,
                };
                Ok(Some(Head {
                    e_tag: got.meta.e_tag.clone(),
                    version: got.meta.version.clone(),
                    last_modified: got.meta.last_modified.into(),
                    size: got.meta.size,
                    blake3,
                }))
            }
            Err(object_store::Error::NotFound { .. }) => {
                self.confirm_miss(key)?;
                Ok(None)
            }
            Err(err) => Err(self.error(key, err)),
        }
    }

    /// The BLAKE3 of what a HEAD found, downloading the object only when it was
    /// uploaded without czc's metadata.
    fn hash_of(&self, key: &str, head: &Head) -> Result<Oid, StorageError> {
        if let Some(oid) = head.blake3 {
            return Ok(oid);
        }
        let scratch = tempfile::NamedTempFile::new()
            .map_err(|err| self.io(key, err.kind(), err.to_string()))?;
        self.copy_to(key, scratch.path())?;
        crate::oid::hash_file(scratch.path())
            .map(|(oid, _)| oid)
            .map_err(|err| self.io(key, err.kind(), err.to_string()))
    }

    /// Uploads `src` with `mode`; small files in one request, big ones in parts.
    /// `progress` hears of each part of a multipart upload as it lands.
    fn upload(
        &self,
        key: &str,
        src: &Path,
        mode: PutMode,
        progress: &(dyn Fn(u64) + Sync),
    ) -> Result<(), StorageError> {
        let location = self.location(key)?;
        let local = |err: io::Error| self.io(key, err.kind(), format!("{}: {err}", src.display()));
        let size = std::fs::metadata(src).map_err(local)?.len();
        // A small file is read once and hashed in memory; a big one hashed first, since
        // its hash goes into the metadata the multipart upload starts with.
        if size <= MULTIPART_THRESHOLD {
            // A small file is read once and hashed in memory.
            let (bytes, oid) =
                read_small(key, src).map_err(|e| self.io(key, e.kind(), e.to_string()))?;
            let store = self.store.clone();
            let options = put_options(&oid, mode);
            return self
                .run(async move {
                    store
                        .put_opts(&location, PutPayload::from(bytes), options)
                        .await
                })
                .map(|_| ())
                .map_err(|err| self.error(key, err));
        }
        // A big one is hashed first, since its hash goes into the metadata the multipart
        // upload starts with.
        let oid = crate::oid::hash_file(src).map_err(local)?.0;
        check_object_bytes(key, &oid, src).map_err(|e| self.io(key, e.kind(), e.to_string()))?;
        let mut attributes = Attributes::new();
        attributes.insert(
            Attribute::Metadata(HASH_METADATA.into()),
            AttributeValue::from(oid.hex()),
        );
        // Parts cannot carry the condition, and this client cannot make the final
        // CompleteMultipartUpload conditional: for a key anyone may rewrite, two racing
        // writers would both "win". Only objects (same key, same bytes) may go up so.
        let conditional = !matches!(mode, PutMode::Overwrite);
        if conditional && super::object_key_oid(key).is_none() {
            return Err(self.io(
                key,
                ErrorKind::Unsupported,
                format!(
                    "a conditional write of a key over {} MiB cannot be made safe on S3 here (its multipart upload cannot be conditional); nothing was written",
                    MULTIPART_THRESHOLD >> 20
                ),
            ));
        }
        // Objects: check just before (a racing writer sends the same bytes).
        match &mode {
            PutMode::Create if self.head(key)?.is_some() => {
                return Err(self.lost_race(key, "it exists"))
            }
            PutMode::Update(version) => match self.head(key)? {
                Some(head) if head.e_tag == version.e_tag => {}
                _ => return Err(self.lost_race(key, "it changed")),
            },
            _ => {}
        }
        self.upload_parts(key, location, src, attributes, progress)
    }

    fn upload_parts(
        &self,
        key: &str,
        location: ObjectPath,
        src: &Path,
        attributes: Attributes,
        progress: &(dyn Fn(u64) + Sync),
    ) -> Result<(), StorageError> {
        let local = |err: io::Error| self.io(key, err.kind(), format!("{}: {err}", src.display()));
        let mut file = File::open(src).map_err(local)?;
        let store = self.store.clone();
        let options = PutMultipartOptions {
            attributes,
            ..PutMultipartOptions::default()
        };
        let mut upload = self
            .run(async move { store.put_multipart_opts(&location, options).await })
            .map_err(|err| self.error(key, err))?;
        let mut in_flight = VecDeque::new();
        let outcome = (|| -> Result<(), StorageError> {
            loop {
                let mut part = Vec::with_capacity(MULTIPART_THRESHOLD as usize);
                (&mut file)
                    .take(MULTIPART_THRESHOLD)
                    .read_to_end(&mut part)
                    .map_err(local)?;
                if part.is_empty() {
                    break;
                }
                if in_flight.len() == PARTS_IN_FLIGHT {
                    let (size, oldest): (u64, tokio::task::JoinHandle<_>) =
                        in_flight.pop_front().expect("full");
                    self.wait_part(key, oldest)?;
                    progress(size);
                }
                let size = part.len() as u64;
                let sending = upload.put_part(PutPayload::from(part));
                in_flight.push_back((size, self.runtime().spawn(sending)));
            }
            while let Some((size, part)) = in_flight.pop_front() {
                self.wait_part(key, part)?;
                progress(size);
            }
            Ok(())
        })();
        match outcome {
            // A complete that fails is aborted too: no parts are left billed and hidden.
            Ok(()) => self
                .run(async move {
                    let completed = upload.complete().await;
                    if completed.is_err() {
                        let _ = upload.abort().await;
                    }
                    completed
                })
                .map(|_| ())
                .map_err(|err| self.error(key, err)),
            Err(err) => {
                let _ = self.run(async move { upload.abort().await });
                Err(err)
            }
        }
    }

    fn wait_part(
        &self,
        key: &str,
        part: tokio::task::JoinHandle<object_store::Result<()>>,
    ) -> Result<(), StorageError> {
        match self.run(part) {
            Ok(Ok(())) => Ok(()),
            Ok(Err(err)) => Err(self.error(key, err)),
            Err(err) => Err(self.io(key, ErrorKind::Other, format!("upload task failed: {err}"))),
        }
    }

    fn lost_race(&self, key: &str, found: &str) -> StorageError {
        StorageError::LostRace {
            storage: self.describe(),
            key: key.into(),
            found: found.into(),
        }
    }

    /// Deletes, with `If-Match: <etag>` when given: object_store's delete has no
    /// condition, so this signs a DELETE itself.
    fn remove(&self, key: &str, if_match: Option<&str>) -> Result<(), StorageError> {
        let location = self.location(key)?;
        let store = self.store.clone();
        let Some(e_tag) = if_match else {
            return self
                .run(async move { store.delete(&location).await })
                .map_err(|err| self.error(key, err));
        };
        if self.anonymous {
            // Unsigned: no conditional form to send; the caller already compared.
            return self
                .run(async move { store.delete(&location).await })
                .map_err(|err| self.error(key, err));
        }
        let http = self.http.clone();
        let e_tag = e_tag.to_string();
        let sent = self.run(async move {
            let url = store
                .signed_url_opts(
                    reqwest::Method::DELETE,
                    &location,
                    Duration::from_secs(300),
                    &SignedUrlOptions::default(),
                )
                .await
                .map_err(|err| one_line(&err))?;
            let response = http
                .delete(url.as_str())
                .header(reqwest::header::IF_MATCH, e_tag)
                .send()
                .await
                .map_err(|err| one_line(&err))?;
            let status = response.status();
            let body = response.text().await.unwrap_or_default();
            Ok::<_, String>((status, body))
        });
        match sent {
            Ok((status, _)) if status.is_success() => Ok(()),
            Ok((status, _))
                if status == reqwest::StatusCode::PRECONDITION_FAILED
                    || status == reqwest::StatusCode::NOT_FOUND
                    || status == reqwest::StatusCode::CONFLICT =>
            {
                Err(self.lost_race(key, "it changed"))
            }
            Ok((status, body)) => Err(self.io(
                key,
                ErrorKind::Other,
                format!("DELETE answered {status}: {}", body.trim()),
            )),
            Err(message) => Err(self.io(key, ErrorKind::Other, message)),
        }
    }
}

/// A connection reset or cut mid-answer is worth one more try (object_store retries it
/// itself only for idempotent requests, and a conditional PUT is not one).
fn transport_kind(err: &object_store::Error) -> ErrorKind {
    let mut source: Option<&(dyn std::error::Error + 'static)> = Some(err);
    while let Some(cause) = source {
        if let Some(http) = cause.downcast_ref::<object_store::client::HttpError>() {
            if http.kind() == object_store::client::HttpErrorKind::Interrupted {
                return ErrorKind::ConnectionReset;
            }
        }
        source = cause.source();
    }
    ErrorKind::Other
}

/// A listing answered 404: only a missing bucket does that.
fn is_missing_bucket(err: &object_store::Error) -> bool {
    matches!(err, object_store::Error::NotFound { .. })
        || one_line(err).contains("NoSuchBucket")
        || one_line(err).contains("404 Not Found")
}

/// A prefix inside a bucket follows the key rules.
fn check_prefix(prefix: &str) -> Result<(), &'static str> {
    if prefix
        .split('/')
        .any(|part| part.is_empty() || part == "." || part == "..")
    {
        return Err("the prefix has an empty, '.' or '..' component");
    }
    Ok(())
}

/// object_store errors span lines (XML bodies) and nest causes; messages here are one
/// line with every cause.
fn one_line(err: &dyn std::error::Error) -> String {
    let mut text = err.to_string();
    let mut source = err.source();
    while let Some(cause) = source {
        let cause_text = cause.to_string();
        if !text.contains(&cause_text) {
            text = format!("{text}: {cause_text}");
        }
        source = cause.source();
    }
    text.split_whitespace().collect::<Vec<_>>().join(" ")
}

impl S3Storage {
    /// Streams a key (or the `range` of it) into `out`, at most `max` bytes.
    fn stream_into(
        &self,
        key: &str,
        range: Option<std::ops::Range<u64>>,
        out: &mut dyn io::Write,
        max: u64,
    ) -> Result<Option<u64>, StorageError> {
        let location = self.location(key)?;
        let store = self.store.clone();
        let options = object_store::GetOptions {
            range: range.map(object_store::GetRange::Bounded),
            ..Default::default()
        };
        // Chunks cross from the runtime to this thread through a bounded channel, so
        // memory stays flat however big the object is.
        let (sender, receiver) = mpsc::sync_channel::<Result<Vec<u8>, object_store::Error>>(16);
        let (first_sender, first) = mpsc::sync_channel::<object_store::Result<()>>(1);
        self.runtime().spawn(async move {
            let got = match store.get_opts(&location, options).await {
                Ok(got) => {
                    let _ = first_sender.send(Ok(()));
                    got
                }
                Err(err) => {
                    let _ = first_sender.send(Err(err));
                    return;
                }
            };
            let mut stream = got.into_stream();
            while let Some(chunk) = stream.next().await {
                let chunk = chunk.map(|bytes| bytes.to_vec());
                let failed = chunk.is_err();
                if sender.send(chunk).is_err() || failed {
                    return;
                }
            }
        });
        match first.recv() {
            Ok(Ok(())) => {}
            Ok(Err(object_store::Error::NotFound { .. })) => {
                self.confirm_miss(key)?;
                return Ok(None);
            }
            Ok(Err(err)) => return Err(self.error(key, err)),
            Err(_) => return Err(self.io(key, ErrorKind::Other, "download task failed".into())),
        }
        let local = |err: io::Error| self.io(key, err.kind(), format!("writing the copy: {err}"));
        let mut copied = 0u64;
        // Dropping the receiver on the way out ends the download task.
        for chunk in receiver {
            let chunk = chunk.map_err(|err| {
                self.io(
                    key,
                    ErrorKind::ConnectionReset,
                    format!("download broken off: {}", one_line(&err)),
                )
            })?;
            if copied + chunk.len() as u64 > max {
                return Err(super::too_long(self, key, max));
            }
            io::Write::write_all(out, &chunk).map_err(local)?;
            copied += chunk.len() as u64;
        }
        Ok(Some(copied))
    }
}

impl ReadStorage for S3Storage {
    fn describe(&self) -> String {
        format!("s3 remote {}", self.url)
    }

    fn copy_into(&self, key: &str, out: &mut File, max: u64) -> Result<Option<u64>, StorageError> {
        self.stream_into(key, None, out, max)
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
        let copied = self.stream_into(key, Some(range), out, want)?;
        match copied {
            Some(n) if n != want => Err(super::short_range(self, key, want, n)),
            other => Ok(other),
        }
    }
    fn describe_key(&self, key: &str) -> Result<Option<super::KeyInfo>, StorageError> {
        Ok(self.head(key)?.map(|head| super::KeyInfo {
            size: Some(head.size),
            hash: head.blake3,
            last_modified: Some(head.last_modified),
            version: head.e_tag.or(head.version),
        }))
    }

    fn hash(&self, key: &str) -> Result<Option<Oid>, StorageError> {
        match self.head(key)? {
            Some(head) => self.hash_of(key, &head).map(Some),
            None => Ok(None),
        }
    }

    fn last_modified(&self, key: &str) -> Result<Option<SystemTime>, StorageError> {
        Ok(self.head(key)?.map(|head| head.last_modified))
    }

    fn exists(&self, key: &str) -> Result<bool, StorageError> {
        Ok(self.head(key)?.is_some())
    }

    fn size(&self, key: &str) -> Result<Option<u64>, StorageError> {
        Ok(self.head(key)?.map(|head| head.size))
    }

    fn exists_many(&self, keys: &[String]) -> Result<Vec<bool>, StorageError> {
        // Object keys: list just the shard folders they fall in, many at once, instead
        // of paging through the whole bucket one request after another.
        let shard_of = |key: &str| -> Option<String> {
            let rest = key.strip_prefix("objects/")?;
            let (shard, name) = rest.split_once('/')?;
            (shard.len() == 2 && !name.is_empty()).then(|| format!("objects/{shard}/"))
        };
        if keys.len() <= 32 || keys.iter().any(|key| shard_of(key).is_none()) {
            return keys.iter().map(|key| self.exists(key)).collect();
        }
        for key in keys {
            check_key(self, key)?;
        }
        let mut folders: Vec<String> = keys.iter().filter_map(|key| shard_of(key)).collect();
        folders.sort_unstable();
        folders.dedup();
        let found = self.list_folders(folders)?;
        Ok(keys.iter().map(|key| found.contains(key)).collect())
    }

    fn list(&self, prefix: &str) -> Result<Vec<String>, StorageError> {
        // Listing takes a folder-like prefix; filter to the exact string prefix after.
        let folder = prefix.rsplit_once('/').map(|(dir, _)| dir).unwrap_or("");
        if !folder.is_empty() {
            check_key(self, folder)?;
        }
        let base = match (self.prefix.is_empty(), folder.is_empty()) {
            (true, true) => None,
            (true, false) => Some(folder.to_string()),
            (false, true) => Some(self.prefix.clone()),
            (false, false) => Some(format!("{}/{folder}", self.prefix)),
        };
        let store = self.store.clone();
        let listed = self.run(async move {
            let base = base.map(|b| ObjectPath::from(b.as_str()));
            let mut keys = Vec::new();
            let mut listing = store.list(base.as_ref());
            while let Some(meta) = listing.next().await {
                let meta = meta?;
                keys.push((
                    meta.location.to_string(),
                    SystemTime::from(meta.last_modified),
                ));
            }
            Ok::<_, object_store::Error>(keys)
        });
        let keys = match listed {
            Ok(keys) => keys,
            Err(err) if is_missing_bucket(&err) => {
                return Err(self.io(
                    prefix,
                    ErrorKind::NotFound,
                    "the bucket does not exist".into(),
                ))
            }
            Err(err) => return Err(self.error(prefix, err)),
        };
        let strip = if self.prefix.is_empty() {
            String::new()
        } else {
            format!("{}/", self.prefix)
        };
        let mut times = self.listed_times.lock().unwrap();
        let mut keys: Vec<String> = keys
            .into_iter()
            .filter_map(|(key, time)| {
                let key = key.strip_prefix(&strip)?.to_string();
                times.insert(key.clone(), time);
                Some(key)
            })
            .filter(|k| k.starts_with(prefix))
            .collect();
        keys.sort();
        Ok(keys)
    }

    fn listed_time(&self, key: &str) -> Option<SystemTime> {
        self.listed_times.lock().unwrap().get(key).copied()
    }
}

/// A small file's bytes and oid, checked against the object key it goes to.
/// Errors name the file.
fn read_small(key: &str, src: &Path) -> io::Result<(Vec<u8>, Oid)> {
    let bytes = std::fs::read(src)
        .map_err(|err| io::Error::new(err.kind(), format!("{}: {err}", src.display())))?;
    let oid = Oid::of_bytes(&bytes);
    check_object_bytes(key, &oid, src)?;
    Ok((bytes, oid))
}

/// A single-request upload carrying the content's BLAKE3 in its metadata.
fn put_options(oid: &Oid, mode: PutMode) -> PutOptions {
    let mut attributes = Attributes::new();
    attributes.insert(
        Attribute::Metadata(HASH_METADATA.into()),
        AttributeValue::from(oid.hex()),
    );
    PutOptions {
        mode,
        attributes,
        ..PutOptions::default()
    }
}

/// Why one upload of a batch failed.
enum UploadFailure {
    BadKey(StorageError),
    Local(io::Error),
    Remote(object_store::Error),
}

/// Objects a push finds already there are rewritten in place (to restart the grace
/// period `gc --remote` counts from their Last-Modified) only when older than this:
/// a copy in place costs a request, and a younger object is safe anyway.
const REFRESH_AFTER: Duration = Duration::from_secs(3600);
/// Answers to the requests czc signs itself are small XML documents.
const SIGNED_ANSWER_MAX: usize = 1 << 20;
/// At most this many pages of a multipart-upload listing are read per prefix.
const UPLOAD_LIST_PAGES: usize = 100;

/// One page of ListMultipartUploads.
#[derive(serde::Deserialize, Default)]
#[serde(rename_all = "PascalCase", default)]
struct UploadListing {
    is_truncated: bool,
    next_key_marker: Option<String>,
    next_upload_id_marker: Option<String>,
    #[serde(rename = "Upload")]
    uploads: Vec<ListedUpload>,
}

#[derive(serde::Deserialize)]
#[serde(rename_all = "PascalCase")]
struct ListedUpload {
    key: String,
    upload_id: String,
    initiated: String,
}

/// A request object_store has no call for, signed with the store's own credentials.
struct SignedRequest {
    method: reqwest::Method,
    url: reqwest::Url,
    headers: Vec<(&'static str, String)>,
}

impl S3Storage {
    /// Sends `request` and returns the status and (bounded) body of the answer.
    fn send_signed(&self, request: SignedRequest) -> Result<(reqwest::StatusCode, String), String> {
        let store = self.store.clone();
        let http = self.http.clone();
        let region = self.region.clone();
        let anonymous = self.anonymous;
        self.run(async move {
            let mut signed = http::Request::builder()
                .method(request.method.clone())
                .uri(request.url.as_str());
            for (name, value) in &request.headers {
                signed = signed.header(*name, value);
            }
            let mut signed = signed
                .body(object_store::client::HttpRequestBody::empty())
                .map_err(|err| err.to_string())?;
            if !anonymous {
                let credential = store
                    .credentials()
                    .get_credential()
                    .await
                    .map_err(|err| one_line(&err))?;
                object_store::aws::AwsAuthorizer::new(&credential, "s3", &region)
                    .try_authorize(&mut signed, None)
                    .map_err(|err| one_line(&err))?;
            }
            let mut outgoing = http.request(request.method, request.url);
            for (name, value) in signed.headers() {
                outgoing = outgoing.header(name, value);
            }
            let mut response = outgoing.send().await.map_err(|err| one_line(&err))?;
            let status = response.status();
            let mut body = Vec::new();
            while let Some(chunk) = response.chunk().await.map_err(|err| one_line(&err))? {
                if body.len() + chunk.len() > SIGNED_ANSWER_MAX {
                    return Err(format!("the answer is over {SIGNED_ANSWER_MAX} bytes"));
                }
                body.extend_from_slice(&chunk);
            }
            Ok((status, String::from_utf8_lossy(&body).into_owned()))
        })
    }

    /// The bucket URL with `path` (a full key, or empty) and no query.
    fn bucket_url(&self, path: &str) -> Result<reqwest::Url, String> {
        let mut url = reqwest::Url::parse(&self.bucket_url).map_err(|err| err.to_string())?;
        if !path.is_empty() {
            url.path_segments_mut()
                .map_err(|()| "the endpoint cannot hold a path".to_string())?
                .pop_if_empty()
                .extend(path.split('/'));
        }
        Ok(url)
    }

    /// The multipart uploads under `prefix` (a full key prefix), oldest first or not.
    fn list_uploads(&self, prefix: &str) -> Result<Vec<ListedUpload>, String> {
        let mut found = Vec::new();
        let mut markers: Option<(String, String)> = None;
        for _ in 0..UPLOAD_LIST_PAGES {
            let mut url = self.bucket_url("")?;
            {
                let mut query = url.query_pairs_mut();
                query
                    .append_key_only("uploads")
                    .append_pair("prefix", prefix);
                if let Some((key, upload)) = &markers {
                    query
                        .append_pair("key-marker", key)
                        .append_pair("upload-id-marker", upload);
                }
            }
            let (status, body) = self.send_signed(SignedRequest {
                method: reqwest::Method::GET,
                url,
                headers: Vec::new(),
            })?;
            if !status.is_success() {
                return Err(format!(
                    "listing multipart uploads answered {status}: {}",
                    body.split_whitespace().collect::<Vec<_>>().join(" ")
                ));
            }
            let page: UploadListing = quick_xml::de::from_str(&body)
                .map_err(|err| format!("a multipart upload listing that is not valid: {err}"))?;
            found.extend(page.uploads);
            match (
                page.is_truncated,
                page.next_key_marker,
                page.next_upload_id_marker,
            ) {
                (true, Some(key), Some(upload)) => markers = Some((key, upload)),
                _ => break,
            }
        }
        Ok(found)
    }

    /// Rewrites `key` onto itself (same bytes, same metadata) so its Last-Modified is now.
    fn copy_in_place(&self, key: &str, oid: &Oid) -> Result<(), StorageError> {
        let full = self.location(key)?.to_string();
        let bucket_path = self
            .bucket_url(&full)
            .map_err(|message| self.io(key, ErrorKind::Other, message))?;
        // `bucket/key`, each segment percent-encoded.
        let mut source = reqwest::Url::parse("http://source/").expect("a valid URL");
        source
            .path_segments_mut()
            .expect("an http URL has a path")
            .pop_if_empty()
            .push(&self.bucket)
            .extend(full.split('/'));
        let source = source.path().trim_start_matches('/').to_string();
        let (status, body) = self
            .send_signed(SignedRequest {
                method: reqwest::Method::PUT,
                url: bucket_path,
                headers: vec![
                    ("x-amz-copy-source", source),
                    ("x-amz-metadata-directive", "REPLACE".into()),
                    ("x-amz-meta-blake3", oid.hex()),
                ],
            })
            .map_err(|message| self.io(key, ErrorKind::Other, message))?;
        // A copy can fail after its 200 with an <Error> body.
        if status.is_success() && !body.contains("<Error>") {
            Ok(())
        } else {
            Err(self.io(
                key,
                ErrorKind::Other,
                format!(
                    "copy in place answered {status}: {}",
                    body.split_whitespace().collect::<Vec<_>>().join(" ")
                ),
            ))
        }
    }

    /// Uploads small files as tasks on the storage's runtime, `in_flight` at a time:
    /// no thread per request and no handoff per request, which for thousands of small
    /// objects costs more CPU than the requests themselves.
    fn put_small_batch(
        &self,
        items: &[(usize, String, std::path::PathBuf)],
        in_flight: usize,
        results: &mut [Option<Result<(), StorageError>>],
        progress: &dyn Progress,
    ) {
        let runtime = self.runtime();
        let mut uploads = futures_util::stream::iter(items.iter().enumerate().map(
            |(position, (_, key, src))| {
                let store = self.store.clone();
                let location = self.location(key);
                let (key, src) = (key.clone(), src.clone());
                let task = runtime.spawn(async move {
                    let location = location.map_err(UploadFailure::BadKey)?;
                    let (bytes, oid) = read_small(&key, &src).map_err(UploadFailure::Local)?;
                    let size = bytes.len() as u64;
                    store
                        .put_opts(
                            &location,
                            PutPayload::from(bytes),
                            put_options(&oid, PutMode::Create),
                        )
                        .await
                        .map(|_| size)
                        .map_err(UploadFailure::Remote)
                });
                async move { (position, task.await) }
            },
        ))
        .buffer_unordered(in_flight.max(1));
        runtime.block_on(async {
            while let Some((position, outcome)) = uploads.next().await {
                let (index, key, src) = &items[position];
                let key = key.as_str();
                if !matches!(outcome, Ok(Ok(_))) {
                    // Failures count as done too, as in every other backend's batch.
                    progress.bytes_done(std::fs::metadata(src).map(|m| m.len()).unwrap_or(0));
                }
                progress.files_done(1);
                let result = match outcome {
                    Ok(Ok(size)) => {
                        progress.bytes_done(size);
                        Ok(())
                    }
                    Ok(Err(UploadFailure::BadKey(err))) => Err(err),
                    Ok(Err(UploadFailure::Local(err))) => {
                        Err(self.io(key, err.kind(), err.to_string()))
                    }
                    Ok(Err(UploadFailure::Remote(err))) => Err(self.error(key, err)),
                    Err(join) => Err(self.io(key, ErrorKind::Other, join.to_string())),
                };
                results[*index] = Some(result);
            }
        });
        // A conditional PUT cut by a reset is retried here (a retry that finds the
        // object there is a lost race: the remote has it).
        for (index, key, src) in items {
            let cut = matches!(
                &results[*index],
                Some(Err(StorageError::Io { source, .. })) if super::is_transient(source.kind())
            );
            if cut {
                results[*index] = Some(super::with_retries(|| {
                    self.upload(key, src, PutMode::Create, &|_| {})
                }));
            }
        }
    }

    /// Uploads items one request (or multipart upload) each, in parallel on the caller's
    /// pool, filling in their results.
    fn put_each(
        &self,
        items: Vec<(usize, String, std::path::PathBuf)>,
        mut results: Vec<Option<Result<(), StorageError>>>,
        progress: &dyn Progress,
    ) -> Vec<Result<(), StorageError>> {
        use rayon::prelude::*;
        // A big object goes up in parts with their own parallel uploads; an unreadable
        // file fails here with its own message.
        let answered: Vec<(usize, Result<(), StorageError>)> = items
            .par_iter()
            .map(|(index, key, src)| {
                // Parts count as they land (a 1 GiB upload moves the bar all along), never
                // past the file's size however often a retry resends them.
                let size = std::fs::metadata(src).map(|m| m.len()).unwrap_or(0);
                let counted = std::sync::atomic::AtomicU64::new(0);
                let report = |bytes: u64| {
                    let before = counted.fetch_add(bytes, std::sync::atomic::Ordering::Relaxed);
                    progress.bytes_done(bytes.min(size.saturating_sub(before)));
                };
                let result =
                    super::with_retries(|| self.upload(key, src, PutMode::Create, &report));
                let done = counted.load(std::sync::atomic::Ordering::Relaxed);
                progress.bytes_done(size.saturating_sub(done));
                progress.files_done(1);
                (*index, result)
            })
            .collect();
        for (index, result) in answered {
            results[index] = Some(result);
        }
        results
            .into_iter()
            .map(|result| result.expect("every upload answered"))
            .collect()
    }

    /// Lists the given folders (`objects/ab/`…) concurrently; returns every key found.
    fn list_folders(&self, folders: Vec<String>) -> Result<HashSet<String>, StorageError> {
        let store = self.store.clone();
        let base = self.prefix.clone();
        let listed = self.run(async move {
            let listings = futures_util::stream::iter(folders.into_iter().map(|folder| {
                let store = store.clone();
                let full = if base.is_empty() {
                    folder.clone()
                } else {
                    format!("{base}/{folder}")
                };
                async move {
                    let location = ObjectPath::from(full.as_str());
                    let mut keys = Vec::new();
                    let mut listing = store.list(Some(&location));
                    while let Some(meta) = listing.next().await {
                        let meta = meta?;
                        keys.push((
                            meta.location.to_string(),
                            SystemTime::from(meta.last_modified),
                        ));
                    }
                    Ok::<_, object_store::Error>(keys)
                }
            }))
            .buffer_unordered(LISTINGS_IN_FLIGHT)
            .collect::<Vec<_>>()
            .await;
            listings.into_iter().collect::<Result<Vec<_>, _>>()
        });
        let strip = if self.prefix.is_empty() {
            String::new()
        } else {
            format!("{}/", self.prefix)
        };
        match listed {
            Ok(pages) => {
                let mut times = self.listed_times.lock().unwrap();
                Ok(pages
                    .into_iter()
                    .flatten()
                    .filter_map(|(key, time)| {
                        let key = key.strip_prefix(&strip)?.to_string();
                        times.insert(key.clone(), time);
                        Some(key)
                    })
                    .collect())
            }
            Err(err) if is_missing_bucket(&err) => Err(self.io(
                "objects/",
                ErrorKind::NotFound,
                "the bucket does not exist".into(),
            )),
            Err(err) => Err(self.error("objects/", err)),
        }
    }
}

impl WriteStorage for S3Storage {
    fn refresh(&self, keys: &[String]) -> Result<(), StorageError> {
        use rayon::prelude::*;
        keys.par_iter().try_for_each(|key| {
            let Some(oid) = super::object_key_oid(key) else {
                return Ok(());
            };
            let listed = self.listed_times.lock().unwrap().get(key).copied();
            let written = match listed {
                Some(time) => Some(time),
                None => self.head(key)?.map(|head| head.last_modified),
            };
            match written {
                Some(time) if time.elapsed().is_ok_and(|age| age >= REFRESH_AFTER) => {
                    self.copy_in_place(key, &oid)
                }
                _ => Ok(()),
            }
        })
    }

    fn sweep_stale_uploads(
        &self,
        prefixes: &[String],
        older_than: Duration,
    ) -> Result<usize, StorageError> {
        use object_store::multipart::MultipartStore;
        if self.anonymous {
            return Ok(0);
        }
        let mut swept = 0;
        // One listing per top folder (`objects/`, `packs/`), not one per shard: each
        // listing is a round trip, and the uploads it finds are filtered by age anyway.
        let mut tops: Vec<String> = prefixes
            .iter()
            .map(|prefix| match prefix.split_once('/') {
                Some((top, _)) => format!("{top}/"),
                None => prefix.clone(),
            })
            .collect();
        tops.sort();
        tops.dedup();
        for prefix in &tops {
            let full = if self.prefix.is_empty() {
                prefix.clone()
            } else {
                format!("{}/{prefix}", self.prefix)
            };
            let uploads = self
                .list_uploads(&full)
                .map_err(|message| self.io(prefix, ErrorKind::Other, message))?;
            for upload in uploads {
                let stale = humantime::parse_rfc3339_weak(&upload.initiated)
                    .ok()
                    .and_then(|initiated| initiated.elapsed().ok())
                    .is_some_and(|age| age >= older_than);
                if !stale || !upload.key.starts_with(&full) {
                    continue;
                }
                let store = self.store.clone();
                let location = ObjectPath::from(upload.key.as_str());
                let id = upload.upload_id.clone();
                let aborted = self.run(async move { store.abort_multipart(&location, &id).await });
                if aborted.is_ok() {
                    swept += 1;
                }
            }
        }
        Ok(swept)
    }

    fn put(&self, key: &str, src: &Path) -> Result<(), StorageError> {
        self.upload(key, src, PutMode::Overwrite, &|_| {})
    }

    fn put_bytes(&self, key: &str, bytes: bytes::Bytes) -> Result<(), StorageError> {
        let location = self.location(key)?;
        let oid = Oid::of_bytes(&bytes);
        check_object_bytes(key, &oid, Path::new("the bytes to upload"))
            .map_err(|e| self.io(key, e.kind(), e.to_string()))?;
        let store = self.store.clone();
        let options = put_options(&oid, PutMode::Overwrite);
        self.run(async move {
            store
                .put_opts(&location, PutPayload::from_bytes(bytes), options)
                .await
        })
        .map(|_| ())
        .map_err(|err| self.error(key, err))
    }

    fn delete(&self, key: &str) -> Result<bool, StorageError> {
        // S3 answers a delete of a missing key with success: look first.
        if self.head(key)?.is_none() {
            return Ok(false);
        }
        self.remove(key, None)?;
        Ok(true)
    }

    fn put_if_absent(&self, key: &str, src: &Path) -> Result<(), StorageError> {
        self.upload(key, src, PutMode::Create, &|_| {})
    }

    fn put_many_if_absent(
        &self,
        items: &[(String, std::path::PathBuf)],
        progress: &dyn Progress,
    ) -> Vec<Result<(), StorageError>> {
        let mut results: Vec<Option<Result<(), StorageError>>> = Vec::new();
        results.resize_with(items.len(), || None);
        let (small, big): (Vec<_>, Vec<_>) = items
            .iter()
            .enumerate()
            .map(|(index, (key, src))| (index, key.clone(), src.clone()))
            .partition(|(_, _, src)| {
                std::fs::metadata(src).is_ok_and(|meta| meta.len() <= MULTIPART_THRESHOLD)
            });
        if tokio::runtime::Handle::try_current().is_ok() {
            // Called from inside some tokio runtime (an embedding program): blocking on
            // ours there could panic, so each upload goes through `put_if_absent`.
            let mut all = big;
            all.extend(small);
            return self.put_each(all, results, progress);
        }
        // As many requests in flight as the caller's pool has threads (`-j`).
        self.put_small_batch(&small, rayon::current_num_threads(), &mut results, progress);
        self.put_each(big, results, progress)
    }

    fn put_if_hash_matches(
        &self,
        key: &str,
        src: &Path,
        expected: &Oid,
    ) -> Result<(), StorageError> {
        let Some(head) = self.head(key)? else {
            return Err(self.lost_race(key, "it is gone"));
        };
        let found = self.hash_of(key, &head)?;
        if found != *expected {
            return Err(self.lost_race(key, &format!("it holds {}", found.hex())));
        }
        self.upload(key, src, if_unchanged(head), &|_| {})
    }

    fn put_if_newer(&self, key: &str, src: &Path) -> Result<bool, StorageError> {
        let modified = std::fs::metadata(src)
            .and_then(|meta| meta.modified())
            .map_err(|err| self.io(key, err.kind(), format!("{}: {err}", src.display())))?;
        let mode = match self.head(key)? {
            Some(head) if head.last_modified >= modified => return Ok(false),
            Some(head) => if_unchanged(head),
            None => PutMode::Create,
        };
        self.upload(key, src, mode, &|_| {})?;
        Ok(true)
    }

    fn delete_if_hash_matches(&self, key: &str, expected: &Oid) -> Result<(), StorageError> {
        let Some(head) = self.head(key)? else {
            return Err(self.lost_race(key, "it is gone"));
        };
        let found = self.hash_of(key, &head)?;
        if found != *expected {
            return Err(self.lost_race(key, &format!("it holds {}", found.hex())));
        }
        match head.e_tag.as_deref() {
            Some(e_tag) => self.remove(key, Some(e_tag)),
            // Without a version to hold the store to, "if it still holds that hash" would
            // be an unconditional delete: refuse, as a conditional put does.
            None => Err(self.io(
                key,
                ErrorKind::Unsupported,
                "the store reported no ETag, so the delete cannot be made conditional; nothing was deleted".into(),
            )),
        }
    }
}

fn if_unchanged(head: Head) -> PutMode {
    PutMode::Update(UpdateVersion {
        e_tag: head.e_tag,
        version: head.version,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_name_a_bucket_and_a_clean_prefix() {
        let options = super::super::StorageOptions::default();
        for bad in [
            "s3://",
            "s3:///prefix",
            "s3://bucket/a//b",
            "s3://bucket/../x",
        ] {
            assert!(
                matches!(
                    S3Storage::new(bad, &options),
                    Err(StorageError::BadUrl { .. })
                ),
                "{bad}"
            );
        }
        let storage = S3Storage::new("s3://bucket/team/czc/", &options).unwrap();
        assert_eq!(storage.prefix, "team/czc");
        assert_eq!(
            storage.location("objects/ab/cd").unwrap().as_ref(),
            "team/czc/objects/ab/cd"
        );
        assert!(matches!(
            storage.location("../x"),
            Err(StorageError::BadKey { .. })
        ));
    }
}
