"""One source for fine-tune hyper-parameters: the core, the payload, the CLI and the HTTP API
all take defaults and bounds from embedding.training.hyperparameters, and refuse the same values."""

from __future__ import annotations

import argparse
import math
from dataclasses import fields

import pytest

from embedding.training.config import TrainConfig
from embedding.training.hyperparameters import (
    HYPERPARAMETERS,
    PAIRS_RECIPE,
    RECIPE_NAMES,
    problems,
    recipe_for,
    with_recipe,
)
from workers.cli.jobs import SUBMIT_HYPERPARAMETERS, add_submit_options
from workers.cli.train import FINETUNE_HYPERPARAMETERS, add_finetune_options
from workers.schemas import FinetuneRequest, PayloadError, parse

OK_ROWS = [{"anchor": "a", "positive": "b", "negative": "c"}]


def _parser(add) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser()
    add(parser)
    return parser


def test_train_config_defaults_are_the_table_defaults():
    config_defaults = {f.name: f.default for f in fields(TrainConfig)}
    for name, h in HYPERPARAMETERS.items():
        assert config_defaults[name] == h.default, name


def test_payload_fields_take_default_bounds_and_help_from_the_table():
    payload_fields = FinetuneRequest.model_fields
    assert set(SUBMIT_HYPERPARAMETERS) == set(payload_fields) & set(HYPERPARAMETERS)
    for name in SUBMIT_HYPERPARAMETERS:
        h, info = HYPERPARAMETERS[name], payload_fields[name]
        # the recipe's settings are None until the rows' width picks the recipe
        assert info.default == (None if name in RECIPE_NAMES else h.default), name
        assert info.description == h.help, name
        bounds = {type(m).__name__: m for m in info.metadata}
        if h.ge is not None:
            assert bounds["Ge"].ge == h.ge, name
        if h.gt is not None:
            assert bounds["Gt"].gt == h.gt, name
        if h.cap is not None:
            assert bounds["Le"].le == h.cap, name


@pytest.mark.parametrize(
    ("add", "names"),
    [
        (add_finetune_options, FINETUNE_HYPERPARAMETERS),
        (add_submit_options, SUBMIT_HYPERPARAMETERS),
    ],
)
def test_cli_options_are_generated_from_the_table(add, names):
    parser = _parser(add)
    actions = {a.dest: a for a in parser._actions}
    for name in names:
        h = HYPERPARAMETERS[name]
        assert actions[name].option_strings[0] == h.flag  # a bool also has --no-<flag>
        assert actions[name].default == (None if name in RECIPE_NAMES else h.default)
        assert h.help in actions[name].help
        if name in RECIPE_NAMES:  # the help says both defaults
            assert "pairs:" in actions[name].help and "triplets:" in actions[name].help
    required = ["--model", "m", "--data", "d"]
    if add is add_finetune_options:
        required += ["--out", "o"]
    args = parser.parse_args(required)
    unset = {n: getattr(args, n) for n in names}
    assert with_recipe(unset, 3) == {n: HYPERPARAMETERS[n].default for n in names}
    assert with_recipe(unset, 2) == {
        n: PAIRS_RECIPE[n] if n in RECIPE_NAMES else HYPERPARAMETERS[n].default for n in names
    }


@pytest.mark.parametrize(
    ("name", "bad"),
    [
        ("epochs", 0),
        ("epochs", 2.5),
        ("lr", 0.0),
        ("lr", math.nan),
        ("lr", math.inf),
        ("batch_size", -1),
        ("margin", math.nan),
        ("loss", "hinge"),
        ("max_tokens", 2),
        ("loss", "cached"),
        ("mini_batch_size", 0),
        ("mini_batch_size", 1.5),
        ("matryoshka", "yes"),
        ("matryoshka", 1),
        ("early_stopping_patience", -1),
        ("early_stopping_patience", 1.5),
        ("select_best_epoch", 1),
        ("select_best_epoch", "yes"),
    ],
)
def test_core_and_payload_refuse_the_same_values(name, bad):
    (why,) = problems({name: bad})
    assert why.startswith(f"{name} must be")
    with pytest.raises(ValueError, match=f"{name} must be"):
        TrainConfig(**{name: bad}).check()
    if name in FinetuneRequest.model_fields:
        with pytest.raises(PayloadError, match=name):
            parse(FinetuneRequest, {"model": "minilm", "triplets": OK_ROWS, name: bad})


def test_caps_hold_for_submitted_jobs_only():
    """A job from another service is capped; a local run is trusted past the cap."""
    over = {
        "epochs": 1001,
        "lr": 1.5,
        "batch_size": 5000,
        "margin": 2.5,
        "early_stopping_patience": 1001,
    }
    assert problems(over) == []
    assert len(problems(over, capped=True)) == len(over)
    TrainConfig(**over).check()
    validation = {"validation_triplets": OK_ROWS}  # early stopping needs a validation set
    for name, value in over.items():
        with pytest.raises(PayloadError, match=f"{name}: Input should be less than or equal to"):
            parse(
                FinetuneRequest,
                {"model": "minilm", "triplets": OK_ROWS, **validation, name: value},
            )


def test_nan_learning_rate_is_called_not_finite():
    with pytest.raises(PayloadError, match="lr: Input should be a finite number"):
        parse(FinetuneRequest, {"model": "minilm", "triplets": OK_ROWS, "lr": math.nan})


