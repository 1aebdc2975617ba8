//! The signals that stop archfarm.

use nix::sys::signal::Signal;

/// Waits for Ctrl-C (SIGINT) or SIGTERM and says which came.
pub async fn stopped() -> Signal {
    use tokio::signal::unix::{signal, SignalKind};
    match signal(SignalKind::terminate()) {
        Ok(mut term) => {
            tokio::select! {
                _ = tokio::signal::ctrl_c() => Signal::SIGINT,
                _ = term.recv() => Signal::SIGTERM,
            }
        }
        Err(_) => {
            let _ = tokio::signal::ctrl_c().await;
            Signal::SIGINT
        }
    }
}
