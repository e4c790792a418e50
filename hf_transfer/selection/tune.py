"""`hf-transfer tune`: hyperparameter search with Optuna (TPE), pruning through the loop's evaluations.

    hf-transfer tune --recipe sentiment --n_trials 24 --output_dir outputs/tune \
        --config recipes/configs/sentiment_demo.yaml

Every flag after the tune's own goes to each trial of the recipe; a trial changes only the searched settings
(`--search`: learning rate, weight decay, dropout, warm-up, and LoRA rank and alpha or the number of unfrozen layers
when the strategy has them). Each trial is scored by the run's --metric_for_best_model on validation, reported at
every evaluation, so the median pruner stops trials behind the others early. A finished trial's score is its best
evaluation (the weights the run keeps) on that same basis: the top class, before the threshold and temperature that
--decision_threshold auto and --calibrate then fit on validation itself.

The study lives in OUTPUT_DIR/optuna_journal.log (Optuna's journal storage, safe for several processes on one
machine): run the same command again, in parallel or later, and the workers share the study until --n_trials
trials are finished or pruned. A command whose recipe settings, --search or metric differ is refused: its trials
could not be ranked with the study's. `--storage sqlite:///tune.db` or a PostgreSQL/MySQL URL shares it across machines.
Under `accelerate launch` (several GPUs), the processes train each trial together: the main one owns the study.
Output: best_config.yaml (its first line reproduces the best trial), tune.json, optimization_history.png and
param_importances.png. Needs `pip install 'hf-transfer-kit[tune]'`.
"""

import json
import os
import sys
import time
import warnings
from dataclasses import asdict, dataclass, field
from pathlib import Path

import yaml
from accelerate import Accelerator, PartialState
from accelerate.utils import broadcast_object_list
from transformers import AutoConfig, HfArgumentParser

from hf_transfer.config import UsageError
from hf_transfer.console import library_output
from hf_transfer.evaluation.report import plt, save_figure
from hf_transfer.io import atomic_write_json, atomic_write_text
from hf_transfer.models.builtin import resolve_model
from hf_transfer.recipe import changed_settings, recipe_names, runs_of
from hf_transfer.targets import SINGLE_LABEL, lower_is_better, target_for
from hf_transfer.training.folder_lock import output_dir_lock

# name -> (kind, low, high, log) or ("categorical", choices): what `--search` may name.
SEARCH_SPACE = {
    "learning_rate": ("float", 1e-5, 1e-2, True),
    "weight_decay": ("float", 0.0, 0.3, False),
    "dropout": ("float", 0.0, 0.3, False),
    "warmup_ratio": ("float", 0.0, 0.2, False),
    "lora_r": ("categorical", [4, 8, 16, 32]),
    "lora_alpha": ("categorical", [8, 16, 32, 64]),
    "unfreeze_layers": ("int", 1, None, False),  # up to the model's layer count
}
STRATEGY_SETTINGS = {"lora": ["lora_r", "lora_alpha"], "partial": ["unfreeze_layers"]}
STORAGE_SCHEMES = ("sqlite", "postgresql", "mysql")  # a URL's scheme, before any `+driver`


@dataclass
class TuneArgs:
    recipe: str | None = field(default=None, metadata={"help": "The recipe every trial runs (`hf-transfer recipes`)."})
    n_trials: int = field(default=24, metadata={"help": "Trials of the study, finished or pruned, over all workers."})
    search: list[str] | None = field(
        default=None,
        metadata={"help": f"Settings to search, of {', '.join(SEARCH_SPACE)}. Default: the first four, and the "
                          "strategy's own (LoRA rank and alpha, or the number of unfrozen layers)."},
    )
    storage: str | None = field(
        default=None, metadata={"help": "Optuna storage URL; default: the journal file OUTPUT_DIR/optuna_journal.log."}
    )
    study_name: str = field(default="hf_transfer", metadata={"help": "The study's name in the storage."})
    n_startup_trials: int = field(default=10, metadata={"help": "Random trials before TPE models the results."})
    pruning: bool = field(default=True, metadata={"help": "Stop trials whose evaluations trail the median."})
    sampler_seed: int | None = field(default=None, metadata={"help": "Seed of TPE (one worker: a repeatable study)."})
    output_dir: str = field(default="outputs/tune", metadata={"help": "Study, trials/, best_config.yaml, plots."})

    def __post_init__(self):
        if self.recipe not in recipe_names():
            raise UsageError(f"--recipe {self.recipe}: choose one of {', '.join(recipe_names())}")
        unknown = sorted(set(self.search or []) - set(SEARCH_SPACE))
        if unknown:
            raise UsageError(f"--search {unknown[0]}: searchable settings are {', '.join(SEARCH_SPACE)}")
        if self.n_trials < 1:
            raise UsageError(f"--n_trials must be at least 1; got {self.n_trials}")
        if self.storage and self.storage.split("://")[0].split("+")[0] not in STORAGE_SCHEMES:
            raise UsageError(f"--storage {self.storage}: give sqlite:///FILE.db, or a postgresql:// or mysql:// URL "
                             "(the databases Optuna shares a study in)")


