"""`hf-transfer`: train a recipe, evaluate, predict with, push or merge a trained folder, list the recipes."""

import argparse
import importlib
import json
import sys
from collections.abc import Callable
from importlib import resources
from pathlib import Path

from hf_transfer.config import UsageError


def run_from_command_line(main: Callable) -> None:
    """Run a recipe's `main` with the process's flags; bad input ends with a message, not a traceback."""
    try:
        main(argv=sys.argv[1:])
    except UsageError as error:
        sys.exit(f"error: {error}")


def recipe_names() -> list[str]:
    return sorted(p.stem for p in resources.files("hf_transfer.recipes").iterdir()
                  if p.name.endswith(".py") and not p.name.startswith("_"))


def list_recipes() -> None:
    configs = sorted((p for p in resources.files("hf_transfer.recipes.configs").iterdir() if p.name.endswith(".yaml")),
                     key=lambda p: p.name)
    for name in recipe_names():
        module = importlib.import_module(f"hf_transfer.recipes.{name}")
        print(f"{name}: {module.__doc__.strip().splitlines()[0]}")
        for config in configs:
            if config.name.startswith(name):
                print(f"    {config.name:32} {config.read_text().splitlines()[0].lstrip('# ')}")


def train(recipe: str, flags: list[str]) -> None:
    if recipe not in recipe_names():
        raise UsageError(f"unknown recipe {recipe!r}; recipes: {', '.join(recipe_names())}")
    importlib.import_module(f"hf_transfer.recipes.{recipe}").main(argv=flags)


def predict(output_dir: str, texts: list[str], file: str | None) -> None:
    from hf_transfer.inference import load_trained, predict_texts

    if file:
        path = Path(file)
        if not path.is_file():
            raise UsageError(f"file not found: {file}")
        texts = texts + [line for line in path.read_text().splitlines() if line.strip()]
    if not texts:
        raise UsageError("give texts to classify, or --file with one text per line")
    model, tokenizer, settings = load_trained(output_dir)
    if settings["task"] == "image-classification":
        from hf_transfer.modalities.image import predict_images

        predictions = predict_images(model, tokenizer, texts)  # the inputs are image file paths
    else:
        predictions = predict_texts(model, tokenizer, texts, settings["max_seq_length"])
    for prediction in predictions:
        print(json.dumps(prediction))


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="hf-transfer", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    train_parser = commands.add_parser("train", help="run a recipe: hf-transfer train sentiment --config FILE",
                                       add_help=False)
    train_parser.add_argument("recipe")
    commands.add_parser("recipes", help="list recipes and their configs")
    evaluate_parser = commands.add_parser("evaluate", help="score a trained folder on a labelled file")
    evaluate_parser.add_argument("output_dir")
    evaluate_parser.add_argument("--test_file", required=True)
    evaluate_parser.add_argument("--text_column")
    evaluate_parser.add_argument("--image_column", help="for an image model: the column of image paths")
    evaluate_parser.add_argument("--label_column")
    evaluate_parser.add_argument("--report_dir", help="where the report goes (default OUTPUT_DIR/evaluation)")
    predict_parser = commands.add_parser("predict", help="classify texts (image files, for an image model) with a "
                                                         "trained folder")
    predict_parser.add_argument("output_dir")
    predict_parser.add_argument("texts", nargs="*")
    predict_parser.add_argument("--file", help="a text file, one input per line")
    push_parser = commands.add_parser("push", help="upload a trained folder (model, card, report) to the Hub")
    push_parser.add_argument("output_dir")
    push_parser.add_argument("--repo_id", required=True, help="user/name (created if missing)")
    push_parser.add_argument("--private", action="store_true", help="create the repo as private")
    push_parser.add_argument("--revision", help="branch to push to (created if missing)")
    push_parser.add_argument("--token", help="default: HF_TOKEN or your login (better: a flag lands in shell history)")
    push_parser.add_argument("--merge_adapter", action="store_true", help="push LoRA merged into the base weights")
    merge_parser = commands.add_parser("merge", help="fold a LoRA folder into a plain transformers model")
    merge_parser.add_argument("output_dir")
    merge_parser.add_argument("--out", required=True, help="folder for the merged model")
    return parser


def main(argv: list[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    parser = build_parser()
    args, rest = parser.parse_known_args(argv)
    if args.command != "train" and rest:
        parser.error(f"unrecognized arguments: {' '.join(rest)}")
    try:
        if args.command == "train":
            train(args.recipe, rest)
        elif args.command == "recipes":
            list_recipes()
        elif args.command == "evaluate":
            from hf_transfer.inference import evaluate_folder

            report_dir = args.report_dir or str(Path(args.output_dir) / "evaluation")
            results = evaluate_folder(args.output_dir, args.test_file, report_dir, args.text_column, args.label_column,
                                      image_column=args.image_column)
            print(json.dumps(results, indent=2))
            print(f"Report: {Path(report_dir) / 'eval_report.md'}")
        elif args.command == "predict":
            predict(args.output_dir, args.texts, args.file)
        elif args.command == "push":
            from hf_transfer.hub import push_folder

            print(push_folder(args.output_dir, args.repo_id, private=args.private, revision=args.revision,
                              token=args.token, merge_adapter=args.merge_adapter))
        elif args.command == "merge":
            from hf_transfer.merge import merge_adapter

            print(f"Merged model: {merge_adapter(args.output_dir, args.out)}")
    except UsageError as error:
        sys.exit(f"error: {error}")
