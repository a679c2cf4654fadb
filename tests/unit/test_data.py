import json

import numpy as np
import pandas as pd
import pytest

from lmadapt.config import DataConfig
from lmadapt.data import LabelMap, load_split, prepare_data, read_table
from lmadapt.errors import LmadaptError
from lmadapt.models.inspect import inspect_data
from tests.conftest import sentiment_rows


def write_csv(path, text: str):
    path.write_text(text, encoding="utf-8")
    return str(path)


@pytest.mark.parametrize("fmt", ["csv", "tsv", "jsonl", "parquet", "hf"])
def test_every_format_reads_the_same_rows(tmp_path, fmt):
    frame = sentiment_rows(20)
    target = tmp_path / f"data.{fmt}"
    if fmt == "csv":
        frame.to_csv(target, index=False)
    elif fmt == "tsv":
        frame.to_csv(target, index=False, sep="\t")
    elif fmt == "jsonl":
        frame.to_json(target, orient="records", lines=True)
    elif fmt == "parquet":
        frame.to_parquet(target)
    else:
        import datasets

        datasets.Dataset.from_pandas(frame).save_to_disk(str(target))
    split = load_split(str(target), DataConfig())
    assert split.texts == frame["text"].tolist()
    assert split.labels == frame["label"].tolist()


def test_builtin_rotten_tomatoes_is_real_data():
    table = read_table("builtin:rotten_tomatoes")
    assert len(table.frame) == 4866
    assert set(table.frame["label"]) == {"positive", "negative"}


def test_builtin_reuters_r8_is_real_data():
    train, test = read_table("builtin:reuters_r8_train").frame, read_table("builtin:reuters_r8_test").frame
    assert (len(train), len(test)) == (5485, 2189)
    topics = {"earn", "acq", "crude", "trade", "money-fx", "interest", "ship", "grain"}
    assert set(train["label"]) == set(test["label"]) == topics
    assert train["text"].iloc[0].startswith("champion products ch approves stock split")


@pytest.mark.parametrize(
    ("name", "rows", "classes", "first_label"),
    [
        ("reuters_r52_train", (6532, 2568), 52, "cocoa"),
        ("newsgroups20_train", (11293, 7528), 20, "alt.atheism"),
    ],
)
def test_builtin_many_class_corpora_are_real_data(name, rows, classes, first_label):
    train = read_table(f"builtin:{name}").frame
    test = read_table(f"builtin:{name.replace('_train', '_test')}").frame
    assert (len(train), len(test)) == rows
    assert train["label"].nunique() == classes and set(test["label"]) <= set(train["label"])
    assert train["label"].iloc[0] == first_label


def test_missing_file_and_unknown_format(tmp_path):
    with pytest.raises(LmadaptError, match="data file not found"):
        read_table(tmp_path / "nope.csv")
    (tmp_path / "data.xyz").write_text("x")
    with pytest.raises(LmadaptError, match="(?s)cannot tell the format.*set data.format"):
        read_table(tmp_path / "data.xyz")


def test_malformed_csv_names_the_line(tmp_path):
    path = write_csv(tmp_path / "bad.csv", "text,label\ngood film,positive\nbad, film,negative,extra\n")
    with pytest.raises(LmadaptError) as error:
        read_table(path)
    message = str(error.value)
    assert "bad.csv, line 3" in message and "malformed CSV" in message and "fix:" in message


def test_bad_encoding_names_the_line(tmp_path):
    path = tmp_path / "latin.csv"
    path.write_bytes("text,label\nok,positive\ncaf\xe9 noir,negative\n".encode("latin-1"))
    with pytest.raises(LmadaptError, match=r"(?s)latin.csv, line 3: the file is not valid UTF-8.*iconv"):
        read_table(path)


def test_bad_jsonl_line(tmp_path):
    path = write_csv(tmp_path / "bad.jsonl", '{"text": "a", "label": "x"}\n{"text": "b", label: "y"}\n')
    with pytest.raises(LmadaptError, match=r"bad.jsonl, line 2: not valid JSON"):
        read_table(path)


