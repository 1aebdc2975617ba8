//! The numeric tunables archfarm reads from `ARCHFARM_*` environment variables, with one
//! parser for all of them.
//!
//! A value that does not parse or is out of range is a usage error (exit 2) naming the
//! variable, what it accepts and the default. [`check`] reads every tunable when a
//! command starts, so a typo such as `ARCHFARM_REGISTRY_TIMEOUT=-1` stops the run at once
//! instead of being replaced by the default deep inside it. (The other variables are
//! checked where they are parsed: `ARCHFARM_REGISTRY`, `ARCHFARM_LOCAL_PREFIX`,
//! `ARCHFARM_STORE` and `ARCHFARM_CONFIG` by the configuration, `ARCHFARM_OFFLINE` and
//! `ARCHFARM_REFRESH_BASES` by the command line, `ARCHFARM_LOG` by `main.rs`.)

use std::fmt::Display;
use std::str::FromStr;
use std::time::Duration;

use crate::support::error::{Error, Result};

/// A number read from an environment variable; unset or empty means the default.
pub struct Tunable<T: 'static> {
    pub name: &'static str,
    /// What it accepts, for the error message.
    accepts: &'static str,
    pub default: T,
    valid: fn(&T) -> bool,
}

const SECONDS: &str = "a number of seconds greater than 0, such as 30 or 2.5";
/// The longest timeout accepted (about 31 years): larger values would overflow a `Duration`.
const MAX_SECONDS: f64 = 1e9;

fn seconds(s: &f64) -> bool {
    s.is_finite() && *s > 0.0 && *s <= MAX_SECONDS
}

/// How long the local engine's API gets to answer.
pub const ENGINE_TIMEOUT: Tunable<f64> =
    Tunable { name: "ARCHFARM_ENGINE_TIMEOUT", accepts: SECONDS, default: 30.0, valid: seconds };
/// How long a listed builder gets to answer (and the watchdog's ping interval).
pub const BUILDER_TIMEOUT: Tunable<f64> =
    Tunable { name: "ARCHFARM_BUILDER_TIMEOUT", accepts: SECONDS, default: 10.0, valid: seconds };
/// How long a small registry request may take, and a blob transfer may go without progress.
pub const REGISTRY_TIMEOUT: Tunable<f64> =
    Tunable { name: "ARCHFARM_REGISTRY_TIMEOUT", accepts: SECONDS, default: 60.0, valid: seconds };
/// Attempts per registry operation.
pub const REGISTRY_ATTEMPTS: Tunable<u32> = Tunable {
    name: "ARCHFARM_REGISTRY_ATTEMPTS",
    accepts: "a whole number of attempts, 1 or more",
    default: 6,
    valid: |n| *n >= 1,
};
/// Blobs larger than this are uploaded in chunks of this size.
pub const REGISTRY_CHUNK_SIZE: Tunable<u64> = Tunable {
    name: "ARCHFARM_REGISTRY_CHUNK_SIZE",
    accepts: "a whole number of bytes, 4096 or more",
    default: 128 << 20,
    valid: |n| *n >= 4096,
};

impl<T: FromStr + Display + Copy> Tunable<T> {
    /// The variable's value; `None` when it is unset or empty; an error naming the
    /// variable when it is not a valid value.
    pub fn read(&self) -> Result<Option<T>> {
        let Some(raw) = std::env::var_os(self.name) else { return Ok(None) };
        let text = raw.to_string_lossy();
        if text.trim().is_empty() {
            return Ok(None);
        }
        match text.trim().parse::<T>() {
            Ok(v) if (self.valid)(&v) => Ok(Some(v)),
            _ => Err(Error::usage(format!(
                "environment variable {}={text:?} is not valid: expected {}; unset it for the default ({})",
                self.name, self.accepts, self.default
            ))),
        }
    }

    /// The value to use: the variable's, else the default. [`check`] has refused a bad
    /// value before any command runs; library callers that skip it get the default.
    pub fn get(&self) -> T {
        self.read().ok().flatten().unwrap_or(self.default)
    }
}

impl Tunable<f64> {
    /// A timeout tunable as a duration.
    pub fn duration(&self) -> Duration {
        Duration::from_secs_f64(self.get())
    }
}

/// Reads every tunable: the first bad one is a usage error naming it.
pub fn check() -> Result<()> {
    for t in [&ENGINE_TIMEOUT, &BUILDER_TIMEOUT, &REGISTRY_TIMEOUT] {
        t.read()?;
    }
    REGISTRY_ATTEMPTS.read()?;
    REGISTRY_CHUNK_SIZE.read()?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A tunable of its own per test, so tests running in parallel never share a variable.
    fn with<T: FromStr + Display + Copy>(t: &Tunable<T>, name: &'static str, value: &str) -> Result<Option<T>> {
        let own = Tunable { name, accepts: t.accepts, default: t.default, valid: t.valid };
        std::env::set_var(name, value);
        let r = own.read();
        std::env::remove_var(name);
        r
    }

    #[test]
    fn seconds_accept_positive_numbers_only() {
        assert_eq!(with(&ENGINE_TIMEOUT, "ARCHFARM_TEST_SECS_A", " 2.5 ").unwrap(), Some(2.5));
        assert_eq!(with(&ENGINE_TIMEOUT, "ARCHFARM_TEST_SECS_B", "").unwrap(), None, "empty is unset");
        for bad in ["abc", "-1", "0", "NaN", "inf", "1e30", "30s"] {
            let e = with(&ENGINE_TIMEOUT, "ARCHFARM_TEST_SECS_C", bad).unwrap_err();
            assert_eq!(e.exit_code(), 2, "{bad}");
            assert!(
                e.message().contains("ARCHFARM_TEST_SECS_C") && e.message().contains("seconds greater than 0"),
                "{}",
                e.message()
            );
        }
    }

    #[test]
    fn counts_and_sizes_have_a_minimum() {
        assert_eq!(with(&REGISTRY_ATTEMPTS, "ARCHFARM_TEST_N_A", "3").unwrap(), Some(3));
        for bad in ["0", "-2", "2.5", "many"] {
            let e = with(&REGISTRY_ATTEMPTS, "ARCHFARM_TEST_N_B", bad).unwrap_err();
            assert!(e.message().contains("1 or more") && e.message().contains("default (6)"), "{}", e.message());
        }
        assert_eq!(with(&REGISTRY_CHUNK_SIZE, "ARCHFARM_TEST_N_C", "65536").unwrap(), Some(65536));
        let e = with(&REGISTRY_CHUNK_SIZE, "ARCHFARM_TEST_N_D", "0").unwrap_err();
        assert!(e.message().contains("4096 or more"), "{}", e.message());
    }
}
