use std::collections::{HashMap, HashSet};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use aws_lc_rs::digest;
use aws_lc_rs::rand::SystemRandom;
use aws_lc_rs::signature::{Ed25519KeyPair, KeyPair as _};
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use jsonwebtoken::{DecodingKey, EncodingKey};
use latchkey_core::{SharedClock, UnixTime};
use latchkey_store::{SharedStore, StoredSigningKey};
use serde::{Deserialize, Serialize};

use crate::sync::{read, write};
use crate::{MAX_TOKEN_LIFETIME, MasterKey, TokenError};

/// The JOSE algorithm of every Latchkey signing key.
const ALGORITHM: &str = "EdDSA";

/// When keys are created, start signing and leave JWKS.
///
/// A new key is published `publish_ahead` before it signs, so relying parties
/// (and other gateway nodes) have fetched it before the first token appears;
/// a retired key stays published `max_token_lifetime` after it stops signing,
/// so every token it signed expires before it disappears.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct KeySchedule {
    /// How long a key signs. Default 24 h.
    pub rotation_period: Duration,
    /// How long before it signs a new key is published. Default 1 h.
    pub publish_ahead: Duration,
    /// The longest token any key signs; never above 12 h. Default 12 h.
    pub max_token_lifetime: Duration,
}

impl Default for KeySchedule {
    fn default() -> Self {
        Self {
            rotation_period: Duration::from_secs(24 * 60 * 60),
            publish_ahead: Duration::from_secs(60 * 60),
            max_token_lifetime: MAX_TOKEN_LIFETIME,
        }
    }
}

impl KeySchedule {
    /// Clamps `max_token_lifetime` to 12 h and checks the rest is coherent.
    fn validated(mut self) -> Result<Self, TokenError> {
        self.max_token_lifetime = self.max_token_lifetime.min(MAX_TOKEN_LIFETIME);
        if self.rotation_period.as_secs() == 0 {
            return Err(TokenError::InvalidSchedule(
                "`rotation_period` must be at least one second".into(),
            ));
        }
        if self.publish_ahead >= self.rotation_period {
            return Err(TokenError::InvalidSchedule(
                "`publish_ahead` must be shorter than `rotation_period`".into(),
            ));
        }
        Ok(self)
    }
}

/// Where a key is in its life, at a given time.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum KeyState {
    /// Published, not yet signing.
    Pending,
    /// Signing.
    Active,
    /// Published, no longer signing; tokens it signed may still be live.
    Retired,
    /// Past `published_until`; removed at the next maintenance.
    Expired,
}

/// What the admin API and `latchkey keys` show about a key.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct KeyInfo {
    /// Key id (RFC 7638 thumbprint of the public JWK).
    pub kid: String,
    /// State at the ring's current time.
    pub state: KeyState,
    /// When the key was created.
    pub created_at: UnixTime,
    /// When it starts signing.
    pub signs_from: UnixTime,
    /// When it stops signing.
    pub signs_until: UnixTime,
    /// When it leaves JWKS.
    pub published_until: UnixTime,
}

/// The store meta key of the rotation counter bumped by every rotation.
pub const KEYS_GENERATION_META: &str = "keys_generation";

/// The store meta key of every kid this store ever held (a JSON array,
/// oldest first), so a token signed by a key since removed is told apart
/// from one another gateway signed.
const KNOWN_KIDS_META: &str = "keys_known_kids";
/// How many kids [`KNOWN_KIDS_META`] keeps (a daily rotation: 27 years).
const MAX_KNOWN_KIDS: usize = 10_000;

/// How many rotation records [`SigningKeyRing::rotations_between`] reads at
/// most (a gateway down for a long time audits the newest ones).
pub const MAX_ROTATIONS_READ: u64 = 1000;

fn rotation_meta_key(generation: u64) -> String {
    format!("keys_rotation/{generation}")
}

/// How a rotation hands signing over to the new key.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RotationMode {
    /// Published now, signs after `publish_ahead`; the old key keeps
    /// verifying until its tokens expire.
    Scheduled,
    /// Signs now; every other key is removed and its tokens stop verifying.
    Now,
}

