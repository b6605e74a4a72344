//! A real S3-compatible server for the tests and the benchmark, in-process on a loopback
//! port: `s3s` speaks the protocol and checks SigV4 signatures, `s3s-fs` stores objects
//! in a folder. Around `s3s-fs` this adds what a real service does and it does not:
//! - conditional writes are atomic (one lock around check and write; `s3s-fs` alone
//!   lets several `If-Match` writers win a race);
//! - `DeleteObject` honours `If-Match`;
//! - a write to a missing bucket fails with `NoSuchBucket` instead of creating it;
//! - unsigned GET/HEAD/List are allowed on the public bucket only.

pub mod proxy;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use async_trait::async_trait;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto::Builder as ConnBuilder;
use s3s::access::{S3Access, S3AccessContext};
use s3s::auth::SimpleAuth;
use s3s::dto::*;
use s3s::service::S3ServiceBuilder;
use s3s::{s3_error, S3Request, S3Response, S3Result, S3};
use s3s_fs::FileSystem;
use tokio::io::{AsyncReadExt, AsyncSeekExt};
use tokio::sync::RwLock;
use tokio_util::io::ReaderStream;

pub const ACCESS_KEY: &str = "czc-test-access";
pub const SECRET_KEY: &str = "czc-test-secret-key";
/// Anyone may read this bucket without signing.
pub const PUBLIC_BUCKET: &str = "public";

/// A running server; stopped when dropped.
pub struct S3Server {
    pub endpoint: String,
    pub root: PathBuf,
    shutdown: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
    _dir: Option<tempfile::TempDir>,
    uploads: Uploads,
}

/// Multipart uploads begun and neither completed nor aborted (s3s-fs keeps no list).
pub type Uploads = std::sync::Arc<std::sync::Mutex<Vec<PendingUpload>>>;

#[derive(Clone, Debug)]
pub struct PendingUpload {
    pub bucket: String,
    pub key: String,
    pub upload_id: String,
    pub initiated: std::time::SystemTime,
}

impl S3Server {
    /// Starts a server over a new temp folder holding the given (empty) buckets.
    pub fn start(buckets: &[&str]) -> S3Server {
        let dir = tempfile::tempdir().expect("temp dir");
        let mut server = S3Server::start_in(dir.path(), buckets, 0);
        server._dir = Some(dir);
        server
    }

    /// Starts a server over `root` (buckets are its folders) on `port` (0: any free).
    pub fn start_in(root: &Path, buckets: &[&str], port: u16) -> S3Server {
        for bucket in buckets {
            std::fs::create_dir_all(root.join(bucket)).expect("bucket folder");
        }
        let root = root.canonicalize().expect("root exists");
        let (addr_sender, addr_receiver) = std::sync::mpsc::channel();
        let (shutdown, stop) = tokio::sync::oneshot::channel::<()>();
        let serve_root = root.clone();
        let uploads = Uploads::default();
        let serve_uploads = uploads.clone();
        let thread = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .enable_all()
                .build()
                .expect("runtime");
            runtime.block_on(serve(serve_root, serve_uploads, port, addr_sender, stop));
        });
        let addr: SocketAddr = addr_receiver.recv().expect("server started");
        S3Server {
            endpoint: format!("http://{addr}"),
            root,
            shutdown: Some(shutdown),
            thread: Some(thread),
            _dir: None,
            uploads,
        }
    }

    /// The multipart uploads begun and not yet completed or aborted.
    pub fn pending_uploads(&self) -> Vec<PendingUpload> {
        self.uploads.lock().unwrap().clone()
    }

    /// Makes every pending upload look begun `age` ago (what a killed run left).
    pub fn backdate_uploads(&self, age: std::time::Duration) {
        for upload in self.uploads.lock().unwrap().iter_mut() {
            upload.initiated -= age;
        }
    }

    /// The environment a signed client needs.
    pub fn credentials(&self) -> Vec<(&'static str, String)> {
        vec![
            ("AWS_ACCESS_KEY_ID", ACCESS_KEY.to_string()),
            ("AWS_SECRET_ACCESS_KEY", SECRET_KEY.to_string()),
            ("AWS_REGION", "us-east-1".to_string()),
        ]
    }
}

