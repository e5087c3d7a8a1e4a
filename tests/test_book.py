"""Tests of the book's machinery: the code a chapter shows, its parameters, and the package's page width."""
import ast
import json
import re
import types
from pathlib import Path

import pytest

from lopbook import book, presets

ROOT = Path(__file__).resolve().parents[1]
CHAPTERS = sorted((ROOT / "book").glob("[0-9][0-9]_*.ipynb"))


def code_cells(path):
    cells = json.loads(path.read_text())["cells"]
    return [(c.get("metadata", {}).get("tags", []), "".join(c["source"])) for c in cells if c["cell_type"] == "code"]


def imports_of(path) -> dict:
    """The namespace the notebook's import statements make (its setup cell's imports, nothing else)."""
    namespace = {}
    for _, source in code_cells(path):
        for node in ast.parse(_python_only(source)).body:
            if isinstance(node, (ast.Import, ast.ImportFrom)):
                exec(compile(ast.Module([node], []), str(path), "exec"), namespace)
    return namespace


def _python_only(source: str) -> str:
    return "\n".join("" if line.lstrip().startswith(("%", "!")) else line for line in source.split("\n"))


def shown(path):
    """Every ``book.show(...)`` call of a notebook, as the source text of its arguments."""
    calls = []
    for _, source in code_cells(path):
        for node in ast.walk(ast.parse(_python_only(source))):
            if isinstance(node, ast.Call) and ast.unparse(node.func) == "book.show":
                calls.append([ast.unparse(arg) for arg in node.args])
    return calls


def test_the_book_has_its_chapters():
    assert len(CHAPTERS) >= 7


@pytest.mark.parametrize("path", CHAPTERS, ids=lambda p: p.stem)
def test_every_object_a_chapter_shows_exists_and_fits_the_page(path):
    namespace = imports_of(path)
    for args in shown(path):
        for arg in args:
            obj = eval(arg, namespace)          # fails if the object was renamed or removed
            source = book.show(obj)
            assert source.code.strip()
            long = [line for line in source.code.split("\n") if len(line) > 88]
            assert not long, f"{path.name} shows {arg} with lines over 88 columns: {long[:2]}"


def test_no_chapter_uses_literalinclude():
    """literalinclude renders only in the HTML book; in Jupyter and Colab a reader would see the raw directive."""
    for path in CHAPTERS:
        assert "{literalinclude}" not in path.read_text(), path.name


def test_show_renders_the_source_as_html_markdown_and_text():
    from lopbook.metrics import dead_units

    source = book.show(dead_units)
    assert "def dead_units" in repr(source)
    assert "lopbook/metrics.py" in repr(source)
    assert "dead_units" in source._repr_html_() and "<" in source._repr_html_()
    assert source._repr_markdown_().count("```") == 2


@pytest.mark.parametrize("path", CHAPTERS, ids=lambda p: p.stem)
def test_parameters_cell_lists_exactly_the_chapters_knobs(path):
    cells = code_cells(path)
    [parameters] = [source for tags, source in cells if "parameters" in tags]
    names = [node.targets[0].id for node in ast.parse(parameters).body if isinstance(node, ast.Assign)]
    assert names[0] == "scale"
    assert sorted(names[1:]) == sorted(presets.CHAPTERS[path.stem]), path.name
    # and the chapter reads them through book.parameters, with its own name
    assert any(f'book.parameters("{path.stem}", globals())' in source for _, source in cells)


def test_every_knob_has_a_value_of_its_type_at_every_scale():
    for chapter, knobs in presets.CHAPTERS.items():
        for name, knob in knobs.items():
            for scale in presets.SCALES:
                presets.check_value(name, knob.at(scale), knob.type)


def _namespace(**values):
    ns = {"scale": "quick", **{k: None for k in presets.CHAPTERS["03_permuted_mnist"]}, **values}
    ns["In"] = []
    return ns


def test_parameters_take_the_presets_and_the_given_values(monkeypatch):
    monkeypatch.delenv("LOPBOOK_SCALE", raising=False)
    monkeypatch.delenv("LOPBOOK_RESULTS", raising=False)
    P = book.parameters("03_permuted_mnist", _namespace(tasks=7, widths=[8, 32]))
    assert (P.scale, P.tasks, P.widths, P.width, P.step_size) == ("quick", 7, [8, 32], 100, 0.03)
    assert P.out_dir == str(Path("results") / "permuted_mnist")
    monkeypatch.setenv("LOPBOOK_SCALE", "smoke")
    assert book.parameters("03_permuted_mnist", _namespace()).tasks == 3
    monkeypatch.setenv("LOPBOOK_RESULTS", "/tmp/elsewhere")
    assert book.parameters("03_permuted_mnist", _namespace()).out_dir == "/tmp/elsewhere/permuted_mnist"


