"""Who owns an output folder, and whether the run in it finished.

Before a run writes anything else it records itself in `RUN_RECORD`: its fingerprint (the settings that decide
the result, and the data it read), the entries it found in the folder and keeps (`kept`: other runs nested under
it, the user's files) and `"complete": false`. Every checkpoint keeps a copy, so a resume continues only its own
run. The final write rewrites the record, last, with `"complete": true`, the sha256 of every file the run wrote
(checkpoints included) and its folders; `predict`, `evaluate`, `push`, `merge` and `compare` refuse a folder
without that, or whose files no longer match it. `--overwrite_output_dir` deletes what the record says the run
wrote (all but `kept` for a run that never finished), and nothing else.
"""

import hashlib
import json
import shlex
import shutil
from pathlib import Path

from accelerate import Accelerator
from torch import nn

from hf_transfer.config import RunConfig, TrainArgs, UsageError, save_config
from hf_transfer.data.splits import LabelledSplits
from hf_transfer.io import atomic_write_json
from hf_transfer.models.strategies import is_adapter
from hf_transfer.training.folder_lock import LOCK, check_writable

RUN_RECORD = ".hf_transfer_run.json"
# Settings that say where and how a run writes or publishes, not what it computes: a resume may change them.
# Data paths are left out too: the data part of the fingerprint names each file and checks its contents.
UNFINGERPRINTED = ("output_dir", "overwrite_output_dir", "resume_from_checkpoint", "report_to", "logging_steps",
                   "dataloader_num_workers", "verbose",
                   "save_steps", "save_total_limit", "push_to_hub", "hub_model_id", "hub_private", "hub_revision",
                   "merge_adapter", "language", "license", "base_model_id", "train_file", "validation_file",
                   "test_file", "train_dir", "validation_dir", "test_dir")


# --- room on disk -----------------------------------------------------------------------------------------------
# Beyond the weights: the scratch copy each atomic write holds beside its target, reports, plots, file-system slack.
FREE_SPACE_MARGIN = 1.5


def free_bytes(folder: Path) -> int:
    """Free bytes on the disk that holds `folder`, or would hold it once made."""
    return shutil.disk_usage(next(p for p in (folder, *folder.parents) if p.exists())).free


def check_free_space(model: nn.Module, train: TrainArgs) -> None:
    """Refuse to train when --output_dir's disk can't hold what the run writes: the best weights seen (trainable
    ones), the model at the end (only the trainable ones for an adapter) and, with --save_steps, the checkpoints
    kept (every weight and Adam's two moments per trainable one). A full disk would otherwise end the run after
    training, its weights lost."""
    trainable = sum(p.numel() * p.element_size() for p in model.parameters() if p.requires_grad)
    total = sum(p.numel() * p.element_size() for p in model.parameters())
    need = trainable + (trainable if is_adapter(model) else total)
    if train.save_steps:  # a new checkpoint is written before the oldest kept one is deleted
        need += (max(train.save_total_limit, 1) + 1) * (total + 2 * trainable)
    need *= FREE_SPACE_MARGIN
    folder = Path(train.output_dir)
    if free_bytes(folder) < need:
        raise UsageError(f"--output_dir {folder}: {_size(free_bytes(folder))} free on its disk, but this run writes "
                         f"up to {_size(need)} (weights{', checkpoints' if train.save_steps else ''} and reports); "
                         "free some space or choose another --output_dir")


def _size(count: float) -> str:
    for unit in ("B", "kB", "MB", "GB"):
        if count < 1000:
            break
        count /= 1000
    return f"{count:.3g} {unit}"


# --- checkpoints ------------------------------------------------------------------------------------------------
def checkpoint_dirs(output_dir: str | Path) -> list[Path]:
    """Periodic checkpoints, oldest first."""
    root = Path(output_dir) / "checkpoints"
    found = [p for p in root.glob("step-*") if (p / "train_state.json").is_file()]
    return sorted(found, key=lambda p: int(p.name.split("-")[1]))


