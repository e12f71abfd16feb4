use aws_lc_rs::aead::{AES_256_GCM, Aad, LessSafeKey, NONCE_LEN, Nonce, UnboundKey};
use aws_lc_rs::rand::{SecureRandom, SystemRandom};
use base64::Engine as _;
use base64::engine::general_purpose::{STANDARD, STANDARD_NO_PAD, URL_SAFE, URL_SAFE_NO_PAD};

use crate::TokenError;

/// The 32-byte secret that encrypts signing keys (and the audit key) at rest.
///
/// It exists so that a copy of the state store alone does not let anyone sign
/// tokens. `Debug` never prints it and the bytes are overwritten on drop.
#[derive(Clone)]
pub struct MasterKey {
    bytes: [u8; 32],
}

impl MasterKey {
    /// Parses a key from base64 (standard or url-safe, padded or not); it
    /// must decode to exactly 32 bytes. Surrounding whitespace is ignored.
    pub fn from_base64(encoded: &str) -> Result<Self, TokenError> {
        let encoded = encoded.trim();
        let mut decoded = [STANDARD, STANDARD_NO_PAD, URL_SAFE, URL_SAFE_NO_PAD]
            .iter()
            .find_map(|engine| engine.decode(encoded).ok())
            .ok_or_else(|| {
                TokenError::MasterKey(
                    "it is not valid base64 (standard or url-safe); generate one with `openssl rand -base64 32`"
                        .into(),
                )
            })?;
        let result = <[u8; 32]>::try_from(decoded.as_slice()).map_err(|_| {
            TokenError::MasterKey(format!(
                "it decodes to {} bytes; it must be exactly 32 bytes (generate one with `openssl rand -base64 32`)",
                decoded.len()
            ))
        });
        decoded.fill(0);
        std::hint::black_box(&decoded);
        Ok(Self { bytes: result? })
    }

    /// Generates a fresh random key.
    pub fn generate() -> Result<Self, TokenError> {
        let mut bytes = [0u8; 32];
        SystemRandom::new()
            .fill(&mut bytes)
            .map_err(|_| TokenError::Crypto("the system random generator failed".into()))?;
        Ok(Self { bytes })
    }

    /// The key as standard padded base64, for writing to a secret file.
    pub fn to_base64(&self) -> String {
        STANDARD.encode(self.bytes)
    }

    fn aead_key(&self) -> Result<LessSafeKey, TokenError> {
        let key = UnboundKey::new(&AES_256_GCM, &self.bytes)
            .map_err(|_| TokenError::Crypto("cannot build an AES-256-GCM key".into()))?;
        Ok(LessSafeKey::new(key))
    }

    /// Encrypts `plaintext` with AES-256-GCM under a random 96-bit nonce,
    /// binding `aad` (authenticated, not encrypted). Output is
    /// `nonce || ciphertext || tag`.
    pub fn encrypt(&self, plaintext: &[u8], aad: &[u8]) -> Result<Vec<u8>, TokenError> {
        let key = self.aead_key()?;
        let mut nonce = [0u8; NONCE_LEN];
        SystemRandom::new()
            .fill(&mut nonce)
            .map_err(|_| TokenError::Crypto("the system random generator failed".into()))?;
        let mut in_out = plaintext.to_vec();
        key.seal_in_place_append_tag(
            Nonce::assume_unique_for_key(nonce),
            Aad::from(aad),
            &mut in_out,
        )
        .map_err(|_| TokenError::Crypto("AES-256-GCM encryption failed".into()))?;
        let mut out = Vec::with_capacity(NONCE_LEN + in_out.len());
        out.extend_from_slice(&nonce);
        out.extend_from_slice(&in_out);
        Ok(out)
    }

    /// Decrypts what [`MasterKey::encrypt`] produced with the same `aad`.
    /// Fails with [`TokenError::Decrypt`] on a wrong key, wrong `aad` or any
    /// alteration.
    pub fn decrypt(&self, ciphertext: &[u8], aad: &[u8]) -> Result<Vec<u8>, TokenError> {
        if ciphertext.len() < NONCE_LEN + AES_256_GCM.tag_len() {
            return Err(TokenError::Decrypt);
        }
        let (nonce, sealed) = ciphertext.split_at(NONCE_LEN);
        let nonce = Nonce::try_assume_unique_for_key(nonce).map_err(|_| TokenError::Decrypt)?;
        let key = self.aead_key()?;
        let mut in_out = sealed.to_vec();
        let len = key
            .open_in_place(nonce, Aad::from(aad), &mut in_out)
            .map_err(|_| TokenError::Decrypt)?
            .len();
        in_out.truncate(len);
        Ok(in_out)
    }
}

impl std::fmt::Debug for MasterKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("MasterKey(<redacted>)")
    }
}

impl Drop for MasterKey {
    fn drop(&mut self) {
        // Best effort without `unsafe`: black_box keeps the store from being
        // optimised away as a dead write.
        self.bytes.fill(0);
        std::hint::black_box(&self.bytes);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_aad_binding() {
        let key = MasterKey::generate().unwrap();
        let sealed = key.encrypt(b"secret", b"kid-1").unwrap();
        assert_eq!(sealed.len(), NONCE_LEN + 6 + 16);
        assert_eq!(key.decrypt(&sealed, b"kid-1").unwrap(), b"secret");
        assert!(matches!(
            key.decrypt(&sealed, b"kid-2"),
            Err(TokenError::Decrypt)
        ));
        let other = MasterKey::generate().unwrap();
        assert!(matches!(
            other.decrypt(&sealed, b"kid-1"),
            Err(TokenError::Decrypt)
        ));
        let mut tampered = sealed.clone();
        tampered[NONCE_LEN] ^= 1;
        assert!(matches!(
            key.decrypt(&tampered, b"kid-1"),
            Err(TokenError::Decrypt)
        ));
        assert!(matches!(
            key.decrypt(&sealed[..10], b"kid-1"),
            Err(TokenError::Decrypt)
        ));
        // Two encryptions of the same plaintext differ (random nonce).
        assert_ne!(sealed, key.encrypt(b"secret", b"kid-1").unwrap());
    }

    #[test]
    fn base64_forms() {
        let key = MasterKey::generate().unwrap();
        let std_b64 = key.to_base64();
        let again = MasterKey::from_base64(&format!("{std_b64}\n")).unwrap();
        assert_eq!(again.bytes, key.bytes);
        let url = URL_SAFE_NO_PAD.encode(key.bytes);
        assert_eq!(MasterKey::from_base64(&url).unwrap().bytes, key.bytes);

        let short = MasterKey::from_base64(&STANDARD.encode([1u8; 16])).unwrap_err();
        assert_eq!(
            short.to_string(),
            "invalid master key: it decodes to 16 bytes; it must be exactly 32 bytes (generate one with `openssl rand -base64 32`)"
        );
        let bad = MasterKey::from_base64("not base64 at all!").unwrap_err();
        assert!(bad.to_string().contains("not valid base64"), "{bad}");
    }

    #[test]
    fn debug_is_redacted() {
        let key = MasterKey::from_base64(&STANDARD.encode([7u8; 32])).unwrap();
        let shown = format!("{key:?}");
        assert_eq!(shown, "MasterKey(<redacted>)");
        assert!(!shown.contains(&key.to_base64()));
    }
}
