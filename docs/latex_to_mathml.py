"""Math of the built pages, from LaTeX to MathML, so that no script renders it.

``pymdownx.arithmatex`` in its generic mode leaves each formula in the HTML as
``<span class="arithmatex">\\(...\\)</span>`` (inline) or
``<div class="arithmatex">\\[...\\]</div>`` (display), HTML-escaped. This module
replaces the LaTeX inside with MathML from ``latex2mathml``, which every current
browser lays out natively: the site needs no math script, no font and no network.
"""

from __future__ import annotations

import html
import re
from xml.etree.ElementTree import tostring
from xml.sax.saxutils import unescape

from latex2mathml.converter import convert_to_element

# latex2mathml writes ``\overline{t}`` as an accent that only a font with a MATH
# table stretches; without one the bar covers a single letter of ``var``.
_OVERLINE_BARS = {"&#x02015;", "\u2015"}

_MATH = re.compile(
    r'<(?P<tag>span|div) class="arithmatex">'
    r"(?:\\\((?P<inline>.*?)\\\)|\\\[(?P<display>.*?)\\\])"
    r"</(?P=tag)>",
    re.S,
)


class MathError(ValueError):
    """A formula latex2mathml cannot convert; the message names the page."""


def to_mathml(latex: str, display: bool) -> str:
    """One formula as a ``<math>`` element.

    An overline becomes an ``mrow`` of class ``overline``, which the site's
    stylesheet draws as a top border as wide as its content, in any font.
    """
    math = convert_to_element(latex.strip(), display="block" if display else "inline")
    for element in math.iter("mover"):
        if len(element) == 2 and element[1].tag == "mo":
            if element[1].text in _OVERLINE_BARS:
                element.remove(element[1])
                element.tag = "mrow"
                element.attrib = {"class": "overline"}
    # latex2mathml keeps entities as text and unescapes after serializing.
    return unescape(tostring(math, encoding="unicode"))


def render_math(page_html: str, where: str = "") -> str:
    """``page_html`` with every arithmatex formula replaced by MathML.

    Args:
        page_html: the HTML of one page, as Python-Markdown produced it.
        where: names the page in error messages.

    Raises:
        MathError: a formula that cannot be converted, quoted with its page.
    """

    def replace(match: re.Match) -> str:
        display = match.group("display") is not None
        latex = html.unescape(match.group("display" if display else "inline"))
        try:
            mathml = to_mathml(latex, display)
        except Exception as error:  # latex2mathml raises many kinds
            raise MathError(
                f"{where}: cannot convert the formula {latex!r} to MathML: {error}"
            ) from error
        tag = match.group("tag")
        return f'<{tag} class="arithmatex">{mathml}</{tag}>'

    return _MATH.sub(replace, page_html)
