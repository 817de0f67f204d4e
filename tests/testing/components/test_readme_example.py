"""The README's example of the component kit runs."""

from __future__ import annotations

from pathlib import Path


def test_the_readme_example_runs(tmp_path, monkeypatch):
    readme = (Path(__file__).resolve().parents[3] / "README.md").read_text()
    section = readme[readme.index("### Testing your components") :]
    start = section.index("```python\n") + len("```python\n")
    monkeypatch.chdir(tmp_path)
    exec(compile(section[start : section.index("```\n", start)], "README.md", "exec"), {})

