"""Every notebook runs headless, offline, on tiny settings, so the notebooks cannot rot."""

import fnmatch
import json
import re
import shlex
import subprocess
import sys
from importlib import metadata
from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient

ROOT = Path(__file__).parents[1]
NOTEBOOKS = ROOT / "notebooks"
# What each notebook's outputs must show: the plots, or for speech recognition (no plots) the report's WER row.
SHOWN = {"speech_recognition.ipynb": "| wer |"}


def tiny_settings(name: str, fixture, output_dir: Path) -> dict:
    """Per notebook: the `config` its parameters cell gets in the test. `fixture` builds the fixtures it uses."""
    if name == "sentiment.ipynb":
        files = fixture("sentiment_files")
        return {"model_name_or_path": str(fixture("tiny_bert")), "train_file": str(files["train"]),
                "test_file": str(files["test"]), "strategy": "lora", "max_train_steps": 4,
                "per_device_train_batch_size": 16, "output_dir": str(output_dir)}
    if name == "image_classification.ipynb":
        images = fixture("images")
        return {"model_name_or_path": str(fixture("tiny_vit")), "train_dir": str(images / "train"),
                "validation_dir": str(images / "val"), "strategy": "lora", "max_train_steps": 3,
                "per_device_train_batch_size": 8, "output_dir": str(output_dir)}
    if name == "audio_classification.ipynb":
        tones = fixture("tones")
        return {"model_name_or_path": str(fixture("tiny_wav2vec2")), "train_dir": str(tones / "train"),
                "test_dir": str(tones / "test"), "validation_split_percentage": 25, "strategy": "lora",
                "max_train_steps": 3, "per_device_train_batch_size": 8, "max_duration_seconds": 0.25,
                "output_dir": str(output_dir)}
    if name == "speech_recognition.ipynb":
        speech = fixture("speech_data")
        return {"model_name_or_path": str(speech / "tiny-wav2vec2"), "train_file": str(speech / "train.csv"),
                "test_file": str(speech / "test.csv"), "strategy": "full", "max_train_steps": 3,
                "per_device_train_batch_size": 8, "output_dir": str(output_dir)}
    raise KeyError(f"{name}: add its tiny settings here")


def run_notebook(path: Path, config: dict, num_processes: int, workdir: Path) -> nbformat.NotebookNode:
    notebook = nbformat.read(path, as_version=4)
    notebook.cells = [cell for cell in notebook.cells if "install" not in cell.metadata.get("tags", [])]
    [parameters] = [cell for cell in notebook.cells if "parameters" in cell.metadata.get("tags", [])]
    parameters.source = f"config = {config!r}\nnum_processes = {num_processes}"
    NotebookClient(notebook, timeout=300, kernel_name="python3",
                   resources={"metadata": {"path": str(workdir)}}).execute()
    return notebook


@pytest.mark.slow
@pytest.mark.parametrize("num_processes", [1, 2])
@pytest.mark.parametrize("path", sorted(NOTEBOOKS.glob("*.ipynb")), ids=lambda p: p.name)
def test_notebook_runs_end_to_end(path, num_processes, request, tmp_path, monkeypatch):
    monkeypatch.setenv("ACCELERATE_USE_CPU", "1")  # two processes through notebook_launcher, on the CPU
    config = tiny_settings(path.name, request.getfixturevalue, tmp_path / "out")
    notebook = run_notebook(path, config, num_processes, tmp_path)
    results = json.loads((tmp_path / "out" / "all_results.json").read_text())
    assert results["num_processes"] == num_processes
    assert results["train_steps"] == config["max_train_steps"]  # every process ran every step asked for
    outputs = "".join(str(output) for cell in notebook.cells for output in cell.get("outputs", []))
    assert SHOWN.get(path.name, "image/png") in outputs
    assert "Traceback" not in outputs


def readme_install_cell() -> list[str]:
    section = (ROOT / "README.md").read_text().split("start with this install cell", 1)[1]
    return re.search(r"```python\n(.*?)```", section, re.S).group(1).splitlines()


def install_cell_code(path: Path) -> list[str]:
    """The notebook's install cell without its comments, read from the .ipynb JSON as Jupyter and Colab read it."""
    [cell] = [cell for cell in json.loads(path.read_text())["cells"] if "install" in cell["metadata"].get("tags", [])]
    return [line for line in "".join(cell["source"]).splitlines() if not line.startswith("#")]


EXTRAS = re.compile(r"\{source\}\[([\w,-]+)\]")  # "{source}[demo]": the README's line plus an extra


@pytest.mark.parametrize("path", sorted(NOTEBOOKS.glob("*.ipynb")), ids=lambda p: p.name)
def test_install_cell_is_the_readmes_and_pip_can_install_it(path):
    readme = readme_install_cell()
    code = install_cell_code(path)
    assert [EXTRAS.sub("{source}", line) for line in code[:len(readme)]] == readme
    [pip_line] = [line for line in code if line.startswith("%pip ")]
    distribution = metadata.metadata("hf-transfer-kit")
    for extras in EXTRAS.findall(pip_line):
        assert set(extras.split(",")) <= set(distribution.get_all("Provides-Extra"))
    # In a clone, {source} is the folder above notebooks/ (Jupyter runs a notebook in its own folder); --no-index
    # and --ignore-installed make pip find it there, not in an index or in this environment.
    arguments = shlex.split(pip_line.removeprefix("%pip ").replace("{source}", ".."))
    dry_run = subprocess.run([sys.executable, "-m", "pip", *arguments, "--dry-run", "--no-deps", "--no-index",
                              "--ignore-installed", "--no-build-isolation"], cwd=NOTEBOOKS, capture_output=True,
                             text=True)
    assert dry_run.returncode == 0, dry_run.stderr
    # In Colab, {source} is the wheel the README says to build and upload: the cell's pattern must find it.
    wheel = f"hf_transfer_kit-{distribution['Version']}-py3-none-any.whl"
    assert f"dist/{wheel}" in (ROOT / "README.md").read_text()
    [pattern] = re.findall(r'glob\.glob\("([^"]+)"\)', "\n".join(code))
    assert fnmatch.fnmatch(wheel, pattern)
