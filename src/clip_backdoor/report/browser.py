"""Render the HTML report in headless Chromium: check that every figure loads, take a screenshot.

python -m clip_backdoor.report.browser check report/synthetic/index.html
python -m clip_backdoor.report.browser screenshot report/synthetic/index.html report/screenshot_synthetic.png
"""

import json
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

CHECK_ID = "report-browser-check"
# Appended to a copy of the page: after load, record every <img>'s decoded size and the main table's shape.
CHECK_SCRIPT = f"""<script>
window.addEventListener("load", () => {{
  const table = document.getElementById("main-table");
  const out = {{
    images: Array.from(document.images).map(
      i => ({{alt: i.alt, complete: i.complete, width: i.naturalWidth}})),
    main_table: table ? {{rows: table.rows.length, cols: table.rows[0].cells.length,
                          bold: table.querySelectorAll("b").length}} : null,
  }};
  const pre = document.createElement("pre");
  pre.id = "{CHECK_ID}";
  pre.textContent = JSON.stringify(out);
  document.body.appendChild(pre);
}});
</script>"""


def chromium():
    for name in ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable"):
        path = shutil.which(name)
        if path:
            return path
    return None


def run_chromium(args, timeout=120):
    binary = chromium()
    if binary is None:
        raise FileNotFoundError("no chromium on PATH (Debian: apt-get install chromium)")
    with tempfile.TemporaryDirectory() as profile:
        cmd = [
            binary,
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-dev-shm-usage",
            "--no-first-run",
            f"--user-data-dir={profile}",
            *args,
        ]
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
    if proc.returncode != 0:
        raise RuntimeError(f"chromium failed ({proc.returncode}): {proc.stderr[-2000:]}")
    return proc.stdout


def check_page(html_path):
    """{"images": [{alt, complete, width}], "main_table": {rows, cols, bold} or None} as Chromium sees it."""
    text = Path(html_path).read_text()
    with tempfile.TemporaryDirectory() as tmp:
        probe = Path(tmp) / "probe.html"
        probe.write_text(text.replace("</body>", CHECK_SCRIPT + "</body>"))
        dom = run_chromium(["--virtual-time-budget=15000", "--dump-dom", probe.resolve().as_uri()])
    found = re.search(rf'<pre id="{CHECK_ID}">(.*?)</pre>', dom, re.S)
    if found is None:
        raise RuntimeError("the page's load event never ran the check script")
    import html

    return json.loads(html.unescape(found.group(1)))


def screenshot(html_path, png_path, width=1280, height=2400):
    """A PNG of the rendered page's top `height` pixels at `width` px."""
    png_path = Path(png_path).resolve()
    png_path.parent.mkdir(parents=True, exist_ok=True)
    run_chromium(
        [
            f"--screenshot={png_path}",
            f"--window-size={width},{height}",
            "--hide-scrollbars",
            "--virtual-time-budget=15000",
            Path(html_path).resolve().as_uri(),
        ]
    )
    if not png_path.is_file() or png_path.stat().st_size == 0:
        raise RuntimeError(f"chromium wrote no screenshot to {png_path}")
    return png_path


def main(argv=None):
    argv = sys.argv[1:] if argv is None else argv
    if len(argv) >= 2 and argv[0] == "check":
        print(json.dumps(check_page(argv[1]), indent=1))
    elif len(argv) >= 3 and argv[0] == "screenshot":
        print(screenshot(argv[1], argv[2], *map(int, argv[3:5])))
    else:
        raise SystemExit(__doc__)


if __name__ == "__main__":
    main()
