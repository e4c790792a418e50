"""`hf-transfer study`: the grid, nested budgets, the summary and recommendation, and resuming a killed study."""

import json
from pathlib import Path

import pytest
from fixtures import sentences, write_csv

from hf_transfer.cli import main as cli
from hf_transfer.config import DataArgs, UsageError
from hf_transfer.data.splits import load_labelled_splits
from hf_transfer.io import atomic_write_json
from hf_transfer.models import builtin
from hf_transfer.selection import study as study_module
from hf_transfer.selection.study import main as study
from hf_transfer.training.run_folder import RUN_RECORD, read_record


def flags(tiny_bert, sentiment_files, output_dir, *extra) -> list[str]:
    return ["--recipe", "sentiment", "--strategies", "feature_extraction", "partial:1", "full", "scratch",
            "--samples_per_class", "8", "all", "--seeds", "0", "1", "--output_dir", str(output_dir), *extra,
            "--model_name_or_path", str(tiny_bert), "--train_file", str(sentiment_files["train"]),
            "--test_file", str(sentiment_files["test"]), "--max_train_steps", "4", "--learning_rate", "5e-3",
            "--per_device_train_batch_size", "8", "--warmup_ratio", "0"]


def test_a_study_runs_every_cell_summarises_plots_and_resumes(tiny_bert, sentiment_files, tmp_path, monkeypatch):
    rates = ["--learning_rates", "feature_extraction=5e-2"]
    results = study(flags(tiny_bert, sentiment_files, tmp_path, *rates))
    assert len(results["cells"]) == 4 * 2 * 2
    assert (tmp_path / "study.png").stat().st_size > 0
    assert json.loads((tmp_path / "study.json").read_text()) == results
    cell = tmp_path / "cells" / "partial-1__k8__seed1"
    settings = (cell / "run_config.yaml").read_text()
    assert "unfreeze_layers: 1" in settings and "samples_per_class: 8" in settings and "seed: 1" in settings
    assert not (cell / "README.md").exists()  # no card per cell
    assert "learning_rate: 0.005" in settings  # the recipe's rate, and feature extraction's own
    frozen = (tmp_path / "cells" / "feature_extraction__k8__seed1" / "run_config.yaml").read_text()
    assert "learning_rate: 0.05" in frozen
    scratch = (tmp_path / "cells" / "scratch__kall__seed0" / "run_config.yaml").read_text()
    assert "model_name_or_path: null" in scratch and f"config_name: {tiny_bert}" in scratch
    row = next(r for r in results["strategies"] if r["strategy"] == "full" and r["budget"] == "8")
    accuracies = [c["eval_accuracy"] for c in results["cells"] if c["strategy"] == "full" and c["budget"] == "8"]
    assert row["eval_accuracy_mean"] == pytest.approx(sum(accuracies) / 2)
    for budget in ("8", "all"):  # the chosen strategy is the best on validation, whatever test says
        best = max((r for r in results["strategies"] if r["budget"] == budget), key=lambda r: r["eval_accuracy_mean"])
        assert results["chosen"][budget]["strategy"] == best["strategy"]
    assert results["recommendation"][0].startswith("With 8 labelled examples per class, use ")

    # Killed inside one cell: its folder holds no completion. Only that cell runs again.
    killed = tmp_path / "cells" / "full__kall__seed1"
    atomic_write_json(killed / RUN_RECORD, {**read_record(killed), "complete": False})
    ran = []
    real = study_module.run_cell
    monkeypatch.setattr(study_module, "run_cell", lambda recipe_class, settings, folder: ran.append(folder.name)
                        or real(recipe_class, settings, folder))
    again = study(flags(tiny_bert, sentiment_files, tmp_path, *rates))
    assert ran == ["full__kall__seed1"]
    assert len(again["cells"]) == 16


def test_a_study_killed_after_a_cell_finished_but_before_its_study_record_continues(tiny_bert, sentiment_files,
                                                                                     tmp_path, monkeypatch):
    """The cell's run is complete but study_cell.json (its wall time) was never written: that cell runs again."""
    argv = ["--recipe", "sentiment", "--strategies", "full", "--samples_per_class", "all", "--seeds", "0",
            "--output_dir", str(tmp_path), "--model_name_or_path", str(tiny_bert),
            "--train_file", str(sentiment_files["train"]), "--max_train_steps", "1"]
    study(argv)
    cell = tmp_path / "cells" / "full__kall__seed0"
    (cell / "study_cell.json").unlink()
    ran = []
    real = study_module.run_cell
    monkeypatch.setattr(study_module, "run_cell", lambda recipe_class, settings, folder: ran.append(folder.name)
                        or real(recipe_class, settings, folder))
    again = study(argv)
    assert ran == ["full__kall__seed0"] and again["cells"][0]["wall_seconds"] > 0


