//! Retry policy for registry requests: exponential backoff with full jitter, a bounded
//! number of attempts, and `Retry-After` honoured (capped) for 429 and 503.
//!
//! Environment (mostly for tests and flaky networks; parsed by [`crate::support::env`]):
//! - `ARCHFARM_REGISTRY_ATTEMPTS`: attempts per operation (default 6, at least 1).
//! - `ARCHFARM_REGISTRY_TIMEOUT`: seconds a small request may take, and a blob transfer
//!   may go without progress (default 60).

use std::time::Duration;

use reqwest::header::HeaderMap;
use reqwest::StatusCode;

/// The first backoff; doubled per attempt up to [`MAX_BACKOFF`], then jittered.
pub const BASE_BACKOFF: Duration = Duration::from_millis(200);
pub const MAX_BACKOFF: Duration = Duration::from_secs(10);
/// A `Retry-After` longer than this is cut to it (the attempts stay bounded in time).
pub const MAX_RETRY_AFTER: Duration = Duration::from_secs(30);

/// Attempts per operation.
pub fn attempts() -> u32 {
    crate::support::env::REGISTRY_ATTEMPTS.get()
}

/// The request deadline and the blob idle deadline.
pub fn timeout() -> Duration {
    crate::support::env::REGISTRY_TIMEOUT.duration()
}

/// A status worth another attempt: 408, 429 and 5xx (except 501 and 505, which will not
/// change).
pub fn retryable_status(s: StatusCode) -> bool {
    s == StatusCode::REQUEST_TIMEOUT
        || s == StatusCode::TOO_MANY_REQUESTS
        || (s.is_server_error() && s != StatusCode::NOT_IMPLEMENTED && s != StatusCode::HTTP_VERSION_NOT_SUPPORTED)
}

/// A transport error worth another attempt: resets, refused or timed-out connections,
/// a body cut short. (Builder errors, redirect loops and a host name that does not exist
/// are not: a machine without that name, such as one with no internet asking for
/// `registry-1.docker.io`, would otherwise wait the whole backoff for nothing.)
pub fn retryable_error(e: &reqwest::Error) -> bool {
    !(e.is_builder() || e.is_redirect() || e.is_status() || unknown_host(e))
}

/// The resolver said the name does not exist (not "try again later").
fn unknown_host(e: &(dyn std::error::Error + 'static)) -> bool {
    const PERMANENT: [&str; 3] =
        ["Name or service not known", "No address associated with hostname", "nodename nor servname provided"];
    let mut cur = Some(e);
    while let Some(err) = cur {
        let text = err.to_string();
        if PERMANENT.iter().any(|p| text.contains(p)) {
            return true;
        }
        cur = err.source();
    }
    false
}

/// `Retry-After` in seconds or as an HTTP date, capped.
pub fn retry_after(headers: &HeaderMap) -> Option<Duration> {
    let v = headers.get(reqwest::header::RETRY_AFTER)?.to_str().ok()?.trim().to_string();
    let d = if let Ok(secs) = v.parse::<u64>() {
        Duration::from_secs(secs)
    } else {
        let when = httpdate::parse_http_date(&v).ok()?;
        when.duration_since(std::time::SystemTime::now()).unwrap_or_default()
    };
    Some(d.min(MAX_RETRY_AFTER))
}

/// How long to wait before attempt `attempt + 1` (attempt counts from 1): full jitter
/// over the exponential step, or the server's `Retry-After` plus a little jitter.
pub fn backoff(attempt: u32, retry_after: Option<Duration>) -> Duration {
    if let Some(d) = retry_after {
        return d + Duration::from_millis(fastrand::u64(0..=250));
    }
    let step = BASE_BACKOFF.saturating_mul(1u32 << attempt.saturating_sub(1).min(16)).min(MAX_BACKOFF);
    let ms = step.as_millis() as u64;
    Duration::from_millis(ms / 2 + fastrand::u64(0..=ms / 2))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_grows_is_bounded_and_honours_retry_after() {
        for a in 1..30 {
            let b = backoff(a, None);
            assert!(b <= MAX_BACKOFF, "{a}: {b:?}");
            assert!(b >= BASE_BACKOFF / 2);
        }
        assert!(backoff(5, None) >= Duration::from_millis(1600));
        let mut h = HeaderMap::new();
        h.insert(reqwest::header::RETRY_AFTER, "2".parse().unwrap());
        let ra = retry_after(&h).unwrap();
        assert_eq!(ra, Duration::from_secs(2));
        assert!(backoff(1, Some(ra)) >= ra);
        h.insert(reqwest::header::RETRY_AFTER, "86400".parse().unwrap());
        assert_eq!(retry_after(&h), Some(MAX_RETRY_AFTER));
        h.insert(reqwest::header::RETRY_AFTER, "Wed, 21 Oct 2015 07:28:00 GMT".parse().unwrap());
        assert_eq!(retry_after(&h), Some(Duration::ZERO));
    }

    #[tokio::test]
    async fn an_unknown_host_is_not_retried_but_a_refused_connection_is() {
        let client = reqwest::Client::new();
        let e = client.get("http://no-such-host.invalid/").send().await.unwrap_err();
        assert!(!retryable_error(&e), "{e:?}");
        let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let e = client.get(format!("http://127.0.0.1:{port}/")).send().await.unwrap_err();
        assert!(retryable_error(&e), "{e:?}");
    }

    #[test]
    fn which_statuses_are_retried() {
        for s in [408, 429, 500, 502, 503, 504] {
            assert!(retryable_status(StatusCode::from_u16(s).unwrap()), "{s}");
        }
        for s in [200, 400, 401, 403, 404, 501] {
            assert!(!retryable_status(StatusCode::from_u16(s).unwrap()), "{s}");
        }
    }
}
