//! The durable [`CommitStore`]: one embedded [redb](https://docs.rs/redb) database file per node
//! (feature `redb`, on by default).
//!
//! redb is pure Rust and ACID: every [`CommitStore::apply`] is one write transaction, committed
//! with redb's default immediate durability (synced to disk before the call returns), so a node
//! that stops at any instant finds on restart every write it was told had succeeded, and a write
//! interrupted by the stop either wholly there or wholly absent. A write that is refused (for
//! example a second, different own output) aborts its transaction and changes nothing.
//!
//! # File layout (schema version [`SCHEMA_VERSION`])
//!
//! | Table | Key | Value |
//! |---|---|---|
//! | `rakis.meta` | `"format"`, `"schema"` | [`FORMAT_MARKER`], the schema version (`u32`, little endian) |
//! | `rakis.records` | request id (32 bytes) | the request's [`QuorumRecord`] (postcard) |
//! | `rakis.recover` | request id | `()`: the record [needs recovery](QuorumRecord::needs_recovery) |
//! | `rakis.closed` | (deadline ms, request id) | `()`: closed records, oldest first, for retention |
//!
//! The two index tables are kept in the same transaction as the record they describe, so a restart
//! reads only the records it must recover and retention never decodes a record.
//!
//! # Opening
//!
//! [`RedbStore::open`] refuses with a typed error, and changes nothing in, a file that is not a
//! redb database ([`StoreError::Corrupted`]; it is not even opened for writing), a redb database
//! of another program ([`StoreError::Corrupted`]), a Rakis store of a newer schema
//! ([`StoreError::UnsupportedSchema`]) and a file already open in this or another process
//! ([`StoreError::Locked`]). (redb itself may repair a redb file left by a crash, or update its
//! allocator bookkeeping when closing one; it never changes tables.) A file redb cannot read
//! (truncated, damaged) is [`StoreError::Corrupted`], also when redb panics on it. An older schema is migrated in one transaction: a failed migration
//! leaves the file at its old version. Any change to the encoding of the stored types must bump
//! [`SCHEMA_VERSION`] and add a migration step.

use std::io::Read;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use ::redb::{
    Database, Error as RedbError, MultimapTableHandle, ReadableTable, TableDefinition, TableError,
    TableHandle, WriteTransaction,
};
use async_trait::async_trait;
use tracing::{debug, info, warn};

pub use ::redb::backends;
pub use ::redb::StorageBackend;

use crate::error::SharedError;
use crate::store::{apply_to_record, QuorumRecord, StoreOp};
use crate::store::{CommitStore, StoreError};
use crate::RequestId;

/// The schema version this build reads and writes.
pub const SCHEMA_VERSION: u32 = 2;
/// The marker in the metadata table that identifies a Rakis store.
pub const FORMAT_MARKER: &[u8] = b"rakis-store";
/// Cache redb may use, at most (it grows with use).
const CACHE_BYTES: usize = 64 << 20;
/// The first bytes of every redb database file.
const REDB_MAGIC: [u8; 9] = [b'r', b'e', b'd', b'b', 0x1A, 0x0A, 0xA9, 0x0D, 0x0A];

const META: TableDefinition<&str, &[u8]> = TableDefinition::new("rakis.meta");
const RECORDS: TableDefinition<[u8; 32], &[u8]> = TableDefinition::new("rakis.records");
const RECOVER: TableDefinition<[u8; 32], ()> = TableDefinition::new("rakis.recover");
const CLOSED: TableDefinition<(u64, [u8; 32]), ()> = TableDefinition::new("rakis.closed");

const META_FORMAT: &str = "format";
const META_SCHEMA: &str = "schema";

/// One step of the schema migration chain: turns a store of schema `from` into `from + 1`,
/// inside the transaction that also records the new version.
#[derive(Clone, Copy)]
struct Migration {
    from: u32,
    description: &'static str,
    apply: fn(&WriteTransaction) -> Result<(), StoreError>,
}

