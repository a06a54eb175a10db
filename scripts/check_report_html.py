#!/usr/bin/env python3
"""Opens a report's report.html in headless Chromium at 1300 x 900 px, as a reader's first
screen, and checks what must be on it and in it:

- the verdict block (section#verdict: a callout per phase transition, then the validity
  line) lies within the first 900 px, and it names every gate of gates.json that did not
  pass, each on that first screen;
- every link of the contents lands on a section;
- every figure renders (an inline SVG at least 300 px wide) and every image loads;
- every figure report.md links to is a file beside it.

Usage: python3 scripts/check_report_html.py REPORT_DIR [--screenshot PNG]
Needs the selenium package and Debian's chromium and chromium-driver; where either is
missing it says so and exits 0 (skipped). Exits 1 with one line per problem.
"""
import json
import re
import shutil
import sys
from pathlib import Path

WIDTH, HEIGHT = 1300, 900

CHROMIUM = ("chromium", "chromium-browser", "google-chrome")
DRIVER = "chromedriver"


def browser():
    """A headless Chromium driver, or None with the reason it cannot be had."""
    try:
        from selenium import webdriver
        from selenium.webdriver.chrome.service import Service
    except ImportError:
        return None, "the selenium package is not installed (pip install selenium)"
    binary = next((shutil.which(b) for b in CHROMIUM if shutil.which(b)), None)
    driver = shutil.which(DRIVER)
    if binary is None or driver is None:
        return None, "no Chromium with its driver (Debian: apt-get install chromium chromium-driver)"
    opts = webdriver.ChromeOptions()
    opts.binary_location = binary
    for flag in (
        "--headless=new",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-dev-shm-usage",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--no-first-run",
        f"--window-size={WIDTH},{HEIGHT}",
    ):
        opts.add_argument(flag)
    d = webdriver.Chrome(options=opts, service=Service(executable_path=driver))
    # The page's viewport exactly, whatever the window's frame takes.
    d.execute_cdp_cmd(
        "Emulation.setDeviceMetricsOverride",
        {"width": WIDTH, "height": HEIGHT, "deviceScaleFactor": 1, "mobile": False},
    )
    return d, None


# Measured in the page: the verdict's callouts and validity line, every figure and image,
# every contents link.
MEASURE = """
const rect = e => { const r = e.getBoundingClientRect(); return {top: r.top, bottom: r.bottom, width: r.width, height: r.height}; };
const verdict = document.querySelector('section#verdict');
const items = verdict ? [...verdict.querySelectorAll('div.callout p, div.callout li')] : [];
const validity = verdict ? [...verdict.querySelectorAll(':scope > p')].find(p => p.textContent.startsWith('Validity:')) : null;
return {
  viewport: [window.innerWidth, window.innerHeight],
  verdict: verdict ? rect(verdict) : null,
  items: items.map(e => Object.assign(rect(e), {text: e.textContent})),
  validity: validity ? Object.assign(rect(validity), {text: validity.textContent}) : null,
  figures: [...document.querySelectorAll('figure')].map(f => {
    const svg = f.querySelector('svg');
    return {caption: (f.querySelector('figcaption') || {}).textContent || '', svg: svg ? rect(svg) : null};
  }),
  images: [...document.images].map(i => ({src: i.src, ok: i.complete && i.naturalWidth > 0})),
  links: [...document.querySelectorAll('a[href^="#"]')].map(a => [a.getAttribute('href').slice(1), !!document.getElementById(a.getAttribute('href').slice(1))]),
};
"""


def check(root, screenshot=None):
    root = Path(root)
    problems = []
    md = (root / "report.md").read_text()
    for file in re.findall(r"!\[[^\]]*\]\(([^)]+)\)", md):
        if not (root / file).is_file():
            problems.append(f"report.md links to {file}, which is not beside it")
    d, why = browser()
    if d is None:
        print(f"{root}: browser check skipped: {why}")
        return problems
    try:
        d.get((root / "report.html").resolve().as_uri())
        m = d.execute_script(MEASURE)
        if screenshot:
            d.save_screenshot(str(screenshot))
    finally:
        d.quit()
    if m["viewport"] != [WIDTH, HEIGHT]:
        problems.append(f"the viewport is {m['viewport']}, not {WIDTH} x {HEIGHT}")
    if m["verdict"] is None or not m["items"]:
        problems.append("no verdict block (section#verdict with its callouts)")
    else:
        for it in m["items"]:
            if it["bottom"] > HEIGHT:
                problems.append(f"verdict line below the first {HEIGHT} px ({it['bottom']:.0f}): {it['text'][:80]}")
        if m["validity"] is None:
            problems.append("the verdict block has no validity line")
        elif m["validity"]["bottom"] > HEIGHT:
            problems.append(f"the validity line ends below the first {HEIGHT} px ({m['validity']['bottom']:.0f})")
    shown = " ".join(it["text"] for it in m["items"])
    gates = json.loads((root / "gates.json").read_text())["gates"]
    for g in gates:
        if g["status"] != "PASS" and g["name"] not in shown:
            problems.append(f"the verdict block does not name the gate '{g['name']}' ({g['status']})")
    for f in m["figures"]:
        if f["svg"] is None or f["svg"]["width"] < 300 or f["svg"]["height"] <= 0:
            problems.append(f"figure '{f['caption']}' does not render: {f['svg']}")
    for i in m["images"]:
        if not i["ok"]:
            problems.append(f"image {i['src']} does not load")
    for target, found in m["links"]:
        if not found:
            problems.append(f"the link #{target} lands on no section")
    if not problems:
        last = max(it["bottom"] for it in m["items"])
        open_gates = sum(g["status"] != "PASS" for g in gates)
        print(
            f"{root}: report.html at {WIDTH} px: the verdict ({len(m['items'])} lines, "
            f"{open_gates} gates not passing) ends at {last:.0f} px of {HEIGHT}; "
            f"{len(m['figures'])} figures render; {len(m['links'])} contents links land"
        )
    return problems


def main(argv):
    screenshot = None
    if "--screenshot" in argv:
        i = argv.index("--screenshot")
        screenshot = argv[i + 1]
        argv = argv[:i] + argv[i + 2 :]
    if len(argv) != 1:
        print(__doc__, file=sys.stderr)
        return 2
    problems = check(argv[0], screenshot)
    for p in problems:
        print(f"{argv[0]}: {p}", file=sys.stderr)
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
