"""Screenshot every page of a report folder with headless Chromium, to look before publishing.

``python -m nsa_report.screenshots REPORT_DIR [--out DIR] [--width 1280] [--height 4000]
[--pages PAGE[#ANCHOR] ...]`` writes ``DIR/<page>.png`` (default
``REPORT_DIR/../.screenshots-<name>/``, outside the report) for ``index.html``, every notebook
page and ``compare.html``, or for the ``--pages`` named (an anchor opens that part: a figure's
lightbox, say ``index.html#fig-nb-11_modes_vs_peers-1``). Needs ``chromium`` (Debian:
``apt-get install -y chromium``). Exit status 1 when a page could not be shot.
"""
import argparse
import re
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


def shoot(browser, page, png, width, height, timeout=120, anchor=""):
    with tempfile.TemporaryDirectory(prefix="nsa-chromium-") as profile:
        url = page.resolve().as_uri() + (f"#{anchor}" if anchor else "")
        cmd = [browser, *FLAGS, f"--user-data-dir={profile}", f"--window-size={width},{height}",
               f"--screenshot={png}", url]
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
    parser.add_argument("--pages", nargs="+", metavar="PAGE[#ANCHOR]",
                        help="only these pages of REPORT_DIR (default: every *.html)")
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
    if args.pages:
        pages = [tuple(p.partition("#")[::2]) for p in args.pages]
    else:
        pages = [(p.name, "") for p in sorted(report.glob("*.html"),
                                              key=lambda p: (p.name != "index.html", p.name))]
    failed = 0
    for name, anchor in pages:
        page = report / name
        png = out / (Path(name).stem + (f"-{re.sub(r'[^A-Za-z0-9_-]+', '_', anchor)}"
                                        if anchor else "") + ".png")
        png.unlink(missing_ok=True)
        if not page.is_file():
            print(f"FAIL {name}: no such page in {report}")
            failed += 1
            continue
        ok, err = shoot(browser, page, png, args.width, args.height, anchor=anchor)
        print(f"{'ok  ' if ok else 'FAIL'} {name}{'#' + anchor if anchor else ''} -> {png}"
              + ("" if ok else f": {err}"))
        failed += not ok
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