/// The migrations of this build, oldest first. None yet: schema 2 (commits and reveals with
/// their statement signatures, results bound to a configuration) cannot be made from schema 1,
/// whose commits carry no statement signature to hold against their committers; a store of
/// schema 1 is refused ([`StoreError::UnsupportedSchema`]) and is started anew.
const MIGRATIONS: &[Migration] = &[];

/// A [`CommitStore`] on an embedded redb database file. Clones share the same open database.
///
/// The database work of the async methods runs on tokio's blocking pool (`spawn_blocking`) when
/// a tokio runtime is present, inline otherwise.
#[derive(Clone)]
pub struct RedbStore {
    inner: Arc<Inner>,
}

struct Inner {
    db: Database,
    path: Option<PathBuf>,
    label: String,
}

impl std::fmt::Debug for RedbStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedbStore")
            .field("store", &self.inner.label)
            .finish()
    }
}

impl RedbStore {
    /// Opens the store file at `path`, creating it when it does not exist (or is empty).
    /// Blocking (it may repair the file after a crash): from async code prefer
    /// [`RedbStore::open_async`].
    pub fn open(path: impl AsRef<Path>) -> Result<Self, StoreError> {
        let path = path.as_ref().to_path_buf();
        let label = path.display().to_string();
        refuse_foreign_file(&path, &label)?;
        let db = guard_panics(&label, || {
            ::redb::Builder::new()
                .set_cache_size(CACHE_BYTES)
                .create(&path)
                .map_err(|e| map_err(&label, e.into()))
        })?;
        Self::init(db, Some(path), label, SCHEMA_VERSION, MIGRATIONS)
    }

    /// [`RedbStore::open`] on tokio's blocking pool.
    pub async fn open_async(path: impl AsRef<Path>) -> Result<Self, StoreError> {
        let path = path.as_ref().to_path_buf();
        tokio::task::spawn_blocking(move || Self::open(path))
            .await
            .map_err(|e| StoreError::io("opening the store", e))?
    }

    /// Opens a store on any redb storage backend (for example
    /// [`backends::InMemoryBackend`], or a wrapper that injects faults in tests). `label` names
    /// it in errors and logs.
    pub fn open_with_backend(
        backend: impl StorageBackend,
        label: &str,
    ) -> Result<Self, StoreError> {
        let label = label.to_string();
        let db = guard_panics(&label, || {
            ::redb::Builder::new()
                .set_cache_size(CACHE_BYTES)
                .create_with_backend(backend)
                .map_err(|e| map_err(&label, e.into()))
        })?;
        Self::init(db, None, label, SCHEMA_VERSION, MIGRATIONS)
    }

    /// The file of this store, when it has one.
    pub fn path(&self) -> Option<&Path> {
        self.inner.path.as_deref()
    }

    /// Every stored record, in request id order (for inspection and tests; a node never needs
    /// them all at once).
    pub async fn all_quorums(&self) -> Result<Vec<QuorumRecord>, StoreError> {
        self.blocking(|inner| {
            let txn = inner.db.begin_read().map_err(|e| inner.err(e.into()))?;
            let records = match txn.open_table(RECORDS) {
                Ok(t) => t,
                Err(TableError::TableDoesNotExist(_)) => return Ok(Vec::new()),
                Err(e) => return Err(inner.err(e.into())),
            };
            let mut out = Vec::new();
            for entry in records.iter().map_err(|e| inner.err(e.into()))? {
                let (k, v) = entry.map_err(|e| inner.err(e.into()))?;
                out.push(inner.decode(&k.value(), v.value())?);
            }
            Ok(out)
        })
        .await
    }

    /// Checks an opened database's metadata: initializes a new store, refuses a foreign or newer
    /// one, migrates an older one.
    fn init(
        db: Database,
        path: Option<PathBuf>,
        label: String,
        target: u32,
        migrations: &[Migration],
    ) -> Result<Self, StoreError> {
        let inner = Inner { db, path, label };
        let found = inner.read_meta()?;
        match found {
            None => inner.create_schema(target)?,
            Some(v) if v == target => {
                debug!(store = %inner.label, schema = v, "store opened")
            }
            Some(v) if v > target => return Err(StoreError::UnsupportedSchema(v)),
            Some(v) => inner.migrate(v, target, migrations)?,
        }
        Ok(RedbStore {
            inner: Arc::new(inner),
        })
    }

