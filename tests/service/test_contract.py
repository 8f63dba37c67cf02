"""The job contract: valid specs load from JSON and YAML; every bad field is named in a SpecError."""

from __future__ import annotations

import json
import pickle
import subprocess
import sys
from pathlib import Path

import pytest

from service.core.contract import (
    METRICS,
    MODES,
    OFFICIAL_WARMUP,
    PHASES,
    PRESET_METRICS,
    PRESET_TASK_TYPES,
    PRESETS,
    STATUSES,
    TASK_TYPES,
    ChildTuningSpec,
    DatasetSpec,
    JobSpec,
    Resources,
    SpecError,
    load_spec,
)

FULL = {
    "model": "minilm-l6",
    "dataset": {"preset": "glue/rte", "max_train_examples": 64},
    "childtuning": {"mode": "childtuning-f", "reserve_p": 0.4, "fisher_clip_norm": None, "seed": 7},
    "hyperparameters": {
        "epochs": 2,
        "batch_size": 8,
        "learning_rate": 3e-5,
        "eval_every": 10,
        "max_steps": 20,
        "rdrop_alpha": 4.0,
    },
    "resources": {"num_gpus": 2, "zero_stage": 3, "precision": "bf16", "device": "cpu"},
    "metadata": {"study": "p-sweep", "owner": "me"},
}

YAML_TEXT = """\
model: minilm-l6
dataset:
  preset: glue/rte
  max_train_examples: 64
childtuning:
  mode: childtuning-f
  reserve_p: 0.4
  fisher_clip_norm: null
  seed: 7
hyperparameters:
  epochs: 2
  batch_size: 8
  learning_rate: 3e-5      # PyYAML reads this as a string; it is still accepted as a number
  eval_every: 10
  max_steps: 20
  rdrop_alpha: 4
resources:
  num_gpus: 2
  zero_stage: 3
  precision: bf16
  device: cpu
metadata:
  study: p-sweep
  owner: me
"""


def _check_full(spec: JobSpec) -> None:
    assert spec.model == "minilm-l6"
    assert spec.dataset.preset == "glue/rte"
    assert spec.dataset.max_train_examples == 64
    assert spec.childtuning.mode == "childtuning-f"
    assert spec.childtuning.reserve_p == 0.4
    assert spec.childtuning.fisher_clip_norm is None
    assert spec.hyperparameters.learning_rate == pytest.approx(3e-5)
    assert spec.hyperparameters.rdrop_alpha == 4.0
    assert spec.hyperparameters.batch_size == 8
    assert spec.resources.num_ranks == 2
    assert spec.resources.num_gpus == 2
    assert spec.resources.zero_stage == 3
    assert spec.metadata == {"study": "p-sweep", "owner": "me"}


def test_json_text_file_and_mapping(tmp_path: Path) -> None:
    text = json.dumps(FULL)
    _check_full(load_spec(text))
    _check_full(load_spec(FULL))
    path = tmp_path / "job.json"
    path.write_text(text)
    _check_full(load_spec(path))
    _check_full(load_spec(str(path)))


def test_yaml_text_and_files(tmp_path: Path) -> None:
    _check_full(load_spec(YAML_TEXT))
    for name in ("job.yaml", "job.yml", "job.spec"):
        path = tmp_path / name
        path.write_text(YAML_TEXT)
        _check_full(load_spec(path))
    assert load_spec(YAML_TEXT) == load_spec(FULL)


def test_defaults_are_the_papers() -> None:
    spec = load_spec({"model": "minilm-l6", "dataset": {"preset": "glue/mrpc"}})
    ct, hp, res = spec.childtuning, spec.hyperparameters, spec.resources
    assert (ct.mode, ct.reserve_p, ct.param_filter, ct.fisher_num_batches) == (
        "childtuning-d",
        0.3,
        None,
        None,
    )
    assert (ct.fisher_clip_norm, ct.rescale, ct.seed) == (1.0, None, None)
    assert (hp.epochs, hp.batch_size, hp.learning_rate, hp.weight_decay) == (3, 16, 4e-5, 0.01)
    assert (hp.warmup_ratio, hp.max_seq_length, hp.seed, hp.eval_every) == (0.1, 128, 42, None)
    assert (hp.gradient_accumulation_steps, hp.max_grad_norm, hp.rdrop_alpha) == (1, 1.0, 0.0)
    assert (hp.max_steps, hp.keep_checkpoints, hp.save_every) == (None, 2, None)
    assert (res.num_ranks, res.zero_stage, res.precision, res.device) == (1, 2, "fp32", "auto")
    assert spec.metadata == {}
    assert spec.dataset.effective_metric == "f1"


