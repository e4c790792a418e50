import json

import datasets
import pandas as pd
import pytest
from fixtures import sentences, write_csv

from hf_transfer.config import DataArgs, UsageError
from hf_transfer.data.splits import load_labelled_splits, load_raw_splits


def data_args(**kwargs) -> DataArgs:
    return DataArgs(**kwargs)


@pytest.mark.parametrize("suffix", [".csv", ".tsv", ".json", ".jsonl", ".parquet"])
def test_every_file_format_loads_with_string_labels(tmp_path, suffix):
    rows = sentences(60)
    path = tmp_path / f"train{suffix}"
    frame = pd.DataFrame(rows)
    if suffix in (".csv", ".tsv"):
        write_csv(path, rows, delimiter="\t" if suffix == ".tsv" else ",")
    elif suffix == ".json":
        path.write_text(json.dumps(rows))
    elif suffix == ".jsonl":
        frame.to_json(path, orient="records", lines=True)
    else:
        frame.to_parquet(path)
    data = load_labelled_splits(data_args(train_file=str(path)), seed=0)
    assert data.label_names == ["negative", "positive"]
    assert data.label2id == {"negative": 0, "positive": 1}
    assert len(data.splits["train"]) + len(data.splits["validation"]) == 60



def test_hub_split_parts_map_to_train_validation_test(monkeypatch):
    # LibriSpeech's splits are train.100, train.360, validation, test: the first train part is used.
    parts = {name: datasets.Dataset.from_dict({"text": [name]})
             for name in ("train.100", "train.360", "validation", "test")}
    monkeypatch.setattr(datasets, "load_dataset", lambda name, config: datasets.DatasetDict(parts))
    splits, sources = load_raw_splits(data_args(dataset_name="openslr/librispeech_asr", dataset_config_name="clean"))
    assert {split: dataset["text"][0] for split, dataset in splits.items()} == {
        "train": "train.100", "validation": "validation", "test": "test"}
    assert sources["train"] == "openslr/librispeech_asr [train.100]"

def test_validation_is_carved_stratified_and_seeded(tmp_path):
    path = write_csv(tmp_path / "train.csv", sentences(100, labels=("a", "b", "c", "d")))
    first = load_labelled_splits(data_args(train_file=str(path), validation_split_percentage=20), seed=3)
    again = load_labelled_splits(data_args(train_file=str(path), validation_split_percentage=20), seed=3)
    other = load_labelled_splits(data_args(train_file=str(path), validation_split_percentage=20), seed=4)
    validation = first.splits["validation"]
    assert len(validation) == 20
    assert sorted(validation["labels"]) == [0] * 5 + [1] * 5 + [2] * 5 + [3] * 5
    assert validation["text"] == again.splits["validation"]["text"]
    assert validation["text"] != other.splits["validation"]["text"]


def test_integer_labels_keep_their_values_as_names(tmp_path):
    rows = [{"sentence": r["text"], "rating": 5 if r["label"] == "positive" else 1} for r in sentences(40)]
    path = write_csv(tmp_path / "train.csv", rows)
    data = load_labelled_splits(data_args(train_file=str(path), label_column="rating"), seed=0)
    assert data.label_names == ["1", "5"]


def test_label_budgets_are_per_class_and_reproducible(tmp_path):
    path = write_csv(tmp_path / "train.csv", sentences(200, labels=("a", "b", "c")))
    args = data_args(train_file=str(path), samples_per_class=7)
    data = load_labelled_splits(args, seed=0)
    assert sorted(data.splits["train"]["labels"]) == [0] * 7 + [1] * 7 + [2] * 7
    assert data.splits["train"]["text"] == load_labelled_splits(args, seed=0).splits["train"]["text"]
    subset = load_labelled_splits(data_args(train_file=str(path), max_train_samples=25), seed=0)
    assert len(subset.splits["train"]) == 25


def test_builtin_demo_data_set_loads():
    data = load_labelled_splits(data_args(dataset_name="builtin:sentiment_demo"), seed=0)
    assert data.label_names == ["negative", "positive"]
    assert len(data.splits["test"]) == 160
    assert len(data.splits["train"]) + len(data.splits["validation"]) == 480


def _bad(tmp_path, name, rows):
    return str(write_csv(tmp_path / name, rows))