impl Drop for S3Server {
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
    root: PathBuf,
    uploads: Uploads,
    port: u16,
    addr: std::sync::mpsc::Sender<SocketAddr>,
    mut stop: tokio::sync::oneshot::Receiver<()>,
) {
    let fs = FileSystem::new(&root).expect("s3s-fs over the root");
    let mut builder = S3ServiceBuilder::new(Guarded {
        inner: fs,
        root,
        stripes: (0..STRIPES).map(|_| RwLock::new(())).collect(),
        uploads,
    });
    builder.set_auth(SimpleAuth::from_single(ACCESS_KEY, SECRET_KEY));
    builder.set_access(PublicRead);
    let service = builder.build();
    let listener = tokio::net::TcpListener::bind(("127.0.0.1", port))
        .await
        .expect("bind a loopback port");
    addr.send(listener.local_addr().expect("local addr"))
        .expect("starter waits");
    let http = ConnBuilder::new(TokioExecutor::new());
    let graceful = hyper_util::server::graceful::GracefulShutdown::new();
    loop {
        let socket = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((socket, _)) => socket,
                Err(_) => continue,
            },
            _ = &mut stop => break,
        };
        // Without this every small response waits ~40 ms on delayed ACKs.
        let _ = socket.set_nodelay(true);
        let connection = http.serve_connection(TokioIo::new(socket), service.clone());
        let connection = graceful.watch(connection.into_owned());
        tokio::spawn(async move {
            let _ = connection.await;
        });
    }
    tokio::select! {
        () = graceful.shutdown() => {},
        () = tokio::time::sleep(std::time::Duration::from_secs(5)) => {},
    }
}

/// Unsigned requests may read the public bucket, nothing else.
struct PublicRead;

#[async_trait]
impl S3Access for PublicRead {
    async fn check(&self, cx: &mut S3AccessContext<'_>) -> S3Result<()> {
        if cx.credentials().is_some() {
            return Ok(());
        }
        let bucket = match cx.s3_path() {
            s3s::path::S3Path::Bucket { bucket } => bucket.to_string(),
            s3s::path::S3Path::Object { bucket, .. } => bucket.to_string(),
            s3s::path::S3Path::Root => String::new(),
        };
        let reading = matches!(
            cx.s3_op().name(),
            "GetObject" | "HeadObject" | "ListObjects" | "ListObjectsV2" | "HeadBucket"
        );
        if bucket == PUBLIC_BUCKET && reading {
            Ok(())
        } else {
            Err(s3_error!(AccessDenied, "Signature is required"))
        }
    }
}

/// Locks per key, striped: writers of a key take its stripe exclusively, readers shared,
/// so a conditional check and its write are one step and a HEAD never sees an object's
/// bytes without its metadata, while different keys go on in parallel.
const STRIPES: usize = 64;

/// `s3s-fs` with atomic conditional writes and no implicit buckets.
struct Guarded {
    inner: FileSystem,
    root: PathBuf,
    stripes: Vec<RwLock<()>>,
    uploads: Uploads,
}

impl Guarded {
    fn stripe_of(bucket: &str, key: &str) -> usize {
        use std::hash::{Hash, Hasher};
        let mut hasher = std::collections::hash_map::DefaultHasher::new();
        (bucket, key).hash(&mut hasher);
        (hasher.finish() % STRIPES as u64) as usize
    }

    fn stripe(&self, bucket: &str, key: &str) -> &RwLock<()> {
        &self.stripes[Self::stripe_of(bucket, key)]
    }

    /// A key that names a folder of s3s-fs is no object (s3s-fs answers 500 there;
    /// S3 has no folders, so 404, which clients such as DVC's s3fs rely on).
    fn not_a_folder(&self, bucket: &str, key: &str) -> S3Result<()> {
        if !key.is_empty() && self.root.join(bucket).join(key).is_dir() {
            return Err(s3_error!(NoSuchKey));
        }
        Ok(())
    }

    fn forget_upload(&self, upload_id: &str) {
        self.uploads
            .lock()
            .unwrap()
            .retain(|upload| upload.upload_id != upload_id);
    }

    fn bucket_exists(&self, bucket: &str) -> S3Result<()> {
        if self.root.join(bucket).is_dir() {
            Ok(())
        } else {
            Err(s3_error!(NoSuchBucket))
        }
    }
}

