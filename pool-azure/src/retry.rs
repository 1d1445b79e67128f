//! Retrying one storage operation: a timeout on every attempt, capped exponential backoff
//! with jitter between attempts, and the service's own `Retry-After` when it gives one.

use std::future::Future;
use std::time::Duration;

use rand::Rng;

use crate::config::RetryConfig;
use crate::error::Failure;

/// How an operation ended after its attempts.
#[derive(Debug)]
pub(crate) struct Exhausted {
    /// The last attempt's failure.
    pub(crate) failure: Failure,
    /// Attempts made.
    pub(crate) attempts: u32,
    /// Whether an earlier attempt failed in a way that may have applied a write.
    pub(crate) earlier_may_have_applied: bool,
}

/// The delay before retry number `retry` (1 for the first retry): `initial * 2^(retry-1)`,
/// capped, with the upper half jittered; at least what the service asked for, also capped.
pub(crate) fn backoff(config: &RetryConfig, retry: u32, asked: Option<Duration>) -> Duration {
    let exp = config
        .initial_backoff
        .saturating_mul(1 << retry.saturating_sub(1).min(20));
    let capped = exp.min(config.max_backoff);
    let jittered = capped.mul_f64(rand::rng().random_range(0.5..=1.0));
    jittered
        .max(asked.unwrap_or_default())
        .min(config.max_backoff)
}

/// Runs `attempt` until it succeeds, fails for good, or runs out of attempts; each attempt
/// gets `timeout`. `what` names the operation in the log.
pub(crate) async fn run<T, F, Fut>(
    config: &RetryConfig,
    timeout: Duration,
    what: &str,
    mut attempt: F,
) -> Result<(T, u32), Exhausted>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, Failure>>,
{
    let mut earlier_may_have_applied = false;
    let mut attempts = 0;
    loop {
        attempts += 1;
        let failure = match tokio::time::timeout(timeout, attempt()).await {
            Ok(Ok(value)) => return Ok((value, attempts)),
            Ok(Err(failure)) => failure,
            Err(_) => Failure::Timeout(timeout),
        };
        if !failure.is_retryable() || attempts >= config.max_attempts {
            return Err(Exhausted {
                failure,
                attempts,
                earlier_may_have_applied,
            });
        }
        earlier_may_have_applied |= failure.may_have_applied();
        let delay = backoff(config, attempts, failure.retry_after());
        tracing::warn!(
            operation = what,
            attempt = attempts,
            delay_ms = u64::try_from(delay.as_millis()).unwrap_or(u64::MAX),
            failure = %failure,
            "azure request failed; retrying"
        );
        tokio::time::sleep(delay).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicU32, Ordering};

    fn config() -> RetryConfig {
        RetryConfig {
            max_attempts: 4,
            initial_backoff: Duration::from_millis(100),
            max_backoff: Duration::from_secs(1),
        }
    }

    #[test]
    fn backoff_doubles_within_jitter_and_is_capped() {
        let c = config();
        for _ in 0..50 {
            let first = backoff(&c, 1, None);
            assert!((50..=100).contains(&first.as_millis()), "{first:?}");
            let third = backoff(&c, 3, None);
            assert!((200..=400).contains(&third.as_millis()), "{third:?}");
            assert!(backoff(&c, 30, None) <= c.max_backoff);
        }
        assert_eq!(
            backoff(&c, 1, Some(Duration::from_millis(700))),
            Duration::from_millis(700)
        );
        assert_eq!(backoff(&c, 1, Some(Duration::from_secs(60))), c.max_backoff);
    }

    #[tokio::test(start_paused = true)]
    async fn retries_retryable_failures_until_success() {
        let calls = AtomicU32::new(0);
        let result = run(&config(), Duration::from_secs(1), "test", || async {
            match calls.fetch_add(1, Ordering::SeqCst) {
                0 => Err(Failure::Http {
                    status: 503,
                    code: None,
                    retry_after: None,
                }),
                1 => Err(Failure::Timeout(Duration::from_secs(1))),
                _ => Ok("done"),
            }
        })
        .await;
        assert_eq!(result.unwrap(), ("done", 3));
    }

    #[tokio::test(start_paused = true)]
    async fn stops_at_a_permanent_failure_and_reports_earlier_ambiguity() {
        let calls = AtomicU32::new(0);
        let result: Result<((), u32), _> = run(&config(), Duration::from_secs(1), "t", || async {
            match calls.fetch_add(1, Ordering::SeqCst) {
                0 => Err(Failure::Io("reset".into())),
                _ => Err(Failure::Http {
                    status: 412,
                    code: None,
                    retry_after: None,
                }),
            }
        })
        .await;
        let e = result.unwrap_err();
        assert_eq!((e.attempts, e.failure.status()), (2, Some(412)));
        assert!(e.earlier_may_have_applied);
    }

    #[tokio::test(start_paused = true)]
    async fn a_hung_attempt_times_out_and_attempts_are_capped() {
        let calls = AtomicU32::new(0);
        let result: Result<((), u32), _> = run(&config(), Duration::from_secs(2), "t", || async {
            calls.fetch_add(1, Ordering::SeqCst);
            std::future::pending().await
        })
        .await;
        let e = result.unwrap_err();
        assert_eq!(e.failure, Failure::Timeout(Duration::from_secs(2)));
        assert_eq!((e.attempts, calls.load(Ordering::SeqCst)), (4, 4));
    }
}
