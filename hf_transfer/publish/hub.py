"""Push a trained output folder to the Hub in one commit: model, tokenizer, card, report and plots."""

import shlex
import tempfile
from fnmatch import fnmatch
from pathlib import Path

from huggingface_hub import CommitOperationAdd, HfApi

# HTTPError: the base class of the HTTP client's own errors (refused connection, timeout) and of HfHubHTTPError;
# huggingface_hub lets network failures through unwrapped.
from huggingface_hub.errors import HfHubHTTPError, HFValidationError, HTTPError, LocalTokenNotFoundError

from hf_transfer.config import UsageError
from hf_transfer.evaluation.inference import read_run_config
from hf_transfer.publish.cards import CONTEXT_FILE, retarget_card
from hf_transfer.publish.merge import POOLED_HEAD_CODE
from hf_transfer.publish.merge import merge_adapter as merge_into
from hf_transfer.publish.space import space_files

# Weights, model and tokenizer/processor configs, vocabularies, sentencepiece models.
# A merged pooled model's head is built by its own code (merge.POOLED_HEAD_CODE), named in its config.
MODEL_FILES = ["*.safetensors", "*.json", "*.txt", "*.model", POOLED_HEAD_CODE.name]
# What a reader gets besides the model and the card: the report and its plots, the metrics, the run's settings.
REPORT_FILES = ["eval_report.md", "all_results.json", "train_log.json", "run_config.yaml", "*.png"]


def push_folder(output_dir: str | Path, repo_id: str, *, private: bool = False, revision: str | None = None,
                token: str | None = None, merge_adapter: bool = False, commit_message: str | None = None,
                space: str | None = None) -> str:
    """Upload a run's output folder to `repo_id` (created if missing) in one commit; return the repo's URL.

    `token=None` lets huggingface_hub find one (HF_TOKEN, then your login). The output folder is never changed.
    `space`: the Space that demos the model (`push_space`), linked from the card.
    """
    folder = Path(output_dir)
    read_run_config(folder)  # a clear error for a folder that is not a run's output
    if space and revision:
        raise UsageError("--space demos the model on its main branch: push it without --revision")
    api = HfApi(token=token)
    with tempfile.TemporaryDirectory(prefix="hf_transfer-merged-") as scratch:
        model_dir = Path(scratch) if merge_adapter else folder
        if merge_adapter:
            merge_into(folder, model_dir)
        # The card is re-rendered to name this repo; everything else goes up exactly as it is on disk.
        card = retarget_card(folder, repo_id, merged=merge_adapter, space=space).encode()
        files = {path.name: path for path in _files(folder, REPORT_FILES) + _files(model_dir, MODEL_FILES)}
        operations = [CommitOperationAdd(path_in_repo="README.md", path_or_fileobj=card)]
        operations += [CommitOperationAdd(path_in_repo=name, path_or_fileobj=str(path)) for name, path in files.items()]
        try:
            repo_url = api.create_repo(repo_id, private=private, exist_ok=True)
            if revision:
                api.create_branch(repo_id, branch=revision, exist_ok=True)
            api.create_commit(
                repo_id, operations, revision=revision,
                commit_message=commit_message or f"Upload {'merged model' if merge_adapter else 'model'} "
                                                 "trained with hf_transfer",
            )
        except HFValidationError as error:
            raise UsageError(f"--repo_id {repo_id!r} is not a valid repo id: {error}") from None
        except (HTTPError, ConnectionError) as error:
            retry = _retry_command(folder, repo_id, private, revision, merge_adapter, space)
            raise UsageError(f"push to {repo_id} failed ({_describe(error, api.endpoint)}). "
                             f"Nothing in {folder} was changed; retry with: {retry}") from None
    return f"{repo_url}/tree/{revision}" if revision else str(repo_url)


def check_token(token: str | None) -> None:
    """Before training: the Hub knows the token a push would use (`token`, else HF_TOKEN, else the login) and it may
    write, so that a run's end is not a refused push."""
    api = HfApi(token=token)
    try:
        role = api.whoami().get("auth", {}).get("accessToken", {}).get("role")
    except LocalTokenNotFoundError:
        raise UsageError("--push_to_hub: no Hub token found; pass --hub_token, set HF_TOKEN or run `hf auth login`"
                         ) from None
    except (HTTPError, ConnectionError) as error:
        raise UsageError(f"--push_to_hub: the Hub refused the token before training ({_describe(error, api.endpoint)})"
                         ) from None
    if role == "read":
        raise UsageError("--push_to_hub: the Hub token is read-only; use one that may write (hf.co/settings/tokens)")


def _files(folder: Path, patterns: list[str]) -> list[Path]:
    """Top-level files of `folder` that match `patterns`: subfolders hold checkpoints, `evaluation/` reruns and
    tracker logs, hidden files are scratch, and the card is uploaded re-rendered."""
    return sorted(path for path in folder.iterdir()
                  if path.is_file() and not path.name.startswith(".") and path.name not in ("README.md", CONTEXT_FILE)
                  and any(fnmatch(path.name, pattern) for pattern in patterns))


def _describe(error: Exception, endpoint: str) -> str:
    if not isinstance(error, HfHubHTTPError):
        return f"could not reach {endpoint}: {error}"
    status = error.response.status_code
    text = f"HTTP {status}: {error.server_message or str(error).splitlines()[0]}"
    if status in (401, 403):
        text += "; check that your token (--token, HF_TOKEN or `hf auth login`) may write to this repo"
    return text


def push_space(space: str, repo_id: str, *, private: bool = False, token: str | None = None) -> str:
    """Create (or update) the Gradio Space `space` that demos the model pushed to `repo_id`; return its URL."""
    api = HfApi(token=token)
    operations = [CommitOperationAdd(path_in_repo=path, path_or_fileobj=text.encode())
                  for path, text in space_files(repo_id, space, private).items()]
    try:
        url = api.create_repo(space, repo_type="space", space_sdk="gradio", private=private, exist_ok=True)
        api.create_commit(space, operations, repo_type="space", commit_message=f"Demo of {repo_id} (hf_transfer)")
    except HFValidationError as error:
        raise UsageError(f"--space {space!r} is not a valid repo id: {error}") from None
    except (HTTPError, ConnectionError) as error:
        raise UsageError(f"the model is on the Hub, but creating the Space {space} failed "
                         f"({_describe(error, api.endpoint)}); retry the push") from None
    return str(url)


def _retry_command(folder: Path, repo_id: str, private: bool, revision: str | None, merge_adapter: bool,
                   space: str | None) -> str:
    """The same push as a command line. The token stays out of it: error messages end up in logs."""
    parts = ["hf-transfer", "push", str(folder), "--repo_id", repo_id]
    if private:
        parts.append("--private")
    if revision:
        parts += ["--revision", revision]
    if merge_adapter:
        parts.append("--merge_adapter")
    if space:
        parts += ["--space", space]
    return shlex.join(parts)
