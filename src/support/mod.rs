//! The bottom layer: what every other layer uses and that knows nothing of images.
//! Errors and exit codes, the `ARCHFARM_*` environment, retries, secrets that never
//! print, and the one atomic file write.

pub mod env;
pub mod error;
pub mod fs;
pub mod retry;
pub mod secret;
