import importlib
import re
from pathlib import Path

import pytest
import yaml

from hf_transfer.config import UsageError, parse, save_config
from hf_transfer.recipe import Recipe, recipe_names

DEFAULTS = {"model_name_or_path": "google-bert/bert-base-uncased", "dataset_name": "stanfordnlp/sst2"}


def test_flags_override_config_file_which_overrides_recipe_defaults(tmp_path):
    config = tmp_path / "run.yaml"
    config.write_text("learning_rate: 3.0e-4\nnum_train_epochs: 5\nstrategy: full\n")
    run = parse(["--config", str(config), "--num_train_epochs", "2"], defaults=DEFAULTS)
    assert run.train.learning_rate == 3e-4
    assert run.train.num_train_epochs == 2
    assert run.strategy.strategy == "full"
    assert run.model.model_name_or_path == "google-bert/bert-base-uncased"


def test_list_flags_parse():
    run = parse(["--lora_target_modules", "query", "key", "value"], defaults=DEFAULTS)
    assert run.strategy.lora_target_modules == ["query", "key", "value"]


def test_own_train_file_replaces_the_recipes_default_data_set():
    run = parse(["--train_file", "mine.csv"], defaults=DEFAULTS)
    assert run.data.dataset_name is None
    assert run.data.train_file == "mine.csv"


@pytest.mark.parametrize("argv, config, message", [
    (["--bogus", "1"], None, "unknown flag"),
    ([], {"learnin_rate": 1e-3}, "unknown setting(s) in config: learnin_rate"),
    (["--strategy", "everything"], None, "--strategy must be one of"),
    (["--learning_rate", "-1"], None, "--learning_rate must be > 0"),
    (["--mixed_precision", "fp8"], None, "--mixed_precision must be one of"),
    (["--validation_split_percentage", "100"], None, "--validation_split_percentage"),
    (["--push_to_hub"], None, "--push_to_hub needs --hub_model_id"),
    (["--config"], None, "--config needs a YAML file path"),
    (["--strategy", "full", "--merge_adapter"], None, "--merge_adapter needs --strategy lora"),
])
def test_bad_settings_are_rejected_by_name(argv, config, message):
    with pytest.raises(UsageError, match=message.replace("(", r"\(").replace(")", r"\)")):
        parse(argv, config, DEFAULTS)


@pytest.mark.parametrize("line, message", [
    ("learning_rate: [0.001, 0.002]", "learning_rate holds a list ([0.001, 0.002]); it takes one value"),
    ("test_file: [a.csv, b.csv]", "test_file holds a list (['a.csv', 'b.csv']); it takes one value"),
    ("num_train_epochs: {a: 1}", "num_train_epochs holds a mapping ({'a': 1}); it takes one value"),
])
def test_a_list_or_mapping_for_a_single_value_setting_is_named(tmp_path, line, message):
    config = tmp_path / "run.yaml"
    config.write_text(line + "\n")
    with pytest.raises(UsageError, match=re.escape(f"{config}: {message}")):
        parse(["--config", str(config)], defaults=DEFAULTS)
    config.write_text("lora_target_modules: [query, value]\n")  # a list setting takes one
    assert parse(["--config", str(config)], defaults=DEFAULTS).strategy.lora_target_modules == ["query", "value"]


def test_missing_config_file_is_named(tmp_path):
    with pytest.raises(UsageError, match="config file not found: .*nope.yaml"):
        parse(["--config", str(tmp_path / "nope.yaml")], defaults=DEFAULTS)


def test_saved_config_round_trips_and_never_holds_the_token(tmp_path):
    run = parse(["--hub_token", "hf_secret", "--learning_rate", "1e-4"], defaults=DEFAULTS)
    save_config(run, tmp_path / "run_config.yaml")
    text = (tmp_path / "run_config.yaml").read_text()
    assert "hf_secret" not in text
    saved = yaml.safe_load(text)
    assert saved["learning_rate"] == 1e-4
    saved.pop("task")
    assert parse([], saved).to_dict() == run.to_dict()


ROOT = Path(__file__).parents[1]
SHIPPED_CONFIGS = sorted((ROOT / "recipes" / "configs").glob("*.yaml"))


@pytest.mark.parametrize("path", SHIPPED_CONFIGS, ids=[p.name for p in SHIPPED_CONFIGS])
def test_every_shipped_config_parses_and_opens_with_its_command(path):
    first_line = path.read_text().splitlines()[0]
    recipe = max((r for r in recipe_names() if path.stem.startswith(r)), key=len)
    assert first_line in (f"# hf-transfer train {recipe} --config recipes/configs/{path.name}",
                          f"# accelerate launch recipes/{recipe}.py --config recipes/configs/{path.name}")
    module = importlib.import_module(f"hf_transfer.recipes.{recipe}")
    parse([], path, task=module.TASK.name, modality=getattr(module, "MODALITY", None))