/// Small single-part uploads without If-Match whose checksums (if any) came as headers,
/// not trailers: the common case for every client, which `put_simple` stores in the
/// files s3s-fs reads.
fn is_simple_put(input: &PutObjectInput) -> bool {
    let checksum_in_headers = match input.checksum_algorithm.as_ref().map(|a| a.as_str()) {
        None => true,
        Some(ChecksumAlgorithm::CRC32) => input.checksum_crc32.is_some(),
        Some(ChecksumAlgorithm::CRC32C) => input.checksum_crc32c.is_some(),
        Some(ChecksumAlgorithm::SHA1) => input.checksum_sha1.is_some(),
        Some(ChecksumAlgorithm::SHA256) => input.checksum_sha256.is_some(),
        Some(ChecksumAlgorithm::CRC64NVME) => input.checksum_crc64nvme.is_some(),
        Some(_) => false,
    };
    let safe_key = !input.key.is_empty()
        && !input.key.ends_with('/')
        && !input.key.starts_with('/')
        && input
            .key
            .split('/')
            .all(|part| !part.is_empty() && part != "." && part != "..");
    safe_key
        && input.if_match.is_none()
        && input.expires.is_none()
        && checksum_in_headers
        && input
            .storage_class
            .as_ref()
            .is_none_or(|class| class.as_str() == "STANDARD")
        && input
            .content_length
            .is_some_and(|len| (0..=SIMPLE_PUT_MAX).contains(&len))
}

/// Bodies up to this size are stored by `put_simple`.
const SIMPLE_PUT_MAX: i64 = 8 << 20;

