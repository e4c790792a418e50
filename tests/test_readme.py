"""The README's Quickstart is what a new user types: two commands, the second one is what CI runs."""

import re
from pathlib import Path

ROOT = Path(__file__).parents[1]


def quickstart_commands() -> list[str]:
    section = (ROOT / "README.md").read_text().split("## Quickstart", 1)[1]
    block = re.search(r"```bash\n(.*?)```", section, re.S).group(1)
    return [line for line in block.splitlines() if line.strip()]


def test_quickstart_is_two_commands_each_installing_what_it_runs():
    demo, tests = quickstart_commands()
    pyproject = (ROOT / "pyproject.toml").read_text()  # read as text: tomllib is Python 3.11+
    for command, extra, runs in ((demo, "demo", "hf-transfer train "), (tests, "test", "python -m pytest")):
        install, run = command.split(" && ")
        assert install.startswith("pip install ") and f'-e ".[{extra}]"' in install
        assert run.startswith(runs)
    test_extra = re.search(r"^test = \[(.*?)\]", pyproject, re.S | re.M).group(1)
    assert '"pytest' in test_extra
    config = demo.split("--config ")[1]
    assert (ROOT / config).is_file()


def test_ci_runs_the_readmes_test_command_in_a_fresh_environment():
    ci = (ROOT / ".ci" / "run").read_text().splitlines()
    steps = [line for line in ci if line.strip() and not line.startswith("#")]
    assert "python3 -m venv .venv" in steps
    assert steps[-1] == quickstart_commands()[1]
    assert steps.index('python -m pip install -q "torch==2.13.*"') < len(steps) - 1  # the CPU torch first
