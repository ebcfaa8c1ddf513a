"""The README's two commands are the product's front door: .ci/run must run exactly the test command."""

from __future__ import annotations

import re
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def readme_commands() -> list[str]:
    text = (REPO / "README.md").read_text()
    return re.findall(r"```bash\n(.+?)\n```", text)[:2]


def test_readme_starts_with_setup_and_test_commands():
    build, test = readme_commands()
    assert "trtq build recipes/smollm2-135m/" in build and "torch==2.13.0" in build
    assert "pytest" in test and "torch==2.13.0" in test
    assert "nvidia-modelopt==0.37.0" in test, "CI runs the quantization tests against both ModelOpt generations"


def test_ci_runs_exactly_the_readme_test_command():
    _, test = readme_commands()
    ci = [
        line
        for line in (REPO / ".ci" / "run").read_text().splitlines()
        if line and not line.startswith(("#", "set ", "cd ", "export "))
    ]
    assert ci == [test]
