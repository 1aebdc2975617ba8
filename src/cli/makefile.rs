//! `archfarm makefile`: the include-able make targets (gVisor's images targets over the
//! binary). The text is the repository's `images.mk`, which archfarm's own top-level
//! Makefile includes too: one source, no twin to keep in step.

/// The text `archfarm makefile` prints.
pub const IMAGES_MK: &str = include_str!("../../images.mk");

/// `archfarm makefile`.
pub fn run() -> bool {
    print!("{IMAGES_MK}");
    true
}

#[cfg(test)]
mod tests {
    use super::IMAGES_MK;

    /// Every verb of gVisor's images targets has its pattern rule and its `-all-images`
    /// and `-all-test-images` forms.
    #[test]
    fn every_target_family_is_there() {
        for verb in ["load", "pull", "rebuild", "build", "push", "tag", "test"] {
            for t in [format!("{verb}-%:"), format!("{verb}-all-images"), format!("{verb}-all-test-images")] {
                assert!(IMAGES_MK.contains(&t), "{t} missing");
            }
        }
        for t in ["list-all-images:", "list-all-test-images:", "local-image-%:", "register-cross:"] {
            assert!(IMAGES_MK.contains(t), "{t} missing");
        }
    }

    /// Make computes nothing when it reads the file: no $(shell ...), no hashing.
    #[test]
    fn no_work_when_make_reads_it() {
        for line in IMAGES_MK.lines().filter(|l| !l.starts_with('#')) {
            assert!(!line.contains("$(shell"), "images.mk must not run commands at parse time: {line}");
            assert!(!line.contains("sha256sum") && !line.contains("docker "), "{line}");
        }
    }
}
