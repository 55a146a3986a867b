//! Document store port (MongoDB): JSON documents keyed by a string `_id`, unique
//! indexes, simple typed queries, conditional updates and atomic multi-document
//! transactions.
//!
//! Queries are built from [`Cond`]s over typed [`Scalar`]s, never from client JSON, so
//! operator-shaped input (`{"$gt": ""}`) cannot reach a query.

mod memory;
mod mongo;

pub use memory::MemoryDocuments;
pub use mongo::MongoDocuments;

use crate::dependency_span;
use crate::otel::traced;
use serde_json::{Map, Value};

pub type Document = Map<String, Value>;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// A unique index rejected the write (MongoDB error 11000).
    #[error("duplicate key in {collection}")]
    Duplicate { collection: String },
    /// A conditional update matched nothing, or a concurrent transaction won: the caller
    /// re-reads and decides again.
    #[error("conflict: {0}")]
    Conflict(String),
    #[error("document store unavailable: {0}")]
    Unavailable(String),
    #[error("document store error: {0}")]
    Other(String),
}

/// A typed value a query may compare against.
#[derive(Debug, Clone, PartialEq)]
pub enum Scalar {
    Str(String),
    Int(i64),
    Bool(bool),
}

impl From<&str> for Scalar {
    fn from(s: &str) -> Self {
        Scalar::Str(s.to_string())
    }
}
impl From<String> for Scalar {
    fn from(s: String) -> Self {
        Scalar::Str(s)
    }
}
impl From<i64> for Scalar {
    fn from(v: i64) -> Self {
        Scalar::Int(v)
    }
}
impl From<bool> for Scalar {
    fn from(v: bool) -> Self {
        Scalar::Bool(v)
    }
}

