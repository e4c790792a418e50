"""`hf-transfer rank`: which checkpoint, and which of its layers, suits your labelled data? Forward passes only.

    hf-transfer rank --models builtin:all-MiniLM-L6-v2 builtin:all-MiniLM-L6-v2@3 random:builtin:all-MiniLM-L6-v2 \\
        --train_file train.csv --test_file test.csv --output_dir rank

A candidate is `[random:]MODEL[@LAYER]`: MODEL is a Hub id, a local folder or `builtin:NAME`; `random:` builds the
same architecture with seeded random weights, a control that the pretrained weights should beat; `@LAYER` scores
that hidden state (0 = the embeddings) instead of the model's final output. `--layers all` (or a list) scores those
layers of every candidate named without one. Each candidate is scored on the training data (LogME, H-score,
regularised H-score) and by k-NN and linear-probe accuracy on a validation split, or when there is none on a
stratified held-out part of the training data (--validation_split_percentage, 25 here). With a test split, a linear
probe fitted on all the training data is also scored on it, and Kendall's tau says how well each score ordered them.

Writes OUTPUT_DIR/rank.json, rank.png and features/ (the cache: a rerun, or one with more candidates or layers,
runs the models only on what is new).
"""

import re
import sys
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
from accelerate import Accelerator
from scipy.stats import kendalltau
from torch.utils.data import DataLoader
from transformers import AutoConfig, HfArgumentParser, PreTrainedModel

from hf_transfer.config import DataArgs, ModelArgs, UsageError, _check_choice, _check_positive
from hf_transfer.data.splits import LabelledSplits, load_labelled_splits
from hf_transfer.evaluation.report import plt, save_figure
from hf_transfer.io import atomic_write_json
from hf_transfer.modalities.audio import (
    AUDIO_LAYOUT,
    AudioArgs,
    crop,
    load_feature_extractor,
    prepare_audio_splits,
    read_audio,
)
from hf_transfer.modalities.image import (
    IMAGE_LAYOUT,
    image_collator,
    image_splits,
    load_image_processor,
    processor_transform,
)
from hf_transfer.modalities.text import load_tokenizer, text_collator, text_columns, tokenize_splits
from hf_transfer.modalities.whisper_inputs import fit_whisper_window, is_whisper
from hf_transfer.models.builtin import resolve_model
from hf_transfer.models.loading import check_model_folder
from hf_transfer.models.pooling import POOLINGS
from hf_transfer.selection import embeddings, transferability
from hf_transfer.tasks import classification_task

RANDOM_PREFIX = "random:"
TASKS = ("text-classification", "image-classification", "audio-classification")
# (key, column title, what it measures); all higher-is-better.
SCORES = (
    ("logme", "LogME", "LogME (You et al. 2021)"),
    ("h_score", "H", "H-score (Bao et al. 2019)"),
    ("regularized_h_score", "reg. H", "H-score, Ledoit-Wolf shrinkage (Ibrahim et al. 2022)"),
    ("knn_accuracy", "k-NN acc", "k-NN accuracy, held-out part"),
    ("probe_accuracy", "probe acc", "linear-probe accuracy, held-out part"),
)
TEST_SCORE = "test_probe_accuracy"


