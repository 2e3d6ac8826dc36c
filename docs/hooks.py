"""MkDocs hooks of the site: pages made from the models, math made into MathML.

- ``on_config`` lists every catalog layer in the navigation.
- ``on_files`` adds the generated pages (``derivation_pages.site_pages``).
- ``on_page_content`` turns the LaTeX that arithmatex left into MathML.

MkDocs puts this folder on ``sys.path`` while it loads the hook, which is how
the sibling modules below are found.
"""

from __future__ import annotations

import derivation_pages
from latex_to_mathml import MathError, render_math
from mkdocs.exceptions import PluginError
from mkdocs.structure.files import File

LAYERS_SECTION = "Layers"
MODULES_SECTION = "Generated modules"


def on_config(config):
    """Fills the nav sections of the layers and the generated modules."""
    layers, modules = derivation_pages.nav_entries()
    for entry in config.nav or []:
        if isinstance(entry, dict) and LAYERS_SECTION in entry:
            entry[LAYERS_SECTION] = layers
        if isinstance(entry, dict) and MODULES_SECTION in entry:
            entry[MODULES_SECTION] = modules
    return config


def on_files(files, config):
    """Adds one page per catalog layer, the catalog and the module pages."""
    for path, text in derivation_pages.site_pages().items():
        files.append(File.generated(config, path, content=text))
    return files


def on_page_content(html, page, config, files):
    """Renders the page's math to MathML at build time."""
    try:
        return render_math(html, where=page.file.src_uri)
    except MathError as error:
        raise PluginError(str(error)) from error
