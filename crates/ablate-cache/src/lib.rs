//! `ablate-cache` owns content addressing and the on-disk store: the [`Digest`] type, the one
//! explicit struct a key is computed from ([`KeyInput`], serialised canonically), manifests, and
//! `cache/v1/`: versioned buckets, temp-then-rename writes, per-key locks, verification, gc.
//!
//! It must not know about YAML, ops, or scheduling: callers hand it keys, files and metrics.
//! It imports nothing of ablate.

mod digest;
mod error;
mod key;
mod lock;
mod manifest;
mod store;
mod verified;

pub use digest::Digest;
pub use error::CacheError;
pub use key::{DepDigest, HASH_SCHEME, InputRef, InstanceKey, KeyInput, canonical_json};
pub use lock::{HeldLock, KeyLock, LockNote};
pub use manifest::{
    EntryStatus, LEGACY_MANIFEST_FORMAT, MANIFEST_FORMAT, Manifest, Metric, Origin, OutputFile,
};
pub use store::{
    EntryInfo, GcItem, GcReport, Lookup, PipelineIndex, Store, TempEntry, VerifyMode, Writer,
    now_us, write_atomically,
};
pub use verified::CachedEntry;
