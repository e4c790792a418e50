"""The README's Quickstart is what a new user types: two commands, the second one is what CI runs. Its built-ins
table gives each checkpoint's install line, `--no-deps` included."""

import re
from pathlib import Path

from hf_transfer.models.builtin import MODELS

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


def test_the_builtins_table_names_each_checkpoint_with_its_install_line():
    section = (ROOT / "README.md").read_text().split("## Built-in checkpoints", 1)[1].split("\n## ", 1)[0]
    rows = {row.split("|")[1].strip(" `"): row for row in section.splitlines() if row.startswith("| `")}
    assert sorted(rows) == sorted(MODELS)
    for name, model in MODELS.items():
        assert f"| {model.modality} | {model.parameters} | {model.licence} | `{model.install_line()}`" in rows[name]
