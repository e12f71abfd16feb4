use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// Seconds since the Unix epoch; the unit of every JWT time claim.
pub type UnixTime = u64;

/// The one place Latchkey reads the wall clock.
///
/// Token expiry, key rotation and audit checkpoints all depend on time, so
/// every check takes a `Clock` and tests substitute a [`FakeClock`].
pub trait Clock: Send + Sync + std::fmt::Debug {
    /// The current time.
    fn now(&self) -> SystemTime;

    /// The current time in whole seconds since the Unix epoch.
    fn unix(&self) -> UnixTime {
        self.now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0)
    }

    /// The current time in milliseconds since the Unix epoch.
    fn unix_millis(&self) -> u64 {
        self.now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_millis() as u64)
            .unwrap_or(0)
    }
}

/// A shared, dynamically dispatched clock.
pub type SharedClock = Arc<dyn Clock>;

/// The real wall clock.
#[derive(Debug, Default, Clone, Copy)]
pub struct SystemClock;

impl Clock for SystemClock {
    #[allow(clippy::disallowed_methods)] // the one sanctioned wall-clock read
    fn now(&self) -> SystemTime {
        SystemTime::now()
    }
}

/// A clock tests move by hand.
#[derive(Debug, Default)]
pub struct FakeClock {
    millis: AtomicU64,
}

impl FakeClock {
    /// A clock standing at `unix` seconds.
    pub fn at(unix: UnixTime) -> Self {
        Self {
            millis: AtomicU64::new(unix.saturating_mul(1000)),
        }
    }

    /// Moves the clock forward.
    pub fn advance(&self, by: Duration) {
        self.millis
            .fetch_add(by.as_millis() as u64, Ordering::SeqCst);
    }

    /// Sets the clock to `unix` seconds.
    pub fn set(&self, unix: UnixTime) {
        self.millis
            .store(unix.saturating_mul(1000), Ordering::SeqCst);
    }
}

impl Clock for FakeClock {
    fn now(&self) -> SystemTime {
        UNIX_EPOCH + Duration::from_millis(self.millis.load(Ordering::SeqCst))
    }
}
