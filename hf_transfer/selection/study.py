"""`hf-transfer study`: which strategy, at which label budget? A grid of normal recipe runs on your data.

    hf-transfer study --recipe sentiment --strategies feature_extraction partial:2 lora full scratch \
        --samples_per_class 8 32 128 all --seeds 0 1 2 --output_dir outputs/study \
        --config recipes/configs/sentiment_sst2_minilm_full.yaml

Every flag after the study's own goes to each cell (strategy x budget x seed) of the recipe; a cell only changes
the strategy (`partial:K` trains the top K layers; `scratch` is `full` from random weights of the same
architecture; a `+mean` suffix, as in `full+mean`, sets `--pooling`), `--samples_per_class` (nested: a seed's 8
examples of a class are among its 32) and `--seed`. Each
cell is a run folder under OUTPUT_DIR/cells, without card or push. A finished cell is not run again: a killed study
continues where it stopped. A rerun whose settings differ from a finished cell's is refused: one table holds one
study. Strategies are chosen on validation accuracy; test accuracy is reported for the chosen one (and, marked as
such, for every one). Output: study.json, study.png (accuracy against labels per
strategy, mean and spread over seeds) and a recommendation per budget.
"""

import json
import statistics
import sys
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

from transformers import HfArgumentParser

from hf_transfer.config import CLASSIFIER_POOLINGS, DataArgs, UsageError
from hf_transfer.data.splits import FolderLayout, load_labelled_splits
from hf_transfer.evaluation.report import plt, save_figure
from hf_transfer.io import atomic_write_json
from hf_transfer.modalities.audio import AUDIO_LAYOUT
from hf_transfer.modalities.image import IMAGE_LAYOUT
from hf_transfer.models.builtin import resolve_model
from hf_transfer.recipe import ClassificationRecipe, changed_settings, recipe_class_of, recipe_names, runs_of
from hf_transfer.training.run_folder import read_record

ALL = "all"
SCRATCH = "scratch"
BASE_STRATEGIES = ("feature_extraction", "partial", "lora", "full")
LAYOUTS = {"image": IMAGE_LAYOUT, "audio": AUDIO_LAYOUT}  # how each modality's recipe reads class folders


@dataclass
class StudyArgs:
    recipe: str | None = field(default=None, metadata={"help": "The recipe every cell runs (`hf-transfer recipes`)."})
    strategies: list[str] = field(
        default_factory=lambda: ["feature_extraction", "partial:2", "lora", "full", SCRATCH],
        metadata={"help": "feature_extraction, partial:K (the top K layers), lora, full, scratch (full from random "
                          "weights of the same architecture); a `+model`, `+mean` or `+cls` suffix (`full+mean`) "
                          "sets the classifier's --pooling."},
    )
    samples_per_class: list[str] = field(
        default_factory=lambda: ["8", "32", "128", ALL],
        metadata={"help": "Label budgets: training examples per class, or `all`."},
    )
    seeds: list[int] = field(default_factory=lambda: [0, 1, 2], metadata={"help": "Seeds of every cell."})
    learning_rates: list[str] = field(
        default_factory=list,
        metadata={"help": "STRATEGY=RATE pairs (`feature_extraction=1e-2 lora=1e-3`): the learning rate of that "
                          "strategy's cells, whatever their layers or pooling; the others take the base "
                          "--learning_rate, or when it is unset the rate chosen for their strategy and backbone."},
    )
    output_dir: str = field(default="outputs/study", metadata={"help": "Where study.json, study.png and cells/ go."})

    def __post_init__(self):
        if self.recipe not in recipe_names():
            raise UsageError(f"--recipe {self.recipe}: choose one of {', '.join(recipe_names())}")
        classifiers = [name for name in recipe_names() if issubclass(recipe_class_of(name), ClassificationRecipe)]
        if self.recipe not in classifiers:  # cells are scored by accuracy, at a number of labels per class
            raise UsageError(f"--recipe {self.recipe}: study compares classifiers by accuracy; choose one of "
                             f"{', '.join(classifiers)}")
        for spelled in self.strategies:
            strategy_overrides(spelled, "")
        for budget in self.samples_per_class:
            if budget != ALL and not (budget.isdigit() and int(budget) > 0):
                raise UsageError(f"--samples_per_class {budget}: a whole number above 0, or `all`")
        if not self.seeds:
            raise UsageError("give at least one seed: --seeds 0 1 2")
        strategy_learning_rates(self.learning_rates)


