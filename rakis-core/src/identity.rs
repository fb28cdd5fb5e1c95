//! Node identity: secp256k1 keys, node ids, Ethereum addresses, signatures and key files.

use std::path::Path;

use k256::ecdsa::{RecoveryId, Signature as EcdsaSignature, SigningKey, VerifyingKey};
use serde::{Deserialize, Serialize};
use sha3::{Digest as _, Keccak256};

use crate::error::SharedError;
use crate::NodeId;

rakis_consensus::fixed_bytes!(
    /// A 20-byte Ethereum address.
    Address,
    20
);

rakis_consensus::fixed_bytes!(
    /// A recoverable ECDSA signature: `r ‖ s ‖ v` with `v` in `{27, 28}` (Ethereum convention).
    Signature,
    65
);

/// Keccak-256.
pub fn keccak256(data: &[u8]) -> [u8; 32] {
    Keccak256::digest(data).into()
}

/// A node's secret key. The node id is its compressed public key; the same key gives the
/// node's Ethereum address.
#[derive(Clone)]
pub struct NodeKey {
    key: SigningKey,
}

impl std::fmt::Debug for NodeKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "NodeKey({})", self.node_id().short())
    }
}

impl NodeKey {
    /// A fresh random key from the operating system's RNG.
    pub fn generate() -> Self {
        NodeKey {
            key: SigningKey::random(&mut rand::rngs::OsRng),
        }
    }

    /// A key from 32 secret bytes.
    pub fn from_secret_bytes(bytes: &[u8]) -> Result<Self, IdentityError> {
        let key = SigningKey::from_slice(bytes).map_err(|_| IdentityError::InvalidSecretKey)?;
        Ok(NodeKey { key })
    }

    /// A deterministic key derived from a seed (tests and simulations only; feature
    /// `test-utils`).
    #[cfg(any(test, feature = "test-utils"))]
    pub fn from_seed(seed: u64) -> Self {
        let mut counter = 0u64;
        loop {
            let mut pre = b"rakis/test-key/v1".to_vec();
            pre.extend(seed.to_be_bytes());
            pre.extend(counter.to_be_bytes());
            if let Ok(k) = Self::from_secret_bytes(&keccak256(&pre)) {
                return k;
            }
            counter += 1;
        }
    }

    /// The 32 secret bytes. Handle with care.
    pub fn secret_bytes(&self) -> [u8; 32] {
        self.key.to_bytes().into()
    }

    /// The node id: compressed SEC1 public key.
    pub fn node_id(&self) -> NodeId {
        node_id_of(self.key.verifying_key())
    }

    /// The Ethereum address of this key.
    pub fn address(&self) -> Address {
        address_of(self.key.verifying_key())
    }

    /// The underlying k256 signing key (for integrations such as libp2p or alloy signers).
    pub fn signing_key(&self) -> &SigningKey {
        &self.key
    }

    /// Signs a 32-byte digest (no further hashing) with a recoverable signature.
    pub fn sign_digest(&self, digest: &[u8; 32]) -> Signature {
        let (sig, recid) = self
            .key
            .sign_prehash_recoverable(digest)
            .expect("signing a 32-byte prehash cannot fail");
        let sig = sig.normalize_s().map_or((sig, recid), |n| {
            (n, RecoveryId::new(!recid.is_y_odd(), recid.is_x_reduced()))
        });
        let mut out = [0u8; 65];
        out[..64].copy_from_slice(&sig.0.to_bytes());
        out[64] = 27 + sig.1.to_byte();
        Signature(out)
    }

    /// Saves the key to a JSON key file, encrypted when a passphrase is given
    /// (Argon2id + ChaCha20-Poly1305). On Unix the file is created with mode 0600.
    pub fn save(&self, path: &Path, passphrase: Option<&str>) -> Result<(), IdentityError> {
        let file = KeyFile::seal(self, passphrase)?;
        let json =
            serde_json::to_vec_pretty(&file).map_err(|e| IdentityError::KeyFile(e.to_string()))?;
        write_private(path, &json)
    }

