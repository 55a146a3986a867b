//! The local stack end to end: each trigger reaches its handler in the shape AWS gives it,
//! on the in-memory backends and on the real services; and every sample event in
//! `events/` runs through its handler.

mod events;
mod sam_local;
mod stack;
mod webhooks;