@dataclass
class RankArgs:
    models: list[str] | None = field(
        default=None,
        metadata={"help": "Candidates, each `[random:]MODEL[@LAYER]`: a Hub id, folder or builtin:NAME; `random:` "
                          "= the same architecture with random weights (a control); `@LAYER` = that hidden state "
                          "(0 = embeddings) instead of the final output."},
    )
    layers: list[str] | None = field(
        default=None,
        metadata={"help": "`all`, or layer numbers: score these hidden states of every candidate named without @."},
    )
    pooling: list[str] = field(
        default_factory=lambda: ["mean"],
        metadata={"help": "mean (over real tokens or frames) and/or cls (the first position): each candidate is "
                          "scored with each. CNN feature maps are always averaged over space."},
    )
    task: str | None = field(
        default=None, metadata={"help": f"{' | '.join(TASKS)}; default: from the candidates' configs."}
    )
    image_column: str | None = field(default=None, metadata={"help": "Images: the column of paths (guessed)."})
    audio_column: str | None = field(default=None, metadata={"help": "Audio: the column of paths (guessed)."})
    max_duration_seconds: float = field(default=1.0, metadata={"help": "Audio: longer clips keep their centre."})
    knn_neighbours: int = field(default=10, metadata={"help": "k of the k-NN classifier (cosine distance)."})
    rank_by: str = field(
        default="logme", metadata={"help": f"Score that orders the table: {', '.join(s[0] for s in SCORES)}."}
    )
    batch_size: int = field(default=64, metadata={"help": "Examples per forward pass."})
    output_dir: str = field(default="outputs/rank", metadata={"help": "Where rank.json, rank.png and the cache go."})
    seed: int = field(default=42, metadata={"help": "Seed for random-init controls, the held-out part and subsets."})

    def __post_init__(self):
        if not self.models:
            raise UsageError("give the candidates to rank: --models MODEL [MODEL ...]")
        for pooling in self.pooling:
            _check_choice("pooling", pooling, POOLINGS)
        if self.task is not None:
            _check_choice("task", self.task, TASKS)
        _check_choice("rank_by", self.rank_by, tuple(s[0] for s in SCORES))
        for name in ("knn_neighbours", "batch_size", "max_duration_seconds"):
            _check_positive(name, getattr(self, name))
        if self.layers and self.layers != ["all"] and not all(layer.isdigit() for layer in self.layers):
            raise UsageError(f"--layers takes `all` or layer numbers; got {' '.join(self.layers)}")


@dataclass(frozen=True)
class Candidate:
    """One backbone: the model to load and whether its weights are random. Its rows are layers and poolings."""

    model: str  # as given: Hub id, folder or builtin:NAME
    random_init: bool
    path: str  # what transformers loads

    @property
    def name(self) -> str:
        return (RANDOM_PREFIX if self.random_init else "") + self.model


def parse_candidate(spelled: str) -> tuple[str, bool, int | None]:
    """`[random:]MODEL[@LAYER]` -> (MODEL, random weights?, layer or None for the final output)."""
    random_init = spelled.startswith(RANDOM_PREFIX)
    model = spelled[len(RANDOM_PREFIX):] if random_init else spelled
    layer = None
    if "@" in model:
        model, _, suffix = model.rpartition("@")
        if not suffix.isdigit():
            raise UsageError(f"candidate {spelled!r}: the part after @ must be a layer number, got {suffix!r}")
        layer = int(suffix)
    if not model:
        raise UsageError(f"candidate {spelled!r} names no model")
    return model, random_init, layer


def resolve_candidates(args: RankArgs) -> tuple[dict[Candidate, list], str]:
    """Check every candidate before any data is read or model run: {candidate: its layers}, and the task.

    A layer is an int or None (the final output); `all` is expanded once the model's layers are counted.
    """
    wanted: dict[Candidate, list] = {}
    configs = {}
    for spelled in args.models:
        model, random_init, layer = parse_candidate(spelled)
        path = resolve_model(model)[0]
        check_model_folder(path, "models", needs_weights=not random_init)
        if path not in configs:
            try:
                configs[path] = AutoConfig.from_pretrained(path)
            except (OSError, ValueError) as error:
                raise UsageError(f"candidate {spelled!r}: could not load a model config from {path!r}: {error}"
                                 ) from None
        limit = getattr(configs[path], "num_hidden_layers", None)
        if layer is not None and limit is not None and layer > limit:
            raise UsageError(f"candidate {spelled!r}: {model} has layers 0 (embeddings) to {limit}; got {layer}")
        layers = [layer] if layer is not None else (
            ["all"] if args.layers == ["all"] else [int(x) for x in args.layers] if args.layers else [None])
        candidate = Candidate(model, random_init, path)
        wanted.setdefault(candidate, [])
        wanted[candidate] += [x for x in layers if x not in wanted[candidate]]
    tasks = {path: classification_task(config) for path, config in configs.items()}
    if args.task:
        return wanted, args.task
    found = set(tasks.values())
    if None in found:
        unknown = next(path for path, task in tasks.items() if task is None)
        raise UsageError(f"can't tell whether {unknown} reads text, images or audio "
                         f"(model type {configs[unknown].model_type!r}); give --task")
    if len(found) > 1:
        raise UsageError("the candidates read different inputs (" + ", ".join(
            f"{path}: {task}" for path, task in tasks.items()) + "); rank candidates of one modality at a time")
    return wanted, found.pop()


