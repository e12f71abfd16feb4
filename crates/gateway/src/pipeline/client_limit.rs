//! Refusals before authentication, recorded at a bounded rate per client.
//!
//! Every refusal is answered, but a caller with no credential must not be
//! able to fill the disk through the audit log (each record is synced): per
//! client address, at most `server.limits.unauthenticated_refusals` records
//! per `unauthenticated_interval`; past that the refusals are only counted,
//! and one summary record per address and interval says how many were not
//! recorded. The summary is written with the first refusal of a later
//! interval, or by the periodic upkeep (`Gateway::maintain`).

use std::collections::HashMap;
use std::net::{IpAddr, Ipv6Addr, SocketAddr};
use std::sync::Mutex;

use axum::extract::{ConnectInfo, FromRequestParts};
use http::request::Parts;

/// Addresses tracked at once; past it, new addresses share one bucket, so
/// the table cannot grow without bound under a spoofing-free flood from
/// many addresses (each still costs a TCP handshake).
const MAX_TRACKED: usize = 65_536;

/// The caller's address as the listener saw it (`None` when the router is
/// driven without a socket, as some tests do).
#[derive(Debug, Clone, Copy)]
pub(crate) struct ClientAddr(pub(crate) Option<IpAddr>);

impl<S: Send + Sync> FromRequestParts<S> for ClientAddr {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Self::Rejection> {
        Ok(Self::of(&parts.extensions))
    }
}

impl ClientAddr {
    /// Reads the address the listener put in the request's extensions.
    pub(crate) fn of(extensions: &http::Extensions) -> Self {
        Self(
            extensions
                .get::<ConnectInfo<SocketAddr>>()
                .map(|ConnectInfo(a)| a.ip()),
        )
    }
}

/// The bucket a client's refusals count against: its IPv4 address, or its
/// IPv6 /64 (one host usually holds a whole /64).
fn bucket(ip: Option<IpAddr>) -> Option<IpAddr> {
    match ip? {
        IpAddr::V4(v4) => Some(IpAddr::V4(v4)),
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => Some(IpAddr::V4(v4)),
            None => {
                let s = v6.segments();
                Some(IpAddr::V6(Ipv6Addr::new(
                    s[0], s[1], s[2], s[3], 0, 0, 0, 0,
                )))
            }
        },
    }
}

#[derive(Debug, Clone, Copy)]
struct Window {
    start_ms: u64,
    recorded: u32,
    suppressed: u64,
}

/// Refusals of one client that were not recorded in one interval.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Suppressed {
    /// The client bucket (`None`: unknown address, or the overflow bucket).
    pub(crate) client: Option<IpAddr>,
    /// How many refusals were not recorded.
    pub(crate) count: u64,
    /// When the interval started (unix ms).
    pub(crate) since_ms: u64,
}

/// What to do with one refusal.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct Admission {
    /// Record this refusal.
    pub(crate) record: bool,
    /// The summary of this client's previous interval, to record first.
    pub(crate) summary: Option<Suppressed>,
}

/// Per-client fixed windows of refusal records.
#[derive(Debug)]
pub(crate) struct RefusalLimiter {
    limit: u32,
    interval_ms: u64,
    windows: Mutex<HashMap<Option<IpAddr>, Window>>,
}

impl RefusalLimiter {
    pub(crate) fn new(limit: u32, interval: std::time::Duration) -> Self {
        Self {
            limit,
            interval_ms: u64::try_from(interval.as_millis())
                .unwrap_or(u64::MAX)
                .max(1),
            windows: Mutex::new(HashMap::new()),
        }
    }

    /// Counts one refusal from `client` at `now_ms`.
    pub(crate) fn admit(&self, client: Option<IpAddr>, now_ms: u64) -> Admission {
        let mut key = bucket(client);
        let mut windows = self.windows.lock().unwrap_or_else(|p| p.into_inner());
        if !windows.contains_key(&key) && windows.len() >= MAX_TRACKED {
            // Windows with nothing suppressed can go without a trace.
            let interval = self.interval_ms;
            windows.retain(|_, w| w.suppressed > 0 || now_ms < w.start_ms + interval);
            if windows.len() >= MAX_TRACKED {
                key = None;
            }
        }
        let window = windows.entry(key).or_insert(Window {
            start_ms: now_ms,
            recorded: 0,
            suppressed: 0,
        });
        let mut summary = None;
        if now_ms >= window.start_ms.saturating_add(self.interval_ms) {
            if window.suppressed > 0 {
                summary = Some(Suppressed {
                    client: key,
                    count: window.suppressed,
                    since_ms: window.start_ms,
                });
            }
            *window = Window {
                start_ms: now_ms,
                recorded: 0,
                suppressed: 0,
            };
        }
        let record = window.recorded < self.limit;
        if record {
            window.recorded += 1;
        } else {
            window.suppressed += 1;
        }
        Admission { record, summary }
    }

    /// Ends every interval that is over: returns the summaries to record
    /// and forgets those clients.
    pub(crate) fn drain_expired(&self, now_ms: u64) -> Vec<Suppressed> {
        let mut windows = self.windows.lock().unwrap_or_else(|p| p.into_inner());
        let mut out = Vec::new();
        let interval = self.interval_ms;
        windows.retain(|client, w| {
            if now_ms < w.start_ms.saturating_add(interval) {
                return true;
            }
            if w.suppressed > 0 {
                out.push(Suppressed {
                    client: *client,
                    count: w.suppressed,
                    since_ms: w.start_ms,
                });
            }
            false
        });
        out
    }

    /// The interval, for the summary record.
    pub(crate) fn interval_ms(&self) -> u64 {
        self.interval_ms
    }

    /// The limit per interval, for the summary record.
    pub(crate) fn limit(&self) -> u32 {
        self.limit
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> Option<IpAddr> {
        Some(s.parse().unwrap())
    }

    #[test]
    fn past_the_limit_refusals_are_counted_and_summarised_once() {
        let l = RefusalLimiter::new(2, std::time::Duration::from_secs(60));
        let a = ip("10.0.0.1");
        let recorded: Vec<bool> = (0..5).map(|i| l.admit(a, 1000 + i).record).collect();
        assert_eq!(recorded, [true, true, false, false, false]);
        assert!(l.admit(ip("10.0.0.2"), 1010).record, "another client");
        let next = l.admit(a, 61_000);
        assert!(next.record);
        assert_eq!(
            next.summary,
            Some(Suppressed {
                client: a,
                count: 3,
                since_ms: 1000
            })
        );
        assert_eq!(l.admit(a, 61_001).summary, None, "one summary per interval");
    }

    #[test]
    fn upkeep_drains_intervals_that_ended() {
        let l = RefusalLimiter::new(1, std::time::Duration::from_secs(1));
        let a = ip("10.0.0.1");
        l.admit(a, 0);
        l.admit(a, 1);
        assert!(l.drain_expired(500).is_empty());
        let d = l.drain_expired(1000);
        assert_eq!(d.len(), 1);
        assert_eq!(d[0].count, 1);
        assert!(l.drain_expired(5000).is_empty());
    }

    #[test]
    fn an_ipv6_host_counts_as_its_slash_64() {
        let l = RefusalLimiter::new(1, std::time::Duration::from_secs(60));
        assert!(l.admit(ip("2001:db8:1:2::1"), 0).record);
        assert!(!l.admit(ip("2001:db8:1:2::ffff"), 1).record);
        assert!(l.admit(ip("2001:db8:1:3::1"), 2).record);
    }
}
