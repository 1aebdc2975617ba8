//! The bottom layer: what every other layer uses and that knows nothing of images.
//! Errors and exit codes, the `ARCHFARM_*` environment, retries, secrets that never
//! print, the signals that stop a run, the one atomic file write, and times as image
//! documents write them.

pub mod env;
pub mod error;
pub mod fs;
pub mod retry;
pub mod secret;
pub mod signal;
pub mod time;
