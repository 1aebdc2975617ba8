//! Human progress on stderr: a live spinner per running job when stderr is a terminal,
//! plain lines otherwise (CI logs). Results go to stdout elsewhere.

use std::collections::BTreeMap;
use std::io::IsTerminal;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use indicatif::{MultiProgress, ProgressBar, ProgressStyle};

use crate::farm::report::BuildReport;
use crate::image::platform::Platform;

pub use crate::farm::report::{Outcome, Source};

#[derive(Clone)]
pub struct Progress {
    inner: Arc<Inner>,
}

struct Inner {
    live: Option<MultiProgress>,
    bars: Mutex<BTreeMap<String, ProgressBar>>,
    verbose: bool,
    /// Everything the run reported so far, for its run record.
    reported: Mutex<BuildReport>,
    /// The jobs started and not yet finished, as `IMAGE PLATFORM`: what an interrupted
    /// run's record names.
    running: Mutex<std::collections::BTreeSet<String>>,
}

impl Progress {
    /// Live bars when stderr is a terminal, plain lines otherwise.
    pub fn new(verbose: bool) -> Self {
        let live = std::io::stderr().is_terminal().then(MultiProgress::new);
        let reported = Mutex::new(BuildReport::default());
        Progress {
            inner: Arc::new(Inner {
                live,
                bars: Mutex::new(BTreeMap::new()),
                verbose,
                reported,
                running: Mutex::default(),
            }),
        }
    }

    pub fn started(&self, image: &str, platform: &Platform) {
        let name = format!("{image} {platform}");
        self.inner.running.lock().expect("progress lock").insert(name.clone());
        match &self.inner.live {
            Some(m) => {
                let bar = m.add(ProgressBar::new_spinner());
                bar.set_style(ProgressStyle::with_template("{spinner} {msg} {elapsed}").expect("valid template"));
                bar.set_message(format!("building {name}"));
                bar.enable_steady_tick(Duration::from_millis(120));
                self.inner.bars.lock().expect("progress lock").insert(name, bar);
            }
            None => eprintln!("building {name}"),
        }
    }

    pub fn finished(&self, image: &str, platform: &Platform, outcome: Outcome, source: Source, seconds: f64) {
        let what = match (outcome, source) {
            (Outcome::Built, _) => format!("built in {seconds:.1}s"),
            (_, Source::Store) => "cached (local store)".to_string(),
            (_, Source::Engine) => "cached (local engine)".to_string(),
            (_, Source::Registry) => "cached (registry)".to_string(),
            _ => "done".to_string(),
        };
        if outcome == Outcome::Built || self.inner.verbose {
            self.line(&format!("{image} {platform}: {what}"), image, platform);
        } else {
            self.clear(image, platform);
        }
    }

    pub fn failed(&self, image: &str, platform: &Platform, message: &str) {
        self.line(&format!("{image} {platform}: FAILED: {message}"), image, platform);
    }

    /// Adds a farm run's report (or a command's own tags and errors) to what this run
    /// reported; a command may run the farm more than once.
    pub fn report(&self, report: &BuildReport) {
        let mut all = self.inner.reported.lock().expect("progress lock");
        all.jobs.extend(report.jobs.iter().cloned());
        all.tags.extend(report.tags.iter().cloned());
        all.skipped.extend(report.skipped.iter().cloned());
        all.errors.extend(report.errors.iter().cloned());
    }

    /// Everything reported so far.
    pub fn reported(&self) -> BuildReport {
        self.inner.reported.lock().expect("progress lock").clone()
    }

    pub fn note(&self, message: &str) {
        match &self.inner.live {
            Some(m) => {
                let _ = m.println(message);
            }
            None => eprintln!("{message}"),
        }
    }

    fn line(&self, message: &str, image: &str, platform: &Platform) {
        self.clear(image, platform);
        self.note(message);
    }

    /// The jobs started and not yet finished, in name order.
    pub fn running(&self) -> Vec<String> {
        self.inner.running.lock().expect("progress lock").iter().cloned().collect()
    }

    fn clear(&self, image: &str, platform: &Platform) {
        let name = format!("{image} {platform}");
        self.inner.running.lock().expect("progress lock").remove(&name);
        if let Some(bar) = self.inner.bars.lock().expect("progress lock").remove(&name) {
            bar.finish_and_clear();
        }
    }
}
