//! Object-store port (S3): put, streamed get, head; and, for the local stack, the
//! "object created" notifications that feed csv-ingest.

mod memory;
mod s3;

pub use memory::MemoryObjects;
pub use s3::S3Objects;

use std::pin::Pin;
use tokio::io::AsyncRead;

#[derive(Debug, thiserror::Error)]
pub enum ObjectError {
    #[error("object store unavailable: {0}")]
    Unavailable(String),
    #[error("object store error: {0}")]
    Other(String),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ObjectMeta {
    pub size: u64,
    /// Changes whenever the object is overwritten (S3's ETag, quotes removed).
    pub etag: String,
}

/// An object's body as a byte stream: read it incrementally, never all at once.
pub struct ObjectReader {
    pub meta: ObjectMeta,
    pub body: Pin<Box<dyn AsyncRead + Send>>,
}

#[derive(Clone)]
pub enum ObjectStore {
    Memory(MemoryObjects),
    S3(S3Objects),
}

impl ObjectStore {
    pub fn bucket(&self) -> &str {
        match self {
            ObjectStore::Memory(m) => m.bucket(),
            ObjectStore::S3(s) => s.bucket(),
        }
    }

    pub async fn put(&self, key: &str, body: Vec<u8>, content_type: &str) -> Result<ObjectMeta, ObjectError> {
        match self {
            ObjectStore::Memory(m) => Ok(m.put(key, body)),
            ObjectStore::S3(s) => s.put(key, body, content_type).await,
        }
    }

    /// Uploads a local file, streamed from disk rather than read into memory.
    pub async fn put_file(
        &self,
        key: &str,
        path: &std::path::Path,
        content_type: &str,
    ) -> Result<ObjectMeta, ObjectError> {
        match self {
            ObjectStore::Memory(m) => {
                let body = tokio::fs::read(path).await.map_err(|e| ObjectError::Other(e.to_string()))?;
                Ok(m.put(key, body))
            }
            ObjectStore::S3(s) => s.put_file(key, path, content_type).await,
        }
    }

    pub async fn get(&self, key: &str) -> Result<Option<ObjectReader>, ObjectError> {
        match self {
            ObjectStore::Memory(m) => Ok(m.get(key)),
            ObjectStore::S3(s) => s.get(key).await,
        }
    }

    pub async fn head(&self, key: &str) -> Result<Option<ObjectMeta>, ObjectError> {
        match self {
            ObjectStore::Memory(m) => Ok(m.head(key)),
            ObjectStore::S3(s) => s.head(key).await,
        }
    }

    pub async fn ping(&self) -> Result<(), ObjectError> {
        match self {
            ObjectStore::Memory(_) => Ok(()),
            ObjectStore::S3(s) => s.ping().await,
        }
    }
}