@pytest.mark.parametrize("path", SHIPPED_CONFIGS, ids=[p.name for p in SHIPPED_CONFIGS])
def test_every_shipped_config_points_where_a_user_has_files(path):
    """No development paths (absolute, `..`, this machine's shared data, /tmp): a file or folder a config reads is the
    repository's own (run from its root), another run's output under outputs/, or data the user puts under data/,
    as the config's comments say how."""
    text = path.read_text()
    comments = "\n".join(line for line in text.splitlines() if line.lstrip().startswith("#"))
    assert "../" not in comments and "/tmp/" not in comments and "shared/data" not in comments
    for key, value in yaml.safe_load(text).items():
        for item in value if isinstance(value, list) else [value]:
            if not isinstance(item, str):
                continue
            parts = Path(item).parts
            assert not item.startswith(("/", "~")) and ".." not in parts and "shared" not in parts, f"{key}: {item}"
            if key.endswith(("_file", "_dir")) or key == "config_name":
                assert parts[0] in ("data", "outputs") or (ROOT / item).exists(), f"{key}: {item}"
                if parts[0] == "data":
                    assert Path(item).parent.as_posix() in comments, f"{key}: {item}: say how to get it"


@pytest.mark.parametrize("argv", [["--train-file", "mine.csv"], ["--train_file=mine.csv"], ["--train-file=mine.csv"]])
def test_dash_flags_replace_the_recipes_default_data_set_too(argv):
    run = parse(argv, defaults=DEFAULTS)
    assert run.data.train_file == "mine.csv"
    assert run.data.dataset_name is None


def test_abbreviated_flags_are_refused():
    with pytest.raises(UsageError, match="unknown flag.*--train_fi"):
        parse(["--train_fi", "mine.csv"], defaults=DEFAULTS)


def test_config_with_equals_sign_is_the_file_not_config_name(tmp_path):
    config = tmp_path / "run.yaml"
    config.write_text("learning_rate: 3.0e-4\n")
    run = parse([f"--config={config}"], defaults=DEFAULTS)
    assert run.train.learning_rate == 3e-4
    assert run.model.config_name is None


def test_a_setting_the_task_does_not_read_is_refused():
    with pytest.raises(UsageError, match="--text_column does not apply to image-classification"):
        parse(["--text-column", "review"], defaults=DEFAULTS, task="image-classification")


@pytest.mark.parametrize("recipe, shown, hidden", [
    ("sentiment", ["--text_column", "--max_seq_length", "--config"], ["--image_column", "--train_dir"]),
    ("image_classification", ["--image_column", "--mixup_alpha", "--train_dir", "--config"],
     ["--text_column", "--max_seq_length", "--length_grouping"]),
    ("audio_classification", ["--audio_column", "--noise_snr_db", "--train_dir", "--config"],
     ["--text_column", "--text_pair_column", "--image_column"]),
    ("speech_recognition", ["--transcript_column", "--config"], ["--text_column", "--label_column", "--train_dir"]),
])
def test_recipe_help_lists_its_own_flags_only(recipe, shown, hidden, capsys):
    module = importlib.import_module(f"hf_transfer.recipes.{recipe}")
    with pytest.raises(SystemExit) as exit_info:
        module.main(argv=["--help"])
    assert exit_info.value.code == 0
    out = capsys.readouterr().out
    for flag in shown:
        assert f"{flag} " in out, flag
    for flag in hidden:
        assert f"{flag} " not in out, flag


def test_a_config_file_naming_a_setting_the_task_does_not_read_is_refused_unless_left_at_its_default(tmp_path):
    config = tmp_path / "run.yaml"
    config.write_text("max_seq_length: 64\n")
    with pytest.raises(UsageError, match="--max_seq_length does not apply to audio-classification"):
        parse([], config, defaults=DEFAULTS, task="audio-classification")
    config.write_text("max_seq_length: 128\ntext_column: null\n")  # as a saved run_config.yaml holds them
    assert parse([], config, defaults=DEFAULTS, task="audio-classification").data.max_seq_length == 128


@pytest.mark.parametrize("name", recipe_names())
def test_each_recipe_records_its_own_name(name):
    """The run record keeps `Recipe.name` for `finish_command`'s `hf-transfer train NAME`: it must be the file's."""
    module = importlib.import_module(f"hf_transfer.recipes.{name}")
    recipes = [value for value in vars(module).values()
               if isinstance(value, type) and issubclass(value, Recipe) and value.__module__ == module.__name__]
    assert [recipe.name for recipe in recipes] == [name]