    /// Runs `f` on the blocking pool (inline without a tokio runtime). A panic inside the
    /// database library becomes an error, never a panic of the caller.
    async fn blocking<T: Send + 'static>(
        &self,
        f: impl FnOnce(&Inner) -> Result<T, StoreError> + Send + 'static,
    ) -> Result<T, StoreError> {
        let inner = self.inner.clone();
        if tokio::runtime::Handle::try_current().is_err() {
            let label = inner.label.clone();
            return guard_panics(&label, || f(&inner));
        }
        match tokio::task::spawn_blocking(move || f(&inner)).await {
            Ok(r) => r,
            Err(e) if e.is_panic() => Err(StoreError::Io {
                context: format!("{}: the database library panicked", self.inner.label),
                source: SharedError::msg(panic_message(e.into_panic().as_ref())),
            }),
            Err(e) => Err(StoreError::io("store task", e)),
        }
    }
}

impl Inner {
    fn err(&self, e: RedbError) -> StoreError {
        map_err(&self.label, e)
    }

    fn decode(&self, key: &[u8; 32], bytes: &[u8]) -> Result<QuorumRecord, StoreError> {
        let record: QuorumRecord = postcard::from_bytes(bytes).map_err(|e| {
            StoreError::Corrupted(format!(
                "{}: record {} does not decode: {e}",
                self.label,
                RequestId(*key).short()
            ))
        })?;
        if record.request.id().0 != *key {
            return Err(StoreError::Corrupted(format!(
                "{}: record {} holds another request",
                self.label,
                RequestId(*key).short()
            )));
        }
        Ok(record)
    }

    /// The schema version of a Rakis store, `None` for a database with no table at all (a new
    /// file), [`StoreError::Corrupted`] for anything else.
    fn read_meta(&self) -> Result<Option<u32>, StoreError> {
        let txn = self.db.begin_read().map_err(|e| self.err(e.into()))?;
        let meta = match txn.open_table(META) {
            Ok(t) => t,
            Err(TableError::TableDoesNotExist(_)) => {
                let mut tables: Vec<String> = txn
                    .list_tables()
                    .map_err(|e| self.err(e.into()))?
                    .map(|t| t.name().to_string())
                    .collect();
                tables.extend(
                    txn.list_multimap_tables()
                        .map_err(|e| self.err(e.into()))?
                        .map(|t| t.name().to_string()),
                );
                if tables.is_empty() {
                    return Ok(None);
                }
                return Err(StoreError::Corrupted(format!(
                    "{} is a redb database of another program (tables: {}), not a Rakis store",
                    self.label,
                    tables.join(", ")
                )));
            }
            Err(e) => return Err(self.err(e.into())),
        };
        let format = meta
            .get(META_FORMAT)
            .map_err(|e| self.err(e.into()))?
            .map(|v| v.value().to_vec());
        if format.as_deref() != Some(FORMAT_MARKER) {
            return Err(StoreError::Corrupted(format!(
                "{}: missing or unknown format marker, not a Rakis store",
                self.label
            )));
        }
        let schema = meta
            .get(META_SCHEMA)
            .map_err(|e| self.err(e.into()))?
            .and_then(|v| <[u8; 4]>::try_from(v.value()).ok())
            .ok_or_else(|| {
                StoreError::Corrupted(format!("{}: missing schema version", self.label))
            })?;
        Ok(Some(u32::from_le_bytes(schema)))
    }

