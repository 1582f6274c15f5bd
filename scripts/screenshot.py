"""Render an HTML file (e.g. a run's report.html) to a PNG with headless Chromium.

    python scripts/screenshot.py runs/mae-.../report.html report.png [--width 1280] [--height 4000]

Chromium runs with a fresh profile and with networking features off, so the screenshot shows
exactly what the file holds offline. Install it with ``apt-get install -y chromium`` (Debian).
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

CANDIDATES = ("/usr/bin/chromium", "chromium", "chromium-browser", "google-chrome", "google-chrome-stable")


def find_chromium() -> str | None:
    """Path of a Chromium/Chrome executable, or None."""
    for name in CANDIDATES:
        path = name if Path(name).is_absolute() and Path(name).exists() else shutil.which(name)
        if path:
            return path
    return None


def screenshot(html: str | Path, out: str | Path, width: int = 1280, height: int = 4000,
               chromium: str | None = None, timeout: float = 120.0) -> Path:
    """Render ``html`` to the PNG ``out`` (width x height CSS pixels) and return its path."""
    html, out = Path(html).resolve(), Path(out).resolve()
    if not html.exists():
        raise FileNotFoundError(f"no such HTML file: {html}")
    chromium = shutil.which(chromium) if chromium else find_chromium()
    if chromium is None:
        raise FileNotFoundError("Chromium not found; install it with: apt-get update && apt-get install -y chromium")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.unlink(missing_ok=True)
    with tempfile.TemporaryDirectory(prefix="selfsup-chromium-") as profile:
        cmd = [
            chromium, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
            "--disable-background-networking", "--disable-component-update", "--disable-sync",
            "--hide-scrollbars", f"--user-data-dir={profile}", f"--window-size={width},{height}",
            f"--screenshot={out}", html.as_uri(),
        ]
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
    if not out.exists() or out.stat().st_size == 0:
        raise RuntimeError(f"Chromium wrote no screenshot (exit {proc.returncode}):\n{proc.stderr[-2000:]}")
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("html", help="HTML file to render")
    ap.add_argument("out", nargs="?", help="PNG to write (default: next to the HTML, .png)")
    ap.add_argument("--width", type=int, default=1280)
    ap.add_argument("--height", type=int, default=4000)
    ap.add_argument("--chromium", help="browser executable (default: /usr/bin/chromium or one on PATH)")
    args = ap.parse_args(argv)
    out = args.out or Path(args.html).with_suffix(".png")
    try:
        path = screenshot(args.html, out, args.width, args.height, chromium=args.chromium)
    except (FileNotFoundError, RuntimeError, subprocess.TimeoutExpired) as e:
        print(f"screenshot: {e}", file=sys.stderr)
        return 1
    print(path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