impl Guarded {
    /// Stores a small object as s3s-fs would (the object file, its attributes and its
    /// ETag, each written to a temp file and renamed), with plain blocking I/O in one
    /// task. s3s-fs does each step through tokio's file API, a thread handoff per call:
    /// for thousands of small objects the server then burns more CPU than the client,
    /// and on a 2-core machine a benchmark would time the server, not the client.
    async fn put_simple(&self, input: PutObjectInput) -> S3Result<S3Response<PutObjectOutput>> {
        use futures_util::StreamExt;
        let Some(mut body) = input.body else {
            return Err(s3_error!(IncompleteBody));
        };
        let expected = input.content_length.unwrap_or(0) as usize;
        let mut bytes = Vec::with_capacity(expected);
        while let Some(chunk) = body.next().await {
            let chunk = chunk.map_err(|err| s3_error!(IncompleteBody, "{err}"))?;
            bytes.extend_from_slice(&chunk);
        }
        if bytes.len() != expected {
            return Err(s3_error!(IncompleteBody));
        }
        let mut attributes = serde_json::Map::new();
        if let Some(metadata) = &input.metadata {
            attributes.insert("user_metadata".into(), serde_json::json!(metadata));
        }
        for (name, value) in [
            ("content_encoding", &input.content_encoding),
            ("content_type", &input.content_type),
            ("content_disposition", &input.content_disposition),
            ("content_language", &input.content_language),
            ("cache_control", &input.cache_control),
            (
                "website_redirect_location",
                &input.website_redirect_location,
            ),
        ] {
            if let Some(value) = value {
                attributes.insert(name.into(), serde_json::Value::String(value.clone()));
            }
        }
        // The checksums the client sent, verified as s3s-fs does.
        let mut hasher = s3s::checksum::ChecksumHasher::default();
        if input.checksum_crc32.is_some() {
            hasher.crc32 = Some(Default::default());
        }
        if input.checksum_crc32c.is_some() {
            hasher.crc32c = Some(Default::default());
        }
        if input.checksum_sha1.is_some() {
            hasher.sha1 = Some(Default::default());
        }
        if input.checksum_sha256.is_some() {
            hasher.sha256 = Some(Default::default());
        }
        if input.checksum_crc64nvme.is_some() {
            hasher.crc64nvme = Some(Default::default());
        }
        hasher.update(&bytes);
        let checksum = hasher.finalize();
        let sent = [
            (
                "checksum_crc32",
                &input.checksum_crc32,
                &checksum.checksum_crc32,
            ),
            (
                "checksum_crc32c",
                &input.checksum_crc32c,
                &checksum.checksum_crc32c,
            ),
            (
                "checksum_sha1",
                &input.checksum_sha1,
                &checksum.checksum_sha1,
            ),
            (
                "checksum_sha256",
                &input.checksum_sha256,
                &checksum.checksum_sha256,
            ),
            (
                "checksum_crc64nvme",
                &input.checksum_crc64nvme,
                &checksum.checksum_crc64nvme,
            ),
        ];
        let mut info = serde_json::Map::new();
        for (name, given, computed) in sent {
            if given != computed {
                return Err(s3_error!(BadDigest, "{name} mismatch"));
            }
            if let Some(value) = computed {
                info.insert(name.into(), serde_json::Value::String(value.clone()));
            }
        }
        let create_only = input.if_none_match.as_ref().is_some_and(|c| c.is_any());
        let content_md5 = input.content_md5.clone();
        let root = self.root.clone();
        let (bucket, key) = (input.bucket, input.key);
        let stored = tokio::task::spawn_blocking(move || -> S3Result<String> {
            let internal = |err: std::io::Error| s3_error!(InternalError, "{err}");
            let object = root.join(&bucket).join(&key);
            if create_only && object.exists() {
                return Err(s3_error!(PreconditionFailed, "Object already exists"));
            }
            let md5: String = {
                use md5::Digest;
                md5::Md5::digest(&bytes)
                    .iter()
                    .map(|b| format!("{b:02x}"))
                    .collect()
            };
            if let Some(given) = content_md5 {
                let given = base64_simd::STANDARD
                    .decode_to_vec(given)
                    .map_err(|_| s3_error!(InvalidArgument))?;
                let given: String = given.iter().map(|b| format!("{b:02x}")).collect();
                if given != md5 {
                    return Err(s3_error!(BadDigest, "content_md5 mismatch"));
                }
            }
            let encode = |s: &str| base64_simd::URL_SAFE_NO_PAD.encode_to_string(s);
            let stem = format!(".bucket-{}.object-{}", encode(&bucket), encode(&key));
            info.insert("e_tag".into(), serde_json::Value::String(md5.clone()));
            write_replacing(&root, &object, &bytes).map_err(internal)?;
            let attributes = serde_json::to_vec(&attributes).map_err(|e| internal(e.into()))?;
            write_replacing(
                &root,
                &root.join(format!("{stem}.metadata.json")),
                &attributes,
            )
            .map_err(internal)?;
            let info = serde_json::to_vec(&info).map_err(|e| internal(e.into()))?;
            write_replacing(&root, &root.join(format!("{stem}.internal.json")), &info)
                .map_err(internal)?;
            Ok(md5)
        })
        .await
        .map_err(|err| s3_error!(InternalError, "{err}"))??;
        Ok(S3Response::new(PutObjectOutput {
            e_tag: Some(ETag::Strong(stored)),
            checksum_crc32: checksum.checksum_crc32,
            checksum_crc32c: checksum.checksum_crc32c,
            checksum_sha1: checksum.checksum_sha1,
            checksum_sha256: checksum.checksum_sha256,
            checksum_crc64nvme: checksum.checksum_crc64nvme,
            ..Default::default()
        }))
    }
}

/// Writes `dest` through a temp file in `root` (where s3s-fs keeps its own, out of
/// every bucket's listing) and a rename.
fn write_replacing(root: &Path, dest: &Path, bytes: &[u8]) -> std::io::Result<()> {
    use std::sync::atomic::{AtomicU64, Ordering};
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let temp = root.join(format!(
        ".czc-put.{}.{}",
        std::process::id(),
        COUNTER.fetch_add(1, Ordering::Relaxed)
    ));
    let placed = std::fs::write(&temp, bytes).and_then(|()| {
        match dest.parent() {
            Some(parent) if !parent.is_dir() => std::fs::create_dir_all(parent)?,
            _ => {}
        }
        std::fs::rename(&temp, dest)
    });
    if placed.is_err() {
        let _ = std::fs::remove_file(&temp);
    }
    placed
}

fn head_request<T>(req: &S3Request<T>, bucket: &str, key: &str) -> S3Request<HeadObjectInput> {
    S3Request {
        input: HeadObjectInput {
            bucket: bucket.to_string(),
            key: key.to_string(),
            ..HeadObjectInput::default()
        },
        method: http::Method::HEAD,
        uri: req.uri.clone(),
        headers: Default::default(),
        extensions: Default::default(),
        credentials: req.credentials.clone(),
        region: req.region.clone(),
        service: req.service.clone(),
        trailing_headers: None,
    }
}