def strategy_learning_rates(pairs: list[str]) -> dict[str, float]:
    """{strategy name: learning rate} from `name=rate` pairs."""
    rates = {}
    for pair in pairs:
        name, _, rate = pair.partition("=")
        if name not in (*BASE_STRATEGIES, SCRATCH):
            raise UsageError(f"--learning_rates {pair}: name one of {', '.join((*BASE_STRATEGIES, SCRATCH))} "
                             "before `=`")
        try:
            rates[name] = float(rate)
        except ValueError:
            raise UsageError(f"--learning_rates {pair}: the rate after `=` must be a number") from None
        if rates[name] <= 0:
            raise UsageError(f"--learning_rates {pair}: the rate must be above 0")
    return rates


def spelling(spelled: str) -> tuple[str, str, str]:
    """(name, layers, pooling) of a spelled strategy: `partial:2+mean` -> ("partial", "2", "mean")."""
    strategy, _, pooling = spelled.partition("+")
    name, _, layers = strategy.partition(":")
    return name, layers, pooling


def strategy_overrides(spelled: str, model_path: str) -> dict:
    """The settings a cell's strategy changes (`model_path`: the checkpoint that `scratch` takes the config of).
    A `+model`, `+mean` or `+cls` suffix sets the classifier's pooling (`--pooling`)."""
    name, layers, pooling = spelling(spelled)
    if pooling not in ("", *CLASSIFIER_POOLINGS):
        raise UsageError(f"--strategies {spelled}: the pooling after `+` is one of {', '.join(CLASSIFIER_POOLINGS)}")
    overrides = {"pooling": pooling} if pooling else {}
    if name == SCRATCH and not layers:
        return {**overrides, "strategy": "full", "model_name_or_path": None, "config_name": model_path,
                "tokenizer_name": model_path}
    if name == "partial" and layers.isdigit() and int(layers) > 0:
        return {**overrides, "strategy": "partial", "unfreeze_layers": int(layers)}
    if name in BASE_STRATEGIES and name != "partial" and not layers:
        return {**overrides, "strategy": name}
    raise UsageError(f"--strategies {spelled}: use feature_extraction, partial:K, lora, full or scratch, each "
                     "optionally with +model, +mean or +cls (the classifier's --pooling)")


def cell_name(strategy: str, budget: str, seed: int) -> str:
    return f"{strategy.replace(':', '-').replace('+', '_')}__k{budget}__seed{seed}"


def is_finished(folder: Path) -> bool:
    """The cell's run completed and the study recorded it: study_cell.json is written last, so a study killed just
    before it runs the cell again (its wall time is part of the result)."""
    record = read_record(folder) if folder.is_dir() else None
    return bool(record and record["complete"]) and (folder / "study_cell.json").is_file()


def run_cell(recipe_class, settings: dict, folder: Path) -> float:
    """Train one cell from scratch (an interrupted one is started again); returns its wall seconds. study_cell.json
    keeps the settings it was trained with, for a rerun to compare (`check_finished_cells`)."""
    start = time.perf_counter()
    recipe_class.from_settings({**settings, "output_dir": str(folder), "overwrite_output_dir": folder.exists()}
                               ).run_phases()
    seconds = time.perf_counter() - start
    atomic_write_json(folder / "study_cell.json", {"wall_seconds": seconds, "settings": settings})
    return seconds


