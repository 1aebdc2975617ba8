#!/usr/bin/env python3
"""Opens an archfarm HTML report in headless Chromium and prints what the page shows.

usage: report_page.py PAGE WIDTH HEIGHT SCREENSHOT

Prints one JSON object: the console errors (SEVERE browser log entries) and page
errors, each data-job with its data-outcome and its lane's data-builder (null for the
memo lane), the lanes, the failure sections' text, the document's scrollWidth against
the window's width, the timeline's against its box, and the load time
(navigationStart to loadEventEnd, ms).
"""
import json
import pathlib
import sys
import tempfile

from selenium import webdriver
from selenium.webdriver.chrome.service import Service

FACTS = """
const jobs = [...document.querySelectorAll('[data-job]')].map(e => {
  const lane = e.closest('.lane');
  return {job: e.dataset.job, outcome: e.dataset.outcome, route: e.dataset.route || '',
          critical: e.dataset.critical === 'true',
          builder: lane && lane.dataset.builder !== undefined ? lane.dataset.builder : null};
});
const lanes = [...document.querySelectorAll('.lane')].map(e =>
  e.dataset.builder !== undefined ? {builder: e.dataset.builder} : {lane: e.dataset.lane || ''});
const failures = [...document.querySelectorAll('[data-failure]')].map(e =>
  ({job: e.dataset.failure, text: e.innerText}));
const t = performance.getEntriesByType('navigation')[0];
const timeline = document.querySelector('.timeline');
const box = timeline ? timeline.parentElement : {scrollWidth: null, clientWidth: null};
return {jobs, lanes, failures, scroll_width: document.documentElement.scrollWidth,
        timeline_scroll_width: box.scrollWidth, timeline_box_width: box.clientWidth,
        window_width: window.innerWidth, load_ms: t ? t.loadEventEnd - t.startTime : null,
        page_errors: window.__errors || []};
"""


def main():
    page, width, height, shot = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4]
    # A profile of its own, removed afterwards (chromedriver's default is left in /tmp).
    with tempfile.TemporaryDirectory(prefix="report-page-") as profile:
        facts = look(page, width, height, shot, profile)
    json.dump(facts, sys.stdout)


def look(page, width, height, shot, profile):
    options = webdriver.ChromeOptions()
    options.binary_location = "/usr/bin/chromium"
    for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                f"--window-size={width},{height}", f"--user-data-dir={profile}"):
        options.add_argument(arg)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(service=Service("/usr/bin/chromedriver"), options=options)
    try:
        # Page errors thrown while the page loads reach the SEVERE browser log; the hook
        # catches those thrown later.
        driver.execute_cdp_cmd("Page.addScriptToEvaluateOnNewDocument", {"source":
            "window.__errors=[];addEventListener('error',e=>window.__errors.push(String(e.message)));"})
        driver.get(pathlib.Path(page).resolve().as_uri())
        facts = driver.execute_script(FACTS)
        facts["console_errors"] = [e["message"] for e in driver.get_log("browser") if e["level"] == "SEVERE"]
        pathlib.Path(shot).parent.mkdir(parents=True, exist_ok=True)
        driver.save_screenshot(shot)
    finally:
        driver.quit()
    return facts


if __name__ == "__main__":
    main()
