"""`hf-transfer tune`: trials through the recipe, pruning, the best config reproducing its score, two workers."""

import json
import shutil
import subprocess
import warnings

import optuna
import pytest
import yaml
from fixtures import launch_two_processes

from hf_transfer.config import UsageError
from hf_transfer.recipes import sentiment
from hf_transfer.selection.tune import TuneArgs, storage_for, tune, write_outputs
from hf_transfer.selection.tune import main as tune_main


def recipe_flags(tiny_bert, sentiment_files) -> list[str]:
    return ["--model_name_or_path", str(tiny_bert), "--train_file", str(sentiment_files["train"]),
            "--max_train_steps", "6", "--eval_steps", "2", "--per_device_train_batch_size", "8", "--strategy", "full"]


def test_a_study_finds_a_best_config_that_reproduces_its_score(tiny_bert, sentiment_files, tmp_path):
    results = tune_main(["--recipe", "sentiment", "--n_trials", "3", "--n_startup_trials", "2", "--sampler_seed", "0",
                         "--search", "learning_rate", "dropout", "--output_dir", str(tmp_path),
                         *recipe_flags(tiny_bert, sentiment_files)])
    assert results["counts"]["COMPLETE"] == 3 and results["searched"] == ["learning_rate", "dropout"]
    for name in ("tune.json", "optimization_history.png", "param_importances.png", "optuna_journal.log"):
        assert (tmp_path / name).is_file(), name
    config_path = tmp_path / "best_config.yaml"
    first_line = config_path.read_text().splitlines()[0]
    assert first_line == f"# hf-transfer train sentiment --config {config_path}"
    best = yaml.safe_load(config_path.read_text())
    assert best["learning_rate"] == results["best"]["params"]["learning_rate"]
    assert not (tmp_path / "trials" / "trial-0" / "README.md").exists()  # trials write no card
    again = sentiment.main(str(config_path))
    assert again["eval_accuracy"] == pytest.approx(results["best"]["value"])
    assert (tmp_path / "best" / "README.md").is_file()


def test_pruned_trials_stop_at_an_evaluation_and_a_study_resumes(tiny_bert, sentiment_files, tmp_path):
    args = TuneArgs(recipe="sentiment", n_trials=2, search=["learning_rate"], output_dir=str(tmp_path))
    first = tune(args, recipe_flags(tiny_bert, sentiment_files))  # two finished trials in the journal
    # Accuracy can't reach 2: this pruner stops every later trial at its first evaluation.
    args = TuneArgs(recipe="sentiment", n_trials=4, search=["learning_rate"], output_dir=str(tmp_path))
    resumed = tune(args, recipe_flags(tiny_bert, sentiment_files), pruner=optuna.pruners.ThresholdPruner(lower=2.0))
    assert [t["state"] for t in resumed["trials"]] == ["COMPLETE", "COMPLETE", "PRUNED", "PRUNED"]
    assert [t["last_step"] for t in resumed["trials"][2:]] == [2, 2]
    assert resumed["best"] == first["best"]


def test_a_rerun_with_other_recipe_settings_is_refused_not_added_to_the_study(tiny_bert, sentiment_files, tmp_path):
    """Trials trained on other settings would be ranked against these ones: the study refuses them."""
    args = TuneArgs(recipe="sentiment", n_trials=1, search=["learning_rate"], output_dir=str(tmp_path))
    tune(args, [*recipe_flags(tiny_bert, sentiment_files), "--max_train_steps", "2"])
    args = TuneArgs(recipe="sentiment", n_trials=2, search=["learning_rate"], output_dir=str(tmp_path))
    with pytest.raises(UsageError, match="(?s)max_train_steps 2 then, 4 now.*another --study_name"):
        tune(args, [*recipe_flags(tiny_bert, sentiment_files), "--max_train_steps", "4"])
    assert len(optuna.load_study(study_name="hf_transfer", storage=storage_for(args, optuna)).trials) == 1


