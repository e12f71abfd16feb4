//! The targets on the pipeline, one module each. A target says what a
//! request asks for, does it, and says what happened; authenticate,
//! authorize, record and refusal rendering are the pipeline's.

pub(crate) mod admin;
pub(crate) mod apps;
pub(crate) mod documents;
pub(crate) mod git;
pub(crate) mod readiness;
mod revocations;
pub(crate) mod signin;
pub(crate) mod tokens;
pub(crate) mod webhooks;
