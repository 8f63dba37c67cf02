"""Datasets: the five GLUE presets, user files validated row by row, tokenisation and sharding."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from service.core.contract import DatasetSpec
from workers.train import data
from workers.train.data import (
    DatasetError,
    Example,
    eval_shard,
    load_examples,
    load_splits,
    num_global_batches,
    shard_indices,
    tokenize,
)
from workers.train.data.files import subset_rows

# ---------------------------------------------------------------------------------------------
# Presets
# ---------------------------------------------------------------------------------------------

PRESET_FACTS = {
    # preset: (train rows, eval rows, task type, label ids, metric, main metric, has pair)
    "glue/rte": (2490, 277, "classification", {0, 1}, "accuracy", "accuracy", True),
    "glue/mrpc": (3668, 408, "classification", {0, 1}, "f1", "f1", True),
    "glue/cola": (8551, 1043, "classification", {0, 1}, "mcc", "mcc", False),
    "glue/sts-b": (5749, 1500, "regression", None, "pearson_spearman", "pearson", True),
    "glue/sst-2": (67349, 872, "classification", {0, 1}, "accuracy", "accuracy", False),
}


def _have_glue() -> bool:
    try:
        return (data.data_root() / "glue" / "RTE" / "train.tsv").is_file()
    except DatasetError:
        return False


needs_glue = pytest.mark.skipif(not _have_glue(), reason="GLUE data not found (set CHILDTUNE_DATA)")


@needs_glue
@pytest.mark.parametrize("preset", list(PRESET_FACTS))
def test_presets_load_with_official_sizes(preset: str) -> None:
    n_train, n_eval, task_type, labels, metric, main, has_pair = PRESET_FACTS[preset]
    started = time.perf_counter()
    splits = load_splits(DatasetSpec(preset=preset))  # type: ignore[arg-type]
    assert time.perf_counter() - started < 5.0
    assert (len(splits.train), len(splits.eval)) == (n_train, n_eval)
    info = splits.info
    assert (info.name, info.task_type, info.metric, info.main_metric) == (preset, task_type, metric, main)
    for examples in (splits.train, splits.eval):
        assert all((ex.text_pair is not None) == has_pair for ex in examples)
        assert all(ex.text.strip() for ex in examples)
        if labels is None:
            assert all(isinstance(ex.label, float) and 0.0 <= ex.label <= 5.0 for ex in examples)
        else:
            assert {ex.label for ex in examples} == labels
            assert all(type(ex.label) is int for ex in examples)
    if task_type == "regression":
        assert info.num_labels == 1 and info.label_names == ()
    else:
        assert info.num_labels == 2 and len(info.label_names) == 2


@needs_glue
def test_preset_label_values_and_first_rows() -> None:
    train, info = load_examples(DatasetSpec(preset="glue/rte"), "train")
    assert info.label_to_id == {"entailment": 0, "not_entailment": 1}
    assert train[0].text == "No Weapons of Mass Destruction Found in Iraq Yet."
    assert train[0].label == 1 and train[0].line == 2  # not_entailment; line 1 is the header
    counts = Counter(ex.label for ex in train)
    assert counts == {0: 1249, 1: 1241}

    mrpc, _ = load_examples(DatasetSpec(preset="glue/mrpc"), "dev")
    assert mrpc[0].text.startswith("He said the foodservice pie business")
    pair = mrpc[0].text_pair
    assert pair is not None and pair.startswith('"The foodservice pie')  # quotes kept: QUOTE_NONE

    cola, info = load_examples(DatasetSpec(preset="glue/cola"), "train")  # no header row
    assert cola[0].line == 1 and cola[0].label == 1
    assert cola[0].text == "Our friends won't buy this analysis, let alone the next one we propose."
    assert info.label_names == ("unacceptable", "acceptable")

    stsb, _ = load_examples(DatasetSpec(preset="glue/sts-b"), "eval")
    assert stsb[0].label == 5.0 and stsb[1].label == 4.75


@needs_glue
def test_max_examples_take_the_first_rows() -> None:
    spec = DatasetSpec(preset="glue/sst-2", max_train_examples=10, max_eval_examples=3)
    splits = load_splits(spec)
    full, _ = load_examples(DatasetSpec(preset="glue/sst-2"), "eval")
    assert len(splits.train) == 10 and len(splits.eval) == 3
    assert splits.eval == full[:3]
    train, _ = load_examples(spec, "train")
    assert train == splits.train


@needs_glue
def test_a_seeded_subset_is_the_same_rows_for_every_job_and_another_seed_draws_others() -> None:
    """dataset.subset_seed: max_train_examples rows drawn at random, in file order, the same for
    every job giving that seed (the low-resource study's 1,000-example subsets); the evaluation
    split stays whole."""
    full, _ = load_examples(DatasetSpec(preset="glue/rte"), "train")
    spec = DatasetSpec(preset="glue/rte", max_train_examples=1000, subset_seed=7)
    a = load_splits(spec)
    b, _ = load_examples(spec, "train")
    assert len(a.train) == 1000 and a.train == b
    positions = [full.index(row) for row in a.train]
    assert positions == sorted(positions) and positions[-1] >= 1500  # drawn from the whole file
    assert a.train != full[:1000]
    other = load_splits(DatasetSpec(preset="glue/rte", max_train_examples=1000, subset_seed=8)).train
    assert other != a.train
    assert len(a.eval) == len(load_examples(DatasetSpec(preset="glue/rte"), "eval")[0])
    # The draw is a keyed hash, fixed for good (a study's runs on different days and machines
    # must see the same rows): the first rows seed 7 keeps of RTE's 2,490.
    assert subset_rows(2490, 1000, 7)[:3] == [3, 4, 11]


def test_a_subset_seed_needs_max_train_examples() -> None:
    with pytest.raises(ValueError, match="give max_train_examples too"):
        DatasetSpec(preset="glue/rte", subset_seed=7)


@needs_glue
def test_data_root_from_environment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    real = data.data_root()
    monkeypatch.setenv("CHILDTUNE_DATA", str(real))
    assert data.data_root() == real
    monkeypatch.setenv("CHILDTUNE_DATA", str(tmp_path / "nowhere"))
    with pytest.raises(DatasetError, match="CHILDTUNE_DATA"):
        data.data_root()
    monkeypatch.setenv("CHILDTUNE_DATA", str(tmp_path))
    with pytest.raises(DatasetError, match=r"RTE/train\.tsv: file not found.*CHILDTUNE_DATA"):
        load_examples(DatasetSpec(preset="glue/rte"), "train")


def test_preset_with_broken_rows(tmp_path: Path) -> None:
    task = tmp_path / "glue" / "RTE"
    task.mkdir(parents=True)
    (task / "train.tsv").write_text(
        "index\tsentence1\tsentence2\tlabel\n0\ta\tb\tentailment\n\n1\tc\td\tcontradiction\n"
    )
    (task / "dev.tsv").write_text("index\tsentence1\tsentence2\tlabel\n0\ta\tb\n")
    with pytest.raises(DatasetError, match=r"train\.tsv: line 4: label 'contradiction'.*entailment"):
        load_examples(DatasetSpec(preset="glue/rte"), "train", root=tmp_path)
    with pytest.raises(DatasetError, match=r"dev\.tsv: line 2: expected 4 tab-separated fields.*found 3"):
        load_examples(DatasetSpec(preset="glue/rte"), "eval", root=tmp_path)


def test_module_import_is_light() -> None:
    code = (
        "import sys, workers.train.data, workers.train.glue_metrics; "
        "sys.exit(1 if {'torch', 'transformers'} & set(sys.modules) else 0)"
    )
    assert subprocess.run([sys.executable, "-c", code], check=False).returncode == 0


# ---------------------------------------------------------------------------------------------
# User files
# ---------------------------------------------------------------------------------------------


def _files(tmp_path: Path, train: str, dev: str, suffix: str, **spec: Any) -> DatasetSpec:
    train_path = tmp_path / f"train{suffix}"
    dev_path = tmp_path / f"dev{suffix}"
    train_path.write_text(train, encoding="utf-8")
    dev_path.write_text(dev, encoding="utf-8")
    fields: dict[str, Any] = {
        "train_file": str(train_path),
        "eval_file": str(dev_path),
        "text_column": "text",
        "label_column": "label",
        "task_type": "classification",
    }
    fields.update(spec)
    return DatasetSpec(**fields)


def _jsonl(*rows: dict[str, Any]) -> str:
    return "".join(json.dumps(row) + "\n" for row in rows)


def test_csv_with_quotes_commas_and_string_labels(tmp_path: Path) -> None:
    train = 'text,label\n"Hello, world",pos\n"He said ""hi""",neg\nplain,neutral\n"two\nlines",pos\n'
    dev = "text,label\nok,neg\n"
    splits = load_splits(_files(tmp_path, train, dev, ".csv"))
    info = splits.info
    assert info.label_names == ("neg", "neutral", "pos")  # sorted
    assert dict(info.label_to_id) == {"neg": 0, "neutral": 1, "pos": 2}
    assert info.num_labels == 3 and info.metric == "accuracy" and info.main_metric == "accuracy"
    assert [ex.text for ex in splits.train] == ["Hello, world", 'He said "hi"', "plain", "two\nlines"]
    assert [ex.label for ex in splits.train] == [2, 0, 1, 2]
    assert [ex.line for ex in splits.train] == [2, 3, 4, 5]
    assert splits.eval == [Example("ok", None, 0, 2)]


def test_integer_labels_sort_numerically(tmp_path: Path) -> None:
    train = _jsonl(*({"text": f"t{i}", "label": lab} for i, lab in enumerate([10, 2, "3", 2])))
    dev = _jsonl({"text": "x", "label": 3})
    splits = load_splits(_files(tmp_path, train, dev, ".jsonl"))
    assert splits.info.label_names == ("2", "3", "10")
    assert [ex.label for ex in splits.train] == [2, 0, 1, 0]
    assert splits.eval[0].label == 1


def test_integer_labels_with_num_labels_are_ids(tmp_path: Path) -> None:
    train = "text\tlabel\na\t0\nb\t3\n"
    spec = _files(tmp_path, train, "text\tlabel\nc\t3\n", ".tsv", num_labels=5)
    splits = load_splits(spec)
    assert splits.info.num_labels == 5
    assert [ex.label for ex in splits.train] == [0, 3]
    bad = _files(tmp_path, "text\tlabel\na\t0\nb\t7\n", "text\tlabel\nc\t0\n", ".tsv", num_labels=5)
    with pytest.raises(DatasetError, match=r"line 3: label 7 is outside 0\.\.4"):
        load_splits(bad)


def test_pairs_regression_and_binary_f1(tmp_path: Path) -> None:
    train = _jsonl({"a": "x", "b": "y", "s": 1.5}, {"a": "p", "b": "q", "s": "4"})
    spec = _files(
        tmp_path,
        train,
        _jsonl({"a": "m", "b": "n", "s": 0}),
        ".jsonl",
        text_column="a",
        text_pair_column="b",
        label_column="s",
        task_type="regression",
    )
    splits = load_splits(spec)
    assert splits.info.task_type == "regression" and splits.info.num_labels == 1
    assert splits.info.main_metric == "pearson"
    assert splits.train == [Example("x", "y", 1.5, 1), Example("p", "q", 4.0, 2)]
    assert splits.eval[0].label == 0.0 and isinstance(splits.eval[0].label, float)

    f1 = _files(tmp_path, "text,label\na,0\nb,1\n", "text,label\nc,1\n", ".csv", metric="f1")
    assert load_splits(f1).info.main_metric == "f1"
    three = _files(tmp_path, "text,label\na,0\nb,1\nc,2\n", "text,label\nc,1\n", ".csv", metric="f1")
    with pytest.raises(DatasetError, match="exactly 2 labels"):
        load_splits(three)


def test_uploaded_file_ids_and_content_sniffing(tmp_path: Path) -> None:
    files = tmp_path / "files"
    files.mkdir()
    (files / "file-1").write_text(_jsonl({"text": "a", "label": "x"}, {"text": "b", "label": "y"}))
    (files / "file-2").write_text("text\tlabel\nc\ty\n")
    spec = DatasetSpec(
        train_file="file-1",
        eval_file="file-2",
        text_column="text",
        label_column="label",
        task_type="classification",
    )
    splits = load_splits(spec, files_dir=files)
    assert [ex.label for ex in splits.train] == [0, 1] and splits.eval[0].label == 1
    with pytest.raises(DatasetError, match="file-1: file not found"):
        load_splits(spec)


GOOD_CSV = "text,label\na,0\nb,1\n"


@pytest.mark.parametrize(
    ("suffix", "train", "dev", "spec", "where", "reason"),
    [
        # missing column: named, with the available ones listed
        (
            ".csv",
            "sentence,label\na,0\n",
            GOOD_CSV,
            {},
            "train.csv: line 1",
            "missing column 'text'; available",
        ),
        (
            ".tsv",
            "text\tlbl\na\t0\n",
            GOOD_CSV,
            {},
            "train.tsv: line 1",
            "'label'; available columns: text, lbl",
        ),
        (".jsonl", _jsonl({"text": "a", "label": 0}, {"text": "b"}), GOOD_CSV, {}, "line 2", "'label'"),
        # empty text
        (".csv", "text,label\na,0\n  ,1\n", GOOD_CSV, {}, "train.csv: line 3", "empty text in column 'text'"),
        (".tsv", "text\tlabel\na\t0\n\t\n", GOOD_CSV, {}, "train.tsv: line 3", "empty text in column 'text'"),
        (
            ".jsonl",
            _jsonl({"text": "a", "label": 0}, {"text": "", "label": 1}),
            GOOD_CSV,
            {},
            "line 2",
            "empty",
        ),
        (".jsonl", _jsonl({"text": 5, "label": 0}), GOOD_CSV, {}, "line 1", "must be text"),
        (".jsonl", _jsonl({"text": None, "label": 0}), GOOD_CSV, {}, "line 1", "must be text (got null)"),
        # bad labels
        (".csv", "text,label\na,0\nb,\n", GOOD_CSV, {}, "train.csv: line 3", "empty label"),
        (".jsonl", _jsonl({"text": "a", "label": True}), GOOD_CSV, {}, "line 1", "integer or a string"),
        (".jsonl", _jsonl({"text": "a", "label": 0.5}), GOOD_CSV, {}, "line 1", "not a class"),
        (".csv", "text,label\na,0\nb,0\n", GOOD_CSV, {}, "train.csv", "at least 2 distinct labels"),
        (
            ".csv",
            GOOD_CSV,
            "text,label\nc,1\nd,2\n",
            {},
            "dev.csv: line 3",
            "label '2' does not occur in the training",
        ),
        (
            ".csv",
            "text,label\na,0.5\nb,high\n",
            GOOD_CSV,
            {"task_type": "regression"},
            "line 3",
            "not a number",
        ),
        (
            ".csv",
            "text,label\na,0.5\nb,nan\n",
            GOOD_CSV,
            {"task_type": "regression"},
            "line 3",
            "not a finite number",
        ),
        (
            ".csv",
            "text,label\na,inf\n",
            GOOD_CSV,
            {"task_type": "regression"},
            "line 2",
            "not a finite number",
        ),
        (
            ".jsonl",
            _jsonl({"text": "a", "label": None}),
            GOOD_CSV,
            {"task_type": "regression"},
            "line 1",
            "number",
        ),
        # malformed jsonl lines
        (
            ".jsonl",
            '{"text": "a", "label": 0}\n\n{"text": "b", label: 1}\n',
            GOOD_CSV,
            {},
            "line 3",
            "malformed JSON",
        ),
        (
            ".jsonl",
            '{"text": "a", "label": 0}\n[1, 2]\n',
            GOOD_CSV,
            {},
            "line 2",
            "expected a JSON object, got a list",
        ),
        (".jsonl", '[{"text": "a", "label": 0}]\n', GOOD_CSV, {}, "line 1", "JSON array"),
        # wrong field counts
        (
            ".tsv",
            "text\tlabel\na\t0\nb\t1\textra\n",
            GOOD_CSV,
            {},
            "train.tsv: line 3",
            "expected 2 tab-separated",
        ),
        (".tsv", "text\tlabel\na\t0\nb\n", GOOD_CSV, {}, "train.tsv: line 3", "found 1"),
        (".csv", "text,label\na,0\nb,1,2\n", GOOD_CSV, {}, "train.csv: line 3", "expected 2 comma-separated"),
        (".csv", "text,label\na,0\n\n\nb,1,2\n", GOOD_CSV, {}, "train.csv: line 5", "found 3"),  # blank lines
        (".csv", "text,text\na,0\n", GOOD_CSV, {}, "train.csv: line 1", "appears twice"),
        # empty files
        (".csv", "", GOOD_CSV, {}, "train.csv", "empty"),
        (".jsonl", "\n\n", GOOD_CSV, {}, "train.jsonl", "empty"),
        (".csv", "text,label\n", GOOD_CSV, {}, "train.csv", "no data rows"),
        (".tsv", GOOD_CSV.replace(",", "\t"), "", {}, "dev.tsv", "empty"),
    ],
)
def test_malformed_files_name_file_line_and_reason(
    tmp_path: Path, suffix: str, train: str, dev: str, spec: dict[str, Any], where: str, reason: str
) -> None:
    if dev is GOOD_CSV and suffix != ".csv":
        dev = {".tsv": GOOD_CSV.replace(",", "\t"), ".jsonl": _jsonl({"text": "c", "label": 0})}[suffix]
    dataset = _files(tmp_path, train, dev, suffix, **spec)
    with pytest.raises(DatasetError) as info:
        load_splits(dataset)
    message = str(info.value)
    assert where in message, message
    assert reason in message, message
    assert str(tmp_path) in message  # the file is named by its path


def test_eval_split_is_validated_against_train_labels(tmp_path: Path) -> None:
    spec = _files(tmp_path, GOOD_CSV, "text,label\nc,1\nd,5\n", ".csv")
    train, _ = load_examples(spec, "train")  # the eval file is not read for the train split
    assert len(train) == 2
    with pytest.raises(DatasetError, match=r"dev\.csv: line 3: label '5'"):
        load_examples(spec, "eval")


def test_invalid_utf8_names_the_line(tmp_path: Path) -> None:
    (tmp_path / "train.csv").write_bytes(b"text,label\na,0\nb\xff,1\n")
    (tmp_path / "dev.csv").write_text(GOOD_CSV)
    spec = DatasetSpec(
        train_file=str(tmp_path / "train.csv"),
        eval_file=str(tmp_path / "dev.csv"),
        text_column="text",
        label_column="label",
        task_type="classification",
    )
    with pytest.raises(DatasetError, match=r"train\.csv: line 3: not valid UTF-8"):
        load_splits(spec)


def test_unknown_split() -> None:
    with pytest.raises(ValueError, match="unknown split"):
        load_examples(DatasetSpec(preset="glue/rte"), "test")


# ---------------------------------------------------------------------------------------------
# Tokenisation
# ---------------------------------------------------------------------------------------------

VOCAB = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "the", "cat", "sat", "on", "mat", "a", "dog", "."]