def test_the_api_defaults_are_the_table_defaults():
    from api.routes import fine_tuning

    assert HYPERPARAMETERS["epochs"].default == fine_tuning.DEFAULT_EPOCHS
    assert HYPERPARAMETERS["batch_size"].default == fine_tuning.DEFAULT_BATCH_SIZE
    assert HYPERPARAMETERS["lr"].default == fine_tuning.DEFAULT_LR
    assert HYPERPARAMETERS["early_stopping_patience"].default == fine_tuning.DEFAULT_PATIENCE
    assert HYPERPARAMETERS["select_best_epoch"].default == fine_tuning.DEFAULT_SELECT_BEST


def test_cached_mnrl_and_matryoshka_flow_from_cli_and_payload_into_the_config():
    """The new settings reach TrainConfig from both doors: the CLI and a submitted payload."""
    from workers.cli.hyperparameter_options import hyperparameters_from

    given = ["--loss", "cached_mnrl", "--mini-batch-size", "8", "--matryoshka"]
    args = _parser(add_finetune_options).parse_args(
        ["--model", "m", "--data", "d", "--out", "o", *given]
    )
    config = TrainConfig(**hyperparameters_from(args, FINETUNE_HYPERPARAMETERS))
    assert (config.loss, config.mini_batch_size, config.matryoshka) == ("cached_mnrl", 8, True)
    request = parse(
        FinetuneRequest,
        {
            "model": "m",
            "triplets": OK_ROWS,
            "loss": "cached_mnrl",
            "mini_batch_size": 8,
            "matryoshka": True,
        },
    )
    config = TrainConfig(**request.hyperparameters())
    assert (config.loss, config.mini_batch_size, config.matryoshka) == ("cached_mnrl", 8, True)


def test_matryoshka_on_a_model_without_dims_is_refused_at_submission():
    """Refused before anything is recorded, not as a job that fails later."""
    from workers.jobs.submit_checks import check_request

    request = parse(FinetuneRequest, {"model": "minilm", "triplets": OK_ROWS, "matryoshka": True})
    with pytest.raises(PayloadError, match="'minilm' declares no Matryoshka dims"):
        check_request(request)
    check_request(
        parse(FinetuneRequest, {"model": "jina_v3", "triplets": OK_ROWS, "matryoshka": True})
    )


PAIR_ROWS = [{"anchor": "q", "positive": "d"}]


def test_the_recipe_follows_the_rows_and_keeps_what_was_set():
    """Triplets keep the table's defaults; pairs (and n-tuples) get the code-search recipe;
    what a caller set is never overridden."""
    assert recipe_for(3) == {n: HYPERPARAMETERS[n].default for n in RECIPE_NAMES}
    assert recipe_for(2) == PAIRS_RECIPE == recipe_for(5)
    assert PAIRS_RECIPE["loss"] in ("mnrl", "cached_mnrl")  # pairs cannot train with triplet
    assert not problems(PAIRS_RECIPE, capped=True)  # a submitted job may use it
    assert with_recipe({"lr": 1e-3, "loss": None}, 2)["lr"] == 1e-3
    assert with_recipe({"lr": 1e-3, "loss": None}, 2)["loss"] == PAIRS_RECIPE["loss"]


def test_a_payload_of_pairs_without_settings_trains_with_the_pairs_recipe():
    request = parse(FinetuneRequest, {"model": "minilm", "pairs": PAIR_ROWS})
    config = TrainConfig(**request.hyperparameters())
    assert {n: getattr(config, n) for n in RECIPE_NAMES} == PAIRS_RECIPE
    triplets = parse(FinetuneRequest, {"model": "minilm", "triplets": OK_ROWS})
    config = TrainConfig(**triplets.hyperparameters())
    assert config.loss == "triplet" and config.lr == HYPERPARAMETERS["lr"].default
    given = parse(FinetuneRequest, {"model": "minilm", "pairs": PAIR_ROWS, "epochs": 7})
    assert TrainConfig(**given.hyperparameters()).epochs == 7


def test_the_submit_records_the_recipe_for_a_dataset_of_pairs(tmp_path, monkeypatch):
    """A dataset's width is read from its first row at submission: the recorded request
    says what the job will train with; an unreadable file leaves it to the worker."""
    from workers.jobs.submit_checks import check_request

    monkeypatch.setenv("EMBEDDING_MODEL_ROOTS", f'["{tmp_path}"]')
    from core.config import get_settings

    get_settings.cache_clear()
    try:
        data = tmp_path / "pairs.jsonl"
        data.write_text('{"query": "sum a list", "document": "def total(xs): ..."}\n')
        request = parse(FinetuneRequest, {"model": "minilm", "dataset": str(data)})
        width = check_request(request)
        assert width == 2
        filled = request.with_recipe(width)
        assert {n: getattr(filled, n) for n in RECIPE_NAMES} == PAIRS_RECIPE
        bad = tmp_path / "bad.jsonl"
        bad.write_text("not json\n")
        unread = parse(FinetuneRequest, {"model": "minilm", "dataset": str(bad)})
        assert check_request(unread) is None
        assert unread.with_recipe(None).epochs is None  # the worker fills it from the rows
    finally:
        get_settings.cache_clear()
