//! In-memory document store: a faithful model of the MongoDB adapter's contract
//! (unique indexes collide, conditional updates conflict, transactions roll back whole).

use super::{doc_id, Cond, Document, IndexSpec, Op, Order, Query, Scalar, StoreError, Write};
use serde_json::Value;
use std::cmp::Ordering;
use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex, MutexGuard};

#[derive(Default)]
struct State {
    collections: HashMap<String, BTreeMap<String, Document>>,
    indexes: HashMap<String, Vec<IndexSpec>>,
    /// collection → how many of its next finds fail (see `fail_next_finds`).
    failing_finds: HashMap<String, usize>,
}

#[derive(Clone, Default)]
pub struct MemoryDocuments {
    state: Arc<Mutex<State>>,
}

/// What to put back if a transaction fails part-way.
struct Undo {
    collection: String,
    id: String,
    previous: Option<Document>,
}

impl MemoryDocuments {
    pub fn new() -> Self {
        Self::default()
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // A panic while holding the lock cannot leave a half-applied transaction (writes
        // are undone before returning), so a poisoned lock is still consistent.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub(super) fn ensure_indexes(&self, specs: &[IndexSpec]) -> Result<(), StoreError> {
        let mut state = self.lock();
        for spec in specs {
            let list = state.indexes.entry(spec.collection.clone()).or_default();
            if !list.contains(spec) {
                list.push(spec.clone());
            }
        }
        Ok(())
    }

    pub(super) fn get(&self, collection: &str, id: &str) -> Option<Document> {
        self.lock().collections.get(collection).and_then(|c| c.get(id)).cloned()
    }

    pub(super) fn get_many(&self, collection: &str, ids: &[String]) -> Vec<Document> {
        let state = self.lock();
        let Some(docs) = state.collections.get(collection) else { return Vec::new() };
        ids.iter().filter_map(|id| docs.get(id).cloned()).collect()
    }

    pub(super) fn insert_many_new(&self, collection: &str, docs: Vec<Document>) -> Result<usize, StoreError> {
        let mut state = self.lock();
        let mut inserted = 0;
        for doc in docs {
            let id = doc_id(&doc)?.to_string();
            if state.collections.get(collection).is_some_and(|c| c.contains_key(&id)) {
                continue;
            }
            check_unique(&state, collection, &id, &doc)?;
            state.collections.entry(collection.to_string()).or_default().insert(id, doc);
            inserted += 1;
        }
        Ok(inserted)
    }

    /// Makes the next `n` finds on `collection` fail as an unreachable server would, so
    /// that what a caller does with one failed read can be tested without MongoDB.
    pub fn fail_next_finds(&self, collection: &str, n: usize) {
        self.lock().failing_finds.insert(collection.to_string(), n);
    }

    pub(super) fn find(&self, collection: &str, query: &Query) -> Result<Vec<Document>, StoreError> {
        let mut state = self.lock();
        if let Some(failing) = state.failing_finds.get_mut(collection).filter(|n| **n > 0) {
            *failing -= 1;
            return Err(StoreError::Unavailable(format!("find on {collection} failed (injected)")));
        }
        Ok(Self::find_in(&state, collection, query))
    }

    fn find_in(state: &State, collection: &str, query: &Query) -> Vec<Document> {
        let Some(docs) = state.collections.get(collection) else { return Vec::new() };
        let mut hits: Vec<&Document> = docs.values().filter(|d| query.conds.iter().all(|c| matches(d, c))).collect();
        if let Some((field, order)) = &query.sort {
            hits.sort_by(|a, b| {
                let by_field = compare_values(a.get(field), b.get(field));
                let by_id = compare_values(a.get("_id"), b.get("_id"));
                let ord = by_field.then(by_id);
                if *order == Order::Desc {
                    ord.reverse()
                } else {
                    ord
                }
            });
        }
        let limit = query.limit.map_or(usize::MAX, |l| l as usize);
        hits.into_iter().take(limit).cloned().collect()
    }

    pub(super) fn transaction(&self, writes: Vec<Write>) -> Result<(), StoreError> {
        let mut state = self.lock();
        let mut undo: Vec<Undo> = Vec::with_capacity(writes.len());
        for write in writes {
            if let Err(e) = apply(&mut state, write, &mut undo) {
                for u in undo.into_iter().rev() {
                    let coll = state.collections.entry(u.collection).or_default();
                    match u.previous {
                        Some(doc) => coll.insert(u.id, doc),
                        None => coll.remove(&u.id),
                    };
                }
                return Err(e);
            }
        }
        Ok(())
    }
}