@pytest.fixture(scope="module")
def tokenizer(tmp_path_factory: pytest.TempPathFactory) -> Any:
    transformers = pytest.importorskip("transformers")
    path = tmp_path_factory.mktemp("vocab") / "vocab.txt"
    path.write_text("\n".join(VOCAB) + "\n")
    return transformers.BertTokenizerFast(vocab=str(path))


def test_tokenize_pairs_classification(tokenizer: Any) -> None:
    import torch

    examples = [
        Example("the cat sat", "on the mat .", 1, 1),
        Example("a dog", "zebra", 0, 2),
        Example("the cat sat on the mat . the dog sat", "a dog", 1, 3),
    ]
    ds = tokenize(examples, tokenizer, max_seq_length=8, task_type="classification")
    assert len(ds) == 3
    item = ds[0]
    # [CLS] the cat sat [SEP] on the mat . [SEP] truncated to 8 (longest first)
    assert item["input_ids"].tolist()[0] == 2 and item["input_ids"].tolist()[-1] == 3
    assert ds[1]["input_ids"].tolist() == [2, 10, 11, 3, 1, 3]  # zebra -> [UNK]
    assert ds[1]["token_type_ids"].tolist() == [0, 0, 0, 0, 1, 1]
    assert all(int(ds[i]["input_ids"].shape[0]) <= 8 for i in range(3))
    batch = ds.batch([1, 0, 2])
    assert set(batch) == {"input_ids", "attention_mask", "token_type_ids", "labels"}
    assert batch["input_ids"].shape == (3, 8)
    assert batch["labels"].dtype == torch.long and batch["labels"].tolist() == [0, 1, 1]
    assert batch["attention_mask"][0].tolist() == [1] * 6 + [0, 0]
    assert batch["input_ids"][0, 6:].tolist() == [tokenizer.pad_token_id] * 2
    assert batch["input_ids"].dtype == torch.long
    full = ds.tensors()
    assert full["input_ids"].shape == (3, 8)

    loader: Any = torch.utils.data.DataLoader(ds, batch_size=2, collate_fn=ds.collate)  # type: ignore[arg-type]
    shapes = [b["input_ids"].shape for b in loader]
    assert [s[0] for s in shapes] == [2, 1]


