"""bench/ smoke: every side of each throughput bench and every strategy of the memory table run on CPU, tiny configs.

No timing assertions: the numbers are only checked to be well formed and positive.
"""

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
SIDE_KEYS = {"side", "samples_per_s", "real_tokens_per_s", "padded_tokens_per_s", "peak_gpu_memory_gb", "steps",
             "device", "torch", "transformers"}
TEXT_SMOKE = ["bench/text_classification.py", "--model_config", "tiny", "--synthetic", "256", "--max_steps", "12",
              "--warmup_steps", "4"]
MEMORY_SMOKE = ["bench/memory.py", "--model_config", "bert-tiny", "--steps", "2", "--batch_size", "4",
                "--seq_len", "32"]
IMAGE_SMOKE = ["bench/image_classification.py", "--model_config", "tiny", "--synthetic", "64", "--source_px", "48",
               "--batch_size", "8", "--max_steps", "3", "--warmup_steps", "1"]
AUDIO_SMOKE = ["bench/audio_classification.py", "--model_config", "tiny", "--synthetic", "64", "--clip_seconds",
               "0.1", "--batch_size", "8", "--max_steps", "3", "--warmup_steps", "1"]


def load_bench(name: str):
    spec = importlib.util.spec_from_file_location(f"bench_{name}", ROOT / "bench" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


# Runs each script as `python SCRIPT ARGS...` would, one after another in one interpreter: torch and transformers
# are imported once, which on the shared 2-core machine saves more than running them side by side.
RUN_IN_TURN = """import runpy, sys
sys.path.insert(0, "bench")
for argv in {argvs!r}:
    sys.argv = argv
    runpy.run_path(argv[0], run_name="__main__")
"""
# --strategy feature_extraction: every side trains only the head, ours on features cached in one timed pass (Whisper
# with its short-input window against the Trainer's 30 s). Two epochs each, so the cache is read twice.
FEATURES_SMOKES = {
    "text_features": ["bench/text_classification.py", "--model_config", "tiny", "--synthetic", "64", "--max_steps", "4",
                      "--strategy", "feature_extraction"],
    "image_features": IMAGE_SMOKE[:IMAGE_SMOKE.index("--max_steps")] + ["--max_steps", "16", "--strategy",
                                                                        "feature_extraction"],
    "audio_features": ["bench/audio_classification.py", "--model_config", "whisper-micro", "--synthetic", "16",
                       "--clip_seconds", "0.5", "--batch_size", "8", "--max_steps", "4", "--strategy",
                       "feature_extraction"],
}
AUGMENTATION_SMOKE = ["bench/image_augmentation.py", "--synthetic", "16", "--source_px", "48", "--image_size", "32",
                      "--batch_size", "8", "--repeats", "1"]
SMOKES = {"text": TEXT_SMOKE, "memory": MEMORY_SMOKE, "image": IMAGE_SMOKE, "audio": AUDIO_SMOKE, **FEATURES_SMOKES,
          "image_device": IMAGE_SMOKE + ["--augment_on", "device"], "augmentation": AUGMENTATION_SMOKE,
          "audio_loader": ["bench/audio_loader.py", "--synthetic", "8", "--repeats", "1"],
          "text_padding_free": TEXT_SMOKE + ["--padding_free", "--no_length_grouping"],
          "audio_device": AUDIO_SMOKE + ["--augment_on", "device"]}


@pytest.fixture(scope="module")
def smoke_runs(tmp_path_factory):
    """Every bench script's CPU smoke, in a subprocess run from the repo root; returns each one's JSON lines.

    One thread: on a busy shared CPU, torch's threads spin-wait on each other and a step can take 100x longer.
    """
    folder = tmp_path_factory.mktemp("bench")
    argvs = [command + ["--output_json", str(folder / f"{name}.jsonl")] for name, command in SMOKES.items()]
    result = subprocess.run([sys.executable, "-c", RUN_IN_TURN.format(argvs=argvs)], cwd=ROOT, check=False,
                            capture_output=True, text=True, timeout=1200, env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert result.returncode == 0, f"a bench failed:\n{result.stderr[-3000:]}"
    files = {name: (folder / f"{name}.jsonl").read_text() for name in SMOKES}
    assert result.stdout == "".join(files.values())  # stdout holds the JSON lines and nothing else
    return {name: [json.loads(line) for line in text.splitlines()] for name, text in files.items()}


def test_text_bench_runs_every_side(smoke_runs):
    lines = smoke_runs["text"]
    assert [line["side"] for line in lines] == ["ours", "trainer", "trainer_tuned", "summary"]
    for line in lines[:3]:
        assert SIDE_KEYS <= line.keys()
        for key in ("samples_per_s", "real_tokens_per_s", "padded_tokens_per_s"):
            assert line[key] > 0, (line["side"], key)
        assert line["real_tokens_per_s"] <= line["padded_tokens_per_s"]
        assert line["steps"] == 12 - 4
        assert (line["peak_gpu_memory_gb"] is None) == (not torch.cuda.is_available())
        # 6 x the tiny BERT's non-embedding weights (2 layers of hidden 32, FFN 64; pooler; 2-label head) per token
        flops = 6 * (2 * (4 * (32 * 32 + 32) + 2 * 32 + (32 * 64 + 64) + (64 * 32 + 32) + 2 * 32) + 32 * 32 + 32 + 66)
        assert line["training_flops_per_token"] == flops
        assert line["model_tflops_per_s"] == pytest.approx(line["real_tokens_per_s"] * flops / 1e12)
        assert 0 < line["fraction_of_peak"] < 1
    ours, trainer, tuned, summary = lines
    assert summary["ratio"] == pytest.approx(ours["samples_per_s"] / trainer["samples_per_s"])
    assert summary["ratio_tuned"] == pytest.approx(ours["samples_per_s"] / tuned["samples_per_s"])
    assert summary["matmul_peak_gflops"] > 0
    # run_glue's Trainer pads every example to 128 tokens; the tuned one, like ours, each batch to its longest.
    assert trainer["padded_tokens_per_s"] / trainer["samples_per_s"] == pytest.approx(128)
    assert tuned["padding_fraction"] < trainer["padding_fraction"]


@pytest.mark.parametrize("modality", ["image", "image_device", "audio", "audio_device"])
def test_image_and_audio_benches_run_every_side(smoke_runs, modality):
    lines = smoke_runs[modality]
    assert [line["side"] for line in lines] == ["ours", "trainer", "trainer_tuned", "summary"]
    for line in lines[:3]:
        assert SIDE_KEYS - {"real_tokens_per_s", "padded_tokens_per_s"} <= line.keys()
        assert line["samples_per_s"] > 0 and line["steps"] == 3 - 1
    if modality.startswith("image"):
        place = "DeviceAugment on the cpu" if modality == "image_device" else "TrainTransform in the loader"
        assert place in lines[0]["augmentation"]
        for line in lines[:3]:  # no --peak_tflops: no MFU, but the fraction of the peak measured in the run
            assert line["model_tflops_per_s"] > 0 and line["mfu"] is None and 0 < line["fraction_of_peak"] < 1
    else:
        assert all(line["audio_seconds_per_s"] > 0 for line in lines[:3])
        assert lines[0]["augment_on"] == ("device" if modality == "audio_device" else "loader")
    ours, trainer, tuned, summary = lines
    assert summary["ratio"] == pytest.approx(ours["samples_per_s"] / trainer["samples_per_s"])
    assert summary["ratio_tuned"] == pytest.approx(ours["samples_per_s"] / tuned["samples_per_s"])


def test_text_bench_runs_ours_padding_free(smoke_runs):
    lines = smoke_runs["text_padding_free"]
    assert [line["side"] for line in lines] == ["ours", "trainer", "trainer_tuned", "summary"]
    assert lines[0]["samples_per_s"] > 0
    assert lines[-1]["padding_free"] is True and lines[-1]["length_grouping"] is False


def test_augmentation_bench_measures_both_places(smoke_runs):
    lines = smoke_runs["augmentation"]
    assert [line["augmentation"] for line in lines] == ["basic", "randaugment"]
    for line in lines:
        rates = line["loader_images_per_s"]
        assert rates.keys() == {"loader", "device"} and min(rates.values()) > 0 and line["device_images_per_s"] > 0
        assert line["loader_ratio"] == pytest.approx(rates["device"] / rates["loader"])


def test_audio_loader_bench_measures_both_places(smoke_runs):
    (line,) = smoke_runs["audio_loader"]
    ms = line["ms_per_clip"]
    assert ms.keys() == {"decode", "augment", "feature_extractor"} and min(ms.values()) > 0
    rates = line["loader_clips_per_s"]
    assert rates.keys() == {"loader", "device"} and min(rates.values()) > 0 and line["device_clips_per_s"] > 0
    assert line["loader_ratio"] == pytest.approx(rates["device"] / rates["loader"])


@pytest.mark.parametrize("name", sorted(FEATURES_SMOKES))
def test_feature_extraction_sides_time_the_whole_run(smoke_runs, name):
    lines = smoke_runs[name]
    assert [line["side"] for line in lines] == ["ours", "trainer", "trainer_tuned", "summary"]
    steps = int(FEATURES_SMOKES[name][FEATURES_SMOKES[name].index("--max_steps") + 1])
    for line in lines[:3]:  # no warm-up steps left out: ours is timed from before its caching pass
        assert line["strategy"] == "feature_extraction" and line["steps"] == steps and line["samples_per_s"] > 0
        assert "fraction_of_peak" not in line  # a frozen backbone's forward is not the training FLOPs
    ours, trainer, tuned, summary = lines
    assert summary["strategy"] == "feature_extraction"
    assert summary["ratio_tuned"] == pytest.approx(ours["samples_per_s"] / tuned["samples_per_s"])


def test_feature_extraction_refuses_warmup_steps():
    bench = load_bench("text_classification")
    with pytest.raises(SystemExit):
        bench.parse_args(["--synthetic", "8", "--strategy", "feature_extraction", "--warmup_steps", "2"])
    assert bench.parse_args(["--synthetic", "8", "--strategy", "feature_extraction"]).warmup_steps == 0
    assert bench.parse_args(["--synthetic", "8"]).warmup_steps == bench.WARMUP_STEPS


def test_memory_table_runs_every_strategy(smoke_runs):
    lines = smoke_runs["memory"]
    assert [line["strategy"] for line in lines] == ["full", "lora", "feature_extraction"]
    for line in lines:
        assert line["model_config"] == "bert-tiny" and line["total_params"] > 0 and line["loss"] > 0
        if torch.cuda.is_available():
            assert line["peak_gpu_memory_gb"] > 0
        else:  # each strategy in its own process: its peak RSS holds at least its weights, in fp32
            assert line["peak_gpu_memory_gb"] is None
            assert line["peak_rss_gb"] > line["training_rss_gb"] >= line["total_params"] * 4 / 2**30
    full, lora, frozen = (line["trainable_params"] for line in lines)
    assert full > lora > frozen > 0


def test_bench_collator_pads_like_the_recipe():
    """The bench restates hf_transfer's text collator (whose module needs `datasets`); they must pad alike."""
    from fixtures import minilm_tokenizer

    from hf_transfer.modalities.text import text_collator

    bench = load_bench("text_classification")
    tokenizer = minilm_tokenizer()
    encoded = tokenizer(["a short one", "a rather longer sentence than the first one"], truncation=True)
    features = [{**{k: encoded[k][i] for k in encoded}, "labels": i, "length": len(encoded["input_ids"][i])}
                for i in range(2)]
    for multiple in (None, 8):
        ours, recipe = bench.pad_per_batch(tokenizer, multiple)(features), text_collator(tokenizer, multiple)(features)
        assert ours.keys() == recipe.keys() and "length" not in ours
        for key in ours:
            assert torch.equal(ours[key], recipe[key]), key


def test_step_clock_measures_steps_after_warmup():
    bench = load_bench("text_classification")
    clock = bench.StepClock(warmup_steps=2, device=torch.device("cpu"))
    ids, mask = torch.ones(4, 10, dtype=torch.long), torch.tensor([[1] * 6 + [0] * 4] * 4)
    for _ in range(5):
        clock.step_begin()
        clock.count_batch({"input_ids": ids, "attention_mask": mask})
    clock.stop()
    clock.count_batch({"input_ids": ids, "attention_mask": mask})  # after the end: not counted
    assert clock.steps_begun - clock.warmup_steps == 3
    assert (clock.samples, clock.padded_tokens, int(clock.real_tokens)) == (12, 120, 72)
    assert clock.end >= clock.start


def test_step_clock_started_early_keeps_its_start():
    """Feature extraction: ours starts the clock before its caching pass; the first step must not restart it."""
    bench = load_bench("text_classification")
    clock = bench.StepClock(warmup_steps=0, device=torch.device("cpu"))
    clock.start_now()
    start = clock.start
    clock.step_begin()
    assert clock.start == start and clock.running


def test_clocked_loss_counts_optimizer_steps_not_micro_batches():
    bench = load_bench("text_classification")
    clock = bench.StepClock(warmup_steps=0, device=torch.device("cpu"))
    compute_loss, evaluate = bench.clocked(lambda model, batch, progress: batch, clock, accumulation=2)
    assert [compute_loss(None, i, None) for i in range(6)] == list(range(6))
    assert clock.steps_begun == 3 and clock.end is None
    assert evaluate(None) == {"accuracy": 0.0} and clock.end is not None