def test_the_defaults_are_the_childtuning_paper_recipe() -> None:
    """No recipe and ``recipe: childtuning-paper`` give the same job (the docs call the defaults
    the paper's); what a job sets itself wins over its recipe."""
    plain = load_spec({"model": "minilm-l6", "dataset": {"preset": "glue/rte"}})
    paper = load_spec(
        {"model": "minilm-l6", "dataset": {"preset": "glue/rte"}, "recipe": "childtuning-paper"}
    )
    assert paper.recipe == "childtuning-paper" and paper.hyperparameters == plain.hyperparameters
    hp = paper.hyperparameters
    assert (hp.learning_rate, hp.batch_size, hp.epochs, hp.max_seq_length) == (4e-5, 16, 3, 128)
    assert (hp.warmup_ratio, hp.weight_decay, hp.seed) == (0.1, 0.01, 42)
    mine = load_spec(
        {
            "model": "minilm-l6",
            "dataset": {"preset": "glue/rte"},
            "recipe": "childtuning-paper",
            "hyperparameters": {"learning_rate": 2e-5},
        }
    )
    assert mine.hyperparameters.learning_rate == 2e-5 and mine.hyperparameters.epochs == 3


@pytest.mark.parametrize(("preset", "batch"), [("glue/rte", 8), ("glue/mrpc", 16), ("glue/sst-2", 32)])
def test_the_rdrop_paper_recipe(preset: str, batch: int) -> None:
    spec = load_spec(
        {"model": "minilm-l6", "dataset": {"preset": preset}, "recipe": "rdrop-paper"}, strict=True
    )
    hp = spec.hyperparameters
    assert (hp.learning_rate, hp.batch_size, hp.epochs, hp.warmup_ratio) == (1e-5, batch, 10, 0.06)
    # the official alpha 1.0 sums the KL over the batch and halves the cross-entropies: 2 * batch here
    assert hp.rdrop_alpha == 2 * batch
    assert load_spec(spec.model_dump(mode="json"), strict=True) == spec  # job.json reloads the same


def test_dump_round_trips() -> None:
    spec = load_spec(FULL)
    again = load_spec(spec.model_dump_json())
    assert again == spec
    assert load_spec(spec.model_dump()) == spec
    assert "num_ranks" in spec.model_dump()["resources"]


def test_user_files_dataset() -> None:
    spec = load_spec(
        {
            "model": "/models/bert",
            "dataset": {
                "train_file": "file-abc",
                "eval_file": "file-def",
                "text_column": "q",
                "text_pair_column": "a",
                "label_column": "y",
                "task_type": "regression",
            },
        }
    )
    assert spec.dataset.preset is None
    assert spec.dataset.effective_metric == "pearson_spearman"


def test_preset_name_is_case_insensitive() -> None:
    assert DatasetSpec(preset="GLUE/STS-B").preset == "glue/sts-b"  # type: ignore[arg-type]


def test_num_gpus_and_num_ranks_are_one_setting() -> None:
    assert Resources.model_validate({"num_gpus": 4}).num_ranks == 4
    assert Resources.model_validate({"num_ranks": 4}).num_gpus == 4
    assert Resources.model_validate({"num_ranks": 4, "num_gpus": 4}).num_ranks == 4
    with pytest.raises(SpecError) as info:
        load_spec(
            {"model": "m", "dataset": {"preset": "glue/rte"}, "resources": {"num_ranks": 2, "num_gpus": 4}}
        )
    assert info.value.fields == ["resources.num_gpus"]


def test_num_ranks_is_the_jobs_total_split_over_its_nodes() -> None:
    assert Resources.model_validate({"nodes": 2, "num_ranks": 16}).ranks_per_node == 8
    assert Resources.model_validate({}).nodes == 1
    with pytest.raises(SpecError) as info:
        load_spec(
            {"model": "m", "dataset": {"preset": "glue/rte"}, "resources": {"nodes": 2, "num_ranks": 3}}
        )
    assert info.value.fields == ["resources.nodes"]
    assert "multiple of nodes" in str(info.value) and "e.g. 2 ranks" in str(info.value)