    fn create_schema(&self, version: u32) -> Result<(), StoreError> {
        let txn = self.db.begin_write().map_err(|e| self.err(e.into()))?;
        {
            let mut meta = txn.open_table(META).map_err(|e| self.err(e.into()))?;
            meta.insert(META_FORMAT, FORMAT_MARKER)
                .map_err(|e| self.err(e.into()))?;
            meta.insert(META_SCHEMA, version.to_le_bytes().as_slice())
                .map_err(|e| self.err(e.into()))?;
            txn.open_table(RECORDS).map_err(|e| self.err(e.into()))?;
            txn.open_table(RECOVER).map_err(|e| self.err(e.into()))?;
            txn.open_table(CLOSED).map_err(|e| self.err(e.into()))?;
        }
        txn.commit().map_err(|e| self.err(e.into()))?;
        info!(store = %self.label, schema = version, "created a new store");
        Ok(())
    }

    /// Runs the migration steps from `from` to `to` and records `to`, all in one transaction.
    fn migrate(&self, from: u32, to: u32, migrations: &[Migration]) -> Result<(), StoreError> {
        let txn = self.db.begin_write().map_err(|e| self.err(e.into()))?;
        for v in from..to {
            let Some(step) = migrations.iter().find(|m| m.from == v) else {
                return Err(StoreError::UnsupportedSchema(from));
            };
            info!(store = %self.label, from = v, to = v + 1, step = step.description, "migrating the store schema");
            (step.apply)(&txn)?;
        }
        {
            let mut meta = txn.open_table(META).map_err(|e| self.err(e.into()))?;
            meta.insert(META_SCHEMA, to.to_le_bytes().as_slice())
                .map_err(|e| self.err(e.into()))?;
        }
        txn.commit().map_err(|e| self.err(e.into()))?;
        Ok(())
    }

    fn apply(&self, op: StoreOp) -> Result<(), StoreError> {
        let key = op.request_id().0;
        let txn = self.db.begin_write().map_err(|e| self.err(e.into()))?;
        match self.apply_in(&txn, key, op) {
            Ok(true) => txn.commit().map_err(|e| self.err(e.into())),
            Ok(false) => txn.abort().map_err(|e| self.err(e.into())),
            Err(e) => {
                if let Err(abort) = txn.abort() {
                    warn!(store = %self.label, error = %abort, "aborting a refused write failed");
                }
                Err(e)
            }
        }
    }

    /// Applies `op` inside `txn`; returns whether anything changed (a repeated write changes
    /// nothing and is not committed).
    fn apply_in(
        &self,
        txn: &WriteTransaction,
        key: [u8; 32],
        op: StoreOp,
    ) -> Result<bool, StoreError> {
        let mut records = txn.open_table(RECORDS).map_err(|e| self.err(e.into()))?;
        let existing = match records.get(key).map_err(|e| self.err(e.into()))? {
            Some(v) => Some(self.decode(&key, v.value())?),
            None => None,
        };
        let next = apply_to_record(existing.as_ref(), op)?;
        if existing.as_ref() == Some(&next) {
            return Ok(false);
        }
        let bytes = postcard::to_allocvec(&next)
            .map_err(|e| StoreError::io(format!("{}: encoding a record", self.label), e))?;
        records
            .insert(key, bytes.as_slice())
            .map_err(|e| self.err(e.into()))?;
        let mut recover = txn.open_table(RECOVER).map_err(|e| self.err(e.into()))?;
        if next.needs_recovery() {
            recover.insert(key, ()).map_err(|e| self.err(e.into()))?;
        } else {
            recover.remove(key).map_err(|e| self.err(e.into()))?;
        }
        if next.is_closed() && !existing.is_some_and(|e| e.is_closed()) {
            txn.open_table(CLOSED)
                .map_err(|e| self.err(e.into()))?
                .insert((next.request.deadline_ms(), key), ())
                .map_err(|e| self.err(e.into()))?;
        }
        Ok(true)
    }

    fn quorum(&self, key: [u8; 32]) -> Result<Option<QuorumRecord>, StoreError> {
        let txn = self.db.begin_read().map_err(|e| self.err(e.into()))?;
        let records = match txn.open_table(RECORDS) {
            Ok(t) => t,
            Err(TableError::TableDoesNotExist(_)) => return Ok(None),
            Err(e) => return Err(self.err(e.into())),
        };
        let value = records.get(key).map_err(|e| self.err(e.into()))?;
        value.map(|v| self.decode(&key, v.value())).transpose()
    }

