//! Object-store contract: memory model and S3 (emulator).

use crate::helpers;
use settle_shared::ports::objects::*;
use tokio::io::AsyncReadExt;

async fn memory_objects() -> ObjectStore {
    ObjectStore::Memory(MemoryObjects::new(&helpers::unique("it-bucket")))
}

async fn s3_objects() -> ObjectStore {
    let s3 = S3Objects::new(&helpers::sdk().await, &helpers::unique("it-bucket"));
    if let Err(e) = s3.ensure_bucket().await {
        helpers::unreachable("S3 (emulator)", e);
    }
    ObjectStore::S3(s3)
}

async fn read_all(store: &ObjectStore, key: &str) -> Option<(ObjectMeta, Vec<u8>)> {
    let mut reader = store.get(key).await.unwrap()?;
    let mut body = Vec::new();
    reader.body.read_to_end(&mut body).await.unwrap();
    Some((reader.meta, body))
}

async fn objects_stream_back_what_was_put(store: ObjectStore) {
    // 3 MiB: larger than one read, so the body really streams.
    let body: Vec<u8> = (0..3 * 1024 * 1024).map(|i| (i % 251) as u8).collect();
    let key = "settlements/incoming/day 1.csv";
    let put = store.put(key, body.clone(), "text/csv").await.unwrap();
    assert_eq!(put.size, body.len() as u64);
    let (meta, read) = read_all(&store, key).await.unwrap();
    assert_eq!(read, body);
    assert_eq!(meta, put);
    assert_eq!(store.head(key).await.unwrap(), Some(put));
}

async fn overwrites_change_the_etag_and_missing_objects_are_none(store: ObjectStore) {
    let first = store.put("k.csv", b"a,b\n".to_vec(), "text/csv").await.unwrap();
    let second = store.put("k.csv", b"a,c\n".to_vec(), "text/csv").await.unwrap();
    assert_ne!(first.etag, second.etag);
    assert_eq!(read_all(&store, "k.csv").await.unwrap().1, b"a,c\n");
    assert!(store.get("absent.csv").await.unwrap().is_none());
    assert_eq!(store.head("absent.csv").await.unwrap(), None);
    store.ping().await.unwrap();
}

async fn files_upload_from_disk(store: ObjectStore) {
    let body: Vec<u8> = (0..200_000).map(|i| (i % 7) as u8 + b'a').collect();
    let path = std::env::temp_dir().join(format!("settle-put-file-{}.csv", uuid::Uuid::new_v4().simple()));
    std::fs::write(&path, &body).unwrap();
    let put = store.put_file("settlements/rejects/f.csv", &path, "text/csv").await.unwrap();
    std::fs::remove_file(&path).unwrap();
    assert_eq!(put.size, body.len() as u64);
    let (meta, read) = read_all(&store, "settlements/rejects/f.csv").await.unwrap();
    assert_eq!((meta, read), (put, body));
    let missing = store.put_file("x.csv", std::path::Path::new("/nonexistent/settle.csv"), "text/csv").await;
    assert!(matches!(missing, Err(ObjectError::Other(_))));
}

crate::contract_tests!(
    memory: memory_objects,
    real: s3_objects,
    contracts: [
        objects_stream_back_what_was_put,
        overwrites_change_the_etag_and_missing_objects_are_none,
        files_upload_from_disk
    ]
);
