"""Push a trained output folder to the Hub in one commit: model, tokenizer, card, report and plots."""

import shlex
import shutil
import tempfile
from pathlib import Path

from huggingface_hub import HfApi, ModelCard
# HTTPError: the base class of the HTTP client's own errors (refused connection, timeout) and of HfHubHTTPError;
# huggingface_hub lets network failures through unwrapped.
from huggingface_hub.errors import HfHubHTTPError, HFValidationError, HTTPError

from hf_transfer.config import UsageError
from hf_transfer.inference import read_run_config
from hf_transfer.merge import merge_adapter as merge_into

# Weights, model and tokenizer/processor configs, vocabularies, sentencepiece models.
MODEL_FILES = ["*.safetensors", "*.json", "*.txt", "*.model"]
# What a reader gets besides the model: the card, the report and its plots, the metrics, the run's settings.
REPORT_FILES = ["README.md", "eval_report.md", "all_results.json", "run_config.yaml", "*.png"]
# All of the above sits at the top of the folder. Subfolders hold checkpoints, `evaluation/` reruns, tracker
# logs and `.partial-*` saves in progress; hidden files are scratch.
IGNORE = ["*/*", ".*"]


def push_folder(output_dir: str | Path, repo_id: str, *, private: bool = False, revision: str | None = None,
                token: str | None = None, merge_adapter: bool = False, commit_message: str | None = None) -> str:
    """Upload a run's output folder to `repo_id` (created if missing) in one commit; return the repo's URL.

    `token=None` lets huggingface_hub find one (HF_TOKEN, then your login). The output folder is never changed.
    """
    folder = Path(output_dir)
    read_run_config(folder)  # a clear error for a folder that is not a run's output
    api = HfApi(token=token)
    with tempfile.TemporaryDirectory(prefix="hf_transfer-merged-") as scratch:
        upload_dir = _merged_copy(folder, Path(scratch)) if merge_adapter else folder
        try:
            repo_url = api.create_repo(repo_id, private=private, exist_ok=True)
            if revision:
                api.create_branch(repo_id, branch=revision, exist_ok=True)
            api.upload_folder(
                repo_id=repo_id, folder_path=upload_dir, revision=revision,
                commit_message=commit_message or f"Upload {'merged model' if merge_adapter else 'model'} "
                                                 "trained with hf_transfer",
                allow_patterns=MODEL_FILES + REPORT_FILES, ignore_patterns=IGNORE,
            )
        except HFValidationError as error:
            raise UsageError(f"--repo_id {repo_id!r} is not a valid repo id: {error}") from None
        except (HTTPError, ConnectionError) as error:
            retry = _retry_command(folder, repo_id, private, revision, merge_adapter)
            raise UsageError(f"push to {repo_id} failed ({_describe(error, api.endpoint)}). "
                             f"Nothing in {folder} was changed; retry with: {retry}") from None
    return f"{repo_url}/tree/{revision}" if revision else str(repo_url)


def _merged_copy(folder: Path, scratch: Path) -> Path:
    """The merged model, with the output's card (now naming transformers, not peft), report, plots and settings."""
    merge_into(folder, scratch)
    for pattern in REPORT_FILES:
        for path in folder.glob(pattern):
            shutil.copyfile(path, scratch / path.name)
    if (scratch / "README.md").is_file():
        card = ModelCard.load(scratch / "README.md")
        card.data.library_name = "transformers"
        card.save(scratch / "README.md")
    return scratch


def _describe(error: Exception, endpoint: str) -> str:
    if not isinstance(error, HfHubHTTPError):
        return f"could not reach {endpoint}: {error}"
    status = error.response.status_code
    text = f"HTTP {status}: {error.server_message or str(error).splitlines()[0]}"
    if status in (401, 403):
        text += "; check that your token (--token, HF_TOKEN or `hf auth login`) may write to this repo"
    return text


def _retry_command(folder: Path, repo_id: str, private: bool, revision: str | None, merge_adapter: bool) -> str:
    """The same push as a command line. The token stays out of it: error messages end up in logs."""
    parts = ["hf-transfer", "push", str(folder), "--repo_id", repo_id]
    if private:
        parts.append("--private")
    if revision:
        parts += ["--revision", revision]
    if merge_adapter:
        parts.append("--merge_adapter")
    return shlex.join(parts)
