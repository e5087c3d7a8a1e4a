"""What the book's chapters share: setup, parameters, showing code, captions and tables.

* :func:`setup` — device, threads and figure style, in the first code cell;
* :func:`parameters` — the chapter's settings at its scale (:mod:`lopbook.presets`),
  with every papermill parameter checked (unknown names and wrong types are errors);
* :func:`show` — the source of a package function or class, rendered the same way in
  the HTML book, in Jupyter and in Colab (it is the code that trained the figures);
* :func:`data_note`, :func:`caption` and :func:`table` — honest captions and tables.
"""

from __future__ import annotations

import ast
import base64
import functools
import html
import inspect
import json
import re
import textwrap
import warnings
from pathlib import Path

import numpy as np
import torch

from . import presets
from .results import RunResult, group_by_label
from .runtime import get_device

__all__ = [
    "claim",
    "prose",
    "setup",
    "with_fallback",
    "parameters",
    "show",
    "Source",
    "data_note",
    "caption",
    "table",
    "scale_name",
]

#: colours of the methods, the same in every figure of the book
COLORS = {
    "Backprop": "C0",
    "L2": "C2",
    "Shrink and Perturb": "C1",
    "Dropout": "C4",
    "Layer norm": "C8",
    "Adam": "C9",
    "Continual backprop": "C3",
    "L2 Init": "C5",
    "ReDo": "C6",
}


def setup(threads: int | None = 1) -> torch.device:
    """The device to train on, with one CPU thread (one-example steps are too small to
    share between cores) and the book's figure style."""
    import matplotlib as mpl

    device = get_device()
    if threads is not None and device.type == "cpu":
        torch.set_num_threads(threads)
    # Adam's moments of unused weights decay into denormal floats, which a CPU handles
    # very slowly; flushing them to zero changes nothing visible.
    torch.set_flush_denormal(True)
    mpl.rcParams.update(
        {
            "figure.dpi": 110,
            "font.size": 10,
            "axes.titlesize": 10.5,
            "axes.labelsize": 10,
            "legend.fontsize": 9,
            "xtick.labelsize": 9,
            "ytick.labelsize": 9,
            "axes.grid": True,
            "grid.alpha": 0.3,
        }
    )
    _clean_warnings()
    _line_when_done()
    print("device:", device)
    return device


# ----------------------------------------------------------- warnings and progress bars
#: a notebook cell's code as Python's warnings name it (ipykernel's temporary files)
_CELL_FILE = re.compile(r"ipykernel_\d+[/\\]\d+\.py$")


def format_warning(message, category, filename, lineno, line=None) -> str:
    """A warning as one line, ``Category: message``, without the file and line that
    Python names (a notebook cell's temporary file, or where lopbook warned): for
    :class:`~lopbook.data.DataWarning` and for every warning raised in a notebook cell.
    Other warnings keep Python's format."""
    from .data import DataWarning

    if issubclass(category, DataWarning) or _CELL_FILE.search(str(filename)):
        return f"{category.__name__}: {message}\n"
    return _python_format_warning(message, category, filename, lineno, line)


_python_format_warning = warnings.formatwarning


def _clean_warnings() -> None:
    warnings.formatwarning = format_warning


def _line_when_done() -> None:
    """In Jupyter, make the runner's progress bars widgets that turn into their last
    line of text when they close (a terminal keeps tqdm's text bars)."""
    from tqdm import auto, notebook

    from . import runner

    if issubclass(auto.tqdm, notebook.tqdm):
        runner.progress_bar = _line_bar()


@functools.lru_cache(maxsize=None)
def _line_bar():
    """tqdm's notebook bar, shown with a display id and replaced, when it closes, by
    its final line as plain text: the live notebook shows the moving bar, the saved
    notebook and the HTML book one clean line (a widget would need its JavaScript)."""
    from IPython.display import display
    from tqdm.notebook import tqdm as notebook_tqdm

    class LineWhenDone(notebook_tqdm):
        def __init__(self, *args, **kwargs):
            kwargs["display"] = False
            super().__init__(*args, **kwargs)
            self.handle = None
            if not self.disable:
                self.handle = display(self.container, display_id=True)
                self.displayed = True

        def close(self):
            if self.disable or self.handle is None:
                return super().close()
            super().close()
            meter = dict(self.format_dict, ncols=None, bar_format=None, rate=None)
            self.handle.update({"text/plain": self.format_meter(**meter)}, raw=True)
            self.container.close()  # nothing shows the widget any more

    return LineWhenDone