@pytest.mark.parametrize(
    ("mode", "warmup"),
    [("vanilla", 0.1), ("childtuning-d", 0.0), ("childtuning-f", 0.0), ("update-dropout", 0.0)],
)
def test_the_official_recipe_is_what_the_official_code_ran_per_mode(mode: str, warmup: float) -> None:
    """childtuning-official: the official ChildTuning-D/-F trainers built their scheduler from
    warmup_steps (0), vanilla (the stock Trainer) from warmup_ratio 0.1; every optimizer had the
    2021 Hugging Face rule. childtuning-paper gives every mode 10% and torch's AdamW. The spec
    records the warmup each got; what a job sets wins."""
    base = {"model": "m", "dataset": {"preset": "glue/rte"}, "childtuning": {"mode": mode}}
    official = load_spec({**base, "recipe": "childtuning-official"}).hyperparameters
    assert (official.warmup_ratio, official.optimizer) == (warmup, "adamw-hf2021")
    assert (official.learning_rate, official.batch_size, official.epochs) == (4e-5, 16, 3)
    paper = load_spec({**base, "recipe": "childtuning-paper"}).hyperparameters
    assert (paper.warmup_ratio, paper.optimizer) == (0.1, "adamw")
    mine = load_spec({**base, "recipe": "childtuning-official", "hyperparameters": {"warmup_ratio": 0.05}})
    assert mine.hyperparameters.warmup_ratio == 0.05
    dumped = load_spec({**base, "recipe": "childtuning-official"}).model_dump(mode="json")
    assert dumped["hyperparameters"]["warmup_ratio"] == warmup  # what job.json and the API show


def test_the_official_recipe_defaults_to_the_default_mode_and_covers_every_mode() -> None:
    assert set(OFFICIAL_WARMUP) == set(MODES)
    spec = load_spec({"model": "m", "dataset": {"preset": "glue/rte"}, "recipe": "childtuning-official"})
    assert spec.childtuning.mode == "childtuning-d" and spec.hyperparameters.warmup_ratio == 0.0


def test_the_2021_rule_refuses_a_decay_that_would_zero_the_weights() -> None:
    with pytest.raises(SpecError) as info:
        load_spec(
            {
                "model": "m",
                "dataset": {"preset": "glue/rte"},
                "hyperparameters": {"optimizer": "adamw-hf2021", "learning_rate": 1, "weight_decay": 1},
            }
        )
    assert info.value.fields == ["hyperparameters.weight_decay"]
    with pytest.raises(SpecError) as info:
        load_spec({"model": "m", "dataset": {"preset": "glue/rte"}, "hyperparameters": {"optimizer": "sgd"}})
    assert info.value.fields == ["hyperparameters.optimizer"]


BASE = {"model": "minilm-l6", "dataset": {"preset": "glue/rte"}}


def _with(section: str | None, **values: object) -> dict[str, object]:
    data = json.loads(json.dumps(BASE))
    if section is None:
        data.update(values)
    else:
        data.setdefault(section, {}).update(values)
    return data