def test_a_rerun_with_other_recipe_settings_is_refused_before_any_cell_trains(tiny_bert, sentiment_files, tmp_path,
                                                                              monkeypatch):
    """Reusing a finished cell trained at another learning rate would mix two studies in one table."""
    argv = ["--recipe", "sentiment", "--strategies", "full", "--samples_per_class", "all", "--output_dir",
            str(tmp_path), "--model_name_or_path", str(tiny_bert), "--train_file", str(sentiment_files["train"]),
            "--max_train_steps", "1"]
    study([*argv, "--seeds", "0"])
    ran = []
    monkeypatch.setattr(study_module, "run_cell", lambda recipe_class, settings, folder: ran.append(folder.name))
    changed = "(?s)full__kall__seed0: learning_rate unset then, 0.001 now.*another --output_dir"
    with pytest.raises(UsageError, match=changed):
        study([*argv, "--seeds", "1", "0", "--learning_rate", "1e-3"])
    assert ran == []  # not even the new seed's cell, which comes first


def test_a_budget_larger_than_a_class_is_refused_before_the_first_cell(tiny_bert, sentiment_files, tmp_path,
                                                                       monkeypatch):
    ran = []
    monkeypatch.setattr(study_module, "run_cell", lambda recipe_class, settings, folder: ran.append(folder.name))
    with pytest.raises(UsageError, match="--samples_per_class 500 but class '(negative|positive)' has only"):
        study(["--recipe", "sentiment", "--strategies", "full", "--samples_per_class", "8", "500", "--seeds", "0",
               "--output_dir", str(tmp_path), "--model_name_or_path", str(tiny_bert),
               "--train_file", str(sentiment_files["train"]), "--max_train_steps", "1"])
    assert ran == []  # not the 8-example cell either


def test_budgets_nest_for_a_seed(tmp_path):
    path = write_csv(tmp_path / "train.csv", sentences(200, seed=0))
    picked = {}
    for budget in (4, 16):
        data = load_labelled_splits(DataArgs(train_file=str(path), samples_per_class=budget,
                                             validation_split_percentage=10), seed=3)
        picked[budget] = set(data.splits["train"]["text"])
    assert len(picked[4]) == 8 and picked[4] < picked[16]


@pytest.mark.parametrize("argv, message", [
    (["--recipe", "nope"], "--recipe nope: choose one of"),
    (["--recipe", "sentiment", "--strategies", "partial"], "--strategies partial: use"),
    (["--recipe", "sentiment", "--strategies", "full+max"], "the pooling after `\\+` is one of model, mean, cls"),
    (["--recipe", "sentiment", "--samples_per_class", "0"], "--samples_per_class 0"),
    (["--recipe", "sentiment", "--learning_rates", "adapter=1e-3"], "--learning_rates adapter=1e-3: name one of"),
    (["--recipe", "sentiment", "--learning_rates", "lora=fast"], "--learning_rates lora=fast: the rate after"),
    (["--recipe", "speech_recognition"], "--recipe speech_recognition: study compares classifiers by accuracy; "
                                         "choose one of audio_classification, image_classification, sentiment"),
])
def test_bad_study_flags_are_named(argv, message):
    with pytest.raises(UsageError, match=message):
        study(argv)


def test_the_cli_runs_a_study(tiny_bert, sentiment_files, tmp_path):
    cli(["study", "--recipe", "sentiment", "--strategies", "full", "--samples_per_class", "all", "--seeds", "0",
         "--output_dir", str(tmp_path), "--model_name_or_path", str(tiny_bert), "--train_file",
         str(sentiment_files["train"]), "--max_train_steps", "2"])
    assert (tmp_path / "study.json").is_file()


def test_scratch_cells_of_a_builtin_model_run(tiny_bert, sentiment_files, tmp_path, monkeypatch):
    """A built-in model's folder may come back as a Path: the scratch cell's settings must still save as JSON."""
    tiny = builtin.BuiltinModel("org/tiny", "text", "1 M", "MIT", ("tiny-package",), False, lambda: Path(tiny_bert))
    monkeypatch.setitem(builtin.MODELS, "tiny", tiny)
    results = study(["--recipe", "sentiment", "--strategies", "scratch", "--samples_per_class", "all", "--seeds", "0",
                     "--output_dir", str(tmp_path), "--model_name_or_path", "builtin:tiny",
                     "--train_file", str(sentiment_files["train"]), "--max_train_steps", "2"])
    assert len(results["cells"]) == 1
    assert f"config_name: {tiny_bert}" in (tmp_path / "cells" / "scratch__kall__seed0" / "run_config.yaml").read_text()
