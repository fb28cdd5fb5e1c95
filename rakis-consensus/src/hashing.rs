//! Fixed-size byte values (ids, digests, salts) and the SHA-256 helpers every digest uses.

use serde::{de, Deserialize, Deserializer, Serialize, Serializer};
use sha2::{Digest as _, Sha256};

/// Variable-length bytes, serialized as lowercase hex in human-readable formats
/// (JSON) and as raw bytes in binary formats.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Default)]
pub struct HexBytes(pub Vec<u8>);

impl Serialize for HexBytes {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        if s.is_human_readable() {
            s.serialize_str(&hex::encode(&self.0))
        } else {
            s.serialize_bytes(&self.0)
        }
    }
}

impl<'de> Deserialize<'de> for HexBytes {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> de::Visitor<'de> for V {
            type Value = HexBytes;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("hex string or bytes")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<HexBytes, E> {
                hex::decode(v.strip_prefix("0x").unwrap_or(v))
                    .map(HexBytes)
                    .map_err(E::custom)
            }
            fn visit_bytes<E: de::Error>(self, v: &[u8]) -> Result<HexBytes, E> {
                Ok(HexBytes(v.to_vec()))
            }
            fn visit_byte_buf<E: de::Error>(self, v: Vec<u8>) -> Result<HexBytes, E> {
                Ok(HexBytes(v))
            }
            fn visit_seq<A: de::SeqAccess<'de>>(self, mut seq: A) -> Result<HexBytes, A::Error> {
                let mut out = Vec::new();
                while let Some(b) = seq.next_element::<u8>()? {
                    out.push(b);
                }
                Ok(HexBytes(out))
            }
        }
        if d.is_human_readable() {
            d.deserialize_str(V)
        } else {
            d.deserialize_bytes(V)
        }
    }
}

/// Defines a fixed-size byte newtype with hex `Display`/`Debug`/`FromStr` and hex-or-bytes serde.
#[macro_export]
#[doc(hidden)]
macro_rules! fixed_bytes {
    ($(#[$meta:meta])* $name:ident, $len:expr) => {
        $(#[$meta])*
        #[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub struct $name(pub [u8; $len]);

        impl $name {
            /// Length in bytes.
            pub const LEN: usize = $len;

            /// The raw bytes.
            pub fn as_bytes(&self) -> &[u8; $len] {
                &self.0
            }

            /// Builds the value from a slice of exactly the right length.
            pub fn from_slice(bytes: &[u8]) -> Result<Self, $crate::ConsensusError> {
                <[u8; $len]>::try_from(bytes).map(Self).map_err(|_| {
                    $crate::ConsensusError::InvalidHex(format!(
                        "{} needs {} bytes, got {}",
                        stringify!($name),
                        $len,
                        bytes.len()
                    ))
                })
            }

            /// Lowercase hex of the bytes.
            pub fn to_hex(&self) -> String {
                $crate::hashing::hex_encode(&self.0)
            }

            /// First bytes in hex, for logs.
            pub fn short(&self) -> String {
                $crate::hashing::hex_encode(&self.0[..4])
            }
        }

        impl std::fmt::Display for $name {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str(&self.to_hex())
            }
        }

        impl std::fmt::Debug for $name {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                write!(f, "{}({})", stringify!($name), self.short())
            }
        }

        impl std::str::FromStr for $name {
            type Err = $crate::ConsensusError;
            fn from_str(s: &str) -> Result<Self, Self::Err> {
                let s = s.strip_prefix("0x").unwrap_or(s);
                let bytes = $crate::hashing::hex_decode(s)
                    .map_err(|e| $crate::ConsensusError::InvalidHex(e))?;
                Self::from_slice(&bytes)
            }
        }

        impl serde::Serialize for $name {
            fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                $crate::hashing::HexBytes(self.0.to_vec()).serialize(s)
            }
        }

        impl<'de> serde::Deserialize<'de> for $name {
            fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                let b = $crate::hashing::HexBytes::deserialize(d)?;
                Self::from_slice(&b.0).map_err(serde::de::Error::custom)
            }
        }
    };
}

/// Lowercase hex encoding (re-exported for the macro).
#[doc(hidden)]
pub fn hex_encode(b: &[u8]) -> String {
    hex::encode(b)
}

/// Hex decoding (re-exported for the macro).
#[doc(hidden)]
pub fn hex_decode(s: &str) -> Result<Vec<u8>, String> {
    hex::decode(s).map_err(|e| e.to_string())
}

fixed_bytes!(
    /// A SHA-256 digest.
    Hash32,
    32
);
fixed_bytes!(
    /// Identifies a request; 32 bytes derived by `rakis-core` from its content, requester and nonce.
    RequestId,
    32
);
fixed_bytes!(
    /// Identifies a node: its 33-byte compressed secp256k1 public key (SEC1). Opaque here.
    NodeId,
    33
);
fixed_bytes!(
    /// Identifies one inference (one node's answer to one request), chosen by the committer.
    InferenceId,
    32
);
fixed_bytes!(
    /// A commitment: the 32-byte digest defined in [`commitment`](crate::commitment).
    Commitment,
    32
);
fixed_bytes!(
    /// A 32-byte secret chosen at random by the committer and revealed with its output.
    Salt,
    32
);

/// SHA-256 of `data`.
pub fn sha256(data: &[u8]) -> Hash32 {
    Hash32(Sha256::digest(data).into())
}

/// SHA-256 of a UTF-8 text (the "output hash" of an inference).
pub fn output_hash(text: &str) -> Hash32 {
    sha256(text.as_bytes())
}

/// Incremental SHA-256 that starts with a domain tag. Every Rakis digest is built this way:
/// the ASCII tag followed by one zero byte, then the fields, each of fixed size or
/// length-prefixed as the spec says.
pub(crate) struct Hasher(Sha256);

impl Hasher {
    pub(crate) fn new(tag: &str) -> Self {
        let mut h = Sha256::new();
        h.update(tag.as_bytes());
        h.update([0u8]);
        Hasher(h)
    }
    pub(crate) fn bytes(&mut self, b: &[u8]) -> &mut Self {
        self.0.update(b);
        self
    }
    pub(crate) fn u32(&mut self, v: u32) -> &mut Self {
        self.0.update(v.to_be_bytes());
        self
    }
    pub(crate) fn finish(&mut self) -> Hash32 {
        Hash32(std::mem::take(&mut self.0).finalize().into())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sha256_known_vector() {
        assert_eq!(
            sha256(b"abc").to_hex(),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
        assert_eq!(
            output_hash("").to_hex(),
            "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
        );
    }

    #[test]
    fn fixed_bytes_roundtrip() {
        let id = RequestId([7; 32]);
        let s = id.to_string();
        assert_eq!(s.parse::<RequestId>().unwrap(), id);
        assert_eq!(format!("0x{s}").parse::<RequestId>().unwrap(), id);
        assert!("07".parse::<RequestId>().is_err());
        assert!("zz".parse::<RequestId>().is_err());
        let json = serde_json::to_string(&id).unwrap();
        assert_eq!(serde_json::from_str::<RequestId>(&json).unwrap(), id);
        let bin = postcard::to_allocvec(&id).unwrap();
        assert_eq!(bin.len(), 33);
        assert_eq!(postcard::from_bytes::<RequestId>(&bin).unwrap(), id);
        assert!(postcard::from_bytes::<NodeId>(&bin).is_err());
    }
}
