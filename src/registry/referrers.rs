//! OCI 1.1 referrers: artifacts (signatures, attestations, SBOMs) that name an image
//! manifest as their `subject`, and the tags that find them on registries without the
//! referrers API.

use crate::image::oci::digest_hex;
use crate::support::error::Result;

/// The referrers tag schema's tag for `subject` (`sha256-<hex>`): on a registry without
/// the referrers API (docker-registry 2.8), an image index of the subject's referrers.
pub fn fallback_tag(subject: &str) -> Result<String> {
    Ok(format!("sha256-{}", digest_hex(subject)?))
}

/// cosign's tag for `subject`'s `kind` of artifact (`sig`, `att`, `sbom`):
/// `sha256-<hex>.<kind>`.
pub fn cosign_tag(subject: &str, kind: &str) -> Result<String> {
    Ok(format!("{}.{kind}", fallback_tag(subject)?))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tags_name_the_subject_digest() {
        let d = format!("sha256:{}", "ab".repeat(32));
        assert_eq!(fallback_tag(&d).unwrap(), format!("sha256-{}", "ab".repeat(32)));
        assert_eq!(cosign_tag(&d, "sig").unwrap(), format!("sha256-{}.sig", "ab".repeat(32)));
        assert!(fallback_tag("sha512:00").is_err());
    }
}