@pytest.mark.parametrize(
    ("spec", "field", "message"),
    [
        (_with("childtuning", reserve_p=1.5), "childtuning.reserve_p", "must be > 0 and <= 1 (got 1.5)"),
        (_with("childtuning", reserve_p=0), "childtuning.reserve_p", "must be > 0 and <= 1 (got 0)"),
        (_with("childtuning", reserve_p=-0.1), "childtuning.reserve_p", "must be > 0 and <= 1"),
        (_with("childtuning", reserve_p="abc"), "childtuning.reserve_p", "must be a number"),
        (_with("childtuning", reserve_p=True), "childtuning.reserve_p", "not a boolean"),
        (_with("childtuning", mode="childtuning-x"), "childtuning.mode", ", ".join(MODES)),
        (_with("childtuning", reserve_pp=0.2), "childtuning.reserve_pp", "did you mean 'reserve_p'"),
        (_with("childtuning", fisher_num_batches=0), "childtuning.fisher_num_batches", "must be >= 1"),
        (_with("childtuning", fisher_clip_norm=0), "childtuning.fisher_clip_norm", "must be > 0"),
        (_with("childtuning", rescale="maybe"), "childtuning.rescale", "true or false"),
        (_with("childtuning", seed=-1), "childtuning.seed", "must be >= 0"),
        (_with("resources", zero_stage=5), "resources.zero_stage", "must be >= 0 and <= 3 (got 5)"),
        (_with("resources", num_gpus=0), "resources.num_gpus", "must be >= 1"),
        (_with("resources", num_ranks=0), "resources.num_ranks", "must be >= 1"),
        (_with("resources", precision="fp8"), "resources.precision", "fp32, bf16, fp16"),
        (_with("resources", device="tpu"), "resources.device", "cpu, cuda, auto"),
        (_with("hyperparameters", epochs=0), "hyperparameters.epochs", "must be >= 1"),
        (_with("hyperparameters", epochs=1.5), "hyperparameters.epochs", "whole number"),
        (_with("hyperparameters", learning_rate=0), "hyperparameters.learning_rate", "must be > 0"),
        (_with("hyperparameters", learning_rate=float("nan")), "hyperparameters.learning_rate", "finite"),
        (_with("hyperparameters", warmup_ratio=1.5), "hyperparameters.warmup_ratio", "<= 1"),
        (_with("hyperparameters", max_grad_norm=-1), "hyperparameters.max_grad_norm", ">= 0"),
        (_with("hyperparameters", batch_sise=8), "hyperparameters.batch_sise", "did you mean 'batch_size'"),
        (_with(None, modle="x"), "modle", "unknown field"),
        (_with(None, model=""), "model", "must not be empty"),
        (_with(None, model="   "), "model", "must not be blank"),
        (_with(None, metadata={"k": 1}), "metadata.k", "must be a string"),
        (_with(None, metadata={"k": "x" * 5000}), "metadata.k", "at most"),
        (_with(None, metadata={f"k{i}": "v" for i in range(40)}), "metadata", "at most 32 entries"),
        ({"dataset": {"preset": "glue/rte"}}, "model", "required"),
        ({"model": "m"}, "dataset", "required"),
        ({"model": "m", "dataset": {"preset": "glue/qqp"}}, "dataset.preset", ", ".join(PRESETS)),
        (
            {"model": "m", "dataset": {"preset": "glue/rte", "train_file": "a.csv"}},
            "dataset.preset",
            "not both",
        ),
        ({"model": "m", "dataset": {}}, "dataset", "give either preset"),
        (
            {"model": "m", "dataset": {"train_file": "a.csv", "text_column": "t"}},
            "dataset.eval_file",
            "missing: eval_file, label_column, task_type",
        ),
        (
            {
                "model": "m",
                "dataset": {
                    "train_file": "a",
                    "eval_file": "b",
                    "text_column": "t",
                    "label_column": "y",
                    "task_type": "regression",
                    "metric": "f1",
                },
            },
            "dataset.metric",
            "regression",
        ),
        (
            {
                "model": "m",
                "dataset": {
                    "train_file": "a",
                    "eval_file": "b",
                    "text_column": "t",
                    "label_column": "y",
                    "task_type": "classification",
                    "num_labels": 1,
                },
            },
            "dataset.num_labels",
            ">= 2",
        ),
        (
            {
                "model": "m",
                "dataset": {
                    "train_file": "a",
                    "eval_file": "b",
                    "text_column": "t",
                    "label_column": "t",
                    "task_type": "classification",
                },
            },
            "dataset.label_column",
            "differ",
        ),
        (
            _with("hyperparameters", batch_size=15) | {"resources": {"num_ranks": 2}},
            "hyperparameters.batch_size",
            "divisible by resources.num_ranks (2)",
        ),
        (_with("childtuning", param_filter="la(yer"), "childtuning.param_filter", "not a regular expression"),
        (_with("childtuning", param_filter=[]), "childtuning.param_filter", "a list of 1 to 32"),
        (_with("childtuning", param_filter=7), "childtuning.param_filter", "must be a regular expression"),
        (
            _with("childtuning", mode="childtuning-f", strict_child=True),
            "childtuning.strict_child",
            "is for mode childtuning-d",
        ),
        (
            _with("childtuning", mode="vanilla", audit_strict=True),
            "childtuning.audit_strict",
            "is for mode childtuning-d",
        ),
        (_with("childtuning", clip_order="later"), "childtuning.clip_order", "clip-then-mask"),
        (_with(None, recipe="bert-paper"), "recipe", "childtuning-paper"),
        (_with(None, recipe={}), "recipe", "childtuning-paper"),  # the fuzzer's find: was a 500
        (
            _with("hyperparameters", early_stopping_patience=0),
            "hyperparameters.early_stopping_patience",
            ">= 1",
        ),
        (_with(None, recipe=["rdrop-paper"]), "recipe", "childtuning-paper"),
    ],
)
def test_bad_field_is_named(spec: dict[str, object], field: str, message: str) -> None:
    with pytest.raises(SpecError) as info:
        load_spec(spec)
    err = info.value
    assert isinstance(err, ValueError)
    assert field in err.fields, err.errors
    text = dict(err.errors)[field]
    assert message in text, text
    assert f"{field}: " in str(err)


def test_exact_message_format() -> None:
    with pytest.raises(SpecError) as info:
        load_spec(_with("childtuning", reserve_p=1.5))
    assert str(info.value) == "childtuning.reserve_p: must be > 0 and <= 1 (got 1.5)"
    assert info.value.errors == [("childtuning.reserve_p", "must be > 0 and <= 1 (got 1.5)")]
    assert info.value.field == "childtuning.reserve_p"
    copy = pickle.loads(pickle.dumps(info.value))
    assert isinstance(copy, SpecError) and copy.errors == info.value.errors