impl RotationMode {
    /// `scheduled` or `now`, as audited.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Scheduled => "scheduled",
            Self::Now => "now",
        }
    }
}

/// One rotation, as recorded in the store's meta table for the gateway to
/// audit (the CLI cannot write to a running gateway's audit log).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Rotation {
    /// The store's key generation this rotation made.
    pub generation: u64,
    /// The new key.
    pub kid: String,
    /// How signing is handed over.
    pub mode: RotationMode,
    /// When the rotation was made.
    pub at: UnixTime,
    /// When the new key starts signing.
    pub signs_from: UnixTime,
    /// Keys that stop signing: at `signs_from` (scheduled) or now.
    pub retired: Vec<String>,
    /// Keys deleted: no longer published, their tokens no longer verify
    /// (with `now`, every other key; with `scheduled`, only pending
    /// successors that never signed).
    pub removed: Vec<String>,
}

/// What one [`SigningKeyRing::maintain`] run did.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct MaintenanceReport {
    /// Keys created (a successor, or an immediately signing key if none was).
    pub created: Vec<String>,
    /// Keys deleted because every token they signed has expired.
    pub removed: Vec<String>,
    /// The key signing after maintenance.
    pub active: Option<String>,
}

/// One key in memory, decrypted.
pub(crate) struct KeyEntry {
    pub(crate) kid: String,
    public_key: Vec<u8>,
    pub(crate) encoding: EncodingKey,
    pub(crate) decoding: DecodingKey,
    stored: StoredSigningKey,
}

impl std::fmt::Debug for KeyEntry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KeyEntry")
            .field("kid", &self.kid)
            .field("signs_from", &self.stored.signs_from)
            .field("signs_until", &self.stored.signs_until)
            .finish_non_exhaustive()
    }
}

impl KeyEntry {
    fn state(&self, now: UnixTime) -> KeyState {
        state_of(&self.stored, now)
    }

    fn info(&self, now: UnixTime) -> KeyInfo {
        KeyInfo {
            kid: self.kid.clone(),
            state: self.state(now),
            created_at: self.stored.created_at,
            signs_from: self.stored.signs_from,
            signs_until: self.stored.signs_until,
            published_until: self.stored.published_until,
        }
    }
}

fn state_of(key: &StoredSigningKey, now: UnixTime) -> KeyState {
    if now >= key.published_until {
        KeyState::Expired
    } else if now < key.signs_from {
        KeyState::Pending
    } else if now < key.signs_until {
        KeyState::Active
    } else {
        KeyState::Retired
    }
}

/// The associated data that binds an encrypted private key to its kid, so a
/// ciphertext cannot be moved to another key's row.
fn key_aad(kid: &str) -> Vec<u8> {
    format!("latchkey signing key v1\0{kid}").into_bytes()
}