# --- data and batches --------------------------------------------------------------------------------------------
@dataclass
class RankData:
    labelled: LabelledSplits  # train (and test): the modality's inputs and `labels`
    inputs: list[str]  # the columns that hold the inputs, hashed into the cache key


def load_rank_data(args: RankArgs, data: DataArgs, task: str, first_path: str,
                   add_splits: Callable[[LabelledSplits], LabelledSplits] | None = None) -> RankData:
    """The training data (and a test split when given, and what `add_splits` adds: `hf-transfer shift`'s target
    data), with every column and file checked before any forward pass."""
    layout = {"image-classification": IMAGE_LAYOUT, "audio-classification": AUDIO_LAYOUT}.get(task)
    # Scores use all the training data; k-NN and the probe are checked on a given validation split, else on a part
    # of the training data held out later (after --max_train_samples, so a subset is all that runs the models).
    labelled = load_labelled_splits(data, args.seed, layout=layout, carve_validation=False)
    if add_splits:
        labelled = add_splits(labelled)
    if task == "text-classification":
        return RankData(labelled, [c for c in text_columns(labelled, data) if c])
    if task == "image-classification":
        prepared = LabelledSplits(image_splits(labelled, data, args.image_column), labelled.label_names,
                                  labelled.sources)
        return RankData(prepared, ["image"])
    # Every clip is decoded once here to check it; the rate only sets the lengths that nothing here uses.
    rate = load_feature_extractor(ModelArgs(model_name_or_path=first_path), first_path).sampling_rate
    audio = AudioArgs(audio_column=args.audio_column, max_duration_seconds=args.max_duration_seconds)
    prepared, column, _ = prepare_audio_splits(labelled, data, audio, rate)
    return RankData(prepared, [column])


def audio_collator(feature_extractor, column: str, max_duration_seconds: float):
    """Centre-cropped clips, padded to the batch's longest; the padding mask goes to the model only if it takes one."""
    rate = feature_extractor.sampling_rate
    max_samples = round(max_duration_seconds * rate)
    # Whisper's encoder takes exactly its window of log-mel frames (`n_samples`); its feature extractor pads to that.
    padding = "max_length" if hasattr(feature_extractor, "n_samples") else "longest"

    def collate(examples: list[dict]) -> dict:
        waves = [crop(read_audio(example[column], rate), max_samples) for example in examples]
        batch = feature_extractor(waves, sampling_rate=rate, padding=padding, return_attention_mask=True,
                                  return_tensors="pt")
        mask = batch.pop("attention_mask")
        return {**batch, "attention_mask" if feature_extractor.return_attention_mask else "padding_mask": mask}

    return collate


