"""The README's commands work as written, on a copy of the repository's book (at smoke scale)."""
import os
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text()


def readme_commands(program: str) -> list[str]:
    """The lines of the README's bash blocks that run ``program``."""
    blocks = re.findall(r"```bash\n(.*?)```", README, flags=re.S)
    return [line.strip() for block in blocks for line in block.split("\n") if line.strip().startswith(program)]


@pytest.fixture
def fresh_clone(tmp_path, monkeypatch):
    """A directory with the book's notebooks as a fresh clone has them (no results/ folder), and an environment
    that runs them at smoke scale with their runs saved in the temporary directory."""
    shutil.copytree(ROOT / "book", tmp_path / "book", ignore=shutil.ignore_patterns("results", "_build"))
    env = dict(os.environ, LOPBOOK_SCALE="smoke", LOPBOOK_RESULTS=str(tmp_path / "results"))
    return tmp_path, env


def run(command: str, cwd: Path, env: dict, timeout: float = 600) -> subprocess.CompletedProcess:
    args = shlex.split(command)
    args[0] = str(Path(sys.executable).with_name(args[0]))          # the venv's papermill
    return subprocess.run(args, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)


def test_the_readme_shows_papermill_commands():
    assert len(readme_commands("papermill ")) >= 2


@pytest.mark.parametrize("command", readme_commands("papermill "))
def test_readme_papermill_commands_work_as_written(command, fresh_clone):
    cwd, env = fresh_clone
    done = run(command, cwd, env)
    assert done.returncode == 0, done.stderr[-3000:]
    output = cwd / shlex.split(command)[2]
    assert output.exists()
    assert '"scale": "full"' in output.read_text() or "scale = \"full\"" in output.read_text()


def test_a_misspelled_papermill_parameter_stops_the_chapter(fresh_clone):
    cwd, env = fresh_clone
    done = run("papermill book/03_permuted_mnist.ipynb out.ipynb -p step_szie 0.01", cwd, env)
    assert done.returncode != 0
    assert "unknown parameter step_szie" in done.stderr + done.stdout


def test_a_list_passed_with_p_stops_the_chapter_with_the_y_hint(fresh_clone):
    cwd, env = fresh_clone
    done = run('papermill book/03_permuted_mnist.ipynb out.ipynb -p widths "[8, 32]"', cwd, env)
    assert done.returncode != 0
    assert "parameter widths must be a non-empty list of integers" in done.stderr + done.stdout
    assert "-y" in done.stderr + done.stdout


@pytest.mark.parametrize("command", readme_commands("python -m lopbook.data"))
def test_readme_data_commands_exist(command):
    subcommand = shlex.split(command)[3]
    done = subprocess.run([sys.executable, "-m", "lopbook.data", subcommand, "--help"], capture_output=True,
                          text=True, timeout=60)
    assert done.returncode == 0, done.stderr


def test_the_readme_record_listing_command_works_as_written():
    listing = [c for c in readme_commands("python -m lopbook.record") if "--list" in c]
    assert listing, "the README shows how to list the chapters that have records"
    args = shlex.split(listing[0].split("#")[0])
    done = subprocess.run([sys.executable] + args[1:], capture_output=True, text=True, timeout=120, cwd=ROOT)
    assert done.returncode == 0, done.stderr
    assert "03_permuted_mnist" in done.stdout.split()