# ------------------------------------------------------------------------- parameters
def _papermill_names(namespace: dict) -> set[str]:
    """Names assigned by papermill's injected cell (it starts with "# Parameters")."""
    names = set()
    for source in namespace.get("In", []) or []:
        if not source.lstrip().startswith("# Parameters"):
            continue
        try:
            tree = ast.parse(source)
        except SyntaxError:
            continue
        for node in tree.body:
            if isinstance(node, ast.Assign):
                names |= {t.id for t in node.targets if isinstance(t, ast.Name)}
    return names


def parameters(chapter: str, namespace: dict):
    """The settings of ``chapter`` (its ``parameters`` cell's values in ``namespace``,
    usually ``globals()``), at its scale; unknown papermill parameters and values of the
    wrong type are errors that name the parameter."""
    knobs = presets.CHAPTERS[chapter]
    unknown = sorted(_papermill_names(namespace) - set(knobs) - {"scale"})
    if unknown:
        raise ValueError(
            f"unknown parameter {', '.join(unknown)} for {chapter}; its parameters "
            f"are scale, {', '.join(knobs)}"
        )
    scale = namespace.get("scale", "quick")
    if not isinstance(scale, str):
        raise TypeError(
            f"parameter scale must be a string ({', '.join(presets.SCALES)})"
        )
    return presets.resolve(chapter, scale, {k: namespace.get(k) for k in knobs})


def scale_name(P) -> str:
    return f"{P.scale.capitalize()} scale"


# ------------------------------------------------------------------------- showing code
class Source:
    """Python source that renders as highlighted code in HTML (the book, Jupyter,
    Colab) and as plain text elsewhere."""

    def __init__(self, code: str, title: str = ""):
        self.code, self.title = code, title

    def __repr__(self) -> str:
        return (f"# {self.title}\n" if self.title else "") + self.code

    def _repr_markdown_(self) -> str:
        return (
            f"*{self.title}*\n\n" if self.title else ""
        ) + f"```python\n{self.code}\n```"

    def _repr_html_(self) -> str:
        try:
            from pygments import highlight
            from pygments.formatters import HtmlFormatter
            from pygments.lexers import PythonLexer

            body = highlight(
                self.code,
                PythonLexer(),
                HtmlFormatter(noclasses=True, nobackground=True, style="friendly"),
            )
        except ImportError:  # pragma: no cover
            body = f"<pre>{html.escape(self.code)}</pre>"
        title = (
            (
                f"<div style='font-size: 0.8em; color: #666; margin-bottom: 2px'>"
                f"{html.escape(self.title)}</div>"
            )
            if self.title
            else ""
        )
        return (
            f"<div class='lopbook-source' style='border-left: 3px solid #88a; "
            f"padding: 2px 0 2px 10px; overflow-x: auto'>{title}{body}</div>"
        )


def show(*objects) -> Source:
    """The source code of package objects (functions, methods, classes), as one block:
    what the reader sees is the code that runs."""
    parts, files = [], []
    for obj in objects:
        parts.append(textwrap.dedent(inspect.getsource(obj)).rstrip())
        path = Path(inspect.getsourcefile(obj))
        package = Path(__file__).resolve().parent
        try:
            name = str(path.resolve().relative_to(package.parent))
        except ValueError:
            name = path.name
        if name not in files:
            files.append(name)
    return Source("\n\n\n".join(parts), "from " + ", ".join(files))


# ------------------------------------------------------------------------- widgets
class WithFallback:
    """A widget that shows a static picture where it cannot run (see
    :func:`with_fallback`)."""

    def __init__(self, widget, png: bytes, alt: str = "", note: str = ""):
        self.widget, self.png, self.alt, self.note = widget, png, alt, note

    def _repr_mimebundle_(self, include=None, exclude=None):
        data = dict(self.widget._repr_mimebundle_(include=include, exclude=exclude))
        view = data.get("application/vnd.jupyter.widget-view+json")
        if view is None:
            return data
        picture = base64.b64encode(self.png).decode("ascii")
        note = (
            f"<p class='lopbook-widget-note'>{html.escape(self.note)}</p>"
            if self.note
            else ""
        )
        # the widget's view tag, for the HTML book's widget manager (it draws the widget
        # in a div.widget-subarea in front of the tag), then the picture, which the
        # book's CSS hides once the widget is drawn
        data["text/html"] = (
            "<div class='lopbook-widget'>"
            f"<script type='application/vnd.jupyter.widget-view+json'>"
            f"{json.dumps(view)}</script>"
            f"<div class='lopbook-widget-fallback'><img src='data:image/png;base64,"
            f"{picture}' alt='{html.escape(self.alt, quote=True)}'>{note}</div></div>"
        )
        return data


def with_fallback(widget, png: bytes, alt: str = "", note: str = "") -> WithFallback:
    """``widget``, shown as the widget wherever widgets run (Jupyter, Colab, the online
    book) and as the static picture ``png`` (PNG bytes) with ``note`` where they cannot:
    a book read offline, whose widget scripts come from a CDN, or a notebook viewer.
    Jupyter shows the richest form it can (the widget); the HTML book renders the
    ``text/html`` form (``nb_mime_priority_overrides`` in ``_config.yml``), which holds
    both."""
    return WithFallback(widget, png, alt, note)