def check_budgets(data: DataArgs, seeds: list[int], budgets: list[str], layout: FolderLayout | None) -> None:
    """Each seed's training split holds the largest budget of every class: checked before the first cell trains,
    not when that budget's cells come after hours of the others."""
    largest = max((int(budget) for budget in budgets if budget != ALL), default=None)
    if largest is not None:
        for seed in seeds:
            load_labelled_splits(replace(data, samples_per_class=largest), seed, layout=layout)


def check_finished_cells(planned: dict[Path, dict]) -> None:
    """A finished cell is kept only if it was trained with the settings it would get now: a rerun with other recipe
    flags into the same --output_dir would otherwise mix two studies in one table. Checked for every cell before
    the first one trains."""
    differing = []
    for folder, settings in planned.items():
        if not is_finished(folder):
            continue
        before = json.loads((folder / "study_cell.json").read_text()).get("settings")
        if before is None:
            differing.append(f"{folder.name}: its settings were not recorded (an older study)")
            continue
        if changed := changed_settings(before, settings):
            differing.append(f"{folder.name}: " + ", ".join(changed))
    if differing:
        raise UsageError(f"{len(differing)} finished cell(s) in {next(iter(planned)).parent} were trained with other "
                         "settings:\n  " + "\n  ".join(differing) + "\nGive another --output_dir for a new study, or "
                         "delete those cells to train them again")


def summarise(cells: list[dict], budgets: list[str], strategies: list[str]) -> list[dict]:
    """Per budget and strategy: mean and spread (sample standard deviation) of validation and test accuracy."""
    rows = []
    for budget in budgets:
        for strategy in strategies:
            group = [c for c in cells if c["budget"] == budget and c["strategy"] == strategy]
            row = {"budget": budget, "strategy": strategy, "seeds": len(group),
                   "wall_seconds": statistics.mean(c["wall_seconds"] for c in group)}
            for split in ("eval", "test"):
                values = [c[f"{split}_accuracy"] for c in group if c.get(f"{split}_accuracy") is not None]
                if values:
                    row[f"{split}_accuracy_mean"] = statistics.mean(values)
                    row[f"{split}_accuracy_spread"] = statistics.stdev(values) if len(values) > 1 else 0.0
            rows.append(row)
    return rows


def recommend(rows: list[dict], budgets: list[str]) -> dict[str, dict]:
    """Per budget, the strategy with the best mean validation accuracy, and its test accuracy."""
    chosen = {}
    for budget in budgets:
        best = max((r for r in rows if r["budget"] == budget), key=lambda r: r["eval_accuracy_mean"])
        chosen[budget] = {"strategy": best["strategy"], "eval_accuracy_mean": best["eval_accuracy_mean"],
                          "test_accuracy_mean": best.get("test_accuracy_mean")}
    return chosen


def plain_language(chosen: dict[str, dict]) -> list[str]:
    lines = []
    for budget, pick in chosen.items():
        labels = "all the labelled examples" if budget == ALL else f"{budget} labelled examples per class"
        test = ("" if pick["test_accuracy_mean"] is None
                else f"; its test accuracy is {100 * pick['test_accuracy_mean']:.1f} %")
        lines.append(f"With {labels}, use {pick['strategy']}: it has the best mean validation accuracy "
                     f"({100 * pick['eval_accuracy_mean']:.1f} %){test}.")
    return lines


def plot(rows: list[dict], budgets: list[str], strategies: list[str], path: Path) -> None:
    """Test (else validation) accuracy against the label budget, one line per strategy, bars = spread over seeds."""
    split = "test" if all("test_accuracy_mean" in r for r in rows) else "eval"
    positions = range(len(budgets))
    figure, axis = plt.subplots(figsize=(7, 4.5))
    for strategy in strategies:
        mine = [next(r for r in rows if r["budget"] == b and r["strategy"] == strategy) for b in budgets]
        axis.errorbar(positions, [100 * r[f"{split}_accuracy_mean"] for r in mine],
                      yerr=[100 * r[f"{split}_accuracy_spread"] for r in mine], marker="o", capsize=3, label=strategy)
    axis.set_xticks(list(positions), [b if b == ALL else f"{b}/class" for b in budgets])
    axis.set_xlabel("labelled training examples")
    axis.set_ylabel(f"{'test' if split == 'test' else 'validation'} accuracy (%), mean ± sd over seeds")
    axis.grid(alpha=0.3)
    axis.legend()
    save_figure(figure, path)