def test_a_misspelled_papermill_parameter_is_an_error():
    ns = _namespace()
    ns["step_szie"] = 0.01
    ns["In"] = ["", '# Parameters\nscale = "smoke"\nstep_szie = 0.01\n']
    with pytest.raises(ValueError, match="step_szie"):
        book.parameters("03_permuted_mnist", ns)


@pytest.mark.parametrize("name,value,match", [
    ("widths", "[8, 32]", r"widths must be a non-empty list of integers.*-y 'widths: \[1, 2\]'"),
    ("tasks", 2.5, "tasks must be an integer"),
    ("step_size", "0.01", "step_size must be a number"),
    ("change_every", [100, "x"], "change_every must be a non-empty list"),
])
def test_a_parameter_of_the_wrong_type_is_an_error_naming_it(name, value, match):
    with pytest.raises(TypeError, match=match):
        book.parameters("03_permuted_mnist", _namespace(**{name: value}))


def test_an_int_is_accepted_for_a_float():
    P = book.parameters("03_permuted_mnist", _namespace(step_size=1))
    assert P.step_size == 1.0 and isinstance(P.step_size, float)


def test_chapters_that_train_the_same_runs_share_their_presets():
    """Chapters 1 and 3-7 mean the same headline runs: the same knob objects, so the same values at every scale."""
    shared = ("runs_per_setting", "tasks", "examples_per_task", "width", "step_size")
    for chapter in ("01_what_is_plasticity", "03_permuted_mnist", "04_why_plasticity_is_lost", "05_mitigations",
                    "06_continual_backprop", "08_newer_remedies", "09_summary"):
        for name in shared:
            assert presets.CHAPTERS[chapter][name] is presets.PM[name]
    assert presets.CHAPTERS["03_permuted_mnist"]["step_sizes"] is presets.CHAPTERS["04_why_plasticity_is_lost"][
        "step_sizes"]


def test_the_package_fits_the_books_88_columns():
    long = []
    for path in sorted((ROOT / "lopbook").rglob("*.py")):
        for number, line in enumerate(path.read_text().split("\n"), start=1):
            if len(line) > 88:
                long.append(f"{path.relative_to(ROOT)}:{number}")
    assert not long, long[:10]


def test_data_note_names_the_data_of_every_run():
    from lopbook.configs import PermutedMNIST
    from lopbook.results import RunResult

    a = RunResult(PermutedMNIST(seed=0), [0.5], meta={"dataset": "MNIST train split"})
    b = RunResult(PermutedMNIST(seed=1, label="X"), [0.5],
                  meta={"dataset": "8x8 digits", "dataset_warning": "NOT MNIST"})
    assert book.data_note([a]) == "data: MNIST train split"
    note = book.data_note([a, b])
    assert "MNIST train split (1 runs: Backprop)" in note and "8x8 digits (1 runs: X)" in note
    assert note.endswith("**NOT MNIST**")


def test_with_fallback_holds_the_widget_view_and_the_static_picture():
    widgets = pytest.importorskip("ipywidgets")
    png = b"\x89PNG fake bytes"
    bundle = book.with_fallback(widgets.IntSlider(), png, alt="a <picture>", note="offline")._repr_mimebundle_()
    view = bundle["application/vnd.jupyter.widget-view+json"]
    page = bundle["text/html"]
    assert json.dumps(view) in page                                   # the widget manager finds its view
    assert "data:image/png;base64," + __import__("base64").b64encode(png).decode() in page
    assert "alt='a &lt;picture&gt;'" in page and "offline" in page


def test_data_warnings_and_a_cells_warnings_print_as_one_line():
    from lopbook.data import DataWarning

    line = book.format_warning("MNIST is missing", DataWarning, "/x/lopbook/data/mnist.py", 12)
    assert line == "DataWarning: MNIST is missing\n"
    cell = book.format_warning("careful", UserWarning, "/tmp/ipykernel_123/456.py", 3)
    assert cell == "UserWarning: careful\n"
    other = book.format_warning("elsewhere", UserWarning, "/x/site-packages/y.py", 7)
    assert "/x/site-packages/y.py:7" in other                          # Python's own format


def test_every_method_has_a_colour_of_its_own():
    from matplotlib.colors import to_hex

    from lopbook import plots

    cycle = {f"C{i}": c for i, c in enumerate(__import__("matplotlib").rcParams["axes.prop_cycle"].by_key()["color"])}
    colours = [to_hex(cycle.get(c, c)) for _, c in plots.METHOD_COLORS]
    assert len(set(colours)) == len(colours), plots.METHOD_COLORS