def resolve_checkpoint(resume_from: str, output_dir: str | Path) -> Path:
    if resume_from == "latest":
        found = checkpoint_dirs(output_dir)
        if not found:
            raise UsageError(f"--resume_from_checkpoint latest: no checkpoint in {Path(output_dir) / 'checkpoints'}")
        return found[-1]
    path = Path(resume_from)
    if not (path / "train_state.json").is_file():
        raise UsageError(f"--resume_from_checkpoint {resume_from}: not a checkpoint folder (no train_state.json)")
    return path


def sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while block := handle.read(1 << 20):
            digest.update(block)
    return digest.hexdigest()


# --- fingerprints -----------------------------------------------------------------------------------------------
def _file_summary(path: Path) -> dict:
    # The whole file: a relabelled row at the end of a big file is another run's data (hashes ~1 GB/s).
    return {"name": path.name, "bytes": path.stat().st_size, "sha256": sha256(path)}


def _folder_summary(path: Path) -> dict:
    files = sorted(p for p in path.rglob("*") if p.is_file())
    listing = "\n".join(f"{p.relative_to(path)} {p.stat().st_size}" for p in files)
    return {"name": path.name, "files": len(files), "bytes": sum(p.stat().st_size for p in files),
            "listing_sha256": hashlib.sha256(listing.encode()).hexdigest()}


def fingerprint(run: RunConfig, data: LabelledSplits) -> dict:
    """The resolved settings (less UNFINGERPRINTED) and the data: each file's name, size and hash, each split's row
    count, the label names."""
    settings = {k: v for k, v in run.to_dict().items() if k not in UNFINGERPRINTED}
    files = {}
    for split in ("train", "validation", "test"):
        file, folder = getattr(run.data, f"{split}_file"), getattr(run.data, f"{split}_dir")
        if file:
            files[f"{split}_file"] = _file_summary(Path(file))
        if folder:
            files[f"{split}_dir"] = _folder_summary(Path(folder))
    rows = {split: len(dataset) for split, dataset in data.splits.items()}
    return {"settings": settings, "data": {"files": files, "rows": rows, "labels": data.label_names}}


def _flatten(value, prefix: str = "") -> dict:
    if isinstance(value, dict):
        flat = {}
        for key, item in value.items():
            flat.update(_flatten(item, f"{prefix}{key}."))
        return flat
    return {prefix.rstrip("."): value}


def differences(saved: dict, current: dict) -> list[str]:
    """`key: saved value -> current value` for each setting or data summary that differs."""
    old, new = _flatten(saved), _flatten(current)
    return [f"{key}: {old.get(key, '(unset)')!r} -> {new.get(key, '(unset)')!r}"
            for key in sorted(old.keys() | new.keys()) if old.get(key) != new.get(key)]


def read_record(folder: str | Path) -> dict | None:
    path = Path(folder) / RUN_RECORD
    return json.loads(path.read_text()) if path.is_file() else None


# --- starting a run ---------------------------------------------------------------------------------------------
def _check_same_run(saved: dict | None, current: dict, what: str) -> None:
    if saved is None:
        raise UsageError(f"{what} has no run fingerprint ({RUN_RECORD}), so it can't be shown to belong to this run; "
                         "start again with --overwrite_output_dir")
    changed = differences(saved["fingerprint"], current)
    if changed:
        shown = "; ".join(changed[:5]) + (f"; and {len(changed) - 5} more" if len(changed) > 5 else "")
        raise UsageError(f"{what} belongs to another run: {shown}. Resume with the settings and data it was "
                         "trained with, or start again with --overwrite_output_dir")


def _is_scratch(path: Path) -> bool:
    """Leftovers of an atomic write that was killed (io.py's `.partial-*` folders and `.NAME.*.tmp` files)."""
    return path.name.startswith(".") and (path.name.startswith(".partial-") or path.name.endswith(".tmp"))


def _holds_a_run(path: Path) -> bool:
    """Another run's folder, at any depth (a checkpoint's copy of its own run's record does not count)."""
    return path.is_dir() and not path.is_symlink() and any(record.parent.parent.name != "checkpoints"
                                                           for record in path.rglob(RUN_RECORD))


