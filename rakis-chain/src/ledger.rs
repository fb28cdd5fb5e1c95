//! The embedded ledger: an append-only, hash-chained file of agreed results, the default sink
//! when no chain is configured.
//!
//! # Format
//!
//! ```text
//! file    = magic "RAKISLDG" ‖ version u32 LE ‖ record*
//! record  = length u32 LE ‖ postcard(LedgerRecord)
//! hash_i  = SHA-256("rakis/ledger/v1" ‖ 0x00 ‖ index u64 BE ‖ hash_{i-1} ‖ postcard(entry_i))
//!           hash_{-1} = 32 zero bytes
//! ```
//!
//! Every record stores its index, the previous record's hash and its own hash, so changing any
//! byte of any entry breaks the chain from that entry on; [`LedgerSink::verify`] (and
//! [`verify_file`]) walks the whole file, recomputes every hash and checks every stored
//! signature. A record is written and `fsync`ed before [`ChainSink::submit`] returns. The
//! file is locked while a sink has it open.

use std::collections::BTreeMap;
use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use rakis_core::consensus::AcceptedReveal;
use rakis_core::error::SharedError;
use rakis_core::identity::Signature;
use rakis_core::protocol::{ConsensusResultMsg, InferenceRequest, Origin};
use rakis_core::SubmitReceipt;
use rakis_core::{ChainError, ChainSink, Hash32, NodeId, RequestId};
use serde::{Deserialize, Serialize};
use tracing::{info, warn};

use crate::error::LedgerError;

const MAGIC: &[u8; 8] = b"RAKISLDG";
const VERSION: u32 = 2;
const HEADER: u64 = 12;
/// Largest record accepted when reading (a longer length prefix is damage, not data).
const MAX_RECORD: u32 = 8 * 1024 * 1024;

/// One agreed result as the ledger keeps it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct LedgerEntry {
    /// The request.
    pub request_id: RequestId,
    /// Where the request came from.
    pub origin: Origin,
    /// The agreed output.
    pub output: String,
    /// SHA-256 of the output.
    pub output_hash: Hash32,
    /// Hash of the accepted set.
    pub joint_hash: Hash32,
    /// What the signatures are bound to (chain, contract, epoch).
    pub config_digest: Hash32,
    /// The digest the nodes signed.
    pub result_digest: Hash32,
    /// The accepted set.
    pub accepted: Vec<AcceptedReveal>,
    /// The nodes' signatures over the result digest (EIP-191), one per node.
    pub signatures: Vec<(NodeId, Signature)>,
    /// When the entry was written (ms since the Unix epoch).
    pub recorded_at_ms: u64,
}

/// A ledger record: an entry linked into the hash chain.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct LedgerRecord {
    /// Position in the ledger, from 0.
    pub index: u64,
    /// Hash of the previous record (zeros for the first).
    pub prev: Hash32,
    /// The entry.
    pub entry: LedgerEntry,
    /// This record's hash.
    pub hash: Hash32,
}

/// The hash of a record, see the module docs.
pub fn record_hash(index: u64, prev: &Hash32, entry: &LedgerEntry) -> Hash32 {
    let mut pre = b"rakis/ledger/v1\0".to_vec();
    pre.extend(index.to_be_bytes());
    pre.extend(prev.0);
    pre.extend(postcard::to_allocvec(entry).expect("entries always encode"));
    rakis_core::consensus::sha256(&pre)
}

/// What a verification found.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LedgerSummary {
    /// Number of entries.
    pub entries: u64,
    /// Hash of the last record (zeros when empty): publish it to anchor the ledger.
    pub head: Hash32,
}

/// The append-only ledger sink. Cheap to clone (clones share the file).
#[derive(Clone)]
pub struct LedgerSink {
    inner: Arc<Mutex<Inner>>,
    path: PathBuf,
}

struct Inner {
    file: File,
    next_index: u64,
    head: Hash32,
    by_request: BTreeMap<RequestId, u64>,
}

impl std::fmt::Debug for LedgerSink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LedgerSink")
            .field("path", &self.path)
            .finish()
    }
}

