//! Publishing: layers pushed while the build still runs, copies between registries
//! with the index stitched from staging, and releases (tags last), carrying what is
//! attached to each image (referrers, signatures).

pub mod attached;
pub mod copy;
pub mod preupload;
pub mod release;