BAD_INPUTS = [
    ("missing file", lambda p: data_args(train_file=str(p / "nope.csv")), "data file not found: .*nope.csv"),
    ("unsupported type", lambda p: data_args(train_file=_bad(p, "x.txt", sentences(10))), "unsupported file type"),
    ("missing label column", lambda p: data_args(train_file=_bad(p, "t.csv", sentences(10)), label_column="stars"),
     "t.csv: no label column 'stars'; columns are text, label"),
    ("unguessable label column", lambda p: data_args(
        train_file=_bad(p, "t.csv", [{"text": r["text"], "verdict": r["label"]} for r in sentences(10)])),
     "can't tell which column holds the label; columns are text, verdict"),
    ("label unseen in training", lambda p: data_args(
        train_file=_bad(p, "t.csv", sentences(20)),
        validation_file=_bad(p, "v.csv", sentences(9, labels=("negative", "positive", "mixed")))),
     r"v.csv: data row 3 .*: label 'mixed' in the validation split never appears in the training data"),
    ("empty split", lambda p: data_args(train_file=_bad(p, "t.csv", sentences(20)),
                                        test_file=str(_write(p / "e.csv", "text,label\n"))),
     "e.csv: no examples"),
    ("single class", lambda p: data_args(train_file=_bad(p, "t.csv", sentences(10, labels=("positive",)))),
     "only one class \\('positive'\\)"),
    ("too few for a budget", lambda p: data_args(train_file=_bad(p, "t.csv", sentences(20)), samples_per_class=50),
     "--samples_per_class 50 but class 'negative' has only"),
    ("empty label", lambda p: data_args(train_file=str(_write(p / "n.csv", "text,label\ngood,positive\nbad,\n"))),
     r"n.csv: data row 2 \(counted from 1, header not counted\): the label cell \('label'\) is empty"),
    ("empty numeric label in validation", lambda p: data_args(
        train_file=str(_write(p / "t.csv", "text,label\ngood,1\nbad,0\n")),
        validation_file=str(_write(p / "v.csv", "text,label\ngood,1\nbad,0\nmeh,\n"))),
     r"v.csv: data row 3 .*: the label cell \('label'\) is empty"),
    ("stray quote swallowing rows", lambda p: data_args(train_file=str(_stray_quote(p, closed=True))),
     r"s.tsv: a quoted field opens on line 62 and runs over the next 139 lines, 138 of which look like rows"),
    ("stray quote never closed", lambda p: data_args(train_file=str(_stray_quote(p, closed=False))),
     r"s.tsv: a quoted field opens on line 62 and runs over the next 140 lines, 139 of which look like rows"),
    ("empty file", lambda p: data_args(train_file=str(_write(p / "e.csv", ""))), "e.csv: the file is empty"),
    ("not UTF-8", lambda p: data_args(train_file=str(_write(p / "l.csv", "text,label\ngood,a\ncaf\xe9,b\n",
                                                            "latin-1"))),
     r"l.csv: line 3 is not UTF-8 text \(byte 0xe9\)"),
    ("TSV named .csv", lambda p: data_args(train_file=_bad_tsv(p / "t.csv")),
     "t.csv: the header line has no comma but has tabs: the file looks tab-separated; rename it .tsv"),
    ("row with an extra field", lambda p: data_args(train_file=str(_write(p / "x.csv", "text,label\na,b\nc,d,e\n"))),
     "x.csv: line 3 has 3 fields but the header has 2"),
]


def _stray_quote(folder, closed: bool):
    """200 rows of a TSV; a stray quote opens the text of data row 61 (line 62), maybe closed on the last line."""
    rows = [f"{r['text']}\t{r['label']}" for r in sentences(200)]
    rows[60] = '"' + rows[60]
    if closed:
        rows[199] = rows[199].replace(" was", '" was', 1)
    return _write(folder / "s.tsv", "\n".join(["text\tlabel", *rows]) + "\n")


def _bad_tsv(path):
    rows = [f"{r['text']}, really\t{r['label']}" for r in sentences(20)]
    return str(_write(path, "\n".join(["text\tlabel", *rows]) + "\n"))


def _write(path, text, encoding="utf-8"):
    path.write_text(text, encoding=encoding)
    return path


@pytest.mark.parametrize("case, make_args, message", BAD_INPUTS, ids=[c[0] for c in BAD_INPUTS])
def test_bad_input_gets_a_clear_error(tmp_path, case, make_args, message):
    with pytest.raises(UsageError, match=message):
        load_labelled_splits(make_args(tmp_path), seed=0)


@pytest.mark.parametrize("flags, message", [
    ({"text_column": "review"}, "t.csv: no text column 'review'; columns are text, label$"),
    ({"text_column": "labels"}, "t.csv: no text column 'labels'; columns are text, label$"),
    ({"text_column": "label"}, "t.csv: 'label' is the label column; name the text column with --text_column"),
])
def test_text_column_errors_name_the_files_own_columns(tmp_path, flags, message):
    """Not the encoded `labels` column that loading puts in the label column's place."""
    from hf_transfer.modalities.text import text_columns

    args = data_args(train_file=_bad(tmp_path, "t.csv", sentences(20)), **flags)
    with pytest.raises(UsageError, match=message):
        text_columns(load_labelled_splits(args, seed=0), args)


