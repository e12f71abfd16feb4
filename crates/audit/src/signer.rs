//! Checkpoint signing: an Ed25519 key vouches for the chain up to a record.

use aws_lc_rs::digest;
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

    /// Signs checkpoint number `n`, which follows the checkpoint whose
    /// [`Checkpoint::id`] is `prev` and vouches that the log's first
    /// `log_bytes` bytes end in record `seq` with `hash`.
    pub(crate) fn sign_checkpoint(&self, body: CheckpointBody, time_ms: u64) -> Checkpoint {
        let mut cp = Checkpoint {
            v: CHECKPOINT_VERSION,
            n: body.n,
            prev: to_hex(&body.prev),
            seq: body.seq,
            hash: to_hex(&body.hash),
            log_bytes: body.log_bytes,
            time_ms,
            key_id: self.key_id.clone(),
            sig: String::new(),
        };
        cp.sig = URL_SAFE_NO_PAD.encode(self.key.sign(&cp.signed_message()).as_ref());
        cp
    }
}

/// What a new checkpoint vouches for, before it is signed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct CheckpointBody {
    pub(crate) n: u64,
    pub(crate) prev: [u8; 32],
    pub(crate) seq: u64,
    pub(crate) hash: [u8; 32],
    pub(crate) log_bytes: u64,
}

/// The checkpoint format this crate writes. Version 1 (no `v` field) did not
/// chain checkpoints to each other and is refused with a hint to archive.
pub const CHECKPOINT_VERSION: u32 = 2;

/// A signed statement that the log's first `log_bytes` bytes are the chain up
/// to record `seq`, ending in `hash`, and that this is checkpoint `n`, which
/// follows the checkpoint whose id is `prev`. Checkpoints thus form their own
/// chain: removing, reordering or replacing one breaks it. The first
/// checkpoint of a log (`n` 1) vouches for the empty log (`seq` 0). One JSON
/// line of `checkpoints.log`, and what a witness receives.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Checkpoint {
    /// The format version, [`CHECKPOINT_VERSION`].
    #[serde(default)]
    pub v: u32,
    /// The checkpoint's number in its log, from 1.
    #[serde(default)]
    pub n: u64,
    /// The [`Checkpoint::id`] of checkpoint `n - 1`, lowercase hex (64 zeros
    /// for the first).
    #[serde(default)]
    pub prev: String,
    /// The record vouched for (0: the empty log).
    pub seq: u64,
    /// That record's hash, lowercase hex.
    pub hash: String,
    /// The length of the log up to and including that record's line.
    #[serde(default)]
    pub log_bytes: u64,
    /// When the checkpoint was made, milliseconds since the Unix epoch.
    pub time_ms: u64,
    /// Which key signed it.
    pub key_id: String,
    /// Base64url (unpadded) Ed25519 signature over [`Checkpoint::signed_message`].
    pub sig: String,
}

impl Checkpoint {
    /// The exact bytes signed:
    /// `latchkey-audit-checkpoint-v2\nn:{n}\nprev:{prev}\nseq:{seq}\nhash:{hash}\nlog_bytes:{log_bytes}\ntime_ms:{time_ms}\nkey_id:{key_id}\n`.
    pub fn signed_message(&self) -> Vec<u8> {
        format!(
            "latchkey-audit-checkpoint-v2\nn:{}\nprev:{}\nseq:{}\nhash:{}\nlog_bytes:{}\ntime_ms:{}\nkey_id:{}\n",
            self.n, self.prev, self.seq, self.hash, self.log_bytes, self.time_ms, self.key_id
        )
        .into_bytes()
    }

    /// The checkpoint's identity, which the next checkpoint names as `prev`:
    /// SHA-256 of its signed message, lowercase hex.
    pub fn id(&self) -> String {
        let d = digest::digest(&digest::SHA256, &self.signed_message());
        let mut out = [0u8; 32];
        out.copy_from_slice(d.as_ref());
        to_hex(&out)
    }

    /// Whether `sig` is a valid signature by `public_key` (raw Ed25519).
    pub fn signature_valid(&self, public_key: &[u8]) -> bool {
        let Ok(sig) = URL_SAFE_NO_PAD.decode(self.sig.as_bytes()) else {
            return false;
        };
        UnparsedPublicKey::new(&ED25519, public_key)
            .verify(&self.signed_message(), &sig)
            .is_ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sign_and_check() {
        let der = AuditSigner::generate_pkcs8().unwrap();
        let signer = AuditSigner::from_pkcs8("k1", &der).unwrap();
        assert_eq!(signer.public_key().len(), 32);
        let body = CheckpointBody {
            n: 2,
            prev: [1u8; 32],
            seq: 10,
            hash: [3u8; 32],
            log_bytes: 999,
        };
        let cp = signer.sign_checkpoint(body, 1234);
        assert!(cp.signature_valid(&signer.public_key()));
        // Every signed field is covered.
        for change in [
            |c: &mut Checkpoint| c.seq = 11,
            |c: &mut Checkpoint| c.n = 3,
            |c: &mut Checkpoint| c.prev = "0".repeat(64),
            |c: &mut Checkpoint| c.log_bytes = 1000,
            |c: &mut Checkpoint| c.time_ms = 1,
        ] {
            let mut changed = cp.clone();
            change(&mut changed);
            assert!(!changed.signature_valid(&signer.public_key()));
            assert_ne!(changed.id(), cp.id());
        }
        assert!(!format!("{signer:?}").contains(&format!("{:?}", &der[..8])));
    }

    #[test]
    fn garbage_key_is_rejected() {
        let err = AuditSigner::from_pkcs8("k1", b"not a key").unwrap_err();
        assert!(err.to_string().contains("PKCS#8"));
    }
}
