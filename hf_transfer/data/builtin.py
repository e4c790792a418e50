"""`builtin:NAME` data sets shipped inside hf_transfer (`hf_transfer/data/files/`), for the demo and the tests."""

from importlib import resources

from hf_transfer.config import BUILTIN_PREFIX as PREFIX
from hf_transfer.config import UsageError

# name -> the splits shipped, each a CSV file
DATASETS = {
    "sentiment_demo": ("train", "test"),
}


def resolve_dataset(name: str, config: str | None) -> tuple[str, str | None, dict[str, str]]:
    """Return (Hub name, config, {split: local file}); the files are filled for built-in data sets only."""
    if not name.startswith(PREFIX):
        return name, config, {}
    key = name[len(PREFIX):]
    if key not in DATASETS:
        raise UsageError(f"unknown built-in data set {name!r}; built-in data sets: "
                         f"{', '.join(PREFIX + d for d in DATASETS)}")
    folder = resources.files("hf_transfer.data.files") / key
    return name, None, {split: str(folder / f"{split}.csv") for split in DATASETS[key]}
