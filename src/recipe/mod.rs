//! What the user wrote: archfarm.yaml (with its `builders:` and `annotations:`), the catalog of image
//! folders, Dockerfiles and image.yaml recipes, `.dockerignore`, and the scan of a
//! folder into the build context its key covers.

pub mod annotations;
pub mod builders;
pub mod catalog;
pub mod config;
pub mod context;
pub mod dockerfile;
pub mod dockerignore;
pub mod image_yaml;
pub mod scan;
