"""The README's offline demo, on the real all-MiniLM-L6-v2 checkpoint (about a minute on 2 cores)."""

from pathlib import Path

import pytest

from hf_transfer.recipes import sentiment

DEMO_CONFIG = Path(__file__).parents[1] / "recipes" / "configs" / "sentiment_demo.yaml"


@pytest.mark.slow
def test_demo_config_reaches_80_percent_on_its_held_out_split(tmp_path):
    results = sentiment.main(str(DEMO_CONFIG), argv=["--output_dir", str(tmp_path)])
    assert results["test_samples"] == 160
    assert results["test_accuracy"] >= 0.80
    for name in ("adapter_model.safetensors", "all_results.json", "confusion_matrix.png", "roc_curve.png",
                 "README.md", "eval_report.md"):
        assert (tmp_path / name).is_file(), name
