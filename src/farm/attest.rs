//! The attestations of a platform image archfarm built: its SLSA provenance (made when
//! it is built, from what the coordinator knows then, and kept in the store beside its
//! memo entry) and its SPDX SBOM (made from the store when it is pushed), each an
//! in-toto statement in a DSSE envelope (signed with the run's `--sign` key, else
//! unsigned), attached as OCI referrers of the image manifest.
//!
//! Order is what makes them complete: the manifest goes up by digest, then the
//! attestations, and only then the per-platform key tag, which is the registry memo. A
//! run that stops in between leaves no key tag, so the next run pushes and attests
//! again; a key tag in the registry means its attestations are there, and a no-op run
//! writes none.

use bytes::Bytes;

use crate::build::assemble::debian::{self, Resolution};
use crate::build::{Parents, Produced};
use crate::image::oci::Descriptor;
use crate::image::store::Entry;
use crate::plan::Job;
use crate::recipe::image_yaml::BASE_APT;
use crate::support::error::{Error, Result};
use crate::trust::keys::SigningKey;
use crate::trust::{attestation, dsse, provenance, sbom};

use super::Farm;

impl Farm {
    /// The provenance statement of what `job` just produced, written to the store.
    pub(super) fn provenance(&self, job: &Job, produced: &Produced, parents: &Parents) -> Result<Descriptor> {
        let packages = self.packages(job)?;
        let statement = provenance::statement(&provenance::Inputs {
            job,
            produced,
            parents,
            packages: packages.as_ref(),
            engine_version: produced.placed.as_ref().and_then(|p| p.engine_version.as_deref()),
            invocation_id: &self.invocation,
        });
        self.store.put_blob(provenance::PAYLOAD_TYPE, &statement)
    }

    /// Pushes `entry` (built by archfarm: it has a provenance) as `repo:tag` with its
    /// attestations attached before the tag (see the module doc). Returns the manifest
    /// descriptor and the bytes of the image's blobs uploaded.
    pub(super) async fn push_attested(
        &self,
        job: &Job,
        entry: &Entry,
        repo: &str,
        tag: &str,
        key: Option<&SigningKey>,
    ) -> Result<(Descriptor, u64)> {
        let manifest = &entry.stored.manifest;
        let (pushed, stats) =
            self.registry.push_image_with_stats(&self.store, repo, &manifest.digest, &entry.stored).await?;
        for (predicate, statement) in self.statements(job, entry)? {
            let envelope = dsse::sign(provenance::PAYLOAD_TYPE, &statement, key)?;
            self.registry.put_referrer(repo, &attestation::artifact(&pushed, predicate, &envelope)).await.map_err(
                |e| e.context(format!("attaching the {predicate} attestation of {repo}@{}", manifest.digest)),
            )?;
        }
        let bytes = Bytes::from(self.store.read_blob(&manifest.digest)?);
        let tagged = self.registry.put_manifest(repo, tag, &manifest.media_type, bytes).await?;
        Ok((tagged, stats.bytes_uploaded))
    }

    /// The provenance and SBOM statements of `entry`'s image: (predicate type, payload).
    fn statements(&self, job: &Job, entry: &Entry) -> Result<Vec<(&'static str, Vec<u8>)>> {
        let mut out = Vec::new();
        if let Some(p) = &entry.provenance {
            out.push((provenance::PREDICATE_TYPE, self.store.read_blob(&p.digest)?));
        }
        let packages = self.packages(job)?;
        let document =
            sbom::document(&self.store, &entry.stored, &job.image, packages.as_ref(), self.config.source_date_epoch)
                .map_err(|e| {
                    Error::failure(format!("the SBOM of {} for {}: {}", job.image, job.platform, e.message()))
                })?;
        out.push((
            attestation::SBOM_PREDICATE_TYPE,
            attestation::sbom_statement(&job.image, &entry.stored, &document)?,
        ));
        Ok(out)
    }

    /// The Debian packages an assembled job was made from (its `apt:` base's recorded
    /// resolution); `None` for other jobs.
    fn packages(&self, job: &Job) -> Result<Option<Resolution>> {
        match job.bases.iter().find(|(base, _)| base.starts_with(BASE_APT)) {
            Some((_, digest)) => debian::recorded(self.store.root(), digest).map(Some),
            None => Ok(None),
        }
    }
}
