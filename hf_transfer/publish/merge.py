"""Fold a LoRA output's adapter into its base weights: a plain transformers model that runs without peft."""

import shutil
from pathlib import Path

from huggingface_hub import snapshot_download
from huggingface_hub.errors import HfHubHTTPError, LocalEntryNotFoundError

from hf_transfer.config import UsageError
from hf_transfer.evaluation.inference import load_trained
from hf_transfer.io import atomic_save_files
from hf_transfer.models.heads import MultiHeadModel
from hf_transfer.publish import pooled_head_model
from hf_transfer.tasks import task_for
from hf_transfer.training.run_folder import record_derived, refuse_run_folder

# transformers builds no head on pooled features (--pooling mean): this file, beside the merged model, is that head.
POOLED_HEAD_CODE = Path(pooled_head_model.__file__)
POOLED_HEAD_CLASS = f"{POOLED_HEAD_CODE.stem}.{pooled_head_model.PooledHeadClassifier.__name__}"


def trained_folder(output_dir_or_repo: str | Path) -> Path:
    """A trained output folder, or a Hub repo id (`user/name`, as the adapter card names it) downloaded first."""
    folder = Path(output_dir_or_repo)
    if folder.is_dir() or str(output_dir_or_repo).count("/") != 1:
        return folder
    try:
        return Path(snapshot_download(str(output_dir_or_repo)))
    except (HfHubHTTPError, LocalEntryNotFoundError) as error:
        raise UsageError(f"{output_dir_or_repo} is not a folder here, and downloading it as a Hub repo failed: "
                         f"{error}") from None


def merge_adapter(output_dir: str | Path, out_dir: str | Path) -> Path:
    """Write the merged model, its config (with the label names), the tokenizer and the run's settings to `out_dir`,
    with a finished record: `predict` and `evaluate` take it as they take the run's folder. A one-head pooled model
    (`--pooling mean`) keeps its head (heads.json, heads.safetensors) and gets the code that builds it in
    `pipeline(..., trust_remote_code=True)`. `output_dir` may be a Hub repo id the output was pushed to."""
    folder, out = trained_folder(output_dir), Path(out_dir)
    if not (folder / "adapter_config.json").is_file():
        raise UsageError(f"{output_dir} holds no LoRA adapter (no adapter_config.json): only LoRA outputs need a merge")
    refuse_run_folder(out, "--out")
    downloaded = folder != Path(output_dir)
    model, tokenizer, settings = load_trained(folder, require_finished=not downloaded)
    # The base was loaded with the output's config.json, so the merged config keeps id2label/label2id.
    merged = model.merge_and_unload()
    pooled = isinstance(merged, MultiHeadModel) and len(merged.heads) == 1
    if pooled:
        auto_class = task_for(settings["task"], merged.config).auto_model.__name__
        merged.config.auto_map = {auto_class: POOLED_HEAD_CLASS}

    def save(scratch: Path) -> None:
        merged.save_pretrained(scratch)
        tokenizer.save_pretrained(scratch)
        shutil.copyfile(folder / "run_config.yaml", scratch / "run_config.yaml")
        if pooled:
            shutil.copyfile(POOLED_HEAD_CODE, scratch / POOLED_HEAD_CODE.name)

    record_derived(out, atomic_save_files(out, save), folder)
    return out