def test_missing_column_lists_the_columns(tmp_path):
    path = write_csv(tmp_path / "d.csv", "review,sentiment\ngood,positive\n")
    with pytest.raises(LmadaptError) as error:
        load_split(path, DataConfig())
    assert "column 'text' not found; the data has columns: review, sentiment" in str(error.value)
    assert "data.text_column" in str(error.value)


def test_empty_text_is_an_error_with_lines_unless_dropped(tmp_path):
    path = write_csv(tmp_path / "d.csv", 'text,label\ngood,positive\n"   ",negative\n,negative\nbad,negative\n')
    with pytest.raises(LmadaptError, match=r"(?s)d.csv, lines 3, 4: 2 empty text\(s\).*drop_empty=true"):
        load_split(path, DataConfig())
    split = load_split(path, DataConfig(drop_empty=True))
    assert split.texts == ["good", "bad"]


def test_non_string_text_in_jsonl(tmp_path):
    path = write_csv(tmp_path / "d.jsonl", '{"text": "fine", "label": "a"}\n{"text": 42, "label": "b"}\n')
    with pytest.raises(
        LmadaptError, match=r"d.jsonl, line 2: column 'text' holds values that are not text \(e.g. 42\)"
    ):
        load_split(path, DataConfig())


def test_missing_label(tmp_path):
    path = write_csv(tmp_path / "d.csv", "text,label\ngood,positive\nbad,\n")
    with pytest.raises(LmadaptError, match=r"d.csv, line 3: 1 row\(s\) have no label"):
        load_split(path, DataConfig())


def test_single_class_is_rejected(tmp_path):
    frame = pd.DataFrame({"text": [f"text {i}" for i in range(30)], "label": "positive"})
    frame.to_csv(tmp_path / "one.csv", index=False)
    with pytest.raises(LmadaptError, match="(?s)only one class \\(positive\\)"):
        prepare_data(DataConfig(train=str(tmp_path / "one.csv")), seed=0)


def test_unknown_label_in_evaluation_data(tmp_path):
    sentiment_rows(40).to_csv(tmp_path / "train.csv", index=False)
    test = sentiment_rows(6, seed=1)
    test.loc[4, "label"] = "neutral"
    test.to_csv(tmp_path / "test.csv", index=False)
    config = DataConfig(train=str(tmp_path / "train.csv"), test=str(tmp_path / "test.csv"))
    with pytest.raises(LmadaptError) as error:
        prepare_data(config, seed=0)
    message = str(error.value)
    assert "test data has label(s) the training data never shows (e.g. 'neutral')" in message
    assert "test.csv, line 6" in message and "training labels: negative, positive" in message


def test_cleaning_normalises_deduplicates_and_reports_leaks(tmp_path):
    train = sentiment_rows(60)
    train.loc[1, "text"] = train.loc[0, "text"]  # duplicate within train
    train.loc[2, "text"] = "ｆｕｌｌ　ｗｉｄｔｈ   text"  # NFKC + whitespace
    test = sentiment_rows(10, seed=3)
    test.loc[0, "text"] = train.loc[5, "text"]  # leak
    train.to_csv(tmp_path / "train.csv", index=False)
    test.to_csv(tmp_path / "test.csv", index=False)
    data = prepare_data(DataConfig(train=str(tmp_path / "train.csv"), test=str(tmp_path / "test.csv")), seed=0)
    all_train = data.train.texts + data.validation.texts
    assert "full width text" in all_train
    assert data.report["duplicates_dropped"]["train"] == 1
    assert data.report["leaks"]["test"] == 1
    assert train.loc[5, "text"] not in data.test.texts and len(data.test) == 9
    kept = prepare_data(
        DataConfig(train=str(tmp_path / "train.csv"), test=str(tmp_path / "test.csv"), drop_leaks=False),
        seed=0,
    )
    assert len(kept.test) == 10


