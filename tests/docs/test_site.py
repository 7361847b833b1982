"""The course site: built offline with -W, then opened in headless Chromium.

Checks that the maths is typeset (MathJax's ``mjx-container`` elements appear), that every image
on every page loads, that internal links point at files that exist, and that no page loads a
script, style or font from the network. The tutorial gallery (sphinx-gallery, docs/conf.py) is
built with every step run again (MINISE_DOCS_RERUN=1): each step's page must show what it printed
and the figures it saved, and offer the script and a clean notebook for download.
"""

from __future__ import annotations

import importlib.util
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path
from urllib.parse import urldefrag

import pytest

from tests.test_tutorials import PROMISED

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
        capture_output=True, text=True, timeout=900, env={**os.environ, "MINISE_DOCS_RERUN": "1", "MINISE_DEVICE": ""},
    )
    assert build.returncode == 0, build.stderr
    assert "WARNING" not in build.stderr, build.stderr
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


def images_loaded(site: Path, names: list[str]) -> dict[str, tuple[int, str]]:
    """page -> (its number of <img>, the src of those that did not decode), as Chromium loads them from file://"""
    probe = site / "_probe.html"
    frames = "".join(f"<iframe src='{name}' width=1200 height=800></iframe>" for name in names)
    probe.write_text(
        f"<html><body>{frames}<script>"
        "var fr=document.getElementsByTagName('iframe');for(var k=0;k<fr.length;k++){fr[k].onload=function(){"
        "var im=this.contentDocument.images;var bad=[];"
        "for(var i=0;i<im.length;i++){if(!(im[i].complete&&im[i].naturalWidth>0))bad.push(im[i].src)}"
        "this.setAttribute('data-images',im.length);this.setAttribute('data-bad',bad.join(' '))}}"
        "</script></body></html>", encoding="utf-8")
    dom = render(probe, "--allow-file-access-from-files", "--dump-dom").stdout
    probe.unlink()
    found = {}
    for tag in re.findall(r"<iframe[^>]*>", dom):
        src, count, bad = (re.search(rf'{key}="([^"]*)"', tag) for key in ("src", "data-images", "data-bad"))
        assert src and count and bad is not None, f"the probe did not report on {tag}"
        found[src.group(1)] = (int(count.group(1)), bad.group(1))
    assert sorted(found) == sorted(names), dom[-2000:]
    return found


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
    # every image on the results page must decode (naturalWidth > 0) once loaded from file://
    (count, bad), = images_loaded(site, ["results.html"]).values()
    assert count >= 6 and bad == "", (count, bad)
    shot = tmp_path / "se_block.png"
    render(site / "api.html", f"--screenshot={shot}", "--window-size=1280,1600")
    assert shot.stat().st_size > 10_000
    if (ROOT / "docs" / "_build").is_dir():  # kept for a person to look at (git-ignored)
        shutil.copy(shot, ROOT / "docs" / "_build" / "se_block.png")


# ---- the tutorial gallery: one page per step of tutorials/ ------------------------------------------
STEPS = sorted(p.stem for p in (ROOT / "tutorials").glob("[0-9][0-9]_*.py"))


def step_figures(step: str) -> int:
    return sum(name.endswith(".png") for name in PROMISED[f"{step}.py"])


def test_gallery_lists_every_step(site: Path) -> None:
    assert len(STEPS) == 12
    index = (site / "tutorials" / "index.html").read_text(encoding="utf-8")
    linked = sorted(set(re.findall(r'class="sphx-glr-thumbcontainer".*?href="(\d\d_\w+)\.html', index, flags=re.S)))
    assert linked == STEPS
    home = (site / "index.html").read_text(encoding="utf-8")
    assert 'href="tutorials/index.html"' in home, "the gallery is not in the site's navigation"


@pytest.mark.parametrize("step", STEPS)
def test_step_page_shows_output_figures_and_downloads(site: Path, step: str) -> None:
    page = site / "tutorials" / f"{step}.html"
    html = page.read_text(encoding="utf-8")
    assert re.search(r"<h1>Step \d+:", html), "the lesson's title is missing"
    printed = re.findall(r'<div class="sphx-glr-script-out.*?<pre>(.*?)</pre>', html, flags=re.S)
    assert printed, "no printed output on the page"
    assert any("[ok]" in block for block in printed), "the claims the step checked are not shown"
    assert "Traceback" not in html
    figures = re.findall(r'<img [^>]*src="(\.\./_images/sphx_glr_[^"]+)"', html)
    assert len(figures) == step_figures(step), figures
    for figure in figures:
        assert (page.parent / figure).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

    downloads = {Path(href).suffix: page.parent / href
                 for href in re.findall(r'href="(\.\./_downloads/[^"]+\.(?:py|ipynb))"', html)}
    assert sorted(downloads) == [".ipynb", ".py"], downloads
    assert downloads[".py"].read_text(encoding="utf-8") == (ROOT / "tutorials" / f"{step}.py").read_text(
        encoding="utf-8")
    notebook = json.loads(downloads[".ipynb"].read_text(encoding="utf-8"))
    assert notebook["nbformat"] == 4
    code = [cell for cell in notebook["cells"] if cell["cell_type"] == "code"]
    assert len(code) >= 2 and any("C.setup(__doc__" in "".join(cell["source"]) for cell in code)
    assert all(cell["outputs"] == [] and cell["execution_count"] is None for cell in code), "a notebook cell has output"


@pytest.mark.skipif(CHROMIUM is None, reason="chromium is not installed (apt-get install chromium)")
def test_step_figures_load_in_the_browser(site: Path) -> None:
    loaded = images_loaded(site, [f"tutorials/{step}.html" for step in STEPS])
    for step in STEPS:
        count, bad = loaded[f"tutorials/{step}.html"]
        assert count >= step_figures(step) and bad == "", (step, count, bad)