    /// Loads a key file written by [`NodeKey::save`].
    pub fn load(path: &Path, passphrase: Option<&str>) -> Result<Self, IdentityError> {
        let bytes = std::fs::read(path).map_err(|e| IdentityError::io(path, e))?;
        let file: KeyFile =
            serde_json::from_slice(&bytes).map_err(|e| IdentityError::KeyFile(e.to_string()))?;
        file.open(passphrase)
    }

    /// Loads the key file at `path`, or creates one with a fresh key when there is none.
    pub fn load_or_generate(path: &Path, passphrase: Option<&str>) -> Result<Self, IdentityError> {
        if path.exists() {
            Self::load(path, passphrase)
        } else {
            let k = Self::generate();
            k.save(path, passphrase)?;
            Ok(k)
        }
    }
}

fn node_id_of(vk: &VerifyingKey) -> NodeId {
    let point = vk.to_encoded_point(true);
    NodeId(
        point
            .as_bytes()
            .try_into()
            .expect("compressed point is 33 bytes"),
    )
}

fn address_of(vk: &VerifyingKey) -> Address {
    let point = vk.to_encoded_point(false);
    let h = keccak256(&point.as_bytes()[1..]);
    Address(h[12..].try_into().expect("20 bytes"))
}

/// The Ethereum address of a node id. Fails when the id is not a valid public key.
pub fn address_of_node(node: &NodeId) -> Result<Address, IdentityError> {
    let vk = VerifyingKey::from_sec1_bytes(&node.0).map_err(|_| IdentityError::InvalidNodeId)?;
    Ok(address_of(&vk))
}

/// The uncompressed public key of a node id without its `0x04` prefix (x ‖ y, 64 bytes): what
/// an EVM contract hashes to the node's address and compresses back to its id. Fails when the
/// id is not a valid public key.
pub fn public_key_xy(node: &NodeId) -> Result<[u8; 64], IdentityError> {
    let vk = VerifyingKey::from_sec1_bytes(&node.0).map_err(|_| IdentityError::InvalidNodeId)?;
    Ok(vk.to_encoded_point(false).as_bytes()[1..]
        .try_into()
        .expect("an uncompressed point is 65 bytes"))
}

/// Recovers the node id that produced `signature` over `digest`.
pub fn recover_signer(digest: &[u8; 32], signature: &Signature) -> Result<NodeId, IdentityError> {
    let sig =
        EcdsaSignature::from_slice(&signature.0[..64]).map_err(|_| IdentityError::BadSignature)?;
    let v = signature.0[64];
    let recid = match v {
        27 | 28 => v - 27,
        0 | 1 => v,
        _ => return Err(IdentityError::BadSignature),
    };
    let recid = RecoveryId::from_byte(recid).ok_or(IdentityError::BadSignature)?;
    let vk = VerifyingKey::recover_from_prehash(digest, &sig, recid)
        .map_err(|_| IdentityError::BadSignature)?;
    Ok(node_id_of(&vk))
}

/// Checks that `signature` over `digest` was made by `node`.
pub fn verify_signature(
    node: &NodeId,
    digest: &[u8; 32],
    signature: &Signature,
) -> Result<(), IdentityError> {
    if recover_signer(digest, signature)? == *node {
        Ok(())
    } else {
        Err(IdentityError::BadSignature)
    }
}

/// The digest an Ethereum wallet signs for a 32-byte message (EIP-191 personal_sign):
/// `keccak256("\x19Ethereum Signed Message:\n32" ‖ digest)`. Chains check result
/// signatures with `ecrecover` over this.
pub fn eth_signed_message_hash(digest: &[u8; 32]) -> [u8; 32] {
    let mut pre = b"\x19Ethereum Signed Message:\n32".to_vec();
    pre.extend_from_slice(digest);
    keccak256(&pre)
}

#[derive(Serialize, Deserialize)]
struct KeyFile {
    version: u32,
    node_id: NodeId,
    address: Address,
    #[serde(flatten)]
    secret: SecretPart,
}

#[derive(Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
enum SecretPart {
    Plain {
        secret: String,
    },
    Encrypted {
        kdf: String,
        kdf_salt: String,
        cipher: String,
        nonce: String,
        ciphertext: String,
    },
}

