//! The clock tokens are checked against. Injected, so tests pin `exp`/`nbf` boundaries to the
//! second without sleeping; the server runs on [`SystemClock`].

use std::sync::atomic::{AtomicI64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

/// Seconds since the Unix epoch, as JWT `NumericDate`s count them.
pub trait Clock: Send + Sync + 'static {
    /// Now, in whole seconds since 1970-01-01T00:00:00Z.
    fn now_unix_s(&self) -> i64;
}

/// The machine's clock.
#[derive(Clone, Copy, Debug, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now_unix_s(&self) -> i64 {
        match SystemTime::now().duration_since(UNIX_EPOCH) {
            Ok(d) => i64::try_from(d.as_secs()).unwrap_or(i64::MAX),
            // A clock set before 1970: every token looks far in the future (nbf fails), which
            // is the safe side.
            Err(e) => -i64::try_from(e.duration().as_secs()).unwrap_or(i64::MAX),
        }
    }
}

/// A clock that stands still until it is set (tests).
#[derive(Debug)]
pub struct FixedClock(AtomicI64);

impl FixedClock {
    /// A clock showing `unix_s`.
    pub fn new(unix_s: i64) -> Self {
        FixedClock(AtomicI64::new(unix_s))
    }

    /// Show `unix_s` from now on.
    pub fn set(&self, unix_s: i64) {
        self.0.store(unix_s, Ordering::SeqCst);
    }
}

impl Clock for FixedClock {
    fn now_unix_s(&self) -> i64 {
        self.0.load(Ordering::SeqCst)
    }
}

/// Any shared clock is a clock (so tests can keep a handle to the [`FixedClock`] they inject).
impl<C: Clock> Clock for std::sync::Arc<C> {
    fn now_unix_s(&self) -> i64 {
        (**self).now_unix_s()
    }
}