    /// The records listed in the recovery index that pass `keep`.
    fn recoverable(
        &self,
        keep: impl Fn(&QuorumRecord) -> bool,
    ) -> Result<Vec<QuorumRecord>, StoreError> {
        let txn = self.db.begin_read().map_err(|e| self.err(e.into()))?;
        let (recover, records) = match (txn.open_table(RECOVER), txn.open_table(RECORDS)) {
            (Ok(a), Ok(b)) => (a, b),
            (Err(TableError::TableDoesNotExist(_)), _)
            | (_, Err(TableError::TableDoesNotExist(_))) => return Ok(Vec::new()),
            (Err(e), _) | (_, Err(e)) => return Err(self.err(e.into())),
        };
        let mut out = Vec::new();
        for entry in recover.iter().map_err(|e| self.err(e.into()))? {
            let key = entry.map_err(|e| self.err(e.into()))?.0.value();
            let Some(v) = records.get(key).map_err(|e| self.err(e.into()))? else {
                return Err(StoreError::Corrupted(format!(
                    "{}: the recovery index names a missing record {}",
                    self.label,
                    RequestId(key).short()
                )));
            };
            let record = self.decode(&key, v.value())?;
            if keep(&record) {
                out.push(record);
            }
        }
        Ok(out)
    }

    fn prune(&self, closed_before_ms: u64) -> Result<u64, StoreError> {
        let txn = self.db.begin_write().map_err(|e| self.err(e.into()))?;
        let pruned = {
            let mut closed = txn.open_table(CLOSED).map_err(|e| self.err(e.into()))?;
            let old: Vec<(u64, [u8; 32])> = closed
                .range(..(closed_before_ms, [0u8; 32]))
                .map_err(|e| self.err(e.into()))?
                .map(|entry| entry.map(|(k, _)| k.value()))
                .collect::<Result<_, _>>()
                .map_err(|e| self.err(e.into()))?;
            let mut records = txn.open_table(RECORDS).map_err(|e| self.err(e.into()))?;
            let mut recover = txn.open_table(RECOVER).map_err(|e| self.err(e.into()))?;
            for (deadline, key) in &old {
                closed
                    .remove((*deadline, *key))
                    .map_err(|e| self.err(e.into()))?;
                records.remove(*key).map_err(|e| self.err(e.into()))?;
                recover.remove(*key).map_err(|e| self.err(e.into()))?;
            }
            old.len() as u64
        };
        if pruned == 0 {
            txn.abort().map_err(|e| self.err(e.into()))?;
        } else {
            txn.commit().map_err(|e| self.err(e.into()))?;
            info!(store = %self.label, pruned, before_ms = closed_before_ms, "pruned closed requests");
        }
        Ok(pruned)
    }

    fn size_bytes(&self) -> Result<u64, StoreError> {
        if let Some(path) = &self.path {
            return std::fs::metadata(path)
                .map(|m| m.len())
                .map_err(|e| StoreError::io(self.label.clone(), e));
        }
        let txn = self.db.begin_write().map_err(|e| self.err(e.into()))?;
        let stats = txn.stats().map_err(|e| self.err(e.into()))?;
        txn.abort().map_err(|e| self.err(e.into()))?;
        Ok(stats.allocated_pages() * stats.page_size() as u64)
    }
}

#[async_trait]
impl CommitStore for RedbStore {
    async fn apply(&self, op: StoreOp) -> Result<(), StoreError> {
        self.blocking(move |inner| inner.apply(op)).await
    }

    async fn quorum(&self, request_id: &RequestId) -> Result<Option<QuorumRecord>, StoreError> {
        let key = request_id.0;
        self.blocking(move |inner| inner.quorum(key)).await
    }

    async fn open_quorums(&self) -> Result<Vec<QuorumRecord>, StoreError> {
        self.blocking(|inner| inner.recoverable(|r| !r.is_closed()))
            .await
    }