def test_all_problems_are_reported_at_once() -> None:
    spec = {
        "model": "m",
        "dataset": {"preset": "glue/nope"},
        "childtuning": {"mode": "x", "reserve_p": 2},
        "resources": {"zero_stage": 5},
        "hyperparameters": {"epochs": -1},
        "colour": "blue",
    }
    with pytest.raises(SpecError) as info:
        load_spec(spec)
    assert set(info.value.fields) == {
        "dataset.preset",
        "childtuning.mode",
        "childtuning.reserve_p",
        "resources.zero_stage",
        "hyperparameters.epochs",
        "colour",
    }
    assert str(info.value).startswith("6 problems in the job spec:")


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("", "empty"),
        ("   \n", "empty"),
        ("model: [\n", "invalid YAML at line"),
        ('{"model": "m",', "invalid JSON at line 1"),
        ("- a\n- b\n", "must be an object"),
        ("42", "must be an object"),
    ],
)
def test_unparseable_text(text: str, message: str) -> None:
    with pytest.raises(SpecError, match=message):
        load_spec(text)


def test_bad_json_file_reports_json(tmp_path: Path) -> None:
    path = tmp_path / "job.json"
    path.write_text("model: m\n")
    with pytest.raises(SpecError, match="invalid JSON"):
        load_spec(path)


def test_shared_names() -> None:
    assert MODES == ("vanilla", "childtuning-d", "childtuning-f", "update-dropout")
    assert PRESETS == ("glue/rte", "glue/mrpc", "glue/cola", "glue/sts-b", "glue/sst-2", "instruct/sst-2")
    assert STATUSES == ("queued", "running", "succeeded", "failed", "cancelled")
    assert PHASES == ("preparing", "fisher", "training", "evaluating", "saving")
    assert set(PRESET_METRICS) == set(PRESETS) == set(PRESET_TASK_TYPES)
    assert set(PRESET_TASK_TYPES.values()) <= set(TASK_TYPES)
    assert set(PRESET_METRICS.values()) <= set(METRICS)


def test_modes_and_config_match_the_method() -> None:
    """The contract's ChildTuning fields are the method's ChildTuningConfig fields."""
    from childtuning.config import CLIP_ORDERS as METHOD_CLIP_ORDERS
    from childtuning.config import MODES as METHOD_MODES
    from childtuning.config import ChildTuningConfig
    from service.core.contract.vocabulary import CLIP_ORDERS

    assert tuple(METHOD_MODES) == MODES and tuple(METHOD_CLIP_ORDERS) == CLIP_ORDERS
    strict = ChildTuningSpec(
        param_filter=["attention", "output"], strict_child=True, clip_order="mask-then-clip"
    )
    config = ChildTuningConfig(**strict.config_kwargs(default_seed=1))
    assert (config.param_filter, config.strict_child, config.clip_order) == (
        ["attention", "output"],
        True,
        "mask-then-clip",
    )
    assert config.selects("bert.encoder.layer.0.attention.self.query.weight")
    assert not config.selects("bert.embeddings.word_embeddings.weight")
    spec = ChildTuningSpec(mode="update-dropout", reserve_p=0.2, rescale=False)
    config = ChildTuningConfig(**spec.config_kwargs(default_seed=57))
    assert (config.mode, config.reserve_p, config.rescale, config.seed) == ("update-dropout", 0.2, False, 57)
    assert ChildTuningConfig(**ChildTuningSpec(seed=3).config_kwargs(default_seed=57)).seed == 3


def test_json_schema_has_examples() -> None:
    schema = JobSpec.model_json_schema()
    assert schema["examples"]
    for model in ("ChildTuningSpec", "DatasetSpec", "Hyperparameters", "Resources"):
        assert schema["$defs"][model]["examples"], model
    # Each example validates.
    for example in schema["examples"]:
        load_spec(example)
    for example in schema["$defs"]["ChildTuningSpec"]["examples"]:
        ChildTuningSpec.model_validate(example)
    for example in schema["$defs"]["DatasetSpec"]["examples"]:
        DatasetSpec.model_validate(example)


def test_contract_does_not_import_torch() -> None:
    code = "import sys, service.core.contract; sys.exit(1 if 'torch' in sys.modules else 0)"
    assert subprocess.run([sys.executable, "-c", code], check=False).returncode == 0