impl LedgerSink {
    /// Opens the ledger at `path`, creating it when missing. The whole chain is verified; a
    /// record cut off by a crash at the end (never acknowledged) is removed; any other damage
    /// is an error and the file is left as it is.
    pub fn open(path: impl AsRef<Path>) -> Result<Self, LedgerError> {
        let path = path.as_ref().to_path_buf();
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir)?;
        }
        let mut file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&path)?;
        match file.try_lock() {
            Ok(()) => {}
            Err(std::fs::TryLockError::WouldBlock) => {
                return Err(LedgerError::Locked(path.display().to_string()))
            }
            Err(std::fs::TryLockError::Error(e)) => return Err(e.into()),
        }
        if file.metadata()?.len() == 0 {
            let mut header = MAGIC.to_vec();
            header.extend(VERSION.to_le_bytes());
            file.write_all(&header)?;
            file.sync_all()?;
        }
        let (records, valid_len) = read_records(&mut file)?;
        let total = file.metadata()?.len();
        if valid_len < total {
            warn!(
                path = %path.display(),
                bytes = total - valid_len,
                "removing a ledger record cut off by a crash"
            );
            file.set_len(valid_len)?;
            file.sync_all()?;
        }
        let summary = check_chain(&records)?;
        let by_request = records
            .iter()
            .map(|r| (r.entry.request_id, r.index))
            .collect();
        file.seek(SeekFrom::End(0))?;
        info!(path = %path.display(), entries = summary.entries, "ledger opened");
        Ok(LedgerSink {
            inner: Arc::new(Mutex::new(Inner {
                file,
                next_index: summary.entries,
                head: summary.head,
                by_request,
            })),
            path,
        })
    }

    /// The file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Number of entries and the head hash.
    pub fn summary(&self) -> LedgerSummary {
        let inner = self.inner.lock().expect("ledger lock");
        LedgerSummary {
            entries: inner.next_index,
            head: inner.head,
        }
    }

    /// Appends the result (idempotent: a request already in the ledger returns its index).
    /// Only signatures over the same result digest that verify are kept, one per node.
    pub fn append(
        &self,
        request: &InferenceRequest,
        result: &ConsensusResultMsg,
        attestations: &[ConsensusResultMsg],
        now_ms: u64,
    ) -> Result<u64, LedgerError> {
        result.verify().map_err(LedgerError::InvalidResult)?;
        let signatures = result.supporting_signatures(attestations);
        let entry = LedgerEntry {
            request_id: result.request_id,
            origin: request.origin.clone(),
            output: result.output.clone(),
            output_hash: result.output_hash,
            joint_hash: result.joint_hash,
            config_digest: result.config_digest,
            result_digest: result.result_digest,
            accepted: result.accepted.clone(),
            signatures: signatures.into_iter().collect(),
            recorded_at_ms: now_ms,
        };
        let mut inner = self.inner.lock().expect("ledger lock");
        if let Some(index) = inner.by_request.get(&result.request_id) {
            return Ok(*index);
        }
        let index = inner.next_index;
        let hash = record_hash(index, &inner.head, &entry);
        let record = LedgerRecord {
            index,
            prev: inner.head,
            entry,
            hash,
        };
        let body = postcard::to_allocvec(&record).expect("records always encode");
        let mut bytes = (body.len() as u32).to_le_bytes().to_vec();
        bytes.extend(body);
        let start = inner.file.seek(SeekFrom::End(0))?;
        if let Err(e) = inner
            .file
            .write_all(&bytes)
            .and_then(|_| inner.file.sync_data())
        {
            // Leave no partial record behind a failed write.
            let _ = inner.file.set_len(start);
            return Err(e.into());
        }
        inner.next_index += 1;
        inner.head = hash;
        inner.by_request.insert(result.request_id, index);
        Ok(index)
    }

    /// The entry of `request_id`, read back from the file.
    pub fn entry(&self, request_id: &RequestId) -> Result<Option<LedgerRecord>, LedgerError> {
        let index = {
            let inner = self.inner.lock().expect("ledger lock");
            inner.by_request.get(request_id).copied()
        };
        let Some(index) = index else {
            return Ok(None);
        };
        let mut file = File::open(&self.path)?;
        let (records, _) = read_records(&mut file)?;
        Ok(records.into_iter().find(|r| r.index == index))
    }

    /// Verifies the whole file as it is on disk now: every record's index, link and hash, and
    /// every stored signature.
    pub fn verify(&self) -> Result<LedgerSummary, LedgerError> {
        let _guard = self.inner.lock().expect("ledger lock");
        verify_file(&self.path)
    }
}

/// Verifies a ledger file (see [`LedgerSink::verify`]); a cut-off last record is an error here.
pub fn verify_file(path: impl AsRef<Path>) -> Result<LedgerSummary, LedgerError> {
    let mut file = File::open(path.as_ref())?;
    let (records, valid_len) = read_records(&mut file)?;
    let total = file.metadata()?.len();
    if valid_len < total {
        return Err(LedgerError::TruncatedTail {
            index: records.len() as u64,
            bytes: total - valid_len,
        });
    }
    check_chain(&records)
}

/// Reads the header and every complete record; returns them and the length of the file they
/// span (shorter than the file when the last record is cut off).
fn read_records(file: &mut File) -> Result<(Vec<LedgerRecord>, u64), LedgerError> {
    file.seek(SeekFrom::Start(0))?;
    let mut data = Vec::new();
    file.read_to_end(&mut data)?;
    if data.len() < HEADER as usize || &data[..8] != MAGIC {
        return Err(LedgerError::Format("missing ledger header".into()));
    }
    let version = u32::from_le_bytes(data[8..12].try_into().expect("4 bytes"));
    if version != VERSION {
        return Err(LedgerError::Format(format!(
            "format version {version}, this build reads {VERSION}"
        )));
    }
    let mut records = Vec::new();
    let mut at = HEADER as usize;
    while at < data.len() {
        let index = records.len() as u64;
        if data.len() - at < 4 {
            break;
        }
        let len = u32::from_le_bytes(data[at..at + 4].try_into().expect("4 bytes"));
        if len > MAX_RECORD {
            return Err(LedgerError::Tampered {
                index,
                reason: format!("record length {len} exceeds {MAX_RECORD}"),
            });
        }
        let end = at + 4 + len as usize;
        if end > data.len() {
            break;
        }
        let record: LedgerRecord =
            postcard::from_bytes(&data[at + 4..end]).map_err(|e| LedgerError::Tampered {
                index,
                reason: format!("record does not decode: {e}"),
            })?;
        records.push(record);
        at = end;
    }
    Ok((records, at as u64))
}

