//! MongoDB adapter of the document store. Plain MongoDB only (no server-specific
//! features), so Atlas and self-hosted replica sets work unchanged.

use super::{doc_id, Cond, Document, IndexSpec, Op, Order, Query, Scalar, StoreError, Write};
use futures_util::TryStreamExt;
use mongodb::bson::{self, doc, Bson};
use mongodb::error::{
    ErrorKind, WriteFailure, RETRYABLE_WRITE_ERROR, TRANSIENT_TRANSACTION_ERROR, UNKNOWN_TRANSACTION_COMMIT_RESULT,
};
use mongodb::options::{
    Acknowledgment, ClientOptions, IndexOptions, ReadConcern, Tls, TransactionOptions, WriteConcern,
};
use mongodb::{Client, Database, IndexModel};
use std::path::Path;
use std::time::Duration;

#[derive(Clone)]
pub struct MongoDocuments {
    client: Client,
    db: Database,
    /// Bound on each whole operation: the driver has no socket timeout of its own.
    timeout: Duration,
}

impl MongoDocuments {
    /// Connects lazily (the driver connects on first use), with timeouts short enough that
    /// an unreachable server becomes a 503 rather than a hung Lambda.
    pub async fn connect(
        uri: &str,
        database: &str,
        extra_ca: Option<&Path>,
        timeout: Duration,
    ) -> Result<Self, StoreError> {
        let mut options = ClientOptions::parse(uri)
            .await
            .map_err(|e| StoreError::Other(format!("invalid MongoDB URI: {}", e.kind)))?;
        options.app_name = Some("settle".to_string());
        options.server_selection_timeout = Some(timeout);
        options.connect_timeout = Some(timeout);
        // Money changes must survive a primary failover: majority write concern, and
        // reads inside transactions see only majority-committed data.
        // w_timeout: with a majority of replicas down, a write fails instead of hanging.
        options.write_concern = Some(majority(timeout));
        // The extra CA applies only where the URI asks for TLS (tls=true or mongodb+srv);
        // the driver then trusts that file instead of the system roots.
        if let (Some(ca), Some(Tls::Enabled(tls))) = (extra_ca, options.tls.as_mut()) {
            tls.ca_file_path = Some(ca.to_path_buf());
        }
        let client = Client::with_options(options).map_err(classify)?;
        let db = client.database(database);
        Ok(MongoDocuments { client, db, timeout })
    }

    pub fn database_name(&self) -> &str {
        self.db.name()
    }

    /// Drops the whole database (tests use one database each).
    pub async fn drop_database(&self) -> Result<(), StoreError> {
        self.db.drop().await.map_err(classify)
    }

    pub(super) async fn ensure_indexes(&self, specs: &[IndexSpec]) -> Result<(), StoreError> {
        for spec in specs {
            let mut keys = bson::Document::new();
            for f in &spec.fields {
                keys.insert(f.clone(), 1);
            }
            let options = IndexOptions::builder().unique(spec.unique).name(spec.name()).build();
            let model = IndexModel::builder().keys(keys).options(options).build();
            // create_index is idempotent for an identical spec, so every cold start may run it.
            self.db.collection::<bson::Document>(&spec.collection).create_index(model).await.map_err(
                |e| match classify(e) {
                    StoreError::Duplicate { .. } => StoreError::Other(format!(
                        "unique index {} on {} cannot be built: duplicate values exist",
                        spec.name(),
                        spec.collection
                    )),
                    other => other,
                },
            )?;
        }
        Ok(())
    }

    pub(super) async fn get(&self, collection: &str, id: &str) -> Result<Option<Document>, StoreError> {
        let coll = self.db.collection::<bson::Document>(collection);
        let found =
            self.bounded(async { coll.find_one(doc! { "_id": { "$eq": id } }).await.map_err(classify) }).await?;
        Ok(found.map(from_bson))
    }

    /// Runs one operation within the timeout. A timed-out write has an unknown outcome:
    /// callers treat `Unavailable` as "re-read before deciding".
    async fn bounded<T>(&self, op: impl std::future::Future<Output = Result<T, StoreError>>) -> Result<T, StoreError> {
        match tokio::time::timeout(self.timeout * 2, op).await {
            Ok(result) => result,
            Err(_) => Err(StoreError::Unavailable(format!("no answer within {:?}", self.timeout * 2))),
        }
    }

    pub(super) async fn get_many(&self, collection: &str, ids: &[String]) -> Result<Vec<Document>, StoreError> {
        let coll = self.db.collection::<bson::Document>(collection);
        let docs: Vec<bson::Document> = self
            .bounded(async {
                let cursor = coll.find(doc! { "_id": { "$in": ids } }).await.map_err(classify)?;
                cursor.try_collect().await.map_err(classify)
            })
            .await?;
        Ok(docs.into_iter().map(from_bson).collect())
    }