fn derive_key(passphrase: &str, salt: &[u8]) -> Result<[u8; 32], IdentityError> {
    let mut out = [0u8; 32];
    argon2::Argon2::default()
        .hash_password_into(passphrase.as_bytes(), salt, &mut out)
        .map_err(|e| IdentityError::KeyFile(e.to_string()))?;
    Ok(out)
}

impl KeyFile {
    fn seal(key: &NodeKey, passphrase: Option<&str>) -> Result<Self, IdentityError> {
        use chacha20poly1305::aead::{Aead, KeyInit};
        use rand::RngCore;
        let secret = match passphrase {
            None => SecretPart::Plain {
                secret: hex::encode(key.secret_bytes()),
            },
            Some(p) => {
                let mut salt = [0u8; 16];
                let mut nonce = [0u8; 12];
                rand::rngs::OsRng.fill_bytes(&mut salt);
                rand::rngs::OsRng.fill_bytes(&mut nonce);
                let k = derive_key(p, &salt)?;
                let cipher = chacha20poly1305::ChaCha20Poly1305::new((&k).into());
                let ct = cipher
                    .encrypt((&nonce).into(), key.secret_bytes().as_slice())
                    .map_err(|_| IdentityError::KeyFile("encryption failed".into()))?;
                SecretPart::Encrypted {
                    kdf: "argon2id".into(),
                    kdf_salt: hex::encode(salt),
                    cipher: "chacha20-poly1305".into(),
                    nonce: hex::encode(nonce),
                    ciphertext: hex::encode(ct),
                }
            }
        };
        Ok(KeyFile {
            version: 1,
            node_id: key.node_id(),
            address: key.address(),
            secret,
        })
    }

    fn open(self, passphrase: Option<&str>) -> Result<NodeKey, IdentityError> {
        use chacha20poly1305::aead::{Aead, KeyInit};
        if self.version != 1 {
            return Err(IdentityError::KeyFile(format!(
                "unsupported key file version {}",
                self.version
            )));
        }
        let bad = |what: &str| IdentityError::KeyFile(format!("invalid {what}"));
        let secret = match self.secret {
            SecretPart::Plain { secret } => hex::decode(secret).map_err(|_| bad("secret"))?,
            SecretPart::Encrypted {
                kdf,
                kdf_salt,
                cipher,
                nonce,
                ciphertext,
            } => {
                if kdf != "argon2id" || cipher != "chacha20-poly1305" {
                    return Err(IdentityError::KeyFile(format!(
                        "unsupported kdf/cipher {kdf}/{cipher}"
                    )));
                }
                let p = passphrase.ok_or(IdentityError::PassphraseRequired)?;
                let salt = hex::decode(kdf_salt).map_err(|_| bad("kdf_salt"))?;
                let nonce: [u8; 12] = hex::decode(nonce)
                    .ok()
                    .and_then(|n| n.try_into().ok())
                    .ok_or_else(|| bad("nonce"))?;
                let ct = hex::decode(ciphertext).map_err(|_| bad("ciphertext"))?;
                let k = derive_key(p, &salt)?;
                chacha20poly1305::ChaCha20Poly1305::new((&k).into())
                    .decrypt((&nonce).into(), ct.as_slice())
                    .map_err(|_| IdentityError::WrongPassphrase)?
            }
        };
        let key = NodeKey::from_secret_bytes(&secret)?;
        if key.node_id() != self.node_id {
            return Err(IdentityError::KeyFile(
                "node id does not match the secret key".into(),
            ));
        }
        Ok(key)
    }
}

fn write_private(path: &Path, bytes: &[u8]) -> Result<(), IdentityError> {
    use std::io::Write;
    let mut opts = std::fs::OpenOptions::new();
    opts.write(true).create(true).truncate(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        opts.mode(0o600);
    }
    let mut f = opts.open(path).map_err(|e| IdentityError::io(path, e))?;
    f.write_all(bytes)
        .and_then(|_| f.sync_all())
        .map_err(|e| IdentityError::io(path, e))
}

