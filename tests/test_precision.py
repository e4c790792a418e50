"""hf_transfer.training.precision: the user's choice, then the launcher's, then bf16 where the hardware runs it fast."""

from pathlib import Path

import pytest
import torch
import yaml

from hf_transfer.config import TrainArgs
from hf_transfer.training import precision


@pytest.fixture
def nothing_set(monkeypatch):
    """No launcher choice, and a CPU-only machine whose bf16 support each test sets."""
    monkeypatch.delenv(precision.LAUNCHER_VARIABLE, raising=False)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)

    def cpu(avx512_bf16: bool, amx: bool) -> None:
        monkeypatch.setattr(torch.cpu, "_is_avx512_bf16_supported", lambda: avx512_bf16)
        monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda: amx)

    return cpu


@pytest.mark.parametrize(("avx512_bf16", "amx", "chosen"), [
    (True, False, "bf16"), (False, True, "bf16"), (True, True, "bf16"), (False, False, "no"),
])
def test_nothing_set_picks_bf16_only_where_the_cpu_has_it(nothing_set, capsys, avx512_bf16, amx, chosen):
    nothing_set(avx512_bf16, amx)
    assert precision.choose_mixed_precision(None) == chosen
    assert capsys.readouterr().out.startswith(f"mixed_precision: {chosen} (none set; a CPU ")


def test_the_user_and_then_the_launcher_win(nothing_set, monkeypatch, capsys):
    nothing_set(True, True)
    assert precision.choose_mixed_precision("no") == "no"
    monkeypatch.setenv(precision.LAUNCHER_VARIABLE, "FP16")  # accelerate launch --mixed_precision fp16
    assert precision.choose_mixed_precision(None) == "fp16"
    assert precision.choose_mixed_precision("bf16") == "bf16"
    assert capsys.readouterr().out == ""  # only a choice made by hf_transfer is printed


def test_this_cpu_is_read_from_its_flags():
    flags = next((line.split(":", 1)[1].split() for line in Path("/proc/cpuinfo").read_text().splitlines()
                  if line.startswith("flags")), None) if Path("/proc/cpuinfo").is_file() else None
    if flags is None:
        pytest.skip("no /proc/cpuinfo flags to compare with")
    assert precision.fast_bf16(use_cpu=True)[0] == bool({"avx512_bf16", "amx_bf16"} & set(flags))


def test_unset_is_valid_and_the_recipe_saves_its_choice(nothing_set, tiny_bert, sentiment_files, tmp_path):
    from recipes import sentiment

    assert TrainArgs().mixed_precision is None
    nothing_set(True, False)
    sentiment.main({"model_name_or_path": str(tiny_bert), "train_file": str(sentiment_files["train"]),
                    "test_file": str(sentiment_files["test"]), "output_dir": str(tmp_path), "strategy": "full",
                    "max_train_steps": 2})
    assert yaml.safe_load((tmp_path / "run_config.yaml").read_text())["mixed_precision"] == "bf16"


@pytest.mark.parametrize("launcher", [False, True])
def test_fp16_on_a_cpu_is_refused_not_run_as_fp32(nothing_set, monkeypatch, tmp_path, launcher):
    # accelerate has no fp16 autocast on a CPU: it would compute in fp32 and still report fp16.
    from hf_transfer.config import UsageError
    from hf_transfer.training.loop import new_accelerator

    nothing_set(False, False)
    if launcher:
        monkeypatch.setenv(precision.LAUNCHER_VARIABLE, "fp16")
    args = TrainArgs(output_dir=str(tmp_path), mixed_precision=None if launcher else "fp16")
    with pytest.raises(UsageError, match="fp16 .* CPU.*--mixed_precision bf16"):
        new_accelerator(args, str(tmp_path), cpu=True)
