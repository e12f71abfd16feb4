//! Request ids: the key that ties a request's records together, and the
//! `x-request-id` of its response.

use aws_lc_rs::rand::{SecureRandom, SystemRandom};

/// The id the server gave a request, in its extensions.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct RequestId(pub(crate) String);

/// A fresh request id: 96 random bits, hex.
pub(crate) fn new_request_id() -> String {
    let mut b = [0u8; 12];
    // A failing system RNG leaves zeros; ids then still differ by nothing but
    // that cannot happen on a working kernel and is not security-relevant.
    let _ = SystemRandom::new().fill(&mut b);
    hex::encode(b)
}