    pub(super) async fn insert_many_new(&self, collection: &str, docs: Vec<Document>) -> Result<usize, StoreError> {
        const DUPLICATE_KEY: i32 = 11000;
        let total = docs.len();
        let docs = docs.iter().map(to_bson).collect::<Result<Vec<_>, _>>()?;
        let coll = self.db.collection::<bson::Document>(collection);
        // Unordered: one duplicate does not stop the rest of the batch.
        let result = self.bounded(async { Ok(coll.insert_many(docs).ordered(false).await) }).await?;
        match result {
            Ok(r) => Ok(r.inserted_ids.len()),
            Err(e) => match e.kind.as_ref() {
                ErrorKind::InsertMany(m)
                    if m.write_concern_error.is_none()
                        && m.write_errors.as_ref().is_some_and(|w| w.iter().all(|w| w.code == DUPLICATE_KEY)) =>
                {
                    Ok(total - m.write_errors.as_ref().map_or(0, Vec::len))
                }
                _ => Err(classify_in(collection)(e)),
            },
        }
    }

    pub(super) async fn find(&self, collection: &str, query: &Query) -> Result<Vec<Document>, StoreError> {
        let coll = self.db.collection::<bson::Document>(collection);
        let mut find = coll.find(filter(&query.conds));
        if let Some((field, order)) = &query.sort {
            let dir = if *order == Order::Asc { 1 } else { -1 };
            find = find.sort(doc! { field.as_str(): dir, "_id": dir });
        }
        if let Some(limit) = query.limit {
            find = find.limit(i64::from(limit));
        }
        find = find.max_time(self.timeout);
        let docs: Vec<bson::Document> = self
            .bounded(async {
                let cursor = find.await.map_err(classify)?;
                cursor.try_collect().await.map_err(classify)
            })
            .await?;
        Ok(docs.into_iter().map(from_bson).collect())
    }

    pub(super) async fn transaction(&self, writes: Vec<Write>) -> Result<(), StoreError> {
        self.bounded(self.transaction_unbounded(writes)).await
    }

    async fn transaction_unbounded(&self, writes: Vec<Write>) -> Result<(), StoreError> {
        // A single write is atomic on its own: skip the session round trips.
        if let [write] = writes.as_slice() {
            return self.write_one(write, None).await;
        }
        let mut session = self.client.start_session().await.map_err(classify)?;
        let options = TransactionOptions::builder()
            .read_concern(ReadConcern::snapshot())
            .write_concern(majority(self.timeout))
            .build();
        session.start_transaction().with_options(options).await.map_err(classify)?;
        for write in &writes {
            if let Err(e) = self.write_one(write, Some(&mut session)).await {
                // Abort can only fail if the server is gone, in which case the server
                // discards the transaction anyway; the original error is the one to report.
                let _ = session.abort_transaction().await;
                return Err(e);
            }
        }
        session.commit_transaction().await.map_err(classify)
    }

    async fn write_one(&self, write: &Write, session: Option<&mut mongodb::ClientSession>) -> Result<(), StoreError> {
        match write {
            Write::Insert { collection, doc } => {
                doc_id(doc)?;
                let coll = self.db.collection::<bson::Document>(collection);
                let action = coll.insert_one(to_bson(doc)?);
                match session {
                    Some(s) => action.session(s).await,
                    None => action.await,
                }
                .map_err(classify_in(collection))?;
            }
            Write::Update { collection, id, conds, set } => {
                let coll = self.db.collection::<bson::Document>(collection);
                let mut f = filter(conds);
                f.insert("_id", doc! { "$eq": id.as_str() });
                let action = coll.update_one(f, doc! { "$set": to_bson(set)? });
                let result = match session {
                    Some(s) => action.session(s).await,
                    None => action.await,
                }
                .map_err(classify_in(collection))?;
                if result.matched_count != 1 {
                    return Err(StoreError::Conflict(format!("{collection}/{id}: condition not met")));
                }
            }
            Write::Delete { collection, id } => {
                let coll = self.db.collection::<bson::Document>(collection);
                let action = coll.delete_one(doc! { "_id": { "$eq": id.as_str() } });
                match session {
                    Some(s) => action.session(s).await,
                    None => action.await,
                }
                .map_err(classify)?;
            }
        }
        Ok(())
    }

    pub(super) async fn ping(&self) -> Result<(), StoreError> {
        let ping = self.db.run_command(doc! { "ping": 1 });
        self.bounded(async { ping.await.map(|_| ()).map_err(classify) }).await
    }
}

fn scalar(s: &Scalar) -> Bson {
    match s {
        Scalar::Str(v) => Bson::String(v.clone()),
        Scalar::Int(v) => Bson::Int64(*v),
        Scalar::Bool(v) => Bson::Boolean(*v),
    }
}

