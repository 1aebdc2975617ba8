//! Publishing: layers pushed while the build still runs, copies between registries
//! with the index stitched from staging, and releases (tags last).

pub mod copy;
pub mod preupload;
pub mod release;
