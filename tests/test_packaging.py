"""`pip install hf-transfer-kit` must bring the recipes, their configs, the card templates and the demo data."""

import subprocess
import sys
import zipfile
from pathlib import Path

ROOT = Path(__file__).parents[1]


def test_wheel_ships_recipes_configs_templates_and_demo_data(tmp_path):
    subprocess.run([sys.executable, "-m", "pip", "wheel", str(ROOT), "--no-deps", "--no-build-isolation", "-q",
                    "-w", str(tmp_path)], check=True, capture_output=True, timeout=300)
    [wheel] = tmp_path.glob("hf_transfer_kit-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    expected = {f"hf_transfer/recipes/{p.name}" for p in (ROOT / "recipes").glob("*.py")}
    expected |= {f"hf_transfer/recipes/configs/{p.relative_to(ROOT / 'recipes' / 'configs')}"
                 for p in (ROOT / "recipes" / "configs").rglob("*") if p.is_file() and p.suffix != ".pyc"}
    expected |= {f"hf_transfer/model_cards/{p.name}" for p in (ROOT / "model_cards").glob("*.md")}
    expected |= {"hf_transfer/data/files/sentiment_demo/train.csv", "hf_transfer/data/files/sentiment_demo/test.csv"}
    assert expected <= names, sorted(expected - names)