#[async_trait]
impl S3 for Guarded {
    async fn get_object(
        &self,
        req: S3Request<GetObjectInput>,
    ) -> S3Result<S3Response<GetObjectOutput>> {
        self.not_a_folder(&req.input.bucket, &req.input.key)?;
        let _shared = self.stripe(&req.input.bucket, &req.input.key).read().await;
        let path = self.root.join(&req.input.bucket).join(&req.input.key);
        let mut response = self.inner.get_object(req).await?;
        // s3s-fs streams in 4 KiB reads, each a blocking-pool round trip (~80 MB/s):
        // serve the same bytes in 1 MiB reads, as a real service would stream.
        let output = &mut response.output;
        let total = output.content_length.unwrap_or(0).max(0) as u64;
        let (start, len) = match output
            .content_range
            .as_deref()
            .and_then(parse_content_range)
        {
            Some((start, end)) => (start, end + 1 - start),
            None => (0, total),
        };
        let mut file = tokio::fs::File::open(&path)
            .await
            .map_err(|err| s3_error!(InternalError, "{err}"))?;
        file.seek(std::io::SeekFrom::Start(start))
            .await
            .map_err(|err| s3_error!(InternalError, "{err}"))?;
        output.body = Some(StreamingBlob::wrap(ReaderStream::with_capacity(
            file.take(len),
            1 << 20,
        )));
        Ok(response)
    }

    async fn head_object(
        &self,
        req: S3Request<HeadObjectInput>,
    ) -> S3Result<S3Response<HeadObjectOutput>> {
        self.not_a_folder(&req.input.bucket, &req.input.key)?;
        let _shared = self.stripe(&req.input.bucket, &req.input.key).read().await;
        self.inner.head_object(req).await
    }

    async fn list_objects(
        &self,
        req: S3Request<ListObjectsInput>,
    ) -> S3Result<S3Response<ListObjectsOutput>> {
        self.inner.list_objects(req).await
    }

    async fn list_objects_v2(
        &self,
        req: S3Request<ListObjectsV2Input>,
    ) -> S3Result<S3Response<ListObjectsV2Output>> {
        // s3s-fs walks the whole bucket through async fs calls for every page, which
        // makes a 20,000-object listing take seconds; real S3 pages an index. This
        // walks only the folder the prefix names, once per page, with plain fs calls.
        if req.input.delimiter.is_some() {
            return self.inner.list_objects_v2(req).await;
        }
        self.bucket_exists(&req.input.bucket)?;
        let input = req.input;
        let prefix = input.prefix.clone().unwrap_or_default();
        let resume = match (&input.continuation_token, &input.start_after) {
            (Some(token), Some(after)) => Some(token.max(after).clone()),
            (token, after) => token.clone().or(after.clone()),
        };
        let max_keys = input.max_keys.unwrap_or(1000).clamp(0, 1000) as usize;
        let bucket_root = self.root.join(&input.bucket);
        let walk_prefix = prefix.clone();
        let mut objects =
            tokio::task::spawn_blocking(move || list_keys(&bucket_root, &walk_prefix))
                .await
                .map_err(|err| s3_error!(InternalError, "{err}"))?;
        objects.retain(|object| {
            resume
                .as_ref()
                .is_none_or(|after| object.key.as_ref().is_some_and(|key| key > after))
        });
        let is_truncated = objects.len() > max_keys;
        objects.truncate(max_keys);
        let next_continuation_token = if is_truncated {
            objects.last().and_then(|object| object.key.clone())
        } else {
            None
        };
        let output = ListObjectsV2Output {
            key_count: Some(objects.len() as i32),
            max_keys: Some(max_keys as i32),
            is_truncated: Some(is_truncated),
            contents: (!objects.is_empty()).then_some(objects),
            continuation_token: input.continuation_token,
            next_continuation_token,
            encoding_type: input.encoding_type,
            name: Some(input.bucket),
            prefix: input.prefix,
            start_after: input.start_after,
            ..Default::default()
        };
        Ok(S3Response::new(output))
    }

