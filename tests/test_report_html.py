"""The self-contained HTML report (static checks and a headless Chromium rendering)."""

from __future__ import annotations

import base64
import os
import re
import shutil
import struct
import subprocess
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pytest

from monodir.report.html import render_report, write_report
from monodir.report.plots import make_all_figures
from monodir.report.summary import build_summary

try:
    from report_fixtures import make_example
except ImportError:  # tests run as a package
    from tests.report_fixtures import make_example

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
FIGURES = (
    "hist_monores",
    "hist_doa",
    "hist_anisotropy",
    "directions_preferred",
    "directions_resolution",
    "radial_averages",
    "slices_monores",
    "slices_anisotropy",
)


class _Collector(HTMLParser):
    """Collects tags and attributes; checks that non-void elements are balanced."""

    VOID = frozenset({"meta", "img", "br", "hr", "link", "input", "source", "col", "wbr"})

    def __init__(self) -> None:
        super().__init__()
        self.tags: list[tuple[str, dict[str, str | None]]] = []
        self.stack: list[str] = []
        self.text: list[str] = []

    def handle_starttag(self, tag, attrs):
        self.tags.append((tag, dict(attrs)))
        if tag not in self.VOID:
            self.stack.append(tag)

    def handle_endtag(self, tag):
        assert self.stack and self.stack[-1] == tag, f"unbalanced </{tag}>, open: {self.stack}"
        self.stack.pop()

    def handle_data(self, data):
        self.text.append(data)


@pytest.fixture(scope="module")
def report(tmp_path_factory):
    monores, directional = make_example(seed=4, with_global_fsc=True)
    out = tmp_path_factory.mktemp("report")
    figures = make_all_figures(out / "figures", monores, directional, dpi=50, include=set(FIGURES))
    summary = build_summary(
        monores,
        directional,
        config={
            "input": {"map": "maps/<emd>&1234.mrc", "mask": "maps/mask.mrc"},
            "directional": {"fast": False, "resolution_step": 0.5},
        },
        versions={"monodir": "0.1.0", "numpy": np.__version__},
        timings={"monores": 1.25, "directional": 30.5, "export": 2.0},
        inputs={"map": "maps/<emd>&1234.mrc", "shape": [32, 32, 32]},
    )
    path = write_report(out / "report.html", summary, figures, title="Run <1> & test")
    return path, summary, figures


def test_report_is_self_contained(report):
    path, _, figures = report
    text = path.read_text(encoding="utf-8")
    assert text.startswith("<!DOCTYPE html>")
    lowered = text.lower()
    assert "http://" not in lowered and "https://" not in lowered and "//cdn" not in lowered
    assert "<script" not in lowered and "<link" not in lowered and "<iframe" not in lowered
    assert "@import" not in lowered and "url(" not in lowered
    parser = _Collector()
    parser.feed(text)
    parser.close()
    assert parser.stack == []
    for tag, attrs in parser.tags:
        for attr in ("src", "href", "srcset", "action", "data"):
            value = attrs.get(attr)
            if value is not None:
                assert value.startswith(("data:", "#")), f"<{tag} {attr}={value[:60]!r}>"
    imgs = [attrs for tag, attrs in parser.tags if tag == "img"]
    assert len(imgs) == len(figures)
    for attrs in imgs:
        src = attrs["src"]
        assert src.startswith("data:image/png;base64,")
        data = base64.b64decode(src.split(",", 1)[1], validate=True)
        assert data[:8] == PNG_SIGNATURE
        width, height = struct.unpack(">II", data[16:24])
        assert width > 100 and height > 100
        assert attrs.get("alt")


