"""Results of record: written per run and per chapter, loaded back, found stale when the
preset changes, and every shipped record matches its chapter's current preset."""

import json
from pathlib import Path

import numpy as np
import pytest

from lopbook import chapters, presets, record
from lopbook.configs import key_settings


@pytest.fixture
def offline(monkeypatch):
    monkeypatch.delenv("LOPBOOK_DATA", raising=False)
    monkeypatch.delenv("LOPBOOK_SCALE", raising=False)
    from lopbook.data import locations

    monkeypatch.setattr(locations, "reachable", lambda urls, timeout=0.0: False)


def test_record_writes_each_run_once_and_loads_it_back(tmp_path, offline):
    root = tmp_path / "records"
    names = ["04_why_plasticity_is_lost", "09_summary"]  # they share backprop's runs
    written = record.record(
        names, "smoke", work_dir=tmp_path / "work", workers=1, progress=False,
        root=root,
    )
    runs = sorted((root / "smoke" / "runs").glob("*.json"))
    planned = {
        record.record_key(c)
        for n in names
        for c in chapters.configs_of(n, presets.resolve(n, "smoke", override=False))
    }
    assert {p.stem for p in runs} == planned  # a shared run is stored once
    assert {p.name for p in written} >= {f"{n}.json" for n in names}
    P = presets.resolve("09_summary", "smoke", override=False)
    for setting, configs in chapters.plan("09_summary", P).items():
        rec = record.load("09_summary", setting, "smoke", root=root)
        assert rec.fresh and len(rec.results) == len(configs)
        for result, cfg in zip(rec.results, configs):
            assert key_settings(result.config) == key_settings(cfg)
            assert result.config.label == cfg.label
            assert len(result.accuracy) == cfg.tasks
            assert np.all((result.accuracy >= 0) & (result.accuracy <= 1))
            assert result.meta["dataset_id"] and "torch" in json.dumps(result.meta)
        assert "--scale smoke" in rec.note() and "python -m lopbook.record" in rec.note()
    index = json.loads((root / "smoke" / "09_summary.json").read_text())
    assert index["command"].startswith("python -m lopbook.record")
    assert "load_average" in index["machine"]


def test_a_run_another_chapters_record_holds_is_taken_from_there_not_trained_again(tmp_path, offline,
                                                                                   monkeypatch):
    root, work = tmp_path / "records", tmp_path / "work"
    record.record("04_why_plasticity_is_lost", "smoke", work_dir=work, workers=1, progress=False, root=root)
    shipped = {p.name: p.read_bytes() for p in (root / "smoke" / "runs").glob("*.json")}
    trained = []
    real_run = record.run

    def spy(configs, options):
        trained.extend(record.record_key(c) for c in configs)
        return real_run(configs, options)

    monkeypatch.setattr(record, "run", spy)
    P = presets.resolve("03_permuted_mnist", "smoke", override=False)
    planned = {record.record_key(c) for c in chapters.configs_of("03_permuted_mnist", P)}
    held = {Path(n).stem for n in shipped}
    assert held & planned and planned - held                     # some shared, some not
    record.record("03_permuted_mnist", "smoke", work_dir=work, workers=1, progress=False, root=root)
    assert set(trained) == planned - held                        # only the runs not held yet
    for name, data in shipped.items():                           # and those held are left as they were
        assert (root / "smoke" / "runs" / name).read_bytes() == data
    for setting in chapters.plan("03_permuted_mnist", P):
        assert record.load("03_permuted_mnist", setting, "smoke", root=root).fresh
    trained.clear()                                              # --retrain: every run again
    record.record("03_permuted_mnist", "smoke", work_dir=tmp_path / "work2", workers=1, progress=False,
                  root=root, reuse=False)
    assert set(trained) == planned


def test_a_record_of_other_settings_is_stale_and_not_drawn(tmp_path, offline):
    root = tmp_path / "records"
    record.record("09_summary", "smoke", work_dir=tmp_path / "work", workers=1,
                  progress=False, root=root)
    P = presets.resolve("09_summary", "smoke", override=False)
    changed = presets.resolve("09_summary", "smoke", override=False)
    changed.tasks = P.tasks + 1  # the preset changed since the record was made
    rec = record.load("09_summary", "backprop", "smoke", P=changed, root=root)
    assert not rec.fresh and rec.results == []
    assert "stale" in rec.note() and "python -m lopbook.record 09_summary" in rec.note()
    assert record.load("01_what_is_plasticity", "fresh", "smoke", root=root) is None
    with pytest.raises(ValueError, match="has no setting"):
        record.load("09_summary", "nonsense", "smoke", root=root)
    # a run file gone missing: stale, with what to do
    P = presets.resolve("09_summary", "smoke", override=False)
    next((root / "smoke" / "runs").glob("*-backprop-*")).unlink()
    rec = record.load("09_summary", "backprop", "smoke", P=P, root=root)
    assert not rec.fresh and "missing" in rec.note()
    (root / "smoke" / "09_summary.json").write_text("{")
    with pytest.raises(ValueError, match="not valid JSON.*regenerate"):
        record.load("09_summary", "backprop", "smoke", root=root)


