"""Results of record: the chapters' runs at a larger scale, computed once and shipped.

    python -m lopbook.record 03_permuted_mnist --scale medium
    python -m lopbook.record --all --scale medium --background
    python -m lopbook.record --list

trains every run of the chapters' plans (:mod:`lopbook.chapters`) at ``--scale``,
resumably (a checkpoint every minute, also inside a task: the same command again
continues where it stopped; ``--work-dir`` holds the runs and checkpoints), and
then writes, into ``lopbook/records/<scale>/``:

* ``runs/<key>.json``, one small file per run: per-task accuracy and the three
  plasticity measures, config, seed, data identity, library versions, device and
  wall time (no checkpoints, no images). A run that two chapters share (chapter 3's
  headline runs are chapter 1's and chapter 4's too) is stored once;
* ``<chapter>.json``, the chapter's index: which runs make each named setting of its
  plan, when and how they were made (the exact command, the machine and its load);
* ``derived/<name>-<digest>.json``, what a record is drawn against besides its runs
  and is slow to compute (chapter 2's linear baseline on the record's class pairs,
  :func:`lopbook.chapters.record_baselines`), keyed by its settings and the data's
  identity (:func:`derived`). ``--baselines`` recomputes only these.

A chapter draws a record next to its live quick run (:func:`load`). The runs of a
setting are looked up by their settings' key, so a record whose runs are not the
current preset's (the code or the preset changed) is *stale*: :func:`load` says so,
and how to regenerate it, instead of passing it off as current.
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime
import hashlib
import json
import os
import platform
import shlex
import subprocess
import sys
import time
from pathlib import Path

from . import chapters, presets
from .configs import KEY_VERSION, key_settings
from .io import write_text
from .results import RunResult, result_from_record, result_record
from .runner import RunOptions, run

__all__ = ["RECORDS", "record", "load", "Record", "record_key", "derived", "main"]

#: where the records live (package data, so that an installed lopbook has them)
RECORDS = Path(__file__).resolve().parent / "records"
FORMAT = "lopbook-record/1"
DIGITS = 5  # significant digits kept in a record


def record_key(config) -> str:
    """A run's name in the records: its experiment, method, seed and a digest of the
    settings that make its numbers (:func:`~lopbook.configs.key_settings`)."""
    described = {"v": KEY_VERSION, "settings": key_settings(config)}
    digest = hashlib.sha1(json.dumps(described, sort_keys=True).encode()).hexdigest()
    kind = type(config).__name__.lower()
    return f"{kind}-{config.method}-seed{config.seed}-{digest[:12]}"


def _round(value):
    if isinstance(value, float):
        return float(f"{value:.{DIGITS}g}")
    if isinstance(value, list):
        return [_round(v) for v in value]
    if isinstance(value, dict):
        return {k: _round(v) for k, v in value.items()}
    return value


def _machine() -> dict:
    info = {"platform": platform.platform(), "cpus": os.cpu_count()}
    if hasattr(os, "getloadavg"):
        info["load_average"] = [round(x, 2) for x in os.getloadavg()]
    return info


def _index_path(root: Path, chapter: str, scale: str) -> Path:
    return root / scale / f"{chapter}.json"


def _run_path(root: Path, scale: str, key: str) -> Path:
    return root / scale / "runs" / f"{key}.json"


def _shipped_run(root: Path, scale: str, key: str) -> RunResult | None:
    """The complete run ``key`` of the records at ``scale``, or None."""
    target = _run_path(root, scale, key)
    if not target.exists():
        return None
    try:
        result = result_from_record(json.loads(target.read_text()), str(target))
    except (ValueError, json.JSONDecodeError):
        return None  # torn or edited: trained again, and the file rewritten
    return result if result.complete else None


def _derived_path(root: Path, scale: str, name: str, settings: dict) -> Path:
    described = json.dumps({"name": name, "settings": settings}, sort_keys=True)
    digest = hashlib.sha1(described.encode()).hexdigest()[:12]
    return root / scale / "derived" / f"{name}-{digest}.json"


def derived(
    name: str,
    settings: dict,
    compute,
    scale: str = "medium",
    write: bool = False,
    root: str | os.PathLike | None = None,
    recompute: bool = False,
) -> list:
    """A result that a record is drawn against (not a run; e.g. a linear baseline),
    shipped beside the record: loaded when a file for exactly these ``settings`` is
    there (they must name the data's identity) and not ``recompute``, else computed
    with ``compute()`` (a list of floats) and, when ``write`` (the record command),
    saved with its provenance."""
    root = Path(RECORDS if root is None else root)
    target = _derived_path(root, scale, name, settings)
    if target.exists() and not recompute:
        try:
            entry = json.loads(target.read_text())
        except json.JSONDecodeError as err:
            raise ValueError(
                f"{target} is not valid JSON ({err}); delete it, or regenerate it "
                "with `python -m lopbook.record CHAPTER --baselines`"
            ) from None
        if entry.get("format") != FORMAT or entry.get("settings") != settings:
            raise ValueError(
                f"{target} does not hold {name} for these settings; delete it, or "
                "regenerate it with `python -m lopbook.record CHAPTER --baselines`"
            )
        return entry["values"]
    started = time.time()
    values = [float(v) for v in compute()]
    if write:
        from .runtime import environment

        entry = {
            "format": FORMAT,
            "name": name,
            "settings": settings,
            "values": _round(values),
            "wall_time_s": round(time.time() - started, 1),
            "created": datetime.datetime.now(datetime.timezone.utc).isoformat(
                timespec="seconds"
            ),
            "environment": {**environment("cpu"), **_sklearn_version()},
            "machine": _machine(),
        }
        write_text(target, json.dumps(entry, indent=1) + "\n")
    return values


def _sklearn_version() -> dict:
    try:
        import sklearn
    except ImportError:
        return {}
    return {"scikit-learn": sklearn.__version__}


def _command(names, scale: str) -> str:
    return f"python -m lopbook.record {' '.join(names)} --scale {scale}"


def record(
    names: str | list[str],
    scale: str = "medium",
    work_dir: str | os.PathLike = "results/records",
    workers: int | None = None,
    progress: bool = True,
    data_dir=None,
    command: str | None = None,
    root: str | os.PathLike | None = None,
    reuse: bool = True,
) -> list[Path]:
    """Train the runs of the chapters ``names`` at ``scale`` (all chapters' runs of one
    experiment in one call, so that they fill the workers) and write their records
    under ``root``; returns the files written. ``reuse``: a complete run that the
    records already hold (another chapter's record has a run of the same settings)
    is taken from there instead of trained again."""
    names = [names] if isinstance(names, str) else list(names)
    root = Path(RECORDS if root is None else root)
    plans = {}
    for name in names:
        P = presets.resolve(name, scale, {}, override=False)
        plans[name] = (P, chapters.plan(name, P))
    unique: dict[str, object] = {}
    for _, planned in plans.values():
        for configs in planned.values():
            for cfg in configs:
                unique.setdefault(record_key(cfg), cfg)
    results: dict[str, RunResult] = {}
    if reuse:  # runs another chapter's record already holds (same settings)
        for key in list(unique):
            shipped = _shipped_run(root, scale, key)
            if shipped is not None:
                results[key] = shipped
        if progress and results:
            print(
                f"{len(results)} of {len(unique)} runs are already in the records "
                f"under {root / scale}; training the other "
                f"{len(unique) - len(results)}"
            )
    by_kind: dict[str, list] = {}
    for key, cfg in unique.items():
        if key not in results:
            by_kind.setdefault(type(cfg).__name__, []).append((key, cfg))
    for kind, pairs in by_kind.items():
        options = RunOptions(
            out_dir=Path(work_dir) / scale / kind.lower(),
            data_dir=data_dir,
            workers=workers,
            progress=progress,
        )
        started = time.time()
        found = run([cfg for _, cfg in pairs], options)
        if progress:
            print(f"{kind}: {len(pairs)} runs in {time.time() - started:.0f} s")
        results.update({key: r for (key, _), r in zip(pairs, found)})
    trained = {key for pairs in by_kind.values() for key, _ in pairs}
    written = []
    for key, result in results.items():
        if reuse and key not in trained:
            continue  # already there, as it was
        entry = _round(result_record(result))
        entry["record_key"] = key
        target = _run_path(root, scale, key)
        write_text(target, json.dumps(entry, separators=(",", ":")) + "\n")
        written.append(target)
    created = datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")
    for name, (_, planned) in plans.items():
        settings = {}
        for setting, configs in planned.items():
            keys = [record_key(cfg) for cfg in configs]
            settings[setting] = {
                "runs": keys,
                "labels": [cfg.label for cfg in configs],
                "wall_time_s": round(
                    sum(results[k].meta.get("wall_time_s", 0.0) for k in keys), 1
                ),
            }
        index = {
            "format": FORMAT,
            "chapter": name,
            "scale": scale,
            "created": created,
            "command": command or _command([name], scale),
            "machine": _machine(),
            "settings": settings,
        }
        target = _index_path(root, name, scale)
        write_text(target, json.dumps(index, indent=1) + "\n")
        written.append(target)
    for name, (P, _) in plans.items():
        written += baselines(name, scale, data_dir, root, P, recompute=not reuse)
    return written


def baselines(
    name, scale, data_dir=None, root=None, P=None, recompute: bool = True
) -> list[Path]:
    """Write the derived results of chapter ``name``'s record (no runs are trained):
    all of them, or with ``recompute`` False only those not there yet; returns the
    files written."""
    root = Path(RECORDS if root is None else root)
    P = P or presets.resolve(name, scale, {}, override=False)
    started = time.time()
    chapters.record_baselines(
        name, P, scale, data_dir, write=True, root=root, recompute=recompute
    )
    found = (root / scale / "derived").glob("*.json")
    return sorted(p for p in found if p.stat().st_mtime >= started)


@dataclasses.dataclass
class Record:
    """The record of one setting of a chapter: its runs, where they came from, and
    why it is stale if it is (its runs are not those of the current preset)."""

    chapter: str
    setting: str
    scale: str
    results: list[RunResult]
    index: dict
    stale: list[str]

    @property
    def fresh(self) -> bool:
        return not self.stale

    @property
    def command(self) -> str:
        return self.index.get("command") or _command([self.chapter], self.scale)

    @property
    def wall_time_s(self) -> float:
        return self.index["settings"].get(self.setting, {}).get("wall_time_s", 0.0)

    def note(self) -> str:
        """A sentence for a caption: how the record was made; stale or not."""
        if self.stale:
            return (
                f"The {self.scale}-scale record of '{self.setting}' is stale ("
                + "; ".join(self.stale[:2])
                + f"), so it is not drawn: regenerate it with `{self.command}`."
            )
        machine = self.index.get("machine", {})
        cpus = f" on a {machine['cpus']}-CPU machine" if machine.get("cpus") else ""
        return (
            f"Made with `{self.command}` on {self.index['created'][:10]}; training "
            f"'{self.setting}' took {self.wall_time_s / 3600:.2f} hours of a worker's "
            f"wall-clock time{cpus}."
        )


def load(
    chapter: str,
    setting: str,
    scale: str = "medium",
    P=None,
    root: str | os.PathLike | None = None,
) -> Record | None:
    """The record of ``setting`` of ``chapter`` at ``scale``, checked against the
    chapter's current plan at that scale (settings ``P``, else the preset); None if
    the chapter has no record at that scale. A stale record carries no results."""
    root = Path(RECORDS if root is None else root)
    index_file = _index_path(root, chapter, scale)
    if not index_file.exists():
        return None
    try:
        index = json.loads(index_file.read_text())
    except json.JSONDecodeError as err:
        raise ValueError(
            f"{index_file} is not valid JSON ({err}); regenerate it with "
            f"`{_command([chapter], scale)}`"
        ) from None
    if index.get("format") != FORMAT:
        raise ValueError(
            f"{index_file} is not a lopbook record (format {index.get('format')!r}); "
            f"regenerate it with `{_command([chapter], scale)}`"
        )
    P = P or presets.resolve(chapter, scale, {}, override=False)
    expected = chapters.plan(chapter, P).get(setting)
    recorded = index["settings"].get(setting)
    stale = []
    if expected is None:
        raise ValueError(
            f"{chapter} has no setting {setting!r}; its settings: "
            f"{', '.join(chapters.plan(chapter, P))}"
        )
    if recorded is None:
        stale.append(f"the record has no setting {setting!r}")
    else:
        keys = [record_key(cfg) for cfg in expected]
        if keys != recorded["runs"]:
            differ = sum(a != b for a, b in zip(keys, recorded["runs"]))
            differ += abs(len(keys) - len(recorded["runs"]))
            stale.append(
                f"{differ} of its {len(keys)} runs have other settings than the "
                "current preset's"
            )
    results = []
    if not stale:
        for key, cfg in zip(recorded["runs"], expected):
            target = _run_path(root, scale, key)
            if not target.exists():
                stale.append(f"{target.name} is missing")
                results = []
                break
            result = result_from_record(json.loads(target.read_text()), str(target))
            result.config = dataclasses.replace(result.config, label=cfg.label)
            results.append(result)
    return Record(chapter, setting, scale, results, index, stale)


def main(argv=None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = argparse.ArgumentParser(
        prog="python -m lopbook.record", description=__doc__.split("\n\n")[0]
    )
    parser.add_argument(
        "chapters", nargs="*", help="chapters' file names, e.g. 03_permuted_mnist"
    )
    parser.add_argument("--all", action="store_true", help="every chapter with runs")
    parser.add_argument("--scale", default="medium", choices=presets.SCALES)
    parser.add_argument(
        "--work-dir",
        default="results/records",
        help="the runs and their checkpoints (default results/records)",
    )
    parser.add_argument("--workers", type=int, default=None)
    parser.add_argument(
        "--retrain",
        action="store_true",
        help="train every run, also those another chapter's record already holds",
    )
    parser.add_argument("--data-dir", default=None, help="the data's directory")
    parser.add_argument(
        "--background",
        action="store_true",
        help="run detached; output in <work-dir>/<scale>.log",
    )
    parser.add_argument(
        "--baselines",
        action="store_true",
        help="only (re)compute what the records are drawn against besides their runs "
        "(chapter 2's linear baseline); trains nothing",
    )
    parser.add_argument("--list", action="store_true", help="list the chapters")
    args = parser.parse_args(argv)
    if args.list or not (args.chapters or args.all):
        print("\n".join(chapters.PLANS))
        return 0
    names = list(chapters.PLANS) if args.all else args.chapters
    unknown = [n for n in names if n not in chapters.PLANS]
    if unknown:
        parser.error(f"unknown chapter {', '.join(unknown)}; see --list")
    rest = [a for a in argv if a != "--background"]
    command = "python -m lopbook.record " + " ".join(shlex.quote(a) for a in rest)
    if args.background:
        log = Path(args.work_dir) / f"{args.scale}.log"
        log.parent.mkdir(parents=True, exist_ok=True)
        with open(log, "ab") as handle:
            child = subprocess.Popen(
                [sys.executable, "-m", "lopbook.record", *rest],
                stdout=handle,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        print(f"recording in the background (pid {child.pid}); output in {log}")
        return 0
    if args.baselines:
        for name in names:
            baselines(name, args.scale, args.data_dir)
        print(f"wrote the baselines under {RECORDS / args.scale / 'derived'}")
        return 0
    written = record(
        names, args.scale, args.work_dir, args.workers, data_dir=args.data_dir,
        command=command, reuse=not args.retrain,
    )
    print(f"wrote {len(written)} files under {RECORDS / args.scale}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