def test_report_content(report):
    path, summary, figures = report
    text = path.read_text(encoding="utf-8")
    # key numbers at the top, before the first figure
    key_pos = text.index('id="key-numbers"')
    assert key_pos < text.index("<img")
    med = summary["maps"]["monores"]["median"]
    assert f"{med:.3g} Å" in text
    assert f"{summary['anisotropy']['median_anisotropy_index']:.3g}" in text
    assert f"{summary['anisotropy']['axis_angle_to_z_deg']:.3g}° from z" in text
    for label in ("Best direction", "Worst direction", "Median radial resolution"):
        assert label in text
    assert text.count("How to read this.") == len(figures)
    for section in ("config", "versions", "timings", "inputs", "maps"):
        assert f'id="{section}"' in text
    assert "resolution_step: 0.5" in text  # config pretty-printed as YAML
    # everything from the run is escaped
    assert "<1>" not in text and "Run &lt;1&gt; &amp; test" in text
    assert "<emd>" not in text and "&lt;emd&gt;&amp;1234" in text
    # optional global FSC section rendered when present
    assert 'id="global-fsc"' in text
    assert "sphericity" in text and "Cone FSC between half maps" in text


def test_report_without_optional_parts(tmp_path):
    _, directional = make_example(seed=5)
    summary = build_summary(None, directional, config={}, versions={}, timings={}, inputs={})
    assert "global_fsc" not in summary
    text = render_report(summary, {}, title="minimal")
    assert 'id="global-fsc"' not in text
    assert "<img" not in text
    assert "n/a" in text  # no MonoRes median
    text = render_report(summary, {"hist_doa": tmp_path / "missing.png"})
    assert "Figure file missing" in text


# --------------------------------------------------------------------------- chromium
def _chromium() -> str | None:
    for candidate in (
        "/usr/bin/chromium",
        shutil.which("chromium"),
        shutil.which("chromium-browser"),
    ):
        if candidate and os.path.exists(candidate):
            return candidate
    return None


_CHECK_SCRIPT = """
<img id="broken-control" alt="control" src="data:image/png;base64,AAAAAAAA">
<script>
function monodirCheck() {
  var images = document.images, ok = 0, total = 0;
  for (var i = 0; i < images.length; i++) {
    var good = images[i].complete && images[i].naturalWidth > 0;
    images[i].setAttribute("data-loaded", good ? "yes" : "no");
    if (images[i].id !== "broken-control") { total++; if (good) ok++; }
  }
  document.body.setAttribute("data-images-ok", ok + "/" + total);
}
window.addEventListener("load", monodirCheck);
</script>
"""


def _chromium_args(binary: str, profile: Path) -> list[str]:
    return [
        binary,
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--no-first-run",
        f"--user-data-dir={profile}",
    ]


def test_report_renders_in_headless_chromium(report, tmp_path):
    binary = _chromium()
    if binary is None:
        if os.environ.get("CI") == "true":
            pytest.fail("chromium is required in CI (apt-get install chromium)")
        pytest.skip("chromium not installed")
    path, _, figures = report

    shot = tmp_path / "screenshot.png"
    args = _chromium_args(binary, tmp_path / "profile1")
    args += [f"--screenshot={shot}", "--window-size=1280,4000", path.resolve().as_uri()]
    proc = subprocess.run(args, capture_output=True, text=True, timeout=120)
    assert shot.is_file(), proc.stderr[-2000:]
    data = shot.read_bytes()
    assert data[:8] == PNG_SIGNATURE
    assert struct.unpack(">II", data[16:24]) == (1280, 4000)
    assert len(data) > 20000

    # Same page plus a probe script (the report itself has no JavaScript) that records, for
    # every image, whether it decoded; a deliberately broken control image proves the probe
    # can fail.
    probe = tmp_path / "probe.html"
    probe.write_text(
        path.read_text(encoding="utf-8").replace("</body>", _CHECK_SCRIPT + "</body>"),
        encoding="utf-8",
    )
    args = _chromium_args(binary, tmp_path / "profile2")
    args += ["--virtual-time-budget=10000", "--dump-dom", probe.resolve().as_uri()]
    proc = subprocess.run(args, capture_output=True, text=True, timeout=120)
    dom = proc.stdout
    match = re.search(r'data-images-ok="(\d+)/(\d+)"', dom)
    assert match, f"probe did not run; stderr: {proc.stderr[-2000:]}"
    assert (int(match.group(1)), int(match.group(2))) == (len(figures), len(figures))
    assert re.search(r'<img id="broken-control"[^>]*data-loaded="no"', dom)
    assert dom.count('data-loaded="yes"') == len(figures)
