//! The attestations of a platform image this run built and pushes: its SLSA provenance
//! and its SPDX SBOM, each an in-toto statement in a DSSE envelope (signed with the
//! run's `--sign` key, else unsigned), attached as OCI referrers of the image manifest.
//!
//! Order is what makes them complete: the manifest goes up by digest, then the
//! attestations, and only then the per-platform key tag, which is the registry memo. A
//! run that stops in between leaves no key tag, so the next run pushes and attests
//! again; a key tag in the registry means its attestations are there, and a no-op run
//! writes none.

use bytes::Bytes;

use crate::build::{Parents, Produced};
use crate::image::oci::Descriptor;
use crate::image::store::Entry;
use crate::plan::Job;
use crate::recipe::image_yaml::BASE_APT;
use crate::support::error::{Error, Result};
use crate::trust::keys::SigningKey;
use crate::trust::{attestation, dsse, provenance, sbom};

use super::Farm;

/// What this run knows of a job it built: the facts its provenance states.
pub struct Built {
    pub produced: Produced,
    pub parents: Parents,
}

impl Farm {
    /// Pushes `entry` (built by this run as `built`) as `repo:tag` with its attestations
    /// attached before the tag (see the module doc). Returns the manifest descriptor.
    pub(super) async fn push_attested(
        &self,
        job: &Job,
        entry: &Entry,
        built: &Built,
        repo: &str,
        tag: &str,
        key: Option<&SigningKey>,
    ) -> Result<Descriptor> {
        let manifest = &entry.stored.manifest;
        let pushed = self.registry.push_image(&self.store, repo, &manifest.digest, &entry.stored).await?;
        for (predicate, statement) in self.statements(job, entry, built)? {
            let envelope = dsse::sign(provenance::PAYLOAD_TYPE, &statement, key)?;
            self.registry.put_referrer(repo, &attestation::artifact(&pushed, predicate, &envelope)).await.map_err(
                |e| e.context(format!("attaching the {predicate} attestation of {repo}@{}", manifest.digest)),
            )?;
        }
        let bytes = Bytes::from(self.store.read_blob(&manifest.digest)?);
        self.registry.put_manifest(repo, tag, &manifest.media_type, bytes).await
    }

    /// The provenance and SBOM statements of `job`'s image: (predicate type, payload).
    fn statements(&self, job: &Job, entry: &Entry, built: &Built) -> Result<Vec<(&'static str, Vec<u8>)>> {
        let packages = match job.bases.iter().find(|(base, _)| base.starts_with(BASE_APT)) {
            Some((_, digest)) => Some(crate::build::assemble::debian::recorded(self.store.root(), digest)?),
            None => None,
        };
        let inputs = provenance::Inputs {
            job,
            produced: &built.produced,
            parents: &built.parents,
            packages: packages.as_ref(),
            engine_version: None,
            invocation_id: &self.invocation,
        };
        let document =
            sbom::document(&self.store, &entry.stored, &job.image, packages.as_ref(), self.config.source_date_epoch)
                .map_err(|e| {
                    Error::failure(format!("the SBOM of {} for {}: {}", job.image, job.platform, e.message()))
                })?;
        Ok(vec![
            (provenance::PREDICATE_TYPE, provenance::statement(&inputs)),
            (sbom::PREDICATE_TYPE, sbom::statement(&job.image, &entry.stored, &document)?),
        ])
    }
}