def test_the_command_line_lists_and_rejects_unknown_chapters(capsys):
    assert record.main(["--list"]) == 0
    assert "07_slowly_changing_regression" in capsys.readouterr().out
    with pytest.raises(SystemExit):
        record.main(["no_such_chapter"])
    assert "unknown chapter" in capsys.readouterr().err


def shipped():
    for index in sorted(record.RECORDS.glob("*/*.json")):
        doc = json.loads(index.read_text())
        for setting in doc["settings"]:
            yield doc["chapter"], doc["scale"], setting


@pytest.mark.parametrize("chapter, scale, setting", list(shipped()) or [(None, None, None)])
def test_every_shipped_record_matches_its_current_preset(chapter, scale, setting):
    if chapter is None:
        pytest.skip("no records shipped yet")
    rec = record.load(chapter, setting, scale)
    assert rec.fresh, rec.note()
    assert all(r.complete for r in rec.results)


def test_shipped_records_are_small():
    total = sum(p.stat().st_size for p in record.RECORDS.rglob("*.json"))
    assert total < 6_000_000, f"the records take {total / 1e6:.1f} MB"


def test_a_chapter_without_a_record_says_how_to_make_it(tmp_path, monkeypatch, capsys):
    from lopbook import book

    monkeypatch.setattr(record, "RECORDS", tmp_path / "none")
    shown = []
    monkeypatch.setattr("IPython.display.display", lambda obj: shown.append(obj.data))
    assert book.record("09_summary", "backprop") is None
    assert "python -m lopbook.record 09_summary --scale medium" in shown[0]


# ----------------------------------------------------------------------------------------------- derived results
def test_a_derived_result_is_saved_with_its_provenance_loaded_for_the_same_settings_only(tmp_path):
    settings = {"dataset_id": "classes-4c-600+100-abc", "tasks": 2, "seed": 0}
    assert record.derived("linear", settings, lambda: np.array([0.5, 0.25]), "smoke", write=True,
                          root=tmp_path) == [0.5, 0.25]
    files = list((tmp_path / "smoke" / "derived").glob("linear-*.json"))
    assert len(files) == 1
    entry = json.loads(files[0].read_text())
    assert entry["settings"] == settings and entry["values"] == [0.5, 0.25]
    assert {"torch", "numpy", "lopbook"} <= set(entry["environment"]) and entry["wall_time_s"] >= 0

    def recompute():
        raise AssertionError("computed again instead of loaded")

    assert record.derived("linear", settings, recompute, "smoke", root=tmp_path) == [0.5, 0.25]
    # other data (or any other setting): computed, not loaded; and written only by the record command
    other = {**settings, "dataset_id": "classes-4c-600+100-def"}
    assert record.derived("linear", other, lambda: [1.0], "smoke", root=tmp_path) == [1.0]
    assert len(list((tmp_path / "smoke" / "derived").glob("*.json"))) == 1
    # the record command keeps a file that is there; --baselines (recompute) replaces it
    assert record.derived("linear", settings, recompute, "smoke", write=True, root=tmp_path) == [0.5, 0.25]
    assert record.derived("linear", settings, lambda: [0.75], "smoke", write=True, root=tmp_path,
                          recompute=True) == [0.75]
    assert json.loads(files[0].read_text())["values"] == [0.75]
    files[0].write_text('{"format": "lopbook-rec')                    # torn
    with pytest.raises(ValueError, match=files[0].name + ".*not valid JSON"):
        record.derived("linear", settings, recompute, "smoke", root=tmp_path)


def test_chapter_2s_record_ships_its_linear_baseline_for_the_shared_photographs(monkeypatch):
    """The medium record of chapter 2 is drawn against a logistic regression on the same class pairs, computed
    with the record (200 fits, minutes) and shipped: with the same photographs the chapter loads it."""
    import os

    if not os.environ.get("LOPBOOK_TINYIMAGENET"):
        pytest.skip("needs the Tiny ImageNet photographs (LOPBOOK_TINYIMAGENET)")
    import lopbook.experiments as experiments

    def refit(*args, **kwargs):
        raise AssertionError("the shipped baseline was not found: refitted")

    monkeypatch.setattr(experiments, "linear_baseline", refit)
    P = presets.resolve("02_continual_imagenet", "medium", override=False)
    found = chapters.record_baselines("02_continual_imagenet", P, "medium")
    seeds = {c.seed for c in chapters.configs_of("02_continual_imagenet", P)}
    assert set(found) == seeds
    tasks = min(P.linear_tasks, P.tasks)
    for accuracy in found.values():
        assert accuracy.shape == (tasks,) and 0.55 < accuracy.mean() < 0.95 and accuracy.max() <= 1.0


def test_other_chapters_have_no_derived_results():
    P = presets.resolve("03_permuted_mnist", "smoke", override=False)
    assert chapters.record_baselines("03_permuted_mnist", P, "smoke") == {}
