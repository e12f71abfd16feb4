//! The one path every revocation and freeze takes (the admin API, RFC 7009
//! and webhook rules): stored durably (which also evicts cached tokens),
//! then recorded.

use latchkey_audit::AuditEvent;
use latchkey_store::Revocation;
use latchkey_tokens::RevocationSet;

use crate::pipeline::{Code, Pipeline, Refusal, Stage};

/// Stores `revocation`, then appends its record `event`. A store failure
/// changes nothing; a record failure after the store is refused as the
/// audit log's (the revocation holds: failing towards less access).
pub(crate) async fn apply(
    pipe: &Pipeline,
    set: &RevocationSet,
    revocation: Revocation,
    event: AuditEvent,
) -> Result<(), Refusal> {
    set.revoke(revocation).await.map_err(|e| {
        tracing::error!(error = %e, "revocation could not be stored");
        Refusal::new(
            Stage::Act,
            Code::StoreUnavailable,
            "the revocation could not be stored",
        )
    })?;
    pipe.record(event).await
}