def test_splits_are_seeded_stratified_and_disjoint(tmp_path):
    frame = sentiment_rows(200)
    frame.loc[:149, "label"] = "positive"  # 150 / 50 imbalance
    frame.loc[150:, "label"] = "negative"
    frame.to_csv(tmp_path / "all.csv", index=False)
    config = DataConfig(train=str(tmp_path / "all.csv"), validation_size=0.1, test_size=0.2)
    first, again, other = (prepare_data(config, seed=s) for s in (1, 1, 2))
    assert (len(first.train), len(first.validation), len(first.test)) == (140, 20, 40)
    assert first.test.texts == again.test.texts and first.test.texts != other.test.texts
    assert first.test.labels.count("negative") == 10  # stratified: 25% of 40
    assert not set(first.train.texts) & (set(first.validation.texts) | set(first.test.texts))
    subset = prepare_data(DataConfig(train=str(tmp_path / "all.csv"), max_train_rows=40), seed=1)
    assert len(subset.train) == 40 and subset.train.labels.count("negative") == 10


def test_multi_label_from_csv_and_jsonl(tmp_path):
    rows = [
        ("fast delivery, great price", "delivery|price"),
        ("rude staff", "service"),
        ("late and rude", "delivery|service"),
    ]
    pd.DataFrame(rows, columns=["text", "label"]).to_csv(tmp_path / "ml.csv", index=False)
    with open(tmp_path / "ml.jsonl", "w") as handle:
        for text, labels in rows:
            handle.write(json.dumps({"text": text, "label": labels.split("|")}) + "\n")
    config = DataConfig(task="multi_label")
    from_csv = load_split(str(tmp_path / "ml.csv"), config)
    from_jsonl = load_split(str(tmp_path / "ml.jsonl"), config)
    assert from_csv.labels == from_jsonl.labels == [["delivery", "price"], ["service"], ["delivery", "service"]]
    labels = LabelMap.from_rows(from_csv.labels, "multi_label")
    assert labels.labels == ["delivery", "price", "service"]
    assert labels.encode(from_csv.labels).tolist() == [[1, 1, 0], [0, 0, 1], [1, 0, 1]]
    with pytest.raises(LmadaptError, match="(?s)labels are lists.*set data.task=multi_label"):
        load_split(str(tmp_path / "ml.jsonl"), DataConfig())


def test_label_map_order_and_class_weights():
    rows = ["b", "a", "a", "a", "c10", "c2"]
    labels = LabelMap.from_rows(rows, "single_label")
    assert labels.labels == ["a", "b", "c2", "c10"]  # natural order
    weights = labels.class_weights(rows)
    assert weights[0] == pytest.approx(6 / (4 * 3)) and weights[1] == pytest.approx(6 / 4)
    multi = LabelMap.from_rows([["x"], ["x", "y"], ["x"], []], "multi_label")
    assert np.allclose(multi.class_weights([["x"], ["x", "y"], ["x"], []]), [1 / 3, 3.0])


def test_inspect_reports_counts_lengths_duplicates_and_leaks(tmp_path):
    train = sentiment_rows(50)
    train.loc[3] = [train.loc[2, "text"], "negative"]  # same text, other label
    train.loc[4, "text"] = ""
    train.to_csv(tmp_path / "train.csv", index=False)
    sentiment_rows(50).head(7).to_csv(tmp_path / "test.csv", index=False)
    report = inspect_data(
        str(tmp_path / "train.csv"), DataConfig(), backbone=None, against=[str(tmp_path / "test.csv")]
    )
    assert report["rows"] == 50 and report["empty_texts"] == 1
    assert report["labels"] == {"negative": 25, "positive": 24}
    assert report["duplicates"] == 1 and report["conflicting_labels"] == 1
    assert report["leaks"][str(tmp_path / "test.csv")] == 5  # test rows 0..6 but 3 and 4, changed in train
    assert 4 <= report["length_percentiles"]["p50"] <= 10