/// Checks indices, links, hashes and signatures.
fn check_chain(records: &[LedgerRecord]) -> Result<LedgerSummary, LedgerError> {
    let mut prev = Hash32([0; 32]);
    for (i, r) in records.iter().enumerate() {
        let index = i as u64;
        let bad = |reason: String| LedgerError::Tampered { index, reason };
        if r.index != index {
            return Err(bad(format!("stored index {}", r.index)));
        }
        if r.prev != prev {
            return Err(bad("link to the previous record broken".into()));
        }
        if record_hash(index, &prev, &r.entry) != r.hash {
            return Err(bad("hash does not match the entry".into()));
        }
        let e = &r.entry;
        if rakis_core::consensus::output_hash(&e.output) != e.output_hash
            || rakis_core::consensus::result_digest(
                &e.request_id,
                &e.output_hash,
                &e.joint_hash,
                &rakis_core::consensus::payees_digest(&e.accepted),
                &e.config_digest,
            ) != e.result_digest
        {
            return Err(bad("output or digest does not match".into()));
        }
        let digest = rakis_core::identity::eth_signed_message_hash(&e.result_digest.0);
        for (node, sig) in &e.signatures {
            rakis_core::identity::verify_signature(node, &digest, sig)
                .map_err(|err| bad(format!("signature of {}: {err}", node.short())))?;
        }
        prev = r.hash;
    }
    Ok(LedgerSummary {
        entries: records.len() as u64,
        head: prev,
    })
}

#[async_trait]
impl ChainSink for LedgerSink {
    fn name(&self) -> String {
        format!("ledger:{}", self.path.display())
    }

    async fn submit(
        &self,
        request: &InferenceRequest,
        result: &ConsensusResultMsg,
        attestations: &[ConsensusResultMsg],
    ) -> Result<SubmitReceipt, ChainError> {
        let sink = self.clone();
        let request = request.clone();
        let result = result.clone();
        let attestations = attestations.to_vec();
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_millis() as u64)
            .unwrap_or(0);
        let index =
            tokio::task::spawn_blocking(move || sink.append(&request, &result, &attestations, now))
                .await
                .map_err(|e| ChainError::Other(SharedError::new(e)))??;
        Ok(SubmitReceipt {
            sink: self.name(),
            reference: format!("entry {index}"),
        })
    }

    async fn is_submitted(&self, request_id: &RequestId) -> Result<bool, ChainError> {
        let inner = self.inner.lock().expect("ledger lock");
        Ok(inner.by_request.contains_key(request_id))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rakis_core::testing::QuorumFixture;

    fn fixture() -> (InferenceRequest, Vec<ConsensusResultMsg>) {
        let f = QuorumFixture::new(3, 7);
        (f.request.clone(), f.results.clone())
    }

    #[test]
    fn appends_verifies_and_reopens() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("ledger.bin");
        let sink = LedgerSink::open(&path).unwrap();
        let (request, results) = fixture();
        assert_eq!(
            sink.append(&request, &results[0], &results[1..], 1)
                .unwrap(),
            0
        );
        // Idempotent.
        assert_eq!(sink.append(&request, &results[0], &[], 2).unwrap(), 0);
        let summary = sink.verify().unwrap();
        assert_eq!(summary.entries, 1);
        let record = sink.entry(&request.id()).unwrap().unwrap();
        assert_eq!(record.entry.signatures.len(), 3);
        drop(sink);
        let again = LedgerSink::open(&path).unwrap();
        assert_eq!(again.summary(), summary);
    }

    #[test]
    fn a_second_opener_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("ledger.bin");
        let _a = LedgerSink::open(&path).unwrap();
        assert!(matches!(
            LedgerSink::open(&path),
            Err(LedgerError::Locked(_))
        ));
    }

    #[test]
    fn foreign_files_are_refused_untouched() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("other.bin");
        std::fs::write(&path, b"not a ledger at all").unwrap();
        assert!(matches!(
            LedgerSink::open(&path),
            Err(LedgerError::Format(_))
        ));
        assert_eq!(std::fs::read(&path).unwrap(), b"not a ledger at all");
    }

    #[test]
    fn an_invalid_result_changes_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let sink = LedgerSink::open(dir.path().join("l.bin")).unwrap();
        let (request, results) = fixture();
        let mut forged = results[0].clone();
        forged.output.push('!');
        assert!(matches!(
            sink.append(&request, &forged, &[], 1),
            Err(LedgerError::InvalidResult(_))
        ));
        assert_eq!(sink.summary().entries, 0);
    }
}
