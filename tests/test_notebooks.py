"""Every notebook runs headless, offline, on tiny settings, so the notebooks cannot rot."""

import json
from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient

NOTEBOOKS = Path(__file__).parents[1] / "notebooks"


def tiny_settings(name: str, tiny_bert, sentiment_files, output_dir) -> dict:
    """Per notebook: the `config` its parameters cell gets in the test."""
    return {
        "sentiment.ipynb": {"model_name_or_path": str(tiny_bert), "train_file": str(sentiment_files["train"]),
                            "test_file": str(sentiment_files["test"]), "strategy": "lora", "max_train_steps": 4,
                            "per_device_train_batch_size": 16, "output_dir": str(output_dir)},
    }[name]


def run_notebook(path: Path, config: dict, num_processes: int, workdir: Path) -> nbformat.NotebookNode:
    notebook = nbformat.read(path, as_version=4)
    notebook.cells = [cell for cell in notebook.cells if "install" not in cell.metadata.get("tags", [])]
    [parameters] = [cell for cell in notebook.cells if "parameters" in cell.metadata.get("tags", [])]
    parameters.source = f"config = {config!r}\nnum_processes = {num_processes}"
    NotebookClient(notebook, timeout=300, kernel_name="python3", resources={"metadata": {"path": str(workdir)}}).execute()
    return notebook


@pytest.mark.slow
@pytest.mark.parametrize("num_processes", [1, 2])
@pytest.mark.parametrize("path", sorted(NOTEBOOKS.glob("*.ipynb")), ids=lambda p: p.name)
def test_notebook_runs_end_to_end(path, num_processes, tiny_bert, sentiment_files, tmp_path, monkeypatch):
    monkeypatch.setenv("ACCELERATE_USE_CPU", "1")  # two processes through notebook_launcher, on the CPU
    config = tiny_settings(path.name, tiny_bert, sentiment_files, tmp_path / "out")
    notebook = run_notebook(path, config, num_processes, tmp_path)
    results = json.loads((tmp_path / "out" / "all_results.json").read_text())
    assert results["num_processes"] == num_processes
    outputs = "".join(str(output) for cell in notebook.cells for output in cell.get("outputs", []))
    assert "image/png" in outputs  # the plots were displayed
    assert "Traceback" not in outputs