def test_trials_are_scored_on_what_pruning_compares(tiny_bert, sentiment_files, tmp_path):
    """Pruning sees the loop's evaluations (top class, before any threshold or temperature); a finished trial's
    score is its best evaluation on that basis, not the tuned threshold's accuracy, fitted on validation itself."""
    args = TuneArgs(recipe="sentiment", n_trials=2, search=["learning_rate"], sampler_seed=0,
                    output_dir=str(tmp_path))
    results = tune(args, [*recipe_flags(tiny_bert, sentiment_files), "--decision_threshold", "auto"])
    study = optuna.load_study(study_name="hf_transfer", storage=storage_for(args, optuna))
    for trial in study.trials:
        assert trial.value == max(trial.intermediate_values.values())
    thresholded = [json.loads((tmp_path / "trials" / f"trial-{t.number}" / "all_results.json").read_text())
                   ["eval_accuracy"] for t in study.trials]
    assert thresholded != [t.value for t in study.trials]  # the threshold moved the accuracy: the case tested
    assert results["best"]["value"] == max(t.value for t in study.trials)


def test_two_workers_share_one_sqlite_study(tiny_bert, sentiment_files, tmp_path):
    storage = f"sqlite:///{tmp_path / 'tune.db'}"
    command = [shutil.which("hf-transfer"), "tune", "--recipe", "sentiment", "--n_trials", "4",
               "--search", "learning_rate", "--storage", storage, "--output_dir", str(tmp_path),
               *recipe_flags(tiny_bert, sentiment_files)]
    workers = [subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT) for _ in range(2)]
    outputs = [worker.communicate(timeout=600)[0].decode() for worker in workers]
    assert all(worker.returncode == 0 for worker in workers), outputs
    trials = optuna.load_study(study_name="hf_transfer", storage=storage).trials
    finished = [t for t in trials if t.state == optuna.trial.TrialState.COMPLETE]
    assert 4 <= len(finished) <= 5  # a worker may start one trial before it sees the other's fourth
    assert len({t.user_attrs["worker"] for t in finished}) == 2
    assert json.loads((tmp_path / "tune.json").read_text())["counts"]["COMPLETE"] >= 4


def test_under_accelerate_launch_the_processes_train_each_trial_together(tiny_bert, sentiment_files, tmp_path):
    """Two gloo processes: the main one owns the study, so 3 trials are 3 two-process runs, not 6 one-process ones."""
    launched = launch_two_processes(shutil.which("hf-transfer"), "tune", "--recipe", "sentiment", "--n_trials", "3",
                                    "--search", "learning_rate", "--output_dir", str(tmp_path),
                                    *recipe_flags(tiny_bert, sentiment_files))
    assert launched.returncode == 0, launched.stderr[-3000:]
    results = json.loads((tmp_path / "tune.json").read_text())
    assert results["counts"] == {"COMPLETE": 3, "PRUNED": 0, "FAIL": 0}
    assert len({trial["worker"] for trial in results["trials"]}) == 1
    for number in range(3):
        assert json.loads((tmp_path / "trials" / f"trial-{number}" / "all_results.json").read_text())[
            "num_processes"] == 2


@pytest.mark.parametrize("argv, message", [
    (["--recipe", "nope"], "--recipe nope: choose one of"),
    (["--recipe", "sentiment", "--search", "momentum"], "--search momentum: searchable settings are"),
    (["--recipe", "sentiment", "--n_trials", "0"], "--n_trials must be at least 1"),
    (["--recipe", "sentiment", "--storage", "redis://localhost/0"],
     "--storage redis://localhost/0: give sqlite:///FILE.db, or a postgresql:// or mysql:// URL"),
    (["--recipe", "sentiment", "--storage", "tune.db"], "--storage tune.db: give sqlite:///FILE.db"),
])
def test_bad_tune_flags_are_named(argv, message):
    with pytest.raises(UsageError, match=message):
        tune_main(argv)


@pytest.mark.parametrize("verbose", [False, True])
def test_optunas_experimental_warnings_show_only_with_verbose(tmp_path, verbose):
    study = optuna.create_study(direction="maximize", sampler=optuna.samplers.RandomSampler(seed=0))
    study.optimize(lambda trial: trial.suggest_float("learning_rate", 0, 1) + trial.suggest_float("dropout", 0, 1),
                   n_trials=3)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        write_outputs(study, TuneArgs(recipe="sentiment", output_dir=str(tmp_path)), {"verbose": verbose},
                      ["learning_rate", "dropout"], "eval_accuracy", optuna)
    assert (tmp_path / "param_importances.png").is_file()  # the plots that Optuna marks experimental
    assert any(issubclass(w.category, optuna.exceptions.ExperimentalWarning) for w in caught) == verbose