    async fn unsettled_results(&self) -> Result<Vec<QuorumRecord>, StoreError> {
        self.blocking(|inner| inner.recoverable(|r| r.is_closed() && r.has_pending_submission()))
            .await
    }

    async fn prune(&self, closed_before_ms: u64) -> Result<u64, StoreError> {
        self.blocking(move |inner| inner.prune(closed_before_ms))
            .await
    }

    async fn size_bytes(&self) -> Result<u64, StoreError> {
        self.blocking(|inner| inner.size_bytes()).await
    }
}

/// Refuses, without opening it for writing, an existing non-empty file that is not a redb
/// database.
fn refuse_foreign_file(path: &Path, label: &str) -> Result<(), StoreError> {
    let mut file = match std::fs::File::open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(StoreError::io(label, e)),
    };
    let meta = file.metadata().map_err(|e| StoreError::io(label, e))?;
    if meta.is_dir() {
        return Err(StoreError::io(
            label,
            std::io::Error::new(std::io::ErrorKind::IsADirectory, "is a directory"),
        ));
    }
    if meta.len() == 0 {
        return Ok(());
    }
    let mut head = [0u8; REDB_MAGIC.len()];
    match file.read_exact(&mut head) {
        Ok(()) if head == REDB_MAGIC => Ok(()),
        Ok(()) => Err(StoreError::Corrupted(format!(
            "{label} is not a redb database, so not a Rakis store; it was left untouched"
        ))),
        Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => Err(StoreError::Corrupted(
            format!("{label} is too short to be a Rakis store; it was left untouched"),
        )),
        Err(e) => Err(StoreError::io(label, e)),
    }
}

/// Runs `f`, turning a panic of the database library (redb asserts on some damaged headers)
/// into [`StoreError::Corrupted`].
fn guard_panics<T>(
    label: &str,
    f: impl FnOnce() -> Result<T, StoreError>,
) -> Result<T, StoreError> {
    catch_unwind(AssertUnwindSafe(f)).unwrap_or_else(|panic| {
        Err(StoreError::Corrupted(format!(
            "{label}: the database library could not read the file: {}",
            panic_message(panic.as_ref())
        )))
    })
}

fn panic_message(panic: &(dyn std::any::Any + Send)) -> String {
    panic
        .downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| panic.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "unknown panic".into())
}

