//! The manager's notion of time: wall-clock milliseconds for the pool's records, advanced
//! by tokio's clock so that tests with a paused clock control it exactly.

use std::sync::OnceLock;
use std::time::{SystemTime, UNIX_EPOCH};

use pool_core::Timestamp;
use tokio::time::Instant;

/// Wall-clock time anchored once per process, then advanced by tokio's monotonic clock.
///
/// Every manager in a process shares the anchor, so managers started at different
/// moments agree on the time, including under a paused test clock.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Clock {
    origin_ms: u64,
    origin: Instant,
}

static ANCHOR: OnceLock<Clock> = OnceLock::new();

impl Clock {
    pub(crate) fn new() -> Self {
        *ANCHOR.get_or_init(|| {
            let since_epoch = SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .unwrap_or_default();
            let origin_ms = u64::try_from(since_epoch.as_millis()).unwrap_or(u64::MAX);
            Self {
                origin_ms,
                origin: Instant::now(),
            }
        })
    }

    /// The current time as the pool records it.
    pub(crate) fn now(&self) -> Timestamp {
        let elapsed = Instant::now().saturating_duration_since(self.origin);
        Timestamp::from_millis(self.origin_ms).saturating_add(elapsed)
    }
}
