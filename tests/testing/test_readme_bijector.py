"""The README's bijector example runs, and the conformance kit passes it."""

from __future__ import annotations

from pathlib import Path


def test_the_readme_bijector_example_passes_the_kit() -> None:
    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text()
    section = readme[readme.index("### Writing a bijector") :]
    start = section.index("```python\n") + len("```python\n")
    exec(compile(section[start : section.index("```\n", start)], "README.md", "exec"), {})