fn apply(state: &mut State, write: Write, undo: &mut Vec<Undo>) -> Result<(), StoreError> {
    match write {
        Write::Insert { collection, doc } => {
            let id = doc_id(&doc)?.to_string();
            let coll = state.collections.entry(collection.clone()).or_default();
            if coll.contains_key(&id) {
                return Err(StoreError::Duplicate { collection });
            }
            check_unique(state, &collection, &id, &doc)?;
            state.collections.entry(collection.clone()).or_default().insert(id.clone(), doc);
            undo.push(Undo { collection, id, previous: None });
        }
        Write::Update { collection, id, conds, set } => {
            let current = state.collections.get(&collection).and_then(|c| c.get(&id)).cloned();
            let Some(current) = current.filter(|d| conds.iter().all(|c| matches(d, c))) else {
                return Err(StoreError::Conflict(format!("{collection}/{id}: condition not met")));
            };
            let mut updated = current.clone();
            for (k, v) in set {
                updated.insert(k, v);
            }
            check_unique(state, &collection, &id, &updated)?;
            state.collections.entry(collection.clone()).or_default().insert(id.clone(), updated);
            undo.push(Undo { collection, id, previous: Some(current) });
        }
        Write::Delete { collection, id } => {
            if let Some(previous) = state.collections.get_mut(&collection).and_then(|c| c.remove(&id)) {
                undo.push(Undo { collection, id, previous: Some(previous) });
            }
        }
    }
    Ok(())
}

/// MongoDB indexes a missing field as null, so two documents both lacking a uniquely
/// indexed field collide; the model does the same.
fn check_unique(state: &State, collection: &str, id: &str, doc: &Document) -> Result<(), StoreError> {
    let Some(indexes) = state.indexes.get(collection) else { return Ok(()) };
    let Some(docs) = state.collections.get(collection) else { return Ok(()) };
    for index in indexes.iter().filter(|i| i.unique) {
        let key = |d: &Document| -> Vec<Value> {
            index.fields.iter().map(|f| d.get(f).cloned().unwrap_or(Value::Null)).collect()
        };
        let mine = key(doc);
        if docs.iter().any(|(other_id, other)| other_id != id && key(other) == mine) {
            return Err(StoreError::Duplicate { collection: collection.to_string() });
        }
    }
    Ok(())
}

/// MongoDB comparison semantics for the subset we use: comparisons only match values of
/// the same type, and `$ne` also matches a missing field.
fn matches(doc: &Document, cond: &Cond) -> bool {
    let wanted = cond.value.to_json();
    let Some(actual) = doc.get(&cond.field) else { return cond.op == Op::Ne };
    let same_type = matches!(
        (&cond.value, actual),
        (Scalar::Str(_), Value::String(_)) | (Scalar::Int(_), Value::Number(_)) | (Scalar::Bool(_), Value::Bool(_))
    );
    if !same_type {
        return cond.op == Op::Ne;
    }
    let ord = compare_values(Some(actual), Some(&wanted));
    match cond.op {
        Op::Eq => ord == Ordering::Equal,
        Op::Ne => ord != Ordering::Equal,
        Op::Gt => ord == Ordering::Greater,
        Op::Gte => ord != Ordering::Less,
        Op::Lt => ord == Ordering::Less,
        Op::Lte => ord != Ordering::Greater,
    }
}

/// BSON sort order for the types we store: missing/null < numbers < strings < booleans.
fn compare_values(a: Option<&Value>, b: Option<&Value>) -> Ordering {
    fn rank(v: Option<&Value>) -> u8 {
        match v {
            None | Some(Value::Null) => 0,
            Some(Value::Number(_)) => 1,
            Some(Value::String(_)) => 2,
            Some(Value::Object(_)) => 3,
            Some(Value::Array(_)) => 4,
            Some(Value::Bool(_)) => 5,
        }
    }
    match (a, b) {
        (Some(Value::Number(x)), Some(Value::Number(y))) => match (x.as_i64(), y.as_i64()) {
            (Some(x), Some(y)) => x.cmp(&y),
            _ => x.as_f64().partial_cmp(&y.as_f64()).unwrap_or(Ordering::Equal),
        },
        (Some(Value::String(x)), Some(Value::String(y))) => x.cmp(y),
        (Some(Value::Bool(x)), Some(Value::Bool(y))) => x.cmp(y),
        _ => rank(a).cmp(&rank(b)),
    }
}