def _optuna():
    try:
        import optuna
    except ImportError:
        raise UsageError("hf-transfer tune needs Optuna: pip install 'hf-transfer-kit[tune]'") from None
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    return optuna


def searched(args: TuneArgs, settings: dict) -> list[str]:
    if args.search:
        return args.search
    return ["learning_rate", "weight_decay", "dropout", "warmup_ratio",
            *STRATEGY_SETTINGS.get(settings["strategy"], [])]


def layer_count(settings: dict) -> int:
    source = settings.get("config_name") or resolve_model(settings["model_name_or_path"])[0]
    config = AutoConfig.from_pretrained(source)
    return getattr(config, "num_hidden_layers", None) or getattr(config, "encoder_layers", None) or 4


def suggest(trial, names: list[str], settings: dict) -> dict:
    values = {}
    for name in names:
        kind, *space = SEARCH_SPACE[name]
        if kind == "categorical":
            values[name] = trial.suggest_categorical(name, space[0])
        elif kind == "int":
            values[name] = trial.suggest_int(name, space[0], space[1] or layer_count(settings))
        else:
            values[name] = trial.suggest_float(name, space[0], space[1], log=space[2])
    return values


def storage_for(args: TuneArgs, optuna):
    if args.storage:
        return rdb_storage(args.storage, optuna)
    from optuna.storages import JournalStorage
    from optuna.storages.journal import JournalFileBackend

    Path(args.output_dir).mkdir(parents=True, exist_ok=True)
    return JournalStorage(JournalFileBackend(str(Path(args.output_dir) / "optuna_journal.log")))


def rdb_storage(url: str, optuna, attempts: int = 3):
    """Optuna's storage at `url`. Workers started together may both create a new database's schema, and the
    second one's write of the schema version then fails: it tries again, and finds the schema made."""
    from sqlalchemy.exc import ArgumentError, IntegrityError, OperationalError

    for attempt in range(attempts):
        try:
            return optuna.storages.RDBStorage(url)
        except (ArgumentError, ImportError) as error:  # a malformed URL, or its database driver not installed
            raise UsageError(f"--storage {url}: {error}") from None
        except (IntegrityError, OperationalError):
            if attempt == attempts - 1:
                raise
            time.sleep(1 + attempt)


def claim_study(study, args: TuneArgs, settings: dict, names: list[str], key: str) -> str | None:
    """Why the study's trials can't be ranked with this command's (trained with other recipe settings, searching
    other settings or scored by another metric), or None; a new study records this command's. Output folders may
    differ between workers: not compared."""
    now = json.loads(json.dumps({**{k: v for k, v in settings.items() if k != "output_dir"}, "tune_search": names,
                                 "tune_metric": key}, default=str))
    before = study.user_attrs.get("settings")
    if before is None and not study.trials:
        study.set_user_attr("settings", now)
        return None
    changed = ["its settings were not recorded (an older tune)"] if before is None else changed_settings(before, now)
    if not changed:
        return None
    return (f"study {args.study_name!r} ({args.storage or Path(args.output_dir) / 'optuna_journal.log'}) holds "
            f"{len(study.trials)} trial(s) of another search: " + "; ".join(changed)
            + ". Give another --study_name or --output_dir for a new study")


def run_trial(recipe_class, settings: dict, report) -> None:
    """The recipe's phases, with `report(step, metrics)` called after each evaluation (it may raise to prune)."""
    recipe = recipe_class.from_settings(settings)
    with library_output(recipe.run.train.verbose):
        try:
            with output_dir_lock(recipe.accelerator, recipe.run.train.output_dir):
                recipe.setup()
                recipe.loop.evaluation_callbacks.append(report)
                recipe.train()
                recipe.finish()
        finally:
            recipe.cleanup(keep_process_group=True)