def test_inspect_needs_the_text_and_label_columns(tmp_path):
    path = write_csv(tmp_path / "d.csv", "text,sentiment\ngood film,positive\n")
    with pytest.raises(LmadaptError) as error:
        inspect_data(path, DataConfig(), backbone=None)
    message = str(error.value)
    assert "d.csv: column 'label' not found; the data has columns: text, sentiment" in message
    assert "fix: name the file's own columns with --label-column NAME" in message
    with pytest.raises(LmadaptError, match=r"(?s)columns 'review', 'label' not found.*--text-column NAME and --label"):
        inspect_data(path, DataConfig(text_column="review"), backbone=None)


def test_inspect_multi_label_counts_texts_without_labels(tmp_path):
    path = write_csv(tmp_path / "d.csv", "text,label\nfast and cheap,delivery|price\nrude,service\nfine,\nok,NaN\n")
    report = inspect_data(path, DataConfig(task="multi_label"), backbone=None)
    assert report["labels"] == {"delivery": 1, "price": 1, "service": 1}
    assert report["texts_without_labels"] == 2 and report["labels_per_text_mean"] == 0.75


def test_line_numbers_follow_multi_line_quoted_fields(tmp_path):
    path = write_csv(tmp_path / "d.csv", 'text,label\n"first line\nsecond line",positive\ngood,positive\n,negative\n')
    with pytest.raises(LmadaptError, match=r"d.csv, line 5: 1 empty text"):
        load_split(path, DataConfig())


def test_hf_dataset_class_label_names_are_used(tmp_path):
    import datasets

    features = datasets.Features({"text": datasets.Value("string"), "label": datasets.ClassLabel(names=["neg", "pos"])})
    data = datasets.Dataset.from_dict({"text": ["bad", "good"], "label": [0, 1]}, features=features)
    datasets.DatasetDict({"train": data}).save_to_disk(str(tmp_path / "ds"))
    assert load_split(str(tmp_path / "ds"), DataConfig()).labels == ["neg", "pos"]
    with pytest.raises(LmadaptError, match=r"has no split 'dev' \(it has train\)"):
        read_table(f"hf:{tmp_path / 'ds'}:dev")


def test_a_class_too_rare_to_stratify_stays_in_train(tmp_path):
    frame = sentiment_rows(60)
    frame.loc[0, "label"] = "neutral"  # one row only
    frame.to_csv(tmp_path / "all.csv", index=False)
    data = prepare_data(DataConfig(train=str(tmp_path / "all.csv")), seed=0)
    assert "neutral" in data.train.labels and "neutral" in data.labels.labels


def test_too_few_rows_and_empty_splits_are_explained(tmp_path):
    sentiment_rows(3).to_csv(tmp_path / "three.csv", index=False)
    with pytest.raises(LmadaptError, match="(?s)too few rows.*data.validation and data.test"):
        prepare_data(DataConfig(train=str(tmp_path / "three.csv")), seed=0)
    sentiment_rows(40).to_csv(tmp_path / "train.csv", index=False)
    same = str(tmp_path / "train.csv")
    config = DataConfig(train=same, validation=same, test=same)
    with pytest.raises(
        LmadaptError, match="(?s)validation split is empty after removing duplicates and texts also in train"
    ):
        prepare_data(config, seed=0)


@pytest.mark.parametrize("sep, suffix", [(",", "csv"), ("\t", "tsv")])
def test_a_text_longer_than_the_csv_field_limit_loads(tmp_path, sep, suffix):
    long_text = "word " * 40_000  # 200 KB, over the csv module's default 128 KiB field limit
    path = write_csv(tmp_path / f"long.{suffix}", f"text{sep}label\n{long_text}{sep}a\nshort{sep}b\n")
    split = load_split(path, DataConfig(normalize_unicode=False))
    assert split.texts == [long_text, "short"] and split.labels == ["a", "b"]