/// Key handling errors.
#[derive(Debug, Clone, thiserror::Error)]
#[non_exhaustive]
pub enum IdentityError {
    /// The secret key bytes are not a valid secp256k1 scalar.
    #[error("invalid secret key")]
    InvalidSecretKey,
    /// A node id is not a valid compressed public key.
    #[error("node id is not a valid secp256k1 public key")]
    InvalidNodeId,
    /// A signature is malformed or was not made by the claimed key.
    #[error("bad signature")]
    BadSignature,
    /// The key file is encrypted and no passphrase was given.
    #[error("the key file is encrypted: a passphrase is required")]
    PassphraseRequired,
    /// The passphrase does not decrypt the key file.
    #[error("wrong passphrase")]
    WrongPassphrase,
    /// The key file is malformed.
    #[error("key file: {0}")]
    KeyFile(String),
    /// Reading or writing the key file failed.
    #[error("key file {path}: {source}")]
    Io {
        /// The key file.
        path: String,
        /// The underlying error.
        #[source]
        source: SharedError,
    },
}

impl IdentityError {
    fn io(path: &Path, source: impl std::error::Error + Send + Sync + 'static) -> Self {
        IdentityError::Io {
            path: path.display().to_string(),
            source: SharedError::new(source),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn known_ethereum_address() {
        // Private key 1 → the well-known address 0x7E5F4552091A69125d5DfCb7b8C2659029395Bdf.
        let mut sk = [0u8; 32];
        sk[31] = 1;
        let k = NodeKey::from_secret_bytes(&sk).unwrap();
        assert_eq!(
            k.address().to_hex(),
            "7e5f4552091a69125d5dfcb7b8c2659029395bdf"
        );
        assert_eq!(
            k.node_id().to_hex(),
            "0279be667ef9dcbbac55a06295ce870b07029bfcdb2dce28d959f2815b16f81798"
        );
        assert_eq!(address_of_node(&k.node_id()).unwrap(), k.address());
    }

    #[test]
    fn sign_and_recover() {
        let k = NodeKey::from_seed(1);
        let d = keccak256(b"hello");
        let sig = k.sign_digest(&d);
        assert!(sig.0[64] == 27 || sig.0[64] == 28);
        assert_eq!(recover_signer(&d, &sig).unwrap(), k.node_id());
        verify_signature(&k.node_id(), &d, &sig).unwrap();
        let other = NodeKey::from_seed(2);
        assert!(verify_signature(&other.node_id(), &d, &sig).is_err());
        let mut bad = sig;
        bad.0[64] = 99;
        assert!(recover_signer(&d, &bad).is_err());
        assert!(address_of_node(&crate::NodeId([0; 33])).is_err());
    }

    #[test]
    fn key_files_roundtrip_plain_and_encrypted() {
        let dir = tempfile::tempdir().unwrap();
        let k = NodeKey::from_seed(3);
        let plain = dir.path().join("plain.json");
        k.save(&plain, None).unwrap();
        assert_eq!(NodeKey::load(&plain, None).unwrap().node_id(), k.node_id());
        let enc = dir.path().join("enc.json");
        k.save(&enc, Some("correct horse")).unwrap();
        let text = std::fs::read_to_string(&enc).unwrap();
        assert!(!text.contains(&hex::encode(k.secret_bytes())));
        assert_eq!(
            NodeKey::load(&enc, Some("correct horse"))
                .unwrap()
                .node_id(),
            k.node_id()
        );
        assert!(matches!(
            NodeKey::load(&enc, Some("wrong")),
            Err(IdentityError::WrongPassphrase)
        ));
        assert!(matches!(
            NodeKey::load(&enc, None),
            Err(IdentityError::PassphraseRequired)
        ));
        std::fs::write(&plain, b"{not json").unwrap();
        assert!(matches!(
            NodeKey::load(&plain, None),
            Err(IdentityError::KeyFile(_))
        ));
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(&enc).unwrap().permissions().mode();
            assert_eq!(mode & 0o777, 0o600);
        }
        let created = dir.path().join("new.json");
        let a = NodeKey::load_or_generate(&created, None).unwrap();
        let b = NodeKey::load_or_generate(&created, None).unwrap();
        assert_eq!(a.node_id(), b.node_id());
    }
}
