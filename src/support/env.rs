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
//!
//! `SOURCE_DATE_EPOCH` (<https://reproducible-builds.org/specs/source-date-epoch/>) is
//! read here too, once per process ([`source_date_epoch`]): the time every build of
//! this run stamps into what it makes, instead of the epoch (docs/supply-chain.md,
//! "Annotations and time").

use std::fmt::Display;
use std::str::FromStr;
use std::sync::OnceLock;
use std::time::Duration;

use crate::support::error::{Error, Result};
use crate::support::time::{self, rfc3339};

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

/// The reproducible-builds variable: the time builds stamp instead of the wall clock.
pub const SOURCE_DATE_EPOCH: &str = "SOURCE_DATE_EPOCH";

/// `SOURCE_DATE_EPOCH` as seconds since the epoch: `None` when it is unset or empty; a
/// usage error naming the variable when it is not a whole number of seconds from 0 to
/// [`time::MAX_SECONDS`] (9999-12-31T23:59:59Z, the last time an image config can say). Read
/// once per process: every part of a run uses the same value.
pub fn read_source_date_epoch() -> Result<Option<u64>> {
    static PARSED: OnceLock<std::result::Result<Option<u64>, String>> = OnceLock::new();
    PARSED
        .get_or_init(|| match std::env::var_os(SOURCE_DATE_EPOCH) {
            None => Ok(None),
            Some(raw) => parse_source_date_epoch(&raw.to_string_lossy()),
        })
        .clone()
        .map_err(Error::usage)
}

/// The value to use: [`read_source_date_epoch`]'s, `None` for a bad value ([`check`]
/// has refused it before any command runs).
pub fn source_date_epoch() -> Option<u64> {
    read_source_date_epoch().ok().flatten()
}

/// The variable's text as seconds. The specification asks for an integer of decimal
/// digits and for a build to fail on anything else, so nothing is guessed: no sign, no
/// blanks, no fraction, no exponent.
fn parse_source_date_epoch(text: &str) -> std::result::Result<Option<u64>, String> {
    if text.is_empty() {
        return Ok(None);
    }
    let why = if !text.bytes().all(|b| b.is_ascii_digit()) {
        if text.starts_with('-') && text[1..].bytes().all(|b| b.is_ascii_digit()) && text.len() > 1 {
            "it is before the epoch".to_string()
        } else {
            "it is not a whole number of seconds".to_string()
        }
    } else {
        match text.parse::<u64>() {
            Ok(s) if s <= time::MAX_SECONDS => return Ok(Some(s)),
            _ => format!("it is after {} (the year 9999), which no image config can say", rfc3339(time::MAX_SECONDS)),
        }
    };
    Err(format!(
        "environment variable {SOURCE_DATE_EPOCH}={text:?} is not valid: {why}; expected whole seconds since \
         1970-01-01T00:00:00Z from 0 to {}, such as `git log -1 --format=%ct`; unset it to stamp the epoch",
        time::MAX_SECONDS
    ))
}

/// Reads every tunable and `SOURCE_DATE_EPOCH`: the first bad one is a usage error
/// naming it.
pub fn check() -> Result<()> {
    for t in [&ENGINE_TIMEOUT, &BUILDER_TIMEOUT, &REGISTRY_TIMEOUT] {
        t.read()?;
    }
    REGISTRY_ATTEMPTS.read()?;
    REGISTRY_CHUNK_SIZE.read()?;
    if let Some(epoch) = read_source_date_epoch()? {
        let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs());
        if epoch > now {
            tracing::warn!(
                "{SOURCE_DATE_EPOCH}={epoch} ({}) is in the future: file times an engine build writes are only \
                 clamped to it, so they keep the build's own times and such images do not reproduce",
                rfc3339(epoch)
            );
        }
    }
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
    fn source_date_epoch_is_whole_seconds_in_range() {
        assert_eq!(parse_source_date_epoch(""), Ok(None), "empty is unset");
        assert_eq!(parse_source_date_epoch("0"), Ok(Some(0)));
        assert_eq!(parse_source_date_epoch("1700000000"), Ok(Some(1_700_000_000)));
        assert_eq!(parse_source_date_epoch("253402300799"), Ok(Some(time::MAX_SECONDS)));
        for (bad, why) in [
            ("-1", "before the epoch"),
            ("253402300800", "after 9999-12-31T23:59:59Z"),
            ("99999999999999999999999", "after 9999"),
            ("abc", "not a whole number"),
            ("1.5", "not a whole number"),
            ("1e9", "not a whole number"),
            (" 17", "not a whole number"),
            ("+17", "not a whole number"),
            ("-", "not a whole number"),
        ] {
            let e = parse_source_date_epoch(bad).unwrap_err();
            assert!(
                e.contains("SOURCE_DATE_EPOCH") && e.contains(why) && e.contains("from 0 to 253402300799"),
                "{bad}: {e}"
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