@pytest.mark.parametrize("sep, suffix", [(",", "csv"), ("\t", "tsv")])
def test_a_repeated_column_name_is_refused(tmp_path, sep, suffix):
    path = write_csv(tmp_path / f"d.{suffix}", sep.join(["text", "label", "text", "label", "id"]) + "\n")
    with open(path, "a", encoding="utf-8") as handle:
        handle.write(sep.join(["a", "x", "b", "y", "1"]) + "\n")
    with pytest.raises(LmadaptError) as error:
        read_table(path)
    message = str(error.value)
    assert f"d.{suffix}, line 1: column name(s) 'text', 'label' appear more than once" in message
    assert "fix: rename the repeated column(s) in the header" in message


def test_a_repeated_column_name_in_parquet_is_refused(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    columns = [pa.array(["a", "b"]), pa.array(["x", "y"]), pa.array(["c", "d"])]
    pq.write_table(pa.Table.from_arrays(columns, names=["text", "label", "text"]), tmp_path / "d.parquet")
    with pytest.raises(LmadaptError, match=r"(?s)d.parquet: column name\(s\) 'text' appear more than once.*fix: "):
        read_table(tmp_path / "d.parquet")


def test_a_nan_label_is_a_missing_label(tmp_path):
    path = write_csv(tmp_path / "d.csv", "text,label\ngood,NaN\nbad,nan\nfine, NAN \nok,x\n")
    with pytest.raises(LmadaptError) as error:
        load_split(path, DataConfig())
    message = str(error.value)
    assert "d.csv, lines 2, 3, 4: 3 row(s) have no label in column 'label'" in message
    assert "fix: label those rows or remove them" in message
    assert load_split(path, DataConfig(task="multi_label")).labels == [[], [], [], ["x"]]
    json_path = write_csv(tmp_path / "d.jsonl", '{"text": "good", "label": "y"}\n{"text": "bad", "label": NaN}\n')
    with pytest.raises(LmadaptError, match=r"(?s)d.jsonl, line 2: 1 row\(s\) have no label.*fix: label"):
        load_split(json_path, DataConfig())


def test_words_for_nothing_stay_class_names(tmp_path):
    path = write_csv(tmp_path / "d.csv", "text,label\na,None\nb,NA\nc,null\nd,N/A\n")
    assert load_split(path, DataConfig()).labels == ["None", "NA", "null", "N/A"]


def test_unreadable_sources_say_how_to_fix_them(tmp_path):
    (tmp_path / "x.parquet").write_bytes(bytes(range(256)) * 4)
    write_csv(tmp_path / "header.csv", "text,label\n")
    write_csv(tmp_path / "array.jsonl", '{"text": "a", "label": "x"}\n["b", "y"]\n')
    write_csv(tmp_path / "blank.jsonl", "\n  \n")
    (tmp_path / "folder").mkdir()
    write_csv(tmp_path / "folder" / "train.csv", "text,label\na,x\n")
    cases = [
        ("x.parquet", "x.parquet: cannot read Parquet (", "fix: check that the file is whole and is Parquet"),
        ("header.csv", "header.csv: the file has a header but no rows", "fix: add the rows of data"),
        ("array.jsonl", 'array.jsonl, line 2: expected a JSON object, found ["b", "y"]', "fix: write one object per"),
        ("blank.jsonl", "blank.jsonl: the file has no records", 'fix: write one JSON object per line, e.g. {"text"'),
        ("folder", "folder: this is a folder that holds no saved dataset", "fix: pass a data file (.csv"),
    ]
    for name, what, fix in cases:
        with pytest.raises(LmadaptError) as error:
            read_table(tmp_path / name)
        assert what in str(error.value) and fix in str(error.value), str(error.value)
    with pytest.raises(LmadaptError) as error:
        read_table(f"hf:{tmp_path / 'folder'}")
    assert (
        f"holds no saved dataset (no dataset_dict.json or state.json); it holds {tmp_path / 'folder' / 'train.csv'}"
        in str(error.value)
    )