def feature_loaders(candidate: Candidate, model: PreTrainedModel, task: str, data: RankData, args: RankArgs,
                    data_args: DataArgs) -> dict[str, DataLoader]:
    """Each split's batches as this candidate's tokenizer, image processor or feature extractor prepares them
    (a Whisper `model`'s input window is cropped to match)."""
    model_args, splits = ModelArgs(model_name_or_path=candidate.path), data.labelled.splits
    if task == "text-classification":
        tokenizer = load_tokenizer(model_args, candidate.path)
        tokenized = tokenize_splits(data.labelled, data_args, tokenizer)
        return {split: DataLoader(tokenized[split], batch_size=args.batch_size,
                                  collate_fn=text_collator(tokenizer, None)) for split in splits}
    if task == "image-classification":
        transform = processor_transform(load_image_processor(model_args, candidate.path, None))
        return {split: DataLoader(dataset, batch_size=args.batch_size,
                                  collate_fn=image_collator(transform, data.labelled.sources[split]))
                for split, dataset in splits.items()}
    feature_extractor = load_feature_extractor(model_args, candidate.path)
    if is_whisper(model.config):  # the audio recipe's short window: 30 s of padding costs ~15x, and the mean pools it
        fit_whisper_window(model, feature_extractor, args.max_duration_seconds, short_inputs=True)
    collate = audio_collator(feature_extractor, data.inputs[0], args.max_duration_seconds)
    return {split: DataLoader(dataset, batch_size=args.batch_size, collate_fn=collate)
            for split, dataset in splits.items()}


# --- features, scores, outputs -----------------------------------------------------------------------------------
def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9.-]+", "_", text).strip("_")[-60:]


def candidate_features(accelerator: Accelerator, candidate: Candidate, pooling: str, task: str, data: RankData,
                       args: RankArgs, data_args: DataArgs) -> dict[str, embeddings.PooledFeatures]:
    """Each split's pooled features at every layer: read from the cache, or from one forward pass that fills it."""
    preprocessing = {"text-classification": data_args.max_seq_length,
                     "audio-classification": args.max_duration_seconds}.get(task)
    files = embeddings.folder_signature(candidate.path)
    found, paths = {}, {}
    for split, dataset in data.labelled.splits.items():
        key = embeddings.cache_key(model=candidate.path, files=files, random_init=candidate.random_init,
                                   seed=args.seed if candidate.random_init else None, pooling=pooling,
                                   preprocessing=preprocessing,
                                   data=[embeddings.data_fingerprint(dataset[column]) for column in data.inputs])
        # Named by content, not split: a validation or test file that repeats another split shares its features.
        paths[split] = Path(args.output_dir) / "features" / f"{_slug(candidate.name)}-{pooling}-{key}.npz"
        cached = embeddings.load_cached(paths[split])
        if cached is not None:
            found[split] = cached
    missing = [split for split in paths if split not in found]
    if missing:
        model = embeddings.load_backbone(candidate.path, candidate.random_init, args.seed)
        loaders = feature_loaders(candidate, model, task, data, args, data_args)
        model = model.to(accelerator.device)
        for split in missing:
            accelerator.print(f"{candidate.name} ({pooling}): features of {len(loaders[split].dataset)} {split} "
                              "examples")
            found[split] = embeddings.pooled_features(accelerator, model, accelerator.prepare(loaders[split]), pooling)
            if accelerator.is_main_process:
                embeddings.save_cached(paths[split], found[split])
    return found


def held_out_part(labels: dict[str, np.ndarray], data_args: DataArgs, source: str,
                  seed: int) -> tuple[np.ndarray, np.ndarray] | None:
    """Indices (fit, held out) of the training data for k-NN and the probe; None when a validation split is given."""
    if "validation" in labels:
        return None
    try:
        return transferability.held_out_split(labels["train"], data_args.validation_split_percentage / 100, seed)
    except ValueError as error:
        raise UsageError(f"{source}: can't hold out a stratified {data_args.validation_split_percentage:g}% for k-NN "
                         f"and the probe ({error}); give more examples of each class, --validation_file, or another "
                         "--validation_split_percentage") from None


