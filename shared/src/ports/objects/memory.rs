//! In-memory object store with S3-like ETags and a broadcast of created keys, standing in
//! for S3 event notifications in the zero-infrastructure local stack.

use super::{ObjectMeta, ObjectReader};
use std::collections::hash_map::DefaultHasher;
use std::collections::HashMap;
use std::hash::{Hash, Hasher};
use std::sync::{Arc, Mutex, MutexGuard};
use tokio::sync::broadcast;

/// Key → body and metadata.
type Objects = HashMap<String, (Arc<Vec<u8>>, ObjectMeta)>;

#[derive(Clone)]
pub struct MemoryObjects {
    bucket: String,
    objects: Arc<Mutex<Objects>>,
    created: broadcast::Sender<(String, ObjectMeta)>,
}

impl MemoryObjects {
    pub fn new(bucket: &str) -> Self {
        let (created, _) = broadcast::channel(1024);
        MemoryObjects { bucket: bucket.to_string(), objects: Arc::default(), created }
    }

    fn lock(&self) -> MutexGuard<'_, Objects> {
        self.objects.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub fn bucket(&self) -> &str {
        &self.bucket
    }

    /// Receives `(key, meta)` for every put, like an `s3:ObjectCreated:Put` notification.
    pub fn subscribe_created(&self) -> broadcast::Receiver<(String, ObjectMeta)> {
        self.created.subscribe()
    }

    pub(super) fn put(&self, key: &str, body: Vec<u8>) -> ObjectMeta {
        let mut hasher = DefaultHasher::new();
        body.hash(&mut hasher);
        let meta = ObjectMeta { size: body.len() as u64, etag: format!("{:016x}", hasher.finish()) };
        self.lock().insert(key.to_string(), (Arc::new(body), meta.clone()));
        // No subscriber is fine: nobody is listening for notifications.
        let _ = self.created.send((key.to_string(), meta.clone()));
        meta
    }

    pub(super) fn get(&self, key: &str) -> Option<ObjectReader> {
        let (body, meta) = self.lock().get(key).cloned()?;
        let bytes = body.as_ref().clone();
        Some(ObjectReader { meta, body: Box::pin(std::io::Cursor::new(bytes)) })
    }

    pub(super) fn head(&self, key: &str) -> Option<ObjectMeta> {
        self.lock().get(key).map(|(_, meta)| meta.clone())
    }
}