/// RFC 7638 JWK thumbprint of an Ed25519 public key.
fn thumbprint(public_key: &[u8]) -> String {
    let x = URL_SAFE_NO_PAD.encode(public_key);
    let canonical = format!(r#"{{"crv":"Ed25519","kty":"OKP","x":"{x}"}}"#);
    URL_SAFE_NO_PAD.encode(digest::digest(&digest::SHA256, canonical.as_bytes()))
}

/// Latchkey's token-signing keys: loaded from the store, decrypted with the
/// master key, kept in memory, published as JWKS and rotated on a schedule.
///
/// Signing and verifying only read memory; `load`, `maintain`, `reload` and
/// `rotate` talk to the store. Several gateway nodes (and `latchkey keys
/// rotate`) share keys through the store; every rotation bumps the store's
/// [`generation`](Self::generation), which gateways poll to reload.
#[derive(Debug)]
pub struct SigningKeyRing {
    store: SharedStore,
    master: MasterKey,
    clock: SharedClock,
    schedule: KeySchedule,
    keys: RwLock<Arc<HashMap<String, Arc<KeyEntry>>>>,
    /// Every kid this ring's store ever held, removed ones included.
    known: RwLock<HashSet<String>>,
}

impl SigningKeyRing {
    /// Loads every key from the store and, if none is able to sign now,
    /// creates one that signs immediately.
    ///
    /// Fails with [`TokenError::MasterKeyMismatch`] if a stored key does not
    /// decrypt with `master`.
    pub async fn load(
        store: SharedStore,
        master: MasterKey,
        clock: SharedClock,
        schedule: KeySchedule,
    ) -> Result<Self, TokenError> {
        let ring = Self {
            store,
            master,
            clock,
            schedule: schedule.validated()?,
            keys: RwLock::new(Arc::new(HashMap::new())),
            known: RwLock::new(HashSet::new()),
        };
        let stored = ring.reload_inner().await?;
        // Stores from before the list existed start it with the keys they hold.
        ring.remember(stored.iter().map(|k| k.kid.clone()).collect())
            .await?;
        let now = ring.clock.unix();
        if !stored.iter().any(|k| state_of(k, now) == KeyState::Active) {
            ring.create_key(now).await?;
            ring.reload_inner().await?;
        }
        Ok(ring)
    }

    /// The schedule in force (with `max_token_lifetime` clamped to 12 h).
    pub fn schedule(&self) -> KeySchedule {
        self.schedule
    }

    /// Replaces the in-memory keys with the store's (another node may have
    /// rotated). Keys past `published_until` are not loaded.
    pub async fn reload(&self) -> Result<(), TokenError> {
        self.reload_inner().await.map(|_| ())
    }

    async fn reload_inner(&self) -> Result<Vec<StoredSigningKey>, TokenError> {
        let stored = self.store.list_signing_keys().await?;
        let now = self.clock.unix();
        let mut map = HashMap::with_capacity(stored.len());
        for key in &stored {
            if state_of(key, now) == KeyState::Expired {
                continue;
            }
            let entry = self.decrypt_entry(key)?;
            map.insert(entry.kid.clone(), Arc::new(entry));
        }
        *write(&self.keys) = Arc::new(map);
        write(&self.known).extend(stored.iter().map(|k| k.kid.clone()));
        Ok(stored)
    }

    /// Adds `kids` to the store's list of every kid it held (and to
    /// memory), and loads the list. Read-modify-write: a kid lost to a
    /// race between nodes only changes which refusal message a token of
    /// that key gets once the key is gone, never whether it verifies.
    async fn remember(&self, kids: Vec<String>) -> Result<(), TokenError> {
        let mut list: Vec<String> = match self.store.get_meta(KNOWN_KIDS_META).await? {
            Some(bytes) => {
                serde_json::from_slice(&bytes).map_err(|e| TokenError::RotationRecord {
                    key: KNOWN_KIDS_META.into(),
                    message: e.to_string(),
                })?
            }
            None => Vec::new(),
        };
        let before = list.len();
        for kid in kids {
            if !list.contains(&kid) {
                list.push(kid);
            }
        }
        if list.len() != before {
            if list.len() > MAX_KNOWN_KIDS {
                list.drain(..list.len() - MAX_KNOWN_KIDS);
            }
            let json = serde_json::to_vec(&list).map_err(|e| TokenError::RotationRecord {
                key: KNOWN_KIDS_META.into(),
                message: e.to_string(),
            })?;
            self.store.put_meta(KNOWN_KIDS_META, &json).await?;
        }
        write(&self.known).extend(list);
        Ok(())
    }

    /// Whether this ring's store ever held the key `kid` (one that signs,
    /// or one rotated out or expired since): a token of any other kid was
    /// not issued by this gateway.
    pub fn ever_had(&self, kid: &str) -> bool {
        read(&self.known).contains(kid)
    }

    fn decrypt_entry(&self, key: &StoredSigningKey) -> Result<KeyEntry, TokenError> {
        if key.algorithm != ALGORITHM {
            return Err(TokenError::Crypto(format!(
                "stored key `{}` has algorithm `{}`; only `{ALGORITHM}` is supported",
                key.kid, key.algorithm
            )));
        }
        let pkcs8 = self
            .master
            .decrypt(&key.encrypted_private_key, &key_aad(&key.kid))
            .map_err(|_| TokenError::MasterKeyMismatch {
                kid: key.kid.clone(),
            })?;
        let pair = Ed25519KeyPair::from_pkcs8(&pkcs8).map_err(|_| {
            TokenError::Crypto(format!("stored key `{}` is not an Ed25519 key", key.kid))
        })?;
        if pair.public_key().as_ref() != key.public_key.as_slice() {
            return Err(TokenError::Crypto(format!(
                "stored key `{}` has a public half that does not match its private half",
                key.kid
            )));
        }
        Ok(KeyEntry {
            kid: key.kid.clone(),
            public_key: key.public_key.clone(),
            encoding: EncodingKey::from_ed_der(&pkcs8),
            decoding: DecodingKey::from_ed_der(&key.public_key),
            stored: key.clone(),
        })
    }

    /// Creates and stores a key signing from `signs_from` for one rotation
    /// period. Does not touch memory; callers reload.
    async fn create_key(&self, signs_from: UnixTime) -> Result<String, TokenError> {
        Ok(self
            .create_key_unless_covered(signs_from, None)
            .await?
            .unwrap_or_default())
    }

    /// [`Self::create_key`], but when `after` is set the key is stored only
    /// if no stored key signs after `after` (checked and written in one
    /// store transaction): when two nodes run the scheduled rotation at
    /// once, one successor is made. `None` when another node made it.
    async fn create_key_unless_covered(
        &self,
        signs_from: UnixTime,
        after: Option<UnixTime>,
    ) -> Result<Option<String>, TokenError> {
        let pkcs8 = Ed25519KeyPair::generate_pkcs8(&SystemRandom::new())
            .map_err(|_| TokenError::Crypto("Ed25519 key generation failed".into()))?;
        let pair = Ed25519KeyPair::from_pkcs8(pkcs8.as_ref())
            .map_err(|_| TokenError::Crypto("generated Ed25519 key is unusable".into()))?;
        let public_key = pair.public_key().as_ref().to_vec();
        let kid = thumbprint(&public_key);
        let encrypted_private_key = self.master.encrypt(pkcs8.as_ref(), &key_aad(&kid))?;
        let signs_until = signs_from.saturating_add(self.schedule.rotation_period.as_secs());
        let key = StoredSigningKey {
            kid: kid.clone(),
            algorithm: ALGORITHM.into(),
            public_key,
            encrypted_private_key,
            created_at: self.clock.unix(),
            signs_from,
            signs_until,
            published_until: signs_until.saturating_add(self.schedule.max_token_lifetime.as_secs()),
        };
        match after {
            None => self.store.insert_signing_key(&key).await?,
            Some(after) => {
                if !self
                    .store
                    .insert_signing_key_unless_covered(&key, after)
                    .await?
                {
                    tracing::info!(
                        signs_from,
                        "another node created the successor signing key first"
                    );
                    return Ok(None);
                }
            }
        }
        self.remember(vec![kid.clone()]).await?;
        tracing::info!(kid = %kid, signs_from, signs_until, "created token signing key");
        Ok(Some(kid))
    }

    /// Periodic upkeep (the gateway runs it every few minutes): reloads from
    /// the store, creates the successor key `publish_ahead` before the last
    /// key stops signing (or an immediately signing key if none signs now),
    /// and deletes keys past `published_until`.
    pub async fn maintain(&self) -> Result<MaintenanceReport, TokenError> {
        let mut report = MaintenanceReport::default();
        let stored = self.store.list_signing_keys().await?;
        let now = self.clock.unix();
        for key in &stored {
            if state_of(key, now) == KeyState::Expired {
                self.store.delete_signing_key(&key.kid).await?;
                tracing::info!(kid = %key.kid, "removed expired token signing key");
                report.removed.push(key.kid.clone());
            }
        }
        let live: Vec<&StoredSigningKey> = stored
            .iter()
            .filter(|k| matches!(state_of(k, now), KeyState::Active | KeyState::Pending))
            .collect();
        let any_active = live.iter().any(|k| state_of(k, now) == KeyState::Active);
        let last_until = live.iter().map(|k| k.signs_until).max();
        match last_until {
            Some(until) if any_active => {
                if now.saturating_add(self.schedule.publish_ahead.as_secs()) >= until {
                    let Some(kid) = self.create_key_unless_covered(until, Some(until)).await?
                    else {
                        self.reload_inner().await?;
                        report.active = self.signing_key().ok().map(|k| k.kid.clone());
                        return Ok(report);
                    };
                    // The regular rotation is audited like a manual one.
                    let retired = live
                        .iter()
                        .filter(|k| k.signs_until == until)
                        .map(|k| k.kid.clone())
                        .collect();
                    self.record_rotation(Rotation {
                        generation: 0,
                        kid: kid.clone(),
                        mode: RotationMode::Scheduled,
                        at: now,
                        signs_from: until,
                        retired,
                        removed: Vec::new(),
                    })
                    .await?;
                    report.created.push(kid);
                }
            }
            _ => {
                // Nothing signs now (the ring was idle past a rotation, or a
                // pending key starts later): sign immediately, unless
                // another node just did.
                if let Some(kid) = self.create_key_unless_covered(now, Some(now)).await? {
                    report.created.push(kid);
                }
            }
        }
        self.reload_inner().await?;
        report.active = self.signing_key().ok().map(|k| k.kid.clone());
        Ok(report)
    }

    /// Rotates to a new signing key and records the rotation in the store
    /// (see [`Rotation`]), so every gateway sharing the store reloads its
    /// keys and audits the rotation within its poll interval.
    ///
    /// [`RotationMode::Scheduled`]: the new key is published now and signs
    /// from `publish_ahead` on, so every relying party that caches JWKS
    /// (for at most `publish_ahead`) knows it before its first token. The
    /// active key keeps signing until then and stays published until every
    /// token it signed has expired. Pending successors, which never signed,
    /// are deleted. If nothing signs now, the new key signs at once.
    ///
    /// [`RotationMode::Now`] (a compromised key): the new key signs at once
    /// and every other key is deleted, so the tokens they signed stop
    /// verifying here as soon as each gateway reloads. Relying parties that
    /// cached JWKS keep the old keys until their cache expires.
    pub async fn rotate(&self, mode: RotationMode) -> Result<Rotation, TokenError> {
        let stored = self.store.list_signing_keys().await?;
        let now = self.clock.unix();
        let any_active = stored.iter().any(|k| state_of(k, now) == KeyState::Active);
        let signs_from = match mode {
            RotationMode::Scheduled if any_active => {
                now.saturating_add(self.schedule.publish_ahead.as_secs())
            }
            _ => now,
        };
        let kid = self.create_key(signs_from).await?;
        let mut retired = Vec::new();
        let mut removed = Vec::new();
        for key in &stored {
            let state = state_of(key, now);
            match (mode, state) {
                (RotationMode::Scheduled, KeyState::Active) => {
                    // INVARIANT: the old key signs until the new one does,
                    // so there is no instant at which nothing signs, and it
                    // stays published as long as a token it signed lives.
                    let mut handed_over = key.clone();
                    handed_over.signs_until = signs_from;
                    handed_over.published_until =
                        signs_from.saturating_add(self.schedule.max_token_lifetime.as_secs());
                    self.store.update_signing_key_schedule(&handed_over).await?;
                    retired.push(key.kid.clone());
                }
                (RotationMode::Scheduled, KeyState::Pending) | (RotationMode::Now, _) => {
                    self.store.delete_signing_key(&key.kid).await?;
                    if state != KeyState::Pending {
                        retired.push(key.kid.clone());
                    }
                    removed.push(key.kid.clone());
                }
                (RotationMode::Scheduled, KeyState::Retired | KeyState::Expired) => {}
            }
        }
        let rotation = self
            .record_rotation(Rotation {
                generation: 0,
                kid,
                mode,
                at: now,
                signs_from,
                retired,
                removed,
            })
            .await?;
        tracing::info!(
            kid = %rotation.kid,
            mode = rotation.mode.as_str(),
            signs_from,
            retired = ?rotation.retired,
            removed = ?rotation.removed,
            "rotated token signing key"
        );
        self.reload_inner().await?;
        Ok(rotation)
    }

    /// Takes the next generation from the store's atomic counter
    /// ([`KEYS_GENERATION_META`]) and stores `rotation` under it, so two
    /// rotations at the same instant (two nodes, or a node and
    /// `latchkey keys rotate`) get two generations and are both audited.
    /// A node that reads the counter between the bump and the record's
    /// write finds no record for that generation and skips it (it still
    /// reloads the keys, which are in the store).
    async fn record_rotation(&self, mut rotation: Rotation) -> Result<Rotation, TokenError> {
        let generation = self.store.next_counter(KEYS_GENERATION_META).await?;
        rotation.generation = generation;
        let key = rotation_meta_key(generation);
        let json = serde_json::to_vec(&rotation).map_err(|e| TokenError::RotationRecord {
            key: key.clone(),
            message: e.to_string(),
        })?;
        self.store.put_meta(&key, &json).await?;
        Ok(rotation)
    }

    /// The store's key generation: how many rotations were ever recorded.
    /// Cheap (one meta row); gateways poll it to learn of rotations made by
    /// `latchkey keys rotate` or another node.
    pub async fn generation(&self) -> Result<u64, TokenError> {
        Ok(self.store.counter(KEYS_GENERATION_META).await?)
    }

    /// The rotations recorded after generation `after`, up to `upto`,
    /// oldest first; at most the newest [`MAX_ROTATIONS_READ`] of them.
    /// A generation with no record (a lost race, see
    /// [`Self::rotate`]) is skipped.
    pub async fn rotations_between(
        &self,
        after: u64,
        upto: u64,
    ) -> Result<Vec<Rotation>, TokenError> {
        let first = after
            .saturating_add(1)
            .max(upto.saturating_sub(MAX_ROTATIONS_READ - 1));
        let mut out = Vec::new();
        for generation in first..=upto {
            let key = rotation_meta_key(generation);
            let Some(bytes) = self.store.get_meta(&key).await? else {
                continue;
            };
            let rotation: Rotation =
                serde_json::from_slice(&bytes).map_err(|e| TokenError::RotationRecord {
                    key: key.clone(),
                    message: e.to_string(),
                })?;
            out.push(rotation);
        }
        Ok(out)
    }

    /// The published keys (pending, active, retired) as a JWK Set.
    pub fn jwks(&self) -> serde_json::Value {
        let now = self.clock.unix();
        let keys = read(&self.keys).clone();
        let mut entries: Vec<&Arc<KeyEntry>> = keys
            .values()
            .filter(|k| k.state(now) != KeyState::Expired)
            .collect();
        entries.sort_by(|a, b| (a.stored.signs_from, &a.kid).cmp(&(b.stored.signs_from, &b.kid)));
        let keys: Vec<serde_json::Value> = entries
            .iter()
            .map(|k| {
                serde_json::json!({
                    "kty": "OKP",
                    "crv": "Ed25519",
                    "x": URL_SAFE_NO_PAD.encode(&k.public_key),
                    "kid": k.kid,
                    "alg": ALGORITHM,
                    "use": "sig",
                })
            })
            .collect();
        serde_json::json!({ "keys": keys })
    }

    /// Every key in memory with its state now, oldest `signs_from` first.
    pub fn keys(&self) -> Vec<KeyInfo> {
        let now = self.clock.unix();
        let keys = read(&self.keys).clone();
        let mut infos: Vec<KeyInfo> = keys.values().map(|k| k.info(now)).collect();
        infos.sort_by(|a, b| (a.signs_from, &a.kid).cmp(&(b.signs_from, &b.kid)));
        infos
    }

    /// The key to sign with now: the active key with the latest `signs_from`.
    pub(crate) fn signing_key(&self) -> Result<Arc<KeyEntry>, TokenError> {
        let now = self.clock.unix();
        let keys = read(&self.keys);
        keys.values()
            .filter(|k| k.state(now) == KeyState::Active)
            .max_by(|a, b| (a.stored.signs_from, &a.kid).cmp(&(b.stored.signs_from, &b.kid)))
            .cloned()
            .ok_or(TokenError::NoSigningKey)
    }

    /// The published key with this kid, for verification.
    pub(crate) fn verification_key(&self, kid: &str) -> Option<Arc<KeyEntry>> {
        let now = self.clock.unix();
        read(&self.keys)
            .get(kid)
            .filter(|k| k.state(now) != KeyState::Expired)
            .cloned()
    }

    /// Whether a key with this kid is still published (a cheap check for the
    /// verifier's cache).
    pub(crate) fn publishes(&self, kid: &str) -> bool {
        self.verification_key(kid).is_some()
    }
}