def test_tokenize_single_sentence_regression(tokenizer: Any) -> None:
    import torch

    examples = [Example("the cat", None, 2.5, 1), Example("a dog sat", None, 0.0, 2)]
    ds = tokenize(examples, tokenizer, max_seq_length=16)  # task type from the labels
    batch = ds.batch([0, 1])
    assert batch["labels"].dtype == torch.float32 and batch["labels"].tolist() == [2.5, 0.0]
    assert batch["input_ids"].tolist() == [[2, 5, 6, 3, 0], [2, 10, 11, 7, 3]]
    assert batch["token_type_ids"].tolist() == [[0] * 5, [0] * 5]


def test_tokenize_without_token_type_ids(tmp_path: Path) -> None:
    transformers = pytest.importorskip("transformers")
    path = tmp_path / "vocab.txt"
    path.write_text("\n".join(VOCAB) + "\n")
    tok = transformers.BertTokenizerFast(vocab=str(path), model_input_names=["input_ids", "attention_mask"])
    ds = tokenize([Example("the cat", "a dog", 1, 1)], tok, max_seq_length=16)
    assert "token_type_ids" not in ds[0]
    assert "token_type_ids" not in ds.batch([0])


@needs_glue
def test_tokenize_a_preset(tokenizer: Any) -> None:
    examples, info = load_examples(DatasetSpec(preset="glue/rte", max_eval_examples=50), "eval")
    ds = tokenize(examples, tokenizer, max_seq_length=32, task_type=info.task_type)
    assert len(ds) == 50
    assert int(ds.lengths.max()) == 32