/// Maps a redb error to the store's typed errors.
fn map_err(label: &str, e: RedbError) -> StoreError {
    match e {
        RedbError::DatabaseAlreadyOpen => StoreError::Locked(format!(
            "{label} is already open (by another process, or by another store in this process); \
             a store file serves one node at a time"
        )),
        RedbError::Corrupted(m) => StoreError::Corrupted(format!("{label}: {m}")),
        RedbError::UpgradeRequired(v) => StoreError::Corrupted(format!(
            "{label}: redb file format {v} needs an upgrade this build does not perform"
        )),
        RedbError::Io(io) if io.kind() == std::io::ErrorKind::InvalidData => {
            StoreError::Corrupted(format!("{label}: not a readable redb database: {io}"))
        }
        RedbError::TableTypeMismatch { .. }
        | RedbError::TableIsMultimap(_)
        | RedbError::TableIsNotMultimap(_)
        | RedbError::TypeDefinitionChanged { .. } => {
            StoreError::Corrupted(format!("{label}: unexpected table layout: {e}"))
        }
        other => StoreError::io(label, other),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn add_marker(txn: &WriteTransaction) -> Result<(), StoreError> {
        let mut meta = txn
            .open_table(META)
            .map_err(|e| StoreError::io("migration", e))?;
        meta.insert("migrated", b"yes".as_slice())
            .map_err(|e| StoreError::io("migration", e))?;
        Ok(())
    }

    fn fail(_: &WriteTransaction) -> Result<(), StoreError> {
        Err(StoreError::Io {
            context: "migration".into(),
            source: SharedError::msg("migration step failed"),
        })
    }

    fn open_at(
        path: &Path,
        target: u32,
        migrations: &[Migration],
    ) -> Result<RedbStore, StoreError> {
        let db = Database::create(path).unwrap();
        RedbStore::init(
            db,
            Some(path.to_path_buf()),
            "test".into(),
            target,
            migrations,
        )
    }

    fn schema_and_marker(store: &RedbStore) -> (Option<u32>, bool) {
        let v = store.inner.read_meta().unwrap();
        let txn = store.inner.db.begin_read().unwrap();
        let meta = txn.open_table(META).unwrap();
        (v, meta.get("migrated").unwrap().is_some())
    }

    #[test]
    fn an_older_schema_is_migrated_in_one_step_chain() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("store.redb");
        drop(open_at(&path, 1, &[]).unwrap());
        let step = Migration {
            from: 1,
            description: "add a marker",
            apply: add_marker,
        };
        let store = open_at(&path, 2, &[step]).unwrap();
        assert_eq!(schema_and_marker(&store), (Some(2), true));
        drop(store);
        // Reopened at the same version: nothing left to migrate.
        let store = open_at(&path, 2, &[]).unwrap();
        assert_eq!(schema_and_marker(&store), (Some(2), true));
    }

    #[test]
    fn a_failed_or_missing_migration_leaves_the_old_version() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("store.redb");
        drop(open_at(&path, 1, &[]).unwrap());
        let steps = [
            Migration {
                from: 1,
                description: "add a marker",
                apply: add_marker,
            },
            Migration {
                from: 2,
                description: "fails",
                apply: fail,
            },
        ];
        assert!(matches!(
            open_at(&path, 3, &steps),
            Err(StoreError::Io { .. })
        ));
        // No step from 1 at all.
        assert!(matches!(
            open_at(&path, 2, &[]),
            Err(StoreError::UnsupportedSchema(1))
        ));
        let store = open_at(&path, 1, &[]).unwrap();
        assert_eq!(schema_and_marker(&store), (Some(1), false));
    }

    #[test]
    fn a_record_under_the_wrong_key_is_reported_corrupted() {
        let dir = tempfile::tempdir().unwrap();
        let store = RedbStore::open(dir.path().join("store.redb")).unwrap();
        let mut request =
            crate::InferenceRequest::new("hi", vec!["m".into()], crate::NodeId([2; 33]), 1_000);
        request.nonce = 1;
        let bytes = postcard::to_allocvec(&QuorumRecord::new(request)).unwrap();
        let txn = store.inner.db.begin_write().unwrap();
        txn.open_table(RECORDS)
            .unwrap()
            .insert([7u8; 32], bytes.as_slice())
            .unwrap();
        txn.open_table(RECOVER)
            .unwrap()
            .insert([7u8; 32], ())
            .unwrap();
        txn.commit().unwrap();
        assert!(matches!(
            store.inner.quorum([7u8; 32]),
            Err(StoreError::Corrupted(m)) if m.contains("another request")
        ));
        assert!(matches!(
            store.inner.recoverable(|_| true),
            Err(StoreError::Corrupted(_))
        ));
        // Garbage bytes are reported, not panicked on.
        let txn = store.inner.db.begin_write().unwrap();
        txn.open_table(RECORDS)
            .unwrap()
            .insert([8u8; 32], [0xFFu8; 5].as_slice())
            .unwrap();
        txn.commit().unwrap();
        assert!(matches!(
            store.inner.quorum([8u8; 32]),
            Err(StoreError::Corrupted(m)) if m.contains("does not decode")
        ));
    }

    #[test]
    fn the_store_works_without_a_tokio_runtime() {
        let store =
            RedbStore::open_with_backend(backends::InMemoryBackend::new(), "memory").unwrap();
        let request =
            crate::InferenceRequest::new("hi", vec!["m".into()], crate::NodeId([2; 33]), 1_000);
        let id = request.id();
        futures::executor::block_on(store.apply(StoreOp::Request(request))).unwrap();
        let rec = futures::executor::block_on(store.quorum(&id))
            .unwrap()
            .unwrap();
        assert_eq!(rec.request.id(), id);
        assert!(futures::executor::block_on(store.size_bytes()).unwrap() > 0);
    }
}