def test_max_eval_samples_is_a_seeded_stratified_sample(tmp_path):
    """Class folders list the files class by class: the first rows would be one class only."""
    from fixtures import write_image_folders

    from hf_transfer.modalities.image import IMAGE_LAYOUT

    root = write_image_folders(tmp_path)
    args = data_args(train_dir=str(root / "train"), validation_dir=str(root / "val"), max_eval_samples=6)
    data = load_labelled_splits(args, seed=0, layout=IMAGE_LAYOUT)
    validation = data.splits["validation"]
    assert sorted(validation["labels"]) == [0, 0, 0, 1, 1, 1]
    again = load_labelled_splits(args, seed=0, layout=IMAGE_LAYOUT).splits["validation"]
    assert again["image"] == validation["image"]
    other_seed = load_labelled_splits(args, seed=1, layout=IMAGE_LAYOUT).splits["validation"]
    assert other_seed["image"] != validation["image"]


def test_stratified_sample_keeps_shares_and_every_class():
    from hf_transfer.data.sampling import stratified_sample

    labels = [0] * 90 + [1] * 8 + [2] * 2
    picked = stratified_sample(labels, 10, seed=0)
    assert len(set(picked)) == 10
    assert [sum(labels[i] == c for i in picked) for c in range(3)] == [8, 1, 1]


def test_quoted_fields_holding_newlines_still_load(tmp_path):
    rows = [f'"{r["text"]},\nreally, truly\nyes",{r["label"]}' for r in sentences(30)]
    path = _write(tmp_path / "m.csv", "\n".join(["text,label", *rows]) + "\n")
    data = load_labelled_splits(data_args(train_file=str(path)), seed=0)
    assert sum(map(len, data.splits.values())) == 30
    assert data.splits["train"][0]["text"].endswith(",\nreally, truly\nyes")


def test_errors_name_the_files_row_after_the_validation_split_is_carved(tmp_path):
    from fixtures import minilm_tokenizer

    from hf_transfer.modalities.text import tokenize_splits

    rows = [f"{r['text']},{r['label']}" for r in sentences(60)]
    rows[47] = ",positive"  # data row 48 has no text
    data_settings = data_args(train_file=str(_write(tmp_path / "t.csv", "\n".join(["text,label", *rows]) + "\n")))
    data = load_labelled_splits(data_settings, seed=0)
    with pytest.raises(UsageError, match=r"t.csv: data row 48 \(counted from 1, header not counted\): column 'text' "
                                         "holds None, not text"):
        tokenize_splits(data, data_settings, minilm_tokenizer())


@pytest.mark.parametrize("variant, why", [("Positive", "case"), (" positive", "spaces"), ("1", "number")])
def test_labels_that_look_alike_are_refused_with_their_rows_until_mapped(tmp_path, variant, why):
    rows = sentences(40)
    rows[6]["label"] = rows[9]["label"] = variant  # data rows 7 and 10 of the file
    path = write_csv(tmp_path / "train.csv", rows)
    test = write_csv(tmp_path / "test.csv", [{"text": "the film was great", "label": variant}])
    with pytest.raises(UsageError, match=r"train.csv: data rows 7, 10.*test.csv: data row 1.*--label_map") as error:
        load_labelled_splits(data_args(train_file=str(path), test_file=str(test)), seed=0)
    assert repr(variant) in str(error.value)

    meant = {"1": "positive"} if why == "number" else {variant.strip(): "positive"}
    data = load_labelled_splits(data_args(train_file=str(path), test_file=str(test), label_map=meant), seed=0)
    assert data.label_names == ["negative", "positive"] and data.splits["test"]["labels"] == [1]


def test_json_labels_that_mix_numbers_and_names_are_refused_with_their_rows(tmp_path):
    rows = sentences(20)
    rows[3]["label"] = 1
    path = tmp_path / "train.jsonl"
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    with pytest.raises(UsageError, match=r"1 \(.*train.jsonl: data row 4\).*--label_map '1="):
        load_labelled_splits(data_args(train_file=str(path)), seed=0)


def test_a_label_map_from_a_flag_or_a_config_reads_alike():
    flag = DataArgs(train_file="train.csv", label_map="pos=positive, neg=negative")
    config = DataArgs(train_file="train.csv", label_map={"pos": "positive", "neg": "negative"})
    assert flag.label_map == config.label_map == {"pos": "positive", "neg": "negative"}
    with pytest.raises(UsageError, match="FROM=TO pairs"):
        DataArgs(train_file="train.csv", label_map="pos:positive")


def test_a_test_file_that_shares_rows_with_train_is_warned_of(tmp_path):
    train = sentences(40)
    test = sentences(10, seed=5) + [dict(train[0]), dict(train[1]), {**train[2], "label": "negative"}]
    test = [{**row, "text": f"{row['text']} indeed"} for row in test[:10]] + test[10:]  # only 3 shared
    paths = [write_csv(tmp_path / f"{name}.csv", rows) for name, rows in (("train", train), ("test", test))]
    with pytest.warns(UserWarning, match=r"test.csv: 3 of its 13 rows also appear in .*train.csv"):
        load_labelled_splits(data_args(train_file=str(paths[0]), test_file=str(paths[1])), seed=0)