# ---------------------------------------------------------------------------------------------
# Sharding
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("num_examples", [0, 5, 16, 100, 2490])
@pytest.mark.parametrize("world_size", [1, 2, 4])
def test_global_batches_do_not_depend_on_world_size(num_examples: int, world_size: int) -> None:
    batch, seed, epoch = 16, 42, 3
    single = shard_indices(num_examples, epoch, seed, 0, 1, batch)
    batches = num_global_batches(num_examples, batch)
    assert len(single) == batches * batch  # the last partial batch is dropped
    per_rank = batch // world_size
    shards = [shard_indices(num_examples, epoch, seed, r, world_size, batch) for r in range(world_size)]
    assert all(len(s) == batches * per_rank for s in shards)
    for b in range(batches):
        union = [i for s in shards for i in s[b * per_rank : (b + 1) * per_rank]]
        assert union == single[b * batch : (b + 1) * batch]  # same examples, same order
    flat = [i for s in shards for i in s]
    assert len(set(flat)) == len(flat)  # no example twice in an epoch
    assert all(0 <= i < num_examples for i in flat)


def test_shuffle_is_deterministic_and_changes_with_epoch_and_seed() -> None:
    a = shard_indices(1000, 0, 42, 1, 4, 32)
    assert a == shard_indices(1000, 0, 42, 1, 4, 32)
    assert a != shard_indices(1000, 1, 42, 1, 4, 32)
    assert a != shard_indices(1000, 0, 52, 1, 4, 32)
    assert sorted(data.epoch_permutation(1000, 0, 42)) == list(range(1000))


def test_shard_arguments_are_checked() -> None:
    with pytest.raises(ValueError, match="multiple of world_size"):
        shard_indices(100, 0, 42, 0, 3, 16)
    with pytest.raises(ValueError, match="rank"):
        shard_indices(100, 0, 42, 4, 4, 16)
    with pytest.raises(ValueError, match="world_size"):
        shard_indices(100, 0, 42, 0, 0, 16)


@pytest.mark.parametrize(("n", "world_size"), [(0, 1), (10, 1), (10, 3), (2, 4), (277, 4)])
def test_eval_shards_cover_everything_in_order(n: int, world_size: int) -> None:
    parts = [eval_shard(n, r, world_size) for r in range(world_size)]
    assert [i for part in parts for i in part] == list(range(n))
    sizes = [len(part) for part in parts]
    assert max(sizes) - min(sizes) <= 1