def score_features(features: dict[str, np.ndarray], labels: dict[str, np.ndarray],
                   held_out: tuple[np.ndarray, np.ndarray] | None, neighbours: int) -> dict[str, float]:
    # float64: a randomly initialised deep CNN's features shrink layer by layer below float32's smallest normal
    # number, where standardising them divides by zero.
    features = {split: np.asarray(split_features, dtype=np.float64) for split, split_features in features.items()}
    train, y = features["train"], labels["train"]
    if held_out is None:
        fit_x, fit_y, out_x, out_y = train, y, features["validation"], labels["validation"]
    else:
        fit, out = held_out
        fit_x, fit_y, out_x, out_y = train[fit], y[fit], train[out], y[out]
    scores = {
        "logme": transferability.logme(train, y),
        "h_score": transferability.h_score(train, y),
        "regularized_h_score": transferability.regularized_h_score(train, y),
        "knn_accuracy": transferability.knn_accuracy(fit_x, fit_y, out_x, out_y, neighbours),
        "probe_accuracy": transferability.linear_probe_accuracy(fit_x, fit_y, out_x, out_y),
    }
    if "test" in features:
        scores[TEST_SCORE] = transferability.linear_probe_accuracy(train, y, features["test"], labels["test"])
    return scores


def kendall_taus(rows: list[dict]) -> dict[str, float | None]:
    """Kendall's tau-b between each score and the test probe accuracy over the candidates (None where undefined)."""
    accuracies = [row[TEST_SCORE] for row in rows]
    taus = {}
    for key, _, _ in SCORES:
        tau = kendalltau([row[key] for row in rows], accuracies).statistic
        taus[key] = None if np.isnan(tau) else round(float(tau), 4)
    return taus


def format_table(rows: list[dict]) -> str:
    columns = [(key, title) for key, title, _ in SCORES] + ([(TEST_SCORE, "test probe acc")] if TEST_SCORE in rows[0]
                                                            else [])
    width = max(len("candidate"), *(len(row["candidate"]) for row in rows))
    lines = [f"{'rank':>4}  {'candidate':<{width}}  {'pooling':<7}" + "".join(f"  {t:>{max(len(t), 8)}}"
                                                                             for _, t in columns)]
    for rank, row in enumerate(rows, 1):
        lines.append(f"{rank:>4}  {row['candidate']:<{width}}  {row['pooling']:<7}" + "".join(
            f"  {row[key]:>{max(len(t), 8)}.4f}" for key, t in columns))
    return "\n".join(lines)


def constant_score_notes(rows: list[dict], num_classes: int) -> list[str]:
    """A sentence for each score that has one value for every candidate: that column ranks nothing, and a table of
    equal numbers does not say so."""
    notes = []
    for key, title, _ in SCORES:
        values = {row[key] for row in rows}
        if len(rows) < 2 or len(values) > 1:
            continue
        value = values.pop()
        note = f"{title} is {value:.4f} for every candidate: it does not tell them apart here"
        if key == "h_score" and np.isclose(value, num_classes - 1):
            note += (" (its ceiling, classes - 1, which H-score reaches when the features have as many dimensions "
                     "as there are training examples, or more; reg. H shrinks the covariance and still ranks them)")
        notes.append(note + ".")
    return notes


def plot_scores(rows: list[dict], path: Path) -> None:
    """One panel of dots per score, candidates in ranking order; random-init controls in grey. Dots, not bars: a bar
    from 0 makes the lowest negative LogME look the largest."""
    columns = [(key, title) for key, title, _ in SCORES] + ([(TEST_SCORE, "test probe acc")] if TEST_SCORE in rows[0]
                                                            else [])
    labels = [f"{row['candidate']} ({row['pooling']})" for row in rows]
    colours = ["#9e9e9e" if row["random_init"] else "#1f77b4" for row in rows]
    figure, axes = plt.subplots(1, len(columns), figsize=(2.4 * len(columns) + 3, 0.35 * len(rows) + 1.5),
                                sharey=True)
    for axis, (key, title) in zip(axes, columns):
        values = [row[key] for row in rows]
        axis.scatter(values, range(len(rows)), color=colours, zorder=2)
        margin = 0.1 * (max(values) - min(values)) or 0.05 * max(abs(values[0]), 1)
        axis.set_xlim(min(values) - margin, max(values) + margin)
        axis.set_title(title)
        axis.grid(alpha=0.3)
    axes[0].set_yticks(range(len(rows)), labels)
    axes[0].invert_yaxis()  # best at the top
    save_figure(figure, path)