def _run_entries(folder: Path, record: dict) -> list[Path]:
    """The top-level entries an unfinished run may have written: all but those it kept, its lock and scratch
    files, and other runs' folders."""
    kept = set(record.get("kept", []))
    return [p for p in sorted(folder.iterdir()) if p.name not in kept and p.name != LOCK and not _is_scratch(p)
            and not _holds_a_run(p)]


def _delete(path: Path) -> None:
    shutil.rmtree(path) if path.is_dir() and not path.is_symlink() else path.unlink(missing_ok=True)


def _delete_run(folder: Path, record: dict) -> None:
    """Delete what the run in `folder` wrote: the files and folders its record lists, or, when it never finished,
    every entry but those it kept."""
    if record["complete"]:
        for name in record["files"]:
            (folder / name).unlink(missing_ok=True)
        for name in sorted(record.get("folders", []), key=lambda n: n.count("/"), reverse=True):
            if (folder / name).is_dir() and not any((folder / name).iterdir()):
                (folder / name).rmdir()
        (folder / RUN_RECORD).unlink()
    else:
        for path in _run_entries(folder, record):
            _delete(path)


def claim_output_dir(accelerator: Accelerator, run: RunConfig, data: LabelledSplits, recipe: str) -> None:
    """Check `--output_dir` may take this run, before training: empty, this run's own (when resuming), or emptied
    with `--overwrite_output_dir`. Then record the run in it (which tests that the folder is writable)."""
    args, folder = run.train, Path(run.train.output_dir)
    current = fingerprint(run, data)
    record = read_record(folder)
    if args.resume_from_checkpoint and args.overwrite_output_dir:
        raise UsageError("give --resume_from_checkpoint (continue the run in the folder) or --overwrite_output_dir "
                         "(delete it and start again), not both")
    check_writable(folder)
    entries = sorted(p.name for p in folder.iterdir() if not _is_scratch(p) and p.name != LOCK) if folder.is_dir() \
        else []
    if record is not None and not record["complete"] and not checkpoint_dirs(folder):
        # A run stopped before its first checkpoint left only what this function writes: nothing to keep.
        entries = [name for name in entries if name not in (RUN_RECORD, "run_config.yaml", *record.get("kept", []))]
    if args.resume_from_checkpoint:
        checkpoint = resolve_checkpoint(args.resume_from_checkpoint, folder)
        _check_same_run(read_record(checkpoint), current, f"checkpoint {checkpoint}")
        if record is not None:
            _check_same_run(record, current, f"--output_dir {folder}")
        elif set(entries) - {"checkpoints"}:
            raise UsageError(f"--output_dir {folder} holds files of another run ({', '.join(entries[:4])}); "
                             "resume into an empty folder or the run's own")
    elif entries:
        if not args.overwrite_output_dir:
            hint = " (resume it with --resume_from_checkpoint latest)" if checkpoint_dirs(folder) else ""
            raise UsageError(f"--output_dir {folder} is not empty: it holds {', '.join(entries[:4])}"
                             f"{', ...' if len(entries) > 4 else ''} from an earlier run{hint}. Pass "
                             "--overwrite_output_dir to delete that run's files and start again, or choose another "
                             "--output_dir")
        if record is None:
            raise UsageError(f"--output_dir {folder} holds files that are not an hf_transfer run's "
                             f"({', '.join(entries[:4])}), or are a run's without its record ({RUN_RECORD}); "
                             "--overwrite_output_dir only deletes what a run's record lists: choose another "
                             "--output_dir")
    accelerator.wait_for_everyone()  # every process checked before the main one changes anything
    if accelerator.is_main_process:
        kept = []
        if folder.is_dir():
            if args.overwrite_output_dir and record is not None:
                _delete_run(folder, record)
            for path in folder.iterdir():
                if _is_scratch(path):
                    _delete(path)
            if args.resume_from_checkpoint:
                kept = (record or {}).get("kept", [])
            else:
                kept = sorted(p.name for p in folder.iterdir() if p.name not in (LOCK, RUN_RECORD, "run_config.yaml"))
                if kept:
                    accelerator.print(f"Kept in {folder}, as this run did not write them: {', '.join(kept)}")
        atomic_write_json(folder / RUN_RECORD, {"complete": False, "recipe": recipe, "task": run.task,
                                                 "fingerprint": current, "kept": kept})
        save_config(run, folder / "run_config.yaml")  # what the command that finishes the run reads
    accelerator.wait_for_everyone()


