//! Where `archfarm assemble` puts an image besides the store: an OCI image layout
//! folder, a docker-archive file, or a docker-archive streamed to stdout.

use std::fs;
use std::path::{Path, PathBuf};

use crate::image::reference::split_tag;
use crate::image::store::{Store, StoredImage};
use crate::image::{docker_archive, oci_layout};
use crate::support::error::{Error, Result};

/// An `--output` value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Output {
    /// `oci:DIR`: an OCI image layout (index.json, blobs/sha256).
    Oci(PathBuf),
    /// `docker-archive:FILE`.
    DockerArchive(PathBuf),
    /// `-`: a docker-archive on stdout.
    Stdout,
}

impl Output {
    /// Parses an `--output` value and checks, before anything is built, that the place
    /// can be written: the folder it goes into exists, and a folder is not a file or the
    /// other way round (usage errors, exit 2, naming the flag).
    pub fn parse(text: &str) -> Result<Output> {
        if text == "-" {
            return Ok(Output::Stdout);
        }
        let output = match text.split_once(':') {
            Some(("oci", p)) if !p.is_empty() => Output::Oci(p.into()),
            Some(("docker-archive", p)) if !p.is_empty() => Output::DockerArchive(p.into()),
            _ => {
                return Err(Error::usage(format!(
                    "--output '{text}': expected oci:DIR, docker-archive:FILE or - (a docker-archive on stdout)"
                )))
            }
        };
        let (path, want_folder) = match &output {
            Output::Oci(p) => (p, true),
            Output::DockerArchive(p) => (p, false),
            Output::Stdout => return Ok(output),
        };
        let bad = |why: String| Err(Error::usage(format!("--output '{text}': {why}")));
        match fs::metadata(path) {
            Ok(m) if want_folder && !m.is_dir() => return bad(format!("{} is a file, not a folder", path.display())),
            Ok(m) if !want_folder && m.is_dir() => return bad(format!("{} is a folder; name a file", path.display())),
            Ok(_) => return Ok(output),
            Err(_) => {}
        }
        let parent = path.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new("."));
        match fs::metadata(parent) {
            Ok(m) if m.is_dir() => Ok(output),
            Ok(_) => bad(format!("{} is not a folder", parent.display())),
            Err(_) => bad(format!("the folder {} does not exist; create it first", parent.display())),
        }
    }
}

/// The tag an assembled image is reported and exported under: the recipe's `name`
/// (with `:<key>` when it has no tag), else `<fallback repository>:<key>`.
pub fn tag(name: Option<&str>, fallback_repo: &str, key: &str) -> String {
    match name {
        Some(n) => match split_tag(n) {
            (_, Some(_)) => n.to_string(),
            (repo, None) => format!("{repo}:{key}"),
        },
        None => format!("{fallback_repo}:{key}"),
    }
}

impl Output {
    /// Puts `image` from `store` where this output says, under `tag`.
    pub fn write(&self, store: &Store, image: &StoredImage, tag: &str) -> Result<()> {
        let tags = [tag.to_string()];
        match self {
            Output::Oci(dir) => oci_layout::write(store, image, split_tag(tag).1.unwrap_or("latest"), dir),
            Output::DockerArchive(file) => docker_archive::export_file(store, image, &tags, file),
            Output::Stdout => {
                let stdout = std::io::stdout();
                let mut w = std::io::BufWriter::with_capacity(1 << 20, stdout.lock());
                docker_archive::export(store, image, &tags, &mut w)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn outputs_into_missing_folders_or_of_the_wrong_kind_are_usage_errors_naming_the_flag() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("file");
        fs::write(&file, b"x").unwrap();
        let d = dir.path().display();
        for (text, says) in [
            (format!("oci:{d}/missing/x"), "does not exist"),
            (format!("docker-archive:{d}/missing/x.tar"), "does not exist"),
            (format!("oci:{}", file.display()), "is a file, not a folder"),
            (format!("docker-archive:{d}"), "is a folder"),
            (format!("oci:{}/x", file.display()), "is not a folder"),
        ] {
            let e = Output::parse(&text).unwrap_err();
            assert_eq!(e.exit_code(), 2, "{text}");
            assert!(e.message().starts_with(&format!("--output '{text}': ")) && e.message().contains(says), "{e}");
        }
        assert_eq!(Output::parse(&format!("oci:{d}/new")).unwrap(), Output::Oci(dir.path().join("new")));
        assert_eq!(Output::parse(&format!("oci:{d}")).unwrap(), Output::Oci(dir.path().to_path_buf()));
        let archive = format!("docker-archive:{d}/x.tar");
        assert_eq!(Output::parse(&archive).unwrap(), Output::DockerArchive(dir.path().join("x.tar")));
    }
}
