"""Fold a LoRA output's adapter into its base weights: a plain transformers model that runs without peft."""

from pathlib import Path

from huggingface_hub import snapshot_download
from huggingface_hub.errors import HfHubHTTPError, LocalEntryNotFoundError

from hf_transfer.config import UsageError
from hf_transfer.evaluation.inference import load_trained
from hf_transfer.io import atomic_save_files
from hf_transfer.training.run_folder import refuse_run_folder


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
    """Write the merged model, its config (with the label names) and the tokenizer to `out_dir`. `output_dir` may be
    a Hub repo id the output was pushed to."""
    folder, out = trained_folder(output_dir), Path(out_dir)
    if not (folder / "adapter_config.json").is_file():
        raise UsageError(f"{output_dir} holds no LoRA adapter (no adapter_config.json): only LoRA outputs need a merge")
    refuse_run_folder(out, "--out")
    downloaded = folder != Path(output_dir)
    model, tokenizer, _ = load_trained(folder, require_finished=not downloaded)
    # The base was loaded with the output's config.json, so the merged config keeps id2label/label2id.
    merged = model.merge_and_unload()

    def save(scratch: Path) -> None:
        merged.save_pretrained(scratch)
        tokenizer.save_pretrained(scratch)

    atomic_save_files(out, save)
    return out