# ------------------------------------------------------------------------- captions and
# tables
def data_note(results: list[RunResult]) -> str:
    """Which data every run in ``results`` was trained on (several data sets: each named
    with its runs), and the fallback warning if any."""
    datasets: dict[str, list[RunResult]] = {}
    for r in results:
        datasets.setdefault(r.meta.get("dataset", "unknown data"), []).append(r)
    if len(datasets) == 1:
        note = f"data: {next(iter(datasets))}"
    else:
        note = "data: " + "; ".join(
            f"{name} ({len(rs)} runs: {', '.join(sorted({r.label for r in rs}))})"
            for name, rs in datasets.items()
        )
    warnings = sorted(
        {r.meta["dataset_warning"] for r in results if r.meta.get("dataset_warning")}
    )
    if warnings:
        note += ". **" + " ".join(warnings) + "**"
    return note


def runs_note(results: list[RunResult]) -> str:
    """How many runs each setting has ("2 runs of each", or per label)."""
    counts = {label: len(group) for label, group in group_by_label(results).items()}
    if len(set(counts.values())) == 1:
        n = next(iter(counts.values()))
        return (
            f"{n} run{'s' * (n > 1)} of each setting"
            if len(counts) > 1
            else f"{n} run{'s' * (n > 1)}"
        )
    return ", ".join(
        f"{n} run{'s' * (n > 1)} of {label}" for label, n in counts.items()
    )


def caption(P, results: list[RunResult], setting: str, paper: str = ""):
    """A figure caption: scale, setting, runs, data, and the paper's setting."""
    from IPython.display import Markdown

    text = (
        f"*{scale_name(P)}: {setting}; {runs_note(results)} (mean ± standard error); "
        f"{data_note(results)}."
    )
    if paper:
        text += f" The paper: {paper}."
    return Markdown(text + "*")


def record(chapter: str, setting: str, scale: str = "medium"):
    """The results of record of ``setting`` of ``chapter`` (:mod:`lopbook.record`),
    current with the preset, as a list of runs; or None, after saying on the page why
    there is none to draw (not made yet, or stale) and the command that makes it."""
    from IPython.display import Markdown, display

    from . import record as records

    found = records.load(chapter, setting, scale)
    if found is None:
        display(Markdown(
            f"*No {scale}-scale record of this chapter is shipped yet; make it with "
            f"`python -m lopbook.record {chapter} --scale {scale}`.*"
        ))
        return None
    if not found.fresh:
        display(Markdown(f"*{found.note()}*"))
        return None
    return found.results


def record_caption(chapter: str, setting: str, results: list[RunResult],
                   scale: str = "medium", paper: str = ""):
    """A caption for a figure drawn from a record: its scale, settings, runs, data,
    and how it was made."""
    from IPython.display import Markdown

    from . import record as records

    found = records.load(chapter, setting, scale)
    text = (f"*Record, {scale} scale: {runs_note(results)} (mean ± standard error); "
            f"{data_note(results)}. {found.note() if found else ''}")
    text = text.rstrip()
    if paper:
        text += f" The paper: {paper}."
    return Markdown(text + "*")


def claim(holds: bool, text: str, otherwise: str) -> str:
    """``text`` when the run on the page shows it (``holds``), else ``otherwise``: what
    the run shows instead, flagged so that a reader cannot miss it."""
    if holds:
        return text
    return f"**[This build's runs differ: {otherwise}]**"


def prose(*paragraphs: str):
    """Paragraphs of text made from the numbers of the run on the page (Markdown)."""
    from IPython.display import Markdown

    return Markdown("\n\n".join(paragraphs))


def table(header: list[str], rows: list[list]):
    """A small HTML table (numbers formatted by the caller)."""
    from IPython.display import HTML

    cell = "<{0} style='padding: 2px 10px; text-align: left'>{1}</{0}>"
    lines = [
        "<tr>"
        + "".join(cell.format("th", html.escape(str(h))) for h in header)
        + "</tr>"
    ]
    for row in rows:
        lines.append("<tr>" + "".join(cell.format("td", c) for c in row) + "</tr>")
    return HTML("<table>" + "".join(lines) + "</table>")


def last_metric(result: RunResult, key: str, layer: int | str = -1) -> float:
    """A metric at its last measurement (per-layer metrics: ``layer``, or "mean")."""
    values = np.asarray(result.metrics[key], dtype=float)
    values = values[-1]
    if values.ndim:
        return float(values.mean() if layer == "mean" else values[layer])
    return float(values)