    async fn head_bucket(
        &self,
        req: S3Request<HeadBucketInput>,
    ) -> S3Result<S3Response<HeadBucketOutput>> {
        self.inner.head_bucket(req).await
    }

    async fn list_buckets(
        &self,
        req: S3Request<ListBucketsInput>,
    ) -> S3Result<S3Response<ListBucketsOutput>> {
        self.inner.list_buckets(req).await
    }

    async fn get_bucket_location(
        &self,
        req: S3Request<GetBucketLocationInput>,
    ) -> S3Result<S3Response<GetBucketLocationOutput>> {
        self.inner.get_bucket_location(req).await
    }

    async fn create_bucket(
        &self,
        req: S3Request<CreateBucketInput>,
    ) -> S3Result<S3Response<CreateBucketOutput>> {
        self.inner.create_bucket(req).await
    }

    async fn put_object(
        &self,
        req: S3Request<PutObjectInput>,
    ) -> S3Result<S3Response<PutObjectOutput>> {
        self.bucket_exists(&req.input.bucket)?;
        let _exclusive = self.stripe(&req.input.bucket, &req.input.key).write().await;
        if is_simple_put(&req.input) {
            return self.put_simple(req.input).await;
        }
        self.inner.put_object(req).await
    }

    async fn delete_object(
        &self,
        req: S3Request<DeleteObjectInput>,
    ) -> S3Result<S3Response<DeleteObjectOutput>> {
        self.bucket_exists(&req.input.bucket)?;
        let _exclusive = self.stripe(&req.input.bucket, &req.input.key).write().await;
        if let Some(condition) = &req.input.if_match {
            let head = head_request(&req, &req.input.bucket, &req.input.key);
            let current = match self.inner.head_object(head).await {
                Ok(found) => found.output.e_tag,
                Err(err) if *err.code() == s3s::S3ErrorCode::NoSuchKey => {
                    return Err(s3_error!(NoSuchKey))
                }
                Err(err) => return Err(err),
            };
            let matches = match (condition, current) {
                (ETagCondition::Any, Some(_)) => true,
                (ETagCondition::ETag(expected), Some(found)) => found.strong_cmp(expected),
                (_, None) => false,
            };
            if !matches {
                return Err(s3_error!(PreconditionFailed, "ETag does not match"));
            }
        }
        self.inner.delete_object(req).await
    }

    async fn delete_objects(
        &self,
        req: S3Request<DeleteObjectsInput>,
    ) -> S3Result<S3Response<DeleteObjectsOutput>> {
        self.bucket_exists(&req.input.bucket)?;
        let mut stripes: Vec<usize> = req
            .input
            .delete
            .objects
            .iter()
            .map(|object| Self::stripe_of(&req.input.bucket, &object.key))
            .collect();
        stripes.sort_unstable();
        stripes.dedup();
        // In order, so two bulk deletes cannot deadlock.
        let mut _exclusive = Vec::new();
        for stripe in stripes {
            _exclusive.push(self.stripes[stripe].write().await);
        }
        self.inner.delete_objects(req).await
    }

    async fn create_multipart_upload(
        &self,
        req: S3Request<CreateMultipartUploadInput>,
    ) -> S3Result<S3Response<CreateMultipartUploadOutput>> {
        self.bucket_exists(&req.input.bucket)?;
        let (bucket, key) = (req.input.bucket.clone(), req.input.key.clone());
        let response = self.inner.create_multipart_upload(req).await?;
        if let Some(upload_id) = &response.output.upload_id {
            self.uploads.lock().unwrap().push(PendingUpload {
                bucket,
                key,
                upload_id: upload_id.clone(),
                initiated: std::time::SystemTime::now(),
            });
        }
        Ok(response)
    }

