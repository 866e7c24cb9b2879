"""The README's "From Python" example runs as written (from the repository root, here a copy of its layout)."""

from __future__ import annotations

import math
import re
from pathlib import Path

import pytest

pytestmark = pytest.mark.integration

ROOT = Path(__file__).parents[2]


def readme_python_example() -> str:
    text = (ROOT / "README.md").read_text()
    section = text[text.index("\n## From Python\n") :]
    match = re.search(r"```python\n(.*?)```", section, re.DOTALL)
    assert match, "no python block in the README's From Python section"
    return match.group(1)


def test_the_readme_python_example_runs_as_written(tmp_path: Path, monkeypatch, capsys) -> None:
    (tmp_path / "pipelines").symlink_to(ROOT / "pipelines")
    monkeypatch.chdir(tmp_path)
    exec(compile(readme_python_example(), "README.md", "exec"), {"__name__": "readme"})
    printed = capsys.readouterr().out.split()
    # val accuracy, the curves' path, the image+audio accuracy of the raw val shards
    assert 0.0 <= float(printed[0]) <= 1.0 and printed[1].endswith("runs/py/quickstart/curves.png")
    assert Path(printed[1]).is_file() and math.isfinite(float(printed[2]))
    assert (tmp_path / "runs/py/cache/train/manifest.json").is_file()
    assert list((tmp_path / "runs/py/quickstart").glob("checkpoint_*/state.pt"))
