//! Checkpoints in an object store: S3 and S3-compatible stores, Google Cloud Storage,
//! Azure Blob Storage, through the `object_store` crate (the one DataFusion uses).
//!
//! Credentials and region come from the environment as each cloud's own tools read
//! them (`AWS_ACCESS_KEY_ID`, `AWS_REGION`, `AWS_PROFILE`-less web identity and instance
//! metadata, `GOOGLE_APPLICATION_CREDENTIALS`, `AZURE_STORAGE_ACCOUNT_NAME`, …).
//! Conditional writes are the store's own: `If-None-Match: *` for `create`, `If-Match:
//! <etag>` for `update`. Objects larger than one part are uploaded as multipart uploads
//! (8 MiB parts, several in flight), which the store makes visible only when complete.

use super::{Blob, BlobError, Blobs, Version};
use crate::config::StoreConfig;
use futures::TryStreamExt;
use object_store::path::Path;
use object_store::{
    ClientOptions, ObjectStore, ObjectStoreExt, PutMode, PutOptions, PutPayload, RetryConfig,
    UpdateVersion, WriteMultipart,
};
use std::sync::Arc;
use std::time::Duration;

/// Bytes per part of a multipart upload; objects up to this size are one PUT.
const PART: usize = 8 * 1024 * 1024;
/// Parts uploaded at once.
const PARTS_IN_FLIGHT: usize = 4;

/// A store in a bucket (and a prefix in it).
pub(crate) struct Object {
    store: Arc<dyn ObjectStore>,
    /// The URL without the prefix, for messages: `s3://bucket`.
    base: String,
    prefix: String,
    runtime: tokio::runtime::Runtime,
}

impl std::fmt::Debug for Object {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Object")
            .field("base", &self.base)
            .field("prefix", &self.prefix)
            .finish_non_exhaustive()
    }
}

impl Object {
    /// Connects to the store at `url` (`s3://bucket/prefix`, `gs://…`, `az://…`). Only
    /// builds the client: an unreachable store shows at the first operation.
    pub(crate) fn open(url: &url::Url, options: &StoreConfig) -> Result<Self, String> {
        // Each request is retried a few times; a store that stays away is the
        // checkpointer's to wait for (with backoff, reported on /health).
        let retry = RetryConfig {
            max_retries: 3,
            retry_timeout: Duration::from_secs(20),
            backoff: object_store::BackoffConfig {
                init_backoff: Duration::from_millis(100),
                max_backoff: Duration::from_secs(2),
                base: 2.0,
            },
        };
        let client = ClientOptions::new()
            .with_connect_timeout(Duration::from_secs(5))
            .with_timeout(Duration::from_secs(60));
        let store: Arc<dyn ObjectStore> = match url.scheme() {
            "s3" | "s3a" => {
                let mut b = object_store::aws::AmazonS3Builder::from_env()
                    .with_url(url.as_str())
                    .with_retry(retry)
                    .with_client_options(client);
                if let Some(endpoint) = &options.endpoint {
                    b = b
                        .with_endpoint(endpoint)
                        .with_allow_http(endpoint.starts_with("http://"));
                }
                if let Some(region) = &options.region {
                    b = b.with_region(region);
                }
                if let Some(path_style) = options
                    .path_style
                    .or(options.endpoint.as_ref().map(|_| true))
                {
                    b = b.with_virtual_hosted_style_request(!path_style);
                }
                Arc::new(b.build().map_err(|e| e.to_string())?)
            }
            "gs" => Arc::new(
                object_store::gcp::GoogleCloudStorageBuilder::from_env()
                    .with_url(url.as_str())
                    .with_retry(retry)
                    .with_client_options(client)
                    .build()
                    .map_err(|e| e.to_string())?,
            ),
            "az" | "azure" | "abfs" | "abfss" => {
                let mut b = object_store::azure::MicrosoftAzureBuilder::from_env()
                    .with_url(url.as_str())
                    .with_retry(retry)
                    .with_client_options(client);
                if let Some(endpoint) = &options.endpoint {
                    b = b
                        .with_endpoint(endpoint.clone())
                        .with_allow_http(endpoint.starts_with("http://"));
                }
                Arc::new(b.build().map_err(|e| e.to_string())?)
            }
            other => return Err(format!("unsupported store scheme '{other}'")),
        };
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .thread_name("checkpoint-store")
            .enable_all()
            .build()
            .map_err(|e| format!("starting the store's I/O thread: {e}"))?;
        let base = format!("{}://{}", url.scheme(), url.host_str().unwrap_or_default());
        Ok(Object {
            store,
            base,
            prefix: url.path().trim_matches('/').to_string(),
            runtime,
        })
    }