    async fn list_multipart_uploads(
        &self,
        req: S3Request<ListMultipartUploadsInput>,
    ) -> S3Result<S3Response<ListMultipartUploadsOutput>> {
        let input = req.input;
        self.bucket_exists(&input.bucket)?;
        let prefix = input.prefix.clone().unwrap_or_default();
        let mut uploads: Vec<PendingUpload> = self
            .uploads
            .lock()
            .unwrap()
            .iter()
            .filter(|upload| upload.bucket == input.bucket && upload.key.starts_with(&prefix))
            .cloned()
            .collect();
        uploads.sort_by(|a, b| (&a.key, &a.upload_id).cmp(&(&b.key, &b.upload_id)));
        // Pages of two, so a client that ignores IsTruncated is caught.
        let after = (
            input.key_marker.clone().unwrap_or_default(),
            input.upload_id_marker.clone().unwrap_or_default(),
        );
        let rest: Vec<PendingUpload> = uploads
            .into_iter()
            .filter(|upload| {
                after.0.is_empty() || (upload.key.clone(), upload.upload_id.clone()) > after
            })
            .collect();
        let page: Vec<PendingUpload> = rest.iter().take(2).cloned().collect();
        let truncated = rest.len() > page.len();
        let last = page.last().cloned();
        let output = ListMultipartUploadsOutput {
            bucket: Some(input.bucket),
            prefix: input.prefix,
            is_truncated: Some(truncated),
            next_key_marker: truncated.then(|| last.clone().unwrap().key),
            next_upload_id_marker: truncated.then(|| last.unwrap().upload_id),
            uploads: Some(
                page.into_iter()
                    .map(|upload| MultipartUpload {
                        key: Some(upload.key),
                        upload_id: Some(upload.upload_id),
                        initiated: Some(Timestamp::from(upload.initiated)),
                        ..Default::default()
                    })
                    .collect(),
            ),
            ..Default::default()
        };
        Ok(S3Response::new(output))
    }

    async fn copy_object(
        &self,
        req: S3Request<CopyObjectInput>,
    ) -> S3Result<S3Response<CopyObjectOutput>> {
        self.bucket_exists(&req.input.bucket)?;
        let _exclusive = self.stripe(&req.input.bucket, &req.input.key).write().await;
        self.inner.copy_object(req).await
    }

    async fn upload_part(
        &self,
        req: S3Request<UploadPartInput>,
    ) -> S3Result<S3Response<UploadPartOutput>> {
        self.inner.upload_part(req).await
    }

    async fn list_parts(
        &self,
        req: S3Request<ListPartsInput>,
    ) -> S3Result<S3Response<ListPartsOutput>> {
        self.inner.list_parts(req).await
    }

    async fn complete_multipart_upload(
        &self,
        req: S3Request<CompleteMultipartUploadInput>,
    ) -> S3Result<S3Response<CompleteMultipartUploadOutput>> {
        let _exclusive = self.stripe(&req.input.bucket, &req.input.key).write().await;
        let upload_id = req.input.upload_id.clone();
        let response = self.inner.complete_multipart_upload(req).await?;
        self.forget_upload(&upload_id);
        Ok(response)
    }

    async fn abort_multipart_upload(
        &self,
        req: S3Request<AbortMultipartUploadInput>,
    ) -> S3Result<S3Response<AbortMultipartUploadOutput>> {
        let upload_id = req.input.upload_id.clone();
        let response = self.inner.abort_multipart_upload(req).await?;
        self.forget_upload(&upload_id);
        Ok(response)
    }
}

/// Every object under `bucket_root` whose key starts with `prefix`, sorted by key.
fn list_keys(bucket_root: &Path, prefix: &str) -> Vec<Object> {
    let folder = prefix.rsplit_once('/').map_or("", |(dir, _)| dir);
    let start = bucket_root.join(folder);
    let mut objects: Vec<Object> = walkdir::WalkDir::new(&start)
        .into_iter()
        .filter_map(Result::ok)
        .filter(|entry| entry.file_type().is_file())
        .filter_map(|entry| {
            let key = entry
                .path()
                .strip_prefix(bucket_root)
                .ok()?
                .to_str()?
                .to_string();
            if !key.starts_with(prefix) {
                return None;
            }
            let meta = entry.metadata().ok()?;
            Some(Object {
                key: Some(key),
                last_modified: meta.modified().ok().map(Timestamp::from),
                size: Some(meta.len() as i64),
                ..Default::default()
            })
        })
        .collect();
    objects.sort_by(|a, b| a.key.cmp(&b.key));
    objects
}

/// `bytes a-b/total` → (a, b).
fn parse_content_range(range: &str) -> Option<(u64, u64)> {
    let (span, _) = range.strip_prefix("bytes ")?.split_once('/')?;
    let (start, end) = span.split_once('-')?;
    Some((start.parse().ok()?, end.parse().ok()?))
}
