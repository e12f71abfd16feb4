//! Checkpoint signing: an Ed25519 key vouches for the chain up to a record.

use aws_lc_rs::rand::SystemRandom;
use aws_lc_rs::signature::{ED25519, Ed25519KeyPair, KeyPair, UnparsedPublicKey};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde::{Deserialize, Serialize};

use crate::error::AuditError;
use crate::format::to_hex;

/// The key that signs checkpoints. Whoever can rewrite the log cannot forge
/// these without it, so a rewritten or cut-off chain is detected.
pub struct AuditSigner {
    key_id: String,
    key: Ed25519KeyPair,
}

impl std::fmt::Debug for AuditSigner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never print key material.
        f.debug_struct("AuditSigner")
            .field("key_id", &self.key_id)
            .finish_non_exhaustive()
    }
}

impl AuditSigner {
    /// A signer from an unencrypted PKCS#8 (v1 or v2) Ed25519 private key.
    pub fn from_pkcs8(key_id: impl Into<String>, der: &[u8]) -> Result<Self, AuditError> {
        let key = Ed25519KeyPair::from_pkcs8(der)
            .map_err(|e| AuditError::Key(format!("not a usable Ed25519 key ({e})")))?;
        Ok(Self {
            key_id: key_id.into(),
            key,
        })
    }

    /// A fresh private key as PKCS#8 v2 DER, for the caller to store.
    pub fn generate_pkcs8() -> Result<Vec<u8>, AuditError> {
        let doc = Ed25519KeyPair::generate_pkcs8(&SystemRandom::new())
            .map_err(|_| AuditError::Key("key generation failed".into()))?;
        Ok(doc.as_ref().to_vec())
    }

    /// The key id written into each checkpoint.
    pub fn key_id(&self) -> &str {
        &self.key_id
    }

    /// The raw 32-byte Ed25519 public key, to hand to `verify`.
    pub fn public_key(&self) -> Vec<u8> {
        self.key.public_key().as_ref().to_vec()
    }

    pub(crate) fn sign_checkpoint(&self, seq: u64, hash: &[u8; 32], time_ms: u64) -> Checkpoint {
        let hash = to_hex(hash);
        let msg = Checkpoint::signed_message(seq, &hash, time_ms, &self.key_id);
        let sig = URL_SAFE_NO_PAD.encode(self.key.sign(&msg).as_ref());
        Checkpoint {
            seq,
            hash,
            time_ms,
            key_id: self.key_id.clone(),
            sig,
        }
    }
}

/// A signed statement that the chain up to record `seq` ends in `hash`.
/// One JSON line of `checkpoints.log`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Checkpoint {
    /// The record vouched for.
    pub seq: u64,
    /// That record's hash, lowercase hex.
    pub hash: String,
    /// When the checkpoint was made, milliseconds since the Unix epoch.
    pub time_ms: u64,
    /// Which key signed it.
    pub key_id: String,
    /// Base64url (unpadded) Ed25519 signature over [`Checkpoint::signed_message`].
    pub sig: String,
}

impl Checkpoint {
    /// The exact bytes signed:
    /// `latchkey-audit-checkpoint-v1\nseq:{seq}\nhash:{hash}\ntime_ms:{time_ms}\nkey_id:{key_id}\n`.
    pub fn signed_message(seq: u64, hash: &str, time_ms: u64, key_id: &str) -> Vec<u8> {
        format!(
            "latchkey-audit-checkpoint-v1\nseq:{seq}\nhash:{hash}\ntime_ms:{time_ms}\nkey_id:{key_id}\n"
        )
        .into_bytes()
    }

    /// Whether `sig` is a valid signature by `public_key` (raw Ed25519).
    pub fn signature_valid(&self, public_key: &[u8]) -> bool {
        let Ok(sig) = URL_SAFE_NO_PAD.decode(self.sig.as_bytes()) else {
            return false;
        };
        let msg = Self::signed_message(self.seq, &self.hash, self.time_ms, &self.key_id);
        UnparsedPublicKey::new(&ED25519, public_key)
            .verify(&msg, &sig)
            .is_ok()
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn sign_and_check() {
        let der = AuditSigner::generate_pkcs8().unwrap();
        let signer = AuditSigner::from_pkcs8("k1", &der).unwrap();
        assert_eq!(signer.public_key().len(), 32);
        let mut cp = signer.sign_checkpoint(10, &[3u8; 32], 1234);
        assert!(cp.signature_valid(&signer.public_key()));
        cp.seq = 11;
        assert!(!cp.signature_valid(&signer.public_key()));
        assert!(!format!("{signer:?}").contains(&format!("{:?}", &der[..8])));
    }

    #[test]
    fn garbage_key_is_rejected() {
        let err = AuditSigner::from_pkcs8("k1", b"not a key").unwrap_err();
        assert!(err.to_string().contains("PKCS#8"));
    }
}