    fn path(&self, key: &str) -> Path {
        let key = key.trim_matches('/');
        if self.prefix.is_empty() {
            Path::from(key)
        } else {
            Path::from(format!("{}/{key}", self.prefix))
        }
    }

    fn put_opts(
        &self,
        op: &'static str,
        key: &str,
        data: &[u8],
        mode: PutMode,
    ) -> Result<Version, BlobError> {
        let path = self.path(key);
        let payload = PutPayload::from(bytes::Bytes::copy_from_slice(data));
        let options = PutOptions {
            mode,
            ..Default::default()
        };
        let r = self
            .runtime
            .block_on(self.store.put_opts(&path, payload, options))
            .map_err(|e| fail(op, key, e))?;
        Ok(Version(r.e_tag.unwrap_or_default()))
    }
}

impl Blobs for Object {
    fn describe(&self, key: &str) -> String {
        format!("{}/{}", self.base, self.path(key))
    }

    fn get(&self, key: &str) -> Result<Option<Blob>, BlobError> {
        let path = self.path(key);
        let got = self.runtime.block_on(async {
            let r = self.store.get(&path).await?;
            let version = r.meta.e_tag.clone().unwrap_or_default();
            let data = r.bytes().await?;
            Ok::<_, object_store::Error>((data, version))
        });
        match got {
            Ok((data, version)) => Ok(Some(Blob {
                data,
                version: Version(version),
            })),
            Err(object_store::Error::NotFound { .. }) => Ok(None),
            Err(e) => Err(fail("reading", key, e)),
        }
    }

    fn put(&self, key: &str, data: &[u8]) -> Result<(), BlobError> {
        if data.len() <= PART {
            return self
                .put_opts("writing", key, data, PutMode::Overwrite)
                .map(|_| ());
        }
        let path = self.path(key);
        self.runtime
            .block_on(async {
                let upload = self.store.put_multipart(&path).await?;
                let mut writer = WriteMultipart::new_with_chunk_size(upload, PART);
                for chunk in data.chunks(PART) {
                    writer.wait_for_capacity(PARTS_IN_FLIGHT).await?;
                    writer.write(chunk);
                }
                // On failure the upload is aborted: nothing appears under the key.
                writer.finish().await
            })
            .map(|_| ())
            .map_err(|e| fail("writing", key, e))
    }

    fn create(&self, key: &str, data: &[u8]) -> Result<Version, BlobError> {
        self.put_opts("creating", key, data, PutMode::Create)
    }

    fn update(&self, key: &str, data: &[u8], expected: &Version) -> Result<Version, BlobError> {
        let mode = PutMode::Update(UpdateVersion {
            e_tag: Some(expected.0.clone()),
            version: None,
        });
        self.put_opts("updating", key, data, mode)
    }

    fn list(&self, prefix: &str) -> Result<Vec<String>, BlobError> {
        let path = self.path(prefix);
        let strip = if self.prefix.is_empty() {
            String::new()
        } else {
            format!("{}/", self.prefix)
        };
        let metas: Vec<object_store::ObjectMeta> = self
            .runtime
            .block_on(self.store.list(Some(&path)).try_collect())
            .map_err(|e| fail("listing", prefix, e))?;
        Ok(metas
            .into_iter()
            .filter_map(|m| m.location.as_ref().strip_prefix(&strip).map(str::to_string))
            .collect())
    }

    fn delete(&self, key: &str) -> Result<(), BlobError> {
        match self.runtime.block_on(self.store.delete(&self.path(key))) {
            Ok(()) | Err(object_store::Error::NotFound { .. }) => Ok(()),
            Err(e) => Err(fail("deleting", key, e)),
        }
    }
}

fn fail(op: &'static str, key: &str, e: object_store::Error) -> BlobError {
    use object_store::Error as E;
    let key = key.to_string();
    match e {
        E::AlreadyExists { .. } | E::Precondition { .. } => BlobError::Conflict { key },
        E::PermissionDenied { .. } | E::Unauthenticated { .. } => BlobError::Denied {
            op,
            key,
            message: e.to_string(),
        },
        E::NotSupported { .. } | E::NotImplemented { .. } => BlobError::Unsupported {
            op,
            key,
            message: e.to_string(),
        },
        _ => BlobError::Unavailable {
            op,
            key,
            message: e.to_string(),
        },
    }
}