def study(args: StudyArgs, recipe_argv: list[str]) -> dict:
    recipe_class, base, settings = runs_of(args.recipe, recipe_argv)
    model_path = resolve_model(base.model.model_name_or_path)[0] if base.model.model_name_or_path else None
    if SCRATCH in args.strategies and not model_path:
        raise UsageError("--strategies scratch takes the architecture of --model_name_or_path; give one")
    output = Path(args.output_dir)
    rates = strategy_learning_rates(args.learning_rates)
    grid = [(strategy, budget, seed) for seed in args.seeds for budget in args.samples_per_class
            for strategy in args.strategies]
    planned = {}  # each cell's folder: its settings, as JSON holds them (a built-in model's path is a str there)
    for strategy, budget, seed in grid:
        rate = rates.get(spelling(strategy)[0])
        planned[output / "cells" / cell_name(strategy, budget, seed)] = json.loads(json.dumps(
            {**settings, **strategy_overrides(strategy, model_path), "seed": seed,
             "samples_per_class": None if budget == ALL else int(budget), **({"learning_rate": rate} if rate else {})},
            default=str))
    check_budgets(base.data, args.seeds, args.samples_per_class, LAYOUTS.get(recipe_class.task.input_kind))
    check_finished_cells(planned)
    cells = []
    for (strategy, budget, seed), (folder, cell_settings) in zip(grid, planned.items()):
        if is_finished(folder):
            print(f"study: {folder.name} done before, kept")
        else:
            print(f"study: {folder.name}")
            run_cell(recipe_class, cell_settings, folder)
        results = json.loads((folder / "all_results.json").read_text())
        wall = json.loads((folder / "study_cell.json").read_text())["wall_seconds"]
        cells.append({"strategy": strategy, "budget": budget, "seed": seed, "folder": str(folder),
                      "wall_seconds": wall, "eval_accuracy": results["eval_accuracy"],
                      "test_accuracy": results.get("test_accuracy")})
    rows = summarise(cells, args.samples_per_class, args.strategies)
    chosen = recommend(rows, args.samples_per_class)
    results = {"recipe": args.recipe, "chosen_on": "validation accuracy (mean over seeds)", "chosen": chosen,
               "recommendation": plain_language(chosen),
               "note": "test accuracy is reported for every strategy; only the chosen one's was picked without it",
               "strategies": rows, "cells": cells, "settings": {**asdict(args), "recipe_flags": recipe_argv}}
    atomic_write_json(output / "study.json", results)
    plot(rows, args.samples_per_class, args.strategies, output / "study.png")
    print(format_table(rows))
    print("\n".join(results["recommendation"]))
    print(f"Saved {output / 'study.json'} and {output / 'study.png'}")
    return results


def format_table(rows: list[dict]) -> str:
    lines = ["| labels per class | strategy | validation accuracy | test accuracy (not used to choose) | s per cell |",
             "|---|---|---|---|---:|"]
    for row in rows:
        test = ("" if "test_accuracy_mean" not in row
                else f"{100 * row['test_accuracy_mean']:.1f} ± {100 * row['test_accuracy_spread']:.1f}")
        lines.append(f"| {row['budget']} | {row['strategy']} | {100 * row['eval_accuracy_mean']:.1f} ± "
                     f"{100 * row['eval_accuracy_spread']:.1f} | {test} | {row['wall_seconds']:.0f} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> dict:
    parser = HfArgumentParser(StudyArgs, allow_abbrev=False)  # `--seed` is a recipe flag, not short for `--seeds`
    args, rest = parser.parse_args_into_dataclasses(args=sys.argv[1:] if argv is None else argv,
                                                    return_remaining_strings=True)
    return study(args, rest)
