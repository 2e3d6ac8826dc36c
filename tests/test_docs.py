"""Tests of the docs site.

The derivation pages are generated from the catalog, so the set of pages must be
the set of models. The site is built once per session with ``mkdocs build
--strict`` (skipped, with the reason, when the docs extra is not installed) and
scanned for anything it would load from another host: it must work offline.
The tutorial's model and checking code are run as written.
"""

from __future__ import annotations

import contextlib
import importlib.util
import io
import os
import re
import subprocess
import sys
from html.parser import HTMLParser
from pathlib import Path
from urllib.parse import urlparse

import pytest

from codegen.emit_module import emit_module
from derivations.models import CATALOG

ROOT = Path(__file__).resolve().parent.parent
DOCS = ROOT / "docs"

# Elements whose src or href the browser loads (an <a href> is only a link).
LOADED = {
    "script": ("src",),
    "link": ("href",),
    "img": ("src", "srcset"),
    "source": ("src", "srcset"),
    "iframe": ("src",),
    "audio": ("src",),
    "video": ("src", "poster"),
    "embed": ("src",),
    "object": ("data",),
    "track": ("src",),
}
CSS_REFERENCES = re.compile(
    r"""url\(\s*['"]?([^'")\s]+)|@import\s+(?:url\()?\s*['"]([^'"]+)""", re.I
)


def _docs_module(name):
    """A module of docs/, imported the way the MkDocs hook imports it."""
    sys.path.insert(0, str(DOCS))
    try:
        return importlib.import_module(name)
    finally:
        sys.path.remove(str(DOCS))


def _external(reference: str) -> bool:
    parsed = urlparse(reference.strip())
    return bool(parsed.netloc) or parsed.scheme not in ("", "data")


class _LoadedReferences(HTMLParser):
    """Collects the references an HTML page makes the browser load."""

    def __init__(self):
        super().__init__()
        self.references: list[str] = []
        self._in_style = False

    def handle_starttag(self, tag, attrs):
        values = dict(attrs)
        for attribute in LOADED.get(tag, ()):
            value = values.get(attribute)
            if value:
                # srcset lists "url width" pairs.
                self.references += [item.split()[0] for item in value.split(",")]
        if values.get("style"):
            self.references += _css_references(values["style"])
        self._in_style = tag == "style"

    def handle_endtag(self, tag):
        self._in_style = False

    def handle_data(self, data):
        if self._in_style:
            self.references += _css_references(data)


def _css_references(css: str) -> list[str]:
    return [first or second for first, second in CSS_REFERENCES.findall(css)]


def external_references(site: Path) -> list[str]:
    """``file: reference`` for every script, style, font or image from another host."""
    found = []
    for path in sorted(site.rglob("*")):
        if path.suffix == ".html":
            parser = _LoadedReferences()
            parser.feed(path.read_text(encoding="utf-8"))
            references = parser.references
        elif path.suffix == ".css":
            references = _css_references(path.read_text(encoding="utf-8"))
        else:
            continue
        relative = path.relative_to(site)
        found += [f"{relative}: {ref}" for ref in references if _external(ref)]
    return found


# The pages.


def test_derivation_pages_are_the_catalog():
    pages = _docs_module("derivation_pages").site_pages()
    derivations = {
        Path(path).stem
        for path in pages
        if path.startswith("derivations/") and path != "derivations/index.md"
    }
    modules = {Path(path).stem for path in pages if path.startswith("modules/")}
    assert derivations == set(CATALOG)
    assert modules == set(CATALOG)
    index = pages["derivations/index.md"]
    for name in CATALOG:
        assert f"]({name}.md)" in index
        assert f"](../modules/{name}.md)" in index


# The built site.


@pytest.fixture(scope="session")
def site(tmp_path_factory):
    """The site, built once with ``mkdocs build --strict``."""
    for package in ("mkdocs", "material", "mkdocstrings", "latex2mathml"):
        if importlib.util.find_spec(package) is None:
            pytest.skip(f'{package} is not installed; pip install -e ".[docs]"')
    out = tmp_path_factory.mktemp("site")
    result = subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(out)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        env={**os.environ, "NO_MKDOCS_2_WARNING": "1"},
        timeout=600,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    return out


def test_built_site_has_one_derivation_page_per_layer(site):
    for folder in ("derivations", "modules"):
        built = {path.parent.name for path in (site / folder).glob("*/index.html")}
        assert built == set(CATALOG), folder


def test_built_site_loads_nothing_from_another_host(site):
    assert external_references(site) == []


def test_built_site_has_no_latex_left_for_a_script(site):
    leftovers = [
        str(path.relative_to(site))
        for path in site.rglob("*.html")
        if re.search(r'class="arithmatex">\\[(\[]', path.read_text(encoding="utf-8"))
    ]
    assert leftovers == []


def test_derivation_page_shows_math_deltas_and_code(site):
    page = (site / "derivations" / "batch_normalization" / "index.html").read_text(
        encoding="utf-8"
    )
    assert page.count("<math") > 20
    assert "&#x003B4;" in page  # a Kronecker delta
    assert 'class="highlight"' in page and "einsum" in page  # the generated code
    assert "grad_var" in page


def test_scan_catches_external_references(tmp_path):
    (tmp_path / "page.html").write_text(
        '<link rel="stylesheet" href="https://fonts.example.org/css">'
        '<script src="//cdn.example.org/math.js"></script>'
        '<img src="assets/local.png"><a href="https://example.org">a link</a>'
        "<style>@import 'https://example.org/a.css';</style>",
        encoding="utf-8",
    )
    (tmp_path / "style.css").write_text(
        "@font-face { src: url(https://example.org/font.woff2) }"
        " .x { background: url('local.svg') }",
        encoding="utf-8",
    )
    assert external_references(tmp_path) == [
        "page.html: https://fonts.example.org/css",
        "page.html: //cdn.example.org/math.js",
        "page.html: https://example.org/a.css",
        "style.css: https://example.org/font.woff2",
    ]


# The tutorial.


def _code_block(text: str, opening: str) -> str:
    match = re.search(rf"^```{re.escape(opening)}\n(.*?)^```", text, re.M | re.S)
    assert match, f"docs/tutorial.md has no code block opening with ```{opening}"
    return match.group(1)


def _import_file(name: str, path: Path):
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_tutorial_code_runs_as_written(tmp_path):
    tutorial = (DOCS / "tutorial.md").read_text(encoding="utf-8")
    model_code = _code_block(tutorial, 'python title="swish.py"')
    (tmp_path / "swish_model.py").write_text(model_code, encoding="utf-8")
    model = _import_file("swish_model", tmp_path / "swish_model.py").build()

    # What `python -m codegen swish.py --out my_layers` writes.
    (tmp_path / "swish.py").write_text(emit_module(model, "swish").text)
    generated = _import_file("swish", tmp_path / "swish.py")

    blocks = re.findall(r"^```python\n(.*?)^```", tutorial, re.M | re.S)
    check = next(block for block in blocks if "check_gradients(layer" in block)
    check = check.replace('sys.path.insert(0, "my_layers")\n', "")
    check = check.replace("from swish import Swish\n", "")
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        exec(check, {"Swish": generated.Swish})  # noqa: S102

    def masked(text):
        return re.sub(r"\d\.\d{3}e[-+]\d{2}", "#", text).strip()

    expected = _code_block(tutorial, "text")
    assert masked(printed.getvalue()) == masked(expected)