fn filter(conds: &[Cond]) -> bson::Document {
    let mut f = bson::Document::new();
    for c in conds {
        let op = match c.op {
            Op::Eq => "$eq",
            Op::Ne => "$ne",
            Op::Gt => "$gt",
            Op::Gte => "$gte",
            Op::Lt => "$lt",
            Op::Lte => "$lte",
        };
        let entry = f.entry(c.field.clone()).or_insert_with(|| Bson::Document(bson::Document::new()));
        if let Bson::Document(ops) = entry {
            ops.insert(op, scalar(&c.value));
        }
    }
    f
}

fn majority(timeout: Duration) -> WriteConcern {
    WriteConcern::builder().w(Acknowledgment::Majority).w_timeout(timeout).build()
}

/// JSON to BSON by hand: `bson::to_document` would read objects such as
/// `{"$date": 0}` or `{"$numberLong": "7"}` (which a merchant may put in metadata) as
/// extended JSON and store a different type.
fn to_bson(doc: &Document) -> Result<bson::Document, StoreError> {
    fn value(v: &serde_json::Value) -> Result<Bson, StoreError> {
        Ok(match v {
            serde_json::Value::Null => Bson::Null,
            serde_json::Value::Bool(b) => Bson::Boolean(*b),
            serde_json::Value::Number(n) => match (n.as_i64(), n.as_f64()) {
                (Some(i), _) => Bson::Int64(i),
                (None, Some(f)) => Bson::Double(f),
                _ => return Err(StoreError::Other("number out of range for BSON".into())),
            },
            serde_json::Value::String(s) => Bson::String(s.clone()),
            serde_json::Value::Array(items) => Bson::Array(items.iter().map(value).collect::<Result<_, _>>()?),
            serde_json::Value::Object(map) => Bson::Document(to_bson(map)?),
        })
    }
    doc.iter().map(|(k, v)| Ok((k.clone(), value(v)?))).collect()
}

fn from_bson(doc: bson::Document) -> Document {
    match Bson::Document(doc).into_relaxed_extjson() {
        serde_json::Value::Object(map) => map,
        _ => Document::new(),
    }
}

/// [`classify`], naming the collection in a duplicate-key error.
fn classify_in(collection: &str) -> impl Fn(mongodb::error::Error) -> StoreError + '_ {
    move |e| match classify(e) {
        StoreError::Duplicate { .. } => StoreError::Duplicate { collection: collection.to_string() },
        other => other,
    }
}

/// Maps driver errors onto the port's: duplicate keys, write conflicts, unreachable
/// servers. The message never contains the URI (the driver does not put it there).
fn classify(e: mongodb::error::Error) -> StoreError {
    const DUPLICATE_KEY: i32 = 11000;
    const WRITE_CONFLICT: i32 = 112;
    if e.contains_label(TRANSIENT_TRANSACTION_ERROR) {
        return StoreError::Conflict(format!("transient transaction error: {}", e.kind));
    }
    // A commit whose outcome the driver could not learn, or a write the server may retry:
    // unknown outcome, which callers handle by re-reading (as for a timeout).
    if e.contains_label(UNKNOWN_TRANSACTION_COMMIT_RESULT) || e.contains_label(RETRYABLE_WRITE_ERROR) {
        return StoreError::Unavailable(e.kind.to_string());
    }
    match e.kind.as_ref() {
        ErrorKind::Write(WriteFailure::WriteError(we)) if we.code == DUPLICATE_KEY => {
            StoreError::Duplicate { collection: String::new() }
        }
        ErrorKind::Command(ce) if ce.code == DUPLICATE_KEY => StoreError::Duplicate { collection: String::new() },
        ErrorKind::Command(ce) if ce.code == WRITE_CONFLICT => StoreError::Conflict(ce.message.clone()),
        ErrorKind::Command(ce) if BUSY_OR_STEPPING_DOWN.contains(&ce.code) => {
            StoreError::Unavailable(e.kind.to_string())
        }
        ErrorKind::Write(WriteFailure::WriteConcernError(wce)) if BUSY_OR_STEPPING_DOWN.contains(&wce.code) => {
            StoreError::Unavailable(e.kind.to_string())
        }
        ErrorKind::ServerSelection { .. } | ErrorKind::Io(_) | ErrorKind::ConnectionPoolCleared { .. } => {
            StoreError::Unavailable(e.kind.to_string())
        }
        _ => StoreError::Other(e.kind.to_string()),
    }
}

/// Server codes that say "not now" rather than "never": a query past its time limit, a
/// write concern that timed out (its write may still apply: unknown outcome), and a
/// primary shutting down or stepping down (a failover, over in seconds).
const BUSY_OR_STEPPING_DOWN: [i32; 9] = [
    50,    // MaxTimeMSExpired
    64,    // WriteConcernFailed (wtimeout)
    91,    // ShutdownInProgress
    189,   // PrimarySteppedDown
    10107, // NotWritablePrimary
    11600, // InterruptedAtShutdown
    11602, // InterruptedDueToReplStateChange
    13435, // NotPrimaryNoSecondaryOk
    13436, // NotPrimaryOrSecondary
];
