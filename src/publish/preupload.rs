//! Uploading an assembled image's layers while the assembler is still compressing the
//! others, so `build --push` of a large image.yaml takes about the longer of the two
//! rather than their sum.
//!
//! Only a head start: failures are logged and forgotten, because the one publish path
//! ([`Registry::push_image`], from the store, after the job is recorded) runs as always
//! afterwards; it finds the pre-uploaded blobs by HEAD and uploads whatever is missing.
//! Nothing here writes a manifest or a tag.

use std::sync::{Arc, Mutex};

use tokio::runtime::Handle;
use tokio::sync::Semaphore;
use tokio::task::JoinHandle;

use crate::build::assemble::LayerSink;
use crate::image::oci::Descriptor;
use crate::image::store::Store;
use crate::registry::{PushStats, Registry, BLOB_CONCURRENCY};

/// A [`LayerSink`] that starts uploading each staged layer to `repo`.
pub struct Preupload {
    registry: Registry,
    repo: String,
    rt: Handle,
    permits: Arc<Semaphore>,
    tasks: Mutex<Vec<JoinHandle<()>>>,
    stats: Arc<Mutex<PushStats>>,
}

impl Preupload {
    pub fn new(registry: Registry, repo: String, rt: Handle) -> Preupload {
        Preupload {
            registry,
            repo,
            rt,
            permits: Arc::new(Semaphore::new(BLOB_CONCURRENCY)),
            tasks: Mutex::new(Vec::new()),
            stats: Arc::default(),
        }
    }
}

impl LayerSink for Preupload {
    fn layer_staged(&self, staging: &Store, blob: &Descriptor) {
        let (registry, repo, store, blob) = (self.registry.clone(), self.repo.clone(), staging.clone(), blob.clone());
        let (permits, stats) = (Arc::clone(&self.permits), Arc::clone(&self.stats));
        let task = self.rt.spawn(async move {
            let Ok(_permit) = permits.acquire_owned().await else { return };
            match registry.push_blob(&store, &repo, &blob, None).await {
                Ok(outcome) => lock(&stats).add(outcome),
                Err(e) => tracing::debug!(
                    "early upload of {} to {repo} failed (the push will retry): {}",
                    blob.digest,
                    e.message()
                ),
            }
        });
        lock(&self.tasks).push(task);
    }

    /// Waits for every started upload (called from a blocking thread, never from the runtime).
    fn settle(&self) {
        let tasks = std::mem::take(&mut *lock(&self.tasks));
        self.rt.block_on(async {
            for t in tasks {
                let _ = t.await;
            }
        });
        let stats = lock(&self.stats);
        tracing::info!(
            repo = %self.repo, blobs_uploaded = stats.blobs_uploaded, bytes_uploaded = stats.bytes_uploaded,
            blobs_skipped = stats.blobs_skipped, "uploaded layers while assembling"
        );
    }
}

/// A poisoned lock only means another upload task panicked; its data is still usable.
fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}
