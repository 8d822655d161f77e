"""Screenshot every page of a report folder with headless Chromium, to look before publishing.

``python -m nsa_report.screenshots REPORT_DIR [--out DIR] [--width 1280] [--height 4000]``
writes ``DIR/<page>.png`` (default ``REPORT_DIR/../.screenshots-<name>/``, outside the
report) for ``index.html``, every notebook page and ``compare.html``. Needs ``chromium``
(Debian: ``apt-get install -y chromium``). Exit status 1 when a page could not be shot.
"""
import argparse
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

FLAGS = ("--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         "--hide-scrollbars")


def find_browser():
    for name in ("chromium", "chromium-browser", "google-chrome", "chrome"):
        path = shutil.which(name)
        if path:
            return path
    return None


def shoot(browser, page, png, width, height, timeout=120):
    with tempfile.TemporaryDirectory(prefix="nsa-chromium-") as profile:
        cmd = [browser, *FLAGS, f"--user-data-dir={profile}", f"--window-size={width},{height}",
               f"--screenshot={png}", page.resolve().as_uri()]
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
    return png.is_file() and png.stat().st_size > 0, proc.stderr[-500:]


def main(argv=None):
    parser = argparse.ArgumentParser(prog="python -m nsa_report.screenshots",
                                     description=__doc__.split("\n\n")[0])
    parser.add_argument("report_dir")
    parser.add_argument("--out")
    parser.add_argument("--width", type=int, default=1280)
    parser.add_argument("--height", type=int, default=4000,
                        help="window height: Chromium shoots the window, not the whole page")
    args = parser.parse_args(argv)
    report = Path(args.report_dir)
    browser = find_browser()
    if browser is None:
        print("nsa_report.screenshots: error: no chromium (apt-get install -y chromium)",
              file=sys.stderr)
        return 2
    out = Path(args.out) if args.out else report.resolve().parent / (
        f".screenshots-{report.resolve().name}")
    out.mkdir(parents=True, exist_ok=True)
    pages = sorted(report.glob("*.html"), key=lambda p: (p.name != "index.html", p.name))
    failed = 0
    for page in pages:
        png = out / f"{page.stem}.png"
        png.unlink(missing_ok=True)
        ok, err = shoot(browser, page, png, args.width, args.height)
        print(f"{'ok  ' if ok else 'FAIL'} {page.name} -> {png}" + ("" if ok else f": {err}"))
        failed += not ok
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
