//! Object-store port (S3): put, streamed get, head; and, for the local stack, the
//! "object created" notifications that feed csv-ingest.

mod memory;
#[cfg(feature = "s3")]
mod s3;

pub use memory::MemoryObjects;
#[cfg(feature = "s3")]
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
    #[cfg(feature = "s3")]
    S3(S3Objects),
    /// A function built without S3 (the `s3` feature): every call fails, saying so.
    NotBuiltIn,
}

fn not_built_in() -> ObjectError {
    ObjectError::Other("this function is built without the S3 client (feature `s3`)".into())
}

impl ObjectStore {
    pub fn bucket(&self) -> &str {
        match self {
            ObjectStore::Memory(m) => m.bucket(),
            #[cfg(feature = "s3")]
            ObjectStore::S3(s) => s.bucket(),
            ObjectStore::NotBuiltIn => "",
        }
    }

    pub async fn put(&self, key: &str, body: Vec<u8>, content_type: &str) -> Result<ObjectMeta, ObjectError> {
        match self {
            ObjectStore::Memory(m) => Ok(m.put(key, body)),
            #[cfg(feature = "s3")]
            ObjectStore::S3(s) => {
                let span = crate::dependency_span!("s3", "PutObject", s.bucket(), aws.s3.key = %key);
                crate::otel::traced(span, s.put(key, body, content_type)).await
            }
            ObjectStore::NotBuiltIn => {
                let _ = (key, content_type);
                Err(not_built_in())
            }
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
            #[cfg(feature = "s3")]
            ObjectStore::S3(s) => {
                let span = crate::dependency_span!("s3", "PutObject", s.bucket(), aws.s3.key = %key);
                crate::otel::traced(span, s.put_file(key, path, content_type)).await
            }
            ObjectStore::NotBuiltIn => {
                let _ = (key, content_type);
                Err(not_built_in())
            }
        }
    }

    pub async fn get(&self, key: &str) -> Result<Option<ObjectReader>, ObjectError> {
        match self {
            ObjectStore::Memory(m) => Ok(m.get(key)),
            #[cfg(feature = "s3")]
            ObjectStore::S3(s) => {
                let span = crate::dependency_span!("s3", "GetObject", s.bucket(), aws.s3.key = %key);
                crate::otel::traced(span, s.get(key)).await
            }
            ObjectStore::NotBuiltIn => Err(not_built_in()),
        }
    }

    pub async fn head(&self, key: &str) -> Result<Option<ObjectMeta>, ObjectError> {
        match self {
            ObjectStore::Memory(m) => Ok(m.head(key)),
            #[cfg(feature = "s3")]
            ObjectStore::S3(s) => {
                let span = crate::dependency_span!("s3", "HeadObject", s.bucket(), aws.s3.key = %key);
                crate::otel::traced(span, s.head(key)).await
            }
            ObjectStore::NotBuiltIn => Err(not_built_in()),
        }
    }

    pub async fn ping(&self) -> Result<(), ObjectError> {
        match self {
            ObjectStore::Memory(_) => Ok(()),
            #[cfg(feature = "s3")]
            ObjectStore::S3(s) => s.ping().await,
            ObjectStore::NotBuiltIn => Err(not_built_in()),
        }
    }

    /// Creates the bucket if it does not exist (local stacks and tests; in AWS the template
    /// creates it). Nothing to do without S3.
    pub async fn ensure_bucket(&self) -> Result<(), ObjectError> {
        match self {
            #[cfg(feature = "s3")]
            ObjectStore::S3(s) => s.ensure_bucket().await,
            _ => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_store_not_built_in_refuses_every_call_by_name() {
        let store = ObjectStore::NotBuiltIn;
        let refused = |e: ObjectError| matches!(&e, ObjectError::Other(m) if m.contains("feature `s3`"));
        assert!(refused(store.get("k").await.err().unwrap()));
        assert!(refused(store.head("k").await.err().unwrap()));
        assert!(refused(store.put("k", b"x".to_vec(), "text/csv").await.err().unwrap()));
        assert!(refused(store.put_file("k", std::path::Path::new("/dev/null"), "text/csv").await.err().unwrap()));
        assert!(refused(store.ping().await.err().unwrap()));
        assert_eq!(store.bucket(), "");
    }
}
