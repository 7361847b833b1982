"""The course site: built offline with -W, then opened in headless Chromium.

Checks that the maths is typeset (MathJax's ``mjx-container`` elements appear), that every image
on every page loads, that internal links point at files that exist, and that no page loads a
script, style or font from the network.
"""

from __future__ import annotations

import importlib.util
import re
import shutil
import subprocess
import sys
from pathlib import Path
from urllib.parse import urldefrag

import pytest

ROOT = Path(__file__).resolve().parents[2]
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Path:
    pytest.importorskip("sphinx", reason="the docs extra is not installed: pip install -e '.[docs]'")
    # its module is named with hyphens, so importorskip cannot name it
    if importlib.util.find_spec("sphinx-mathjax-offline") is None:
        pytest.skip("the docs extra is not installed (sphinx-mathjax-offline): pip install -e '.[docs]'")
    out = tmp_path_factory.mktemp("site")
    build = subprocess.run(
        [sys.executable, "-m", "sphinx", "-W", "--keep-going", "-q", "-b", "html", str(ROOT / "docs"), str(out),
         "-d", str(out / ".doctrees")],
        capture_output=True, text=True, timeout=900,
    )
    assert build.returncode == 0, build.stderr
    return out


def pages(site: Path) -> list[Path]:
    return sorted(p for p in site.rglob("*.html") if "_static" not in p.parts)


def test_no_network_resources(site: Path) -> None:
    tag = re.compile(r'<(script|link|img)\b[^>]*\b(src|href)="(https?:)?//', re.I)
    offenders = [p.name for p in pages(site) if tag.search(p.read_text(encoding="utf-8"))]
    assert offenders == []


def test_internal_links_resolve(site: Path) -> None:
    broken = []
    for page in pages(site):
        for target in re.findall(r'(?:href|src)="([^"#:][^":]*)"', page.read_text(encoding="utf-8")):
            path, _ = urldefrag(target)
            path = path.split("?")[0]
            if path and not (page.parent / path).exists():
                broken.append(f"{page.relative_to(site)} -> {target}")
    assert broken == []


def render(page: Path, *extra: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--virtual-time-budget=15000", *extra,
         page.as_uri()],
        capture_output=True, text=True, timeout=120,
    )


@pytest.mark.skipif(CHROMIUM is None, reason="chromium is not installed (apt-get install chromium)")
def test_maths_typeset_and_images_load(site: Path, tmp_path: Path) -> None:
    # the page with the SE block's Eq. 2-4 and the results page with its figures
    api = render(site / "api.html", "--dump-dom").stdout
    assert api.count("<mjx-container") >= 3, "MathJax did not typeset the SE block's equations"
    shown = re.sub(r"<script.*?</script>", "", api, flags=re.S)
    assert "\\frac{1}{H W}" not in shown, "raw TeX is left on the page"
    probe = site / "_probe.html"
    # every image on the results page must decode (naturalWidth > 0) once loaded from file://
    probe.write_text(
        "<html><body><iframe id=f src='results.html' width=1200 height=800></iframe><script>"
        "document.getElementById('f').onload=function(){var d=this.contentDocument;var im=d.images;"
        "var bad=[];for(var i=0;i<im.length;i++){if(!(im[i].complete&&im[i].naturalWidth>0))bad.push(im[i].src)}"
        "document.body.setAttribute('data-images',im.length);document.body.setAttribute('data-bad',bad.join(' '))}"
        "</script></body></html>", encoding="utf-8")
    dom = render(probe, "--allow-file-access-from-files", "--dump-dom").stdout
    count = re.search(r'data-images="(\d+)"', dom)
    assert count and int(count.group(1)) >= 6, dom[-2000:]
    assert 'data-bad=""' in dom
    shot = tmp_path / "se_block.png"
    render(site / "api.html", f"--screenshot={shot}", "--window-size=1280,1600")
    assert shot.stat().st_size > 10_000
    if (ROOT / "docs" / "_build").is_dir():  # kept for a person to look at (git-ignored)
        shutil.copy(shot, ROOT / "docs" / "_build" / "se_block.png")