def tune(args: TuneArgs, recipe_argv: list[str], pruner=None) -> dict:
    """Run trials until the study holds --n_trials finished or pruned ones; write the outputs; return tune.json
    (an empty dict on the other processes of an `accelerate launch`). `pruner` replaces the median pruner (tests).

    Under `accelerate launch` the main process owns the study, as Optuna's TorchDistributedTrial does: it asks for
    each trial, every process trains it together, and the main process's pruning decision is shared."""
    optuna = _optuna()
    recipe_class, base, settings = runs_of(args.recipe, recipe_argv)
    names = searched(args, settings)
    # A metric named by the user, else the target's (study and tune search single-label runs by default).
    metric = (base.train.metric_for_best_model
              or target_for(base.data.problem_type or SINGLE_LABEL).primary_metric).removeprefix("eval_")
    key = f"eval_{metric}"
    direction = "minimize" if lower_is_better(key) else "maximize"
    output = Path(args.output_dir)
    if pruner is None:
        pruner = optuna.pruners.MedianPruner(n_startup_trials=5) if args.pruning else optuna.pruners.NopPruner()
    # An Accelerator joins the launcher's process group (gloo on a CPU), which stays for every trial's own.
    Accelerator()
    state = PartialState()
    study = optuna.create_study(
        storage=storage_for(args, optuna), study_name=args.study_name, direction=direction, load_if_exists=True,
        sampler=optuna.samplers.TPESampler(n_startup_trials=args.n_startup_trials, seed=args.sampler_seed),
        pruner=pruner) if state.is_main_process else None
    if problem := shared(claim_study(study, args, settings, names, key) if study else None):
        raise UsageError(problem)
    done = (optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.PRUNED)
    while True:
        trial = study.ask() if study and len(study.get_trials(states=done)) < args.n_trials else None
        if trial:
            trial.set_user_attr("worker", os.getpid())
        number, values = shared((trial.number, suggest(trial, names, settings)) if trial else (None, None))
        if number is None:
            break

        evaluations = []

        def report(step: int, metrics: dict) -> None:
            evaluations.append(metrics[key])
            if trial:
                trial.report(metrics[key], step)
            if shared(bool(trial and trial.should_prune())):
                raise optuna.TrialPruned(f"{key} {metrics[key]:.4f} at step {step} trails the other trials")

        folder = output / "trials" / f"trial-{number}"
        try:
            run_trial(recipe_class, {**settings, **values, "output_dir": str(folder), "overwrite_output_dir": True},
                      report)
        except optuna.TrialPruned:
            if study:
                study.tell(trial, state=optuna.trial.TrialState.PRUNED)
            continue
        except BaseException:
            if study:
                study.tell(trial, state=optuna.trial.TrialState.FAIL)
            raise
        if study:
            study.tell(trial, (min if direction == "minimize" else max)(evaluations))
    # Every process leaves the group together: gloo aborts a process that tears it down while a peer still
    # holds it.
    state.wait_for_everyone()
    state.destroy_process_group()
    return write_outputs(study, args, settings, names, key, optuna) if study else {}


def shared(value):
    """`value` as the main process has it, on every process (itself when there is one process)."""
    if PartialState().num_processes == 1:
        return value
    return broadcast_object_list([value], from_process=0)[0]


def write_outputs(study, args: TuneArgs, settings: dict, names: list[str], key: str, optuna) -> dict:
    output = Path(args.output_dir)
    trials = [{"number": t.number, "state": t.state.name, "value": t.value, "params": t.params,
               "worker": t.user_attrs.get("worker"), "last_step": t.last_step} for t in study.trials]
    finished = [t for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE]
    if not finished:
        raise UsageError(f"no trial of study {args.study_name!r} finished (all pruned or failed); see "
                         f"{output / 'trials'}")
    best = study.best_trial
    best_dir = output / "best"
    best_settings = {**settings, **best.params, "output_dir": str(best_dir), "write_card": True}
    command = f"hf-transfer train {args.recipe} --config {output / 'best_config.yaml'}"
    atomic_write_text(output / "best_config.yaml",
                      f"# {command}\n# The best of {len(trials)} trials of `hf-transfer tune` (trial {best.number}: "
                      f"{key} {best.value:.4f} on validation, at its best evaluation).\n"
                      + yaml.safe_dump(best_settings, sort_keys=False))
    results = {"recipe": args.recipe, "metric": key, "direction": study.direction.name.lower(), "searched": names,
               "best": {"trial": best.number, "value": best.value, "params": best.params,
                        "config": str(output / "best_config.yaml"), "command": command},
               "counts": {state: sum(t["state"] == state for t in trials) for state in ("COMPLETE", "PRUNED", "FAIL")},
               "trials": trials, "settings": asdict(args)}
    atomic_write_json(output / "tune.json", results)
    from optuna.visualization.matplotlib import plot_optimization_history, plot_param_importances

    with warnings.catch_warnings():
        if not settings.get("verbose"):  # Optuna marks these plots experimental: a note on its API, not on the run
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        save_figure(plot_optimization_history(study).figure, output / "optimization_history.png")
        if len(finished) > 1 and len(names) > 1:
            save_figure(plot_param_importances(study).figure, output / "param_importances.png")
    plt.close("all")
    print(f"best of {len(trials)} trials ({results['counts']['PRUNED']} pruned): trial {best.number}, {key} "
          f"{best.value:.4f}, " + ", ".join(f"{k} {v:.4g}" if isinstance(v, float) else f"{k} {v}"
                                           for k, v in best.params.items()))
    print(f"Reproduce it: {command}")
    return results


def main(argv: list[str] | None = None) -> dict:
    parser = HfArgumentParser(TuneArgs, allow_abbrev=False)  # recipe flags pass through whole
    args, rest = parser.parse_args_into_dataclasses(args=sys.argv[1:] if argv is None else argv,
                                                    return_remaining_strings=True)
    return tune(args, rest)
