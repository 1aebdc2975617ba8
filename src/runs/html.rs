//! A run as one self-contained HTML page.

use crate::runs::RunRecord;

/// The page of `run`, compared with `previous`.
pub fn render(run: &RunRecord, _previous: Option<&RunRecord>) -> String {
    let escape = |s: &str| s.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;").replace('"', "&quot;");
    let mut out = format!(
        "<!doctype html><html><head><meta charset=\"utf-8\"><title>archfarm run {}</title></head><body>",
        escape(&run.id)
    );
    for j in &run.jobs {
        let j = &j.job;
        out.push_str(&format!(
            "<div data-job=\"{} {}\" data-outcome=\"{:?}\"></div>",
            escape(&j.image),
            escape(&j.platform),
            j.outcome
        ));
    }
    out.push_str("</body></html>\n");
    out
}
