"""The book's bibliography style: author-year labels, the same as its citations.

``bibtex_reference_style: author_year`` makes every {cite} read "[Dohare et al.,
2024]", but the list of references takes its labels from a pybtex style, whose
default ("alpha") writes "[DHL+24]". This Sphinx extension registers the pybtex style
``lopbook_author_year``: pybtex's "alpha" (entries formatted as "unsrt", sorted by
author, year and title) with labels written the way the citations are (one author:
"Krogh, 1992"; two: "Ash and Adams, 2020"; more: "Dohare et al., 2024"; a letter
after the year where two entries would read the same). ``_config.yml`` loads it
(sphinx: local_extensions) and selects it (bibtex_default_style).
"""

from __future__ import annotations

from collections import Counter

from pybtex.plugin import register_plugin
from pybtex.richtext import Text
from pybtex.style.formatting.alpha import Style as AlphaStyle
from pybtex.style.labels import BaseLabelStyle

NAME = "lopbook_author_year"


def _plain(latex: str) -> str:
    return Text.from_latex(latex).render_as("text")


def author_year(entry) -> str:
    """The label of ``entry``: its authors' (or editors') last names and its year."""
    persons = entry.persons.get("author") or entry.persons.get("editor") or []
    names = [_plain(" ".join(p.prelast_names + p.last_names)) for p in persons]
    if not names:
        who = _plain(entry.fields.get("organization", entry.key))
    elif len(names) == 1:
        who = names[0]
    elif len(names) == 2:
        who = f"{names[0]} and {names[1]}"
    else:
        who = f"{names[0]} et al."
    year = entry.fields.get("year")
    return f"{who}, {year}" if year else who


class AuthorYearLabels(BaseLabelStyle):
    def format_labels(self, sorted_entries):
        labels = [author_year(entry) for entry in sorted_entries]
        count, seen = Counter(labels), Counter()
        for label in labels:
            if count[label] == 1:
                yield label
            else:
                yield label + chr(ord("a") + seen[label])
                seen[label] += 1


class AuthorYearStyle(AlphaStyle):
    default_label_style = NAME


def setup(app):
    register_plugin("pybtex.style.labels", NAME, AuthorYearLabels)
    register_plugin("pybtex.style.formatting", NAME, AuthorYearStyle)
    return {"parallel_read_safe": True, "parallel_write_safe": True}