def rank(args: RankArgs, data_args: DataArgs) -> dict:
    """Score every candidate; write rank.json and rank.png; return what rank.json holds."""
    wanted, task = resolve_candidates(args)
    data = load_rank_data(args, data_args, task, next(iter(wanted)).path)
    labels = {split: np.asarray(dataset["labels"]) for split, dataset in data.labelled.splits.items()}
    held_out = held_out_part(labels, data_args, data.labelled.sources["train"], args.seed)

    accelerator = Accelerator()
    rows = []
    for candidate, layers in wanted.items():
        for pooling in args.pooling:
            features = candidate_features(accelerator, candidate, pooling, task, data, args, data_args)
            count = len(features["train"].layers)
            expanded = [x for layer in layers for x in (range(count) if layer == "all" else [layer])]
            for layer in dict.fromkeys(expanded):
                if layer is not None and layer >= count:
                    raise UsageError(f"{candidate.model} has layers 0 (embeddings) to {count - 1}; got {layer}")
                scores = score_features({split: f.layer(layer) for split, f in features.items()}, labels, held_out,
                                        args.knn_neighbours)
                rows.append({"candidate": candidate.name + ("" if layer is None else f"@{layer}"),
                             "model": candidate.model, "layer": layer, "random_init": candidate.random_init,
                             "pooling": pooling, **{k: round(v, 6) for k, v in scores.items()}})
    rows.sort(key=lambda row: -row[args.rank_by])
    results = {
        "task": task,
        "rank_by": args.rank_by,
        "scores": {key: what for key, _, what in SCORES},
        "examples": {"train": len(labels["train"]),
                     "held_out": len(labels["validation"]) if held_out is None else len(held_out[1]),
                     **({"test": len(labels["test"])} if "test" in labels else {})},
        "label_names": data.labelled.label_names,
        "candidates": rows,
        "settings": {**asdict(args), **{k: v for k, v in asdict(data_args).items() if v is not None}},
    }
    if "test" in labels:
        results["scores"][TEST_SCORE] = "linear-probe accuracy on the test split, probe fitted on all training data"
        results["kendall_tau"] = kendall_taus(rows)
    results["notes"] = constant_score_notes(rows, len(data.labelled.label_names))
    if accelerator.is_main_process:
        output = Path(args.output_dir)
        atomic_write_json(output / "rank.json", results)
        plot_scores(rows, output / "rank.png")
        print(format_table(rows))
        if "kendall_tau" in results:
            print("Kendall's tau with the test probe accuracy: " + ", ".join(
                f"{title} {results['kendall_tau'][key]}" for key, title, _ in SCORES))
        for note in results["notes"]:
            print(note)
        print(f"Saved {output / 'rank.json'} and {output / 'rank.png'}")
    return results


def main(argv: list[str] | None = None) -> dict:
    parser = HfArgumentParser((RankArgs, DataArgs))
    parser.set_defaults(validation_split_percentage=25.0)  # k-NN and the probe: a quarter, not training's tenth
    args, data_args, unknown = parser.parse_args_into_dataclasses(
        args=sys.argv[1:] if argv is None else argv, return_remaining_strings=True)
    if unknown:
        raise UsageError(f"unknown flag(s): {' '.join(unknown)}")
    return rank(args, data_args)