# --- finishing it -----------------------------------------------------------------------------------------------
def copy_record(output_dir: Path, checkpoint: Path) -> None:
    """Each checkpoint carries the run's record, so a resume can check it continues the same run."""
    if (output_dir / RUN_RECORD).is_file():
        shutil.copyfile(output_dir / RUN_RECORD, checkpoint / RUN_RECORD)


def mark_complete(output_dir: str | Path) -> None:
    """The last write of a run: the record says complete and lists every file (with its sha256) and folder the
    run wrote."""
    folder = Path(output_dir)
    record = read_record(folder)
    if record is None:
        raise RuntimeError(f"{folder} has no {RUN_RECORD}: call claim_output_dir before training")
    files, folders = {}, []
    for entry in _run_entries(folder, record):
        if entry.name == RUN_RECORD:
            continue
        paths = [entry, *sorted(entry.rglob("*"))] if entry.is_dir() and not entry.is_symlink() else [entry]
        for path in paths:
            name = path.relative_to(folder).as_posix()
            if path.is_dir():
                folders.append(name)
            else:
                files[name] = sha256(path)
    atomic_write_json(folder / RUN_RECORD, {**record, "complete": True, "files": files, "folders": folders})


def record_derived(folder: Path, written: list[str], source: Path) -> None:
    """A folder that a command wrote from the finished run in `source` (`merge --out`): a finished record of its
    own, listing the files it wrote (`written`), so that `predict` and `evaluate` take it as they take a run's."""
    record = read_record(source) or {}
    kept = sorted(p.name for p in folder.iterdir() if p.name not in written and p.name != RUN_RECORD)
    atomic_write_json(folder / RUN_RECORD, {"complete": False, "recipe": record.get("recipe"),
                                            "task": record.get("task"), "fingerprint": record.get("fingerprint"),
                                            "kept": kept, "derived_from": str(source)})
    mark_complete(folder)


def finish_command(output_dir: str | Path) -> list[str]:
    """The command that completes an unfinished run: resume from its latest checkpoint, or start it again."""
    folder = Path(output_dir)
    record = read_record(folder)
    again = ["--resume_from_checkpoint", "latest"] if checkpoint_dirs(folder) else ["--overwrite_output_dir"]
    return ["hf-transfer", "train", record["recipe"], "--config", str(folder / "run_config.yaml"),
            "--output_dir", str(folder), *again]


def refuse_run_folder(folder: str | Path, flag: str) -> None:
    """Commands that write files of their own (`merge`, `evaluate`) never write them into a run's folder: they
    would replace its files, or mix with them."""
    if (Path(folder) / RUN_RECORD).is_file():
        raise UsageError(f"{flag} {folder} holds a training run ({RUN_RECORD}): writing there would replace or mix "
                         "with its files; choose another folder")


def require_complete(output_dir: str | Path) -> None:
    """Refuse a folder whose run did not finish, or whose files changed since it did."""
    folder = Path(output_dir)
    record = read_record(folder)
    if record is None:
        raise UsageError(f"{folder} has no completion record ({RUN_RECORD}): it was not written by a finished "
                         "hf_transfer run (or by one older than the record); train it again")
    if not record["complete"]:
        raise UsageError(f"{folder} holds an unfinished run: it stopped before its final write, so its files may "
                         f"mix old and new results. Finish it with: {shlex.join(finish_command(folder))}")
    # Checkpoints may be deleted to save space once a run finished: predictions never read them.
    changed = sorted(name for name, digest in record["files"].items() if not name.startswith("checkpoints/")
                     and not ((folder / name).is_file() and sha256(folder / name) == digest))
    if changed:
        raise UsageError(f"{folder}: {', '.join(changed)} changed or went missing after the run finished; "
                         "train it again rather than mix runs")