impl Scalar {
    fn to_json(&self) -> Value {
        match self {
            Scalar::Str(s) => Value::String(s.clone()),
            Scalar::Int(i) => Value::from(*i),
            Scalar::Bool(b) => Value::Bool(*b),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Op {
    Eq,
    Ne,
    Gt,
    Gte,
    Lt,
    Lte,
}

/// One condition on a top-level field.
#[derive(Debug, Clone, PartialEq)]
pub struct Cond {
    pub field: String,
    pub op: Op,
    pub value: Scalar,
}

impl Cond {
    pub fn new(field: &str, op: Op, value: impl Into<Scalar>) -> Self {
        Cond { field: field.to_string(), op, value: value.into() }
    }
    pub fn eq(field: &str, value: impl Into<Scalar>) -> Self {
        Cond::new(field, Op::Eq, value)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Order {
    Asc,
    Desc,
}

/// A query: all conditions must hold; results sorted by one field then `_id`.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Query {
    pub conds: Vec<Cond>,
    pub sort: Option<(String, Order)>,
    pub limit: Option<u32>,
}

impl Query {
    pub fn new() -> Self {
        Query::default()
    }
    pub fn filter(mut self, cond: Cond) -> Self {
        self.conds.push(cond);
        self
    }
    pub fn sort(mut self, field: &str, order: Order) -> Self {
        self.sort = Some((field.to_string(), order));
        self
    }
    /// At least one: MongoDB reads `limit: 0` as "no limit".
    pub fn limit(mut self, n: u32) -> Self {
        self.limit = Some(n.max(1));
        self
    }
}

/// A secondary index. Every field a query filters or sorts on needs one (the SecantusDB
/// stand-in scans slowly without; MongoDB does too, only faster).
#[derive(Debug, Clone, PartialEq)]
pub struct IndexSpec {
    pub collection: String,
    pub fields: Vec<String>,
    pub unique: bool,
}

impl IndexSpec {
    pub fn new(collection: &str, fields: &[&str]) -> Self {
        IndexSpec {
            collection: collection.to_string(),
            fields: fields.iter().map(|f| f.to_string()).collect(),
            unique: false,
        }
    }
    pub fn unique(mut self) -> Self {
        self.unique = true;
        self
    }
    fn name(&self) -> String {
        format!("{}{}", self.fields.join("_"), if self.unique { "_unique" } else { "" })
    }
}

/// One write inside a transaction.
#[derive(Debug, Clone, PartialEq)]
pub enum Write {
    /// Insert a new document (its `_id` must be a string).
    Insert { collection: String, doc: Document },
    /// `$set` the given fields on the document with this `_id`, but only if every
    /// condition holds; otherwise the whole transaction fails with `Conflict`.
    Update { collection: String, id: String, conds: Vec<Cond>, set: Document },
    /// Remove the document with this `_id` (no error if it is absent).
    Delete { collection: String, id: String },
}

/// The document store. Cheap to clone; clones share the connection pool or the model.
#[derive(Clone)]
pub enum DocumentStore {
    Memory(MemoryDocuments),
    Mongo(MongoDocuments),
}

impl DocumentStore {
    pub async fn ensure_indexes(&self, specs: &[IndexSpec]) -> Result<(), StoreError> {
        match self {
            DocumentStore::Memory(m) => m.ensure_indexes(specs),
            DocumentStore::Mongo(m) => {
                traced(dependency_span!("mongodb", "createIndexes", "*"), m.ensure_indexes(specs)).await
            }
        }
    }

    pub async fn insert(&self, collection: &str, doc: Document) -> Result<(), StoreError> {
        self.transaction(vec![Write::Insert { collection: collection.to_string(), doc }]).await
    }

    pub async fn get(&self, collection: &str, id: &str) -> Result<Option<Document>, StoreError> {
        match self {
            DocumentStore::Memory(m) => Ok(m.get(collection, id)),
            DocumentStore::Mongo(m) => {
                traced(dependency_span!("mongodb", "find", collection), m.get(collection, id)).await
            }
        }
    }

    /// The documents with these `_id`s (absent ones are skipped), in one round trip.
    pub async fn get_many(&self, collection: &str, ids: &[String]) -> Result<Vec<Document>, StoreError> {
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        match self {
            DocumentStore::Memory(m) => Ok(m.get_many(collection, ids)),
            DocumentStore::Mongo(m) => {
                traced(
                    dependency_span!("mongodb", "find", collection, db.documents = ids.len()),
                    m.get_many(collection, ids),
                )
                .await
            }
        }
    }

    /// Inserts a batch, skipping documents whose `_id` is already stored: for writes that
    /// are deterministic per id, so a rerun after a crash converges on one clean run.
    /// Returns how many were new. Not a transaction: a failure may leave part written.
    pub async fn insert_many_new(&self, collection: &str, docs: Vec<Document>) -> Result<usize, StoreError> {
        if docs.is_empty() {
            return Ok(0);
        }
        for doc in &docs {
            doc.keys().try_for_each(|k| check_field(k))?;
            doc_id(doc)?;
        }
        match self {
            DocumentStore::Memory(m) => m.insert_many_new(collection, docs),
            DocumentStore::Mongo(m) => {
                let span = dependency_span!("mongodb", "insertMany", collection, db.documents = docs.len());
                traced(span, m.insert_many_new(collection, docs)).await
            }
        }
    }

    pub async fn find(&self, collection: &str, query: &Query) -> Result<Vec<Document>, StoreError> {
        for cond in &query.conds {
            check_field(&cond.field)?;
        }
        match self {
            DocumentStore::Memory(m) => m.find(collection, query),
            DocumentStore::Mongo(m) => {
                traced(dependency_span!("mongodb", "find", collection), m.find(collection, query)).await
            }
        }
    }

    /// Conditional `$set` on one document: `Ok(false)` when the document is absent or a
    /// condition does not hold (compare-and-set; the caller re-reads).
    pub async fn update(
        &self,
        collection: &str,
        id: &str,
        conds: Vec<Cond>,
        set: Document,
    ) -> Result<bool, StoreError> {
        let write = Write::Update { collection: collection.to_string(), id: id.to_string(), conds, set };
        match self.transaction(vec![write]).await {
            Ok(()) => Ok(true),
            Err(StoreError::Conflict(_)) => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// Applies every write or none of them.
    pub async fn transaction(&self, writes: Vec<Write>) -> Result<(), StoreError> {
        for write in &writes {
            check_write(write)?;
        }
        match self {
            DocumentStore::Memory(m) => m.transaction(writes),
            DocumentStore::Mongo(m) => {
                let span = dependency_span!("mongodb", "transaction", collections(&writes), db.writes = writes.len());
                traced(span, m.transaction(writes)).await
            }
        }
    }

    pub async fn ping(&self) -> Result<(), StoreError> {
        match self {
            DocumentStore::Memory(_) => Ok(()),
            DocumentStore::Mongo(m) => traced(dependency_span!("mongodb", "ping", "admin"), m.ping()).await,
        }
    }
}

/// The collections a transaction writes, for its span's name.
fn collections(writes: &[Write]) -> String {
    let mut names: Vec<&str> = writes
        .iter()
        .map(|w| match w {
            Write::Insert { collection, .. } | Write::Update { collection, .. } | Write::Delete { collection, .. } => {
                collection.as_str()
            }
        })
        .collect();
    names.dedup();
    names.join(",")
}

/// Field names are plain top-level names: a `.` would be a path and a leading `$` an
/// operator to MongoDB, but literal keys to the model, so both are refused everywhere.
fn check_field(name: &str) -> Result<(), StoreError> {
    if name.is_empty() || name.contains('.') || name.starts_with('$') || name.contains('\0') {
        return Err(StoreError::Other(format!("field name {name:?} is not a plain top-level name")));
    }
    Ok(())
}

fn check_write(write: &Write) -> Result<(), StoreError> {
    match write {
        Write::Insert { doc, .. } => doc.keys().try_for_each(|k| check_field(k)),
        Write::Update { conds, set, .. } => {
            conds.iter().try_for_each(|c| check_field(&c.field))?;
            if set.contains_key("_id") {
                return Err(StoreError::Other("_id cannot be updated".into()));
            }
            set.keys().try_for_each(|k| check_field(k))
        }
        Write::Delete { .. } => Ok(()),
    }
}

/// The `_id` of a document, which must be a string.
fn doc_id(doc: &Document) -> Result<&str, StoreError> {
    doc.get("_id").and_then(Value::as_str).ok_or_else(|| StoreError::Other("document has no string _id".to_string()))
}
