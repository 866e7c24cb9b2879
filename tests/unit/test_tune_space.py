"""Search spaces: parsing, validation against the config schema and PRESETS, conditionals under both searchers."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import yaml

from mm_ray.config.load import ConfigError, load_config
from mm_ray.models.presets import PRESETS
from mm_ray.tune.space import DefineByRun, SearchSpace, load_space, parse_space

PIPELINES = Path(__file__).parents[2] / "pipelines"
TUNE_PIPELINES = sorted(PIPELINES.glob("tune_*.yaml"))

SPACE = {
    "model.preset": {"choice": ["late_concat", "gated", "low_rank_tensor", "unimodal_image"]},
    "model.width": {"choice": [8, 16]},
    "train.lr": {"loguniform": [1.0e-4, 1.0e-2]},
    "model.dropout": {"uniform": [0.0, 0.3]},
    "model.rank": {"randint": [2, 8], "when": {"model.preset": "low_rank_tensor"}},
    "train.lr_by_modality.text": {"loguniform": [1.0e-5, 1.0e-3]},
}


@pytest.fixture
def space() -> SearchSpace:
    return parse_space(SPACE)


def _rank_only_with_lrtf(configs: list[dict]) -> None:
    presets = {c["model.preset"] for c in configs}
    assert "low_rank_tensor" in presets and len(presets) > 1  # both branches were sampled
    for c in configs:
        has_rank = c.get("model.rank") is not None
        assert has_rank == (c["model.preset"] == "low_rank_tensor"), c
        if has_rank:
            assert 2 <= c["model.rank"] <= 8 and isinstance(c["model.rank"], int)


def test_parse_keeps_file_order_and_round_trips(space: SearchSpace, tmp_path: Path) -> None:
    assert space.keys == list(SPACE)
    rank = space.params[4]
    assert rank.kind == "randint" and rank.when == (("model.preset", ("low_rank_tensor",)),)
    assert parse_space(space.as_dict()) == space
    path = tmp_path / "space.yaml"
    path.write_text(yaml.safe_dump(SPACE, sort_keys=False))
    assert load_space(path) == space


def test_random_search_samples_conditionals_only_when_active(space: SearchSpace) -> None:
    from ray.tune.search.variant_generator import generate_variants

    # generate_variants is what Tune's BasicVariantGenerator resolves each trial's config with.
    rng = np.random.default_rng(0)
    param_space = space.param_space(seed=0)
    configs = [spec for _ in range(40) for _, spec in generate_variants(param_space, random_state=rng)]
    _rank_only_with_lrtf(configs)
    assert all(1e-4 <= c["train.lr"] <= 1e-2 for c in configs)
    assert {c["model.width"] for c in configs} == {8, 16}


def test_random_search_conditionals_are_seeded(space: SearchSpace) -> None:
    from ray.tune.search.variant_generator import generate_variants

    def sample(seed: int) -> list[dict]:
        rng, param_space = np.random.default_rng(seed), space.param_space(seed=seed)
        return [spec for _ in range(20) for _, spec in generate_variants(param_space, random_state=rng)]

    assert sample(1) == sample(1)
    assert sample(1) != sample(2)


def test_optuna_tpe_asks_conditionals_only_when_active(space: SearchSpace) -> None:
    # Through Ray Tune's own Optuna searcher (define-by-run), past TPE's random start-up trials.
    import optuna
    from ray.tune.search.optuna import OptunaSearch

    searcher = OptunaSearch(
        space=DefineByRun(space),
        metric="val_accuracy",
        mode="max",
        sampler=optuna.samplers.TPESampler(seed=0, n_startup_trials=5),
    )
    configs = []
    for i in range(20):
        config = searcher.suggest(f"t{i}")
        searcher.on_trial_complete(f"t{i}", {"val_accuracy": 0.5 + 0.01 * config["model.width"]})
        configs.append(config)
    _rank_only_with_lrtf(configs)
    assert all("model.rank" not in c for c in configs if c["model.preset"] != "low_rank_tensor")


def test_active_drops_inactive_and_unused_per_modality_lrs(space: SearchSpace) -> None:
    sampled = {
        "model.preset": "gated",
        "model.width": 8,
        "train.lr": 1e-3,
        "model.dropout": 0.1,
        "model.rank": None,
        "train.lr_by_modality.text": 1e-4,
    }
    assert space.active(sampled) == {k: v for k, v in sampled.items() if k != "model.rank"}
    # A stale rank (e.g. from a hand-edited config) is ignored when its condition does not hold.
    assert "model.rank" not in space.active({**sampled, "model.rank": 4})
    lrtf = space.active({**sampled, "model.preset": "low_rank_tensor", "model.rank": 4})
    assert lrtf["model.rank"] == 4
    # The image baseline has no text encoder: param_groups would reject a text learning rate.
    assert "train.lr_by_modality.text" not in space.active({**sampled, "model.preset": "unimodal_image"})


def test_a_grid_runs_every_value_num_samples_times_with_conditionals_on_it() -> None:
    from ray.tune.search.variant_generator import generate_variants

    grid = parse_space(
        {
            "model.preset": {"grid": ["late_concat", "low_rank_tensor", "unimodal_audio"]},
            "model.rank": {"randint": [2, 8], "when": {"model.preset": "low_rank_tensor"}},
            "train.lr": {"loguniform": [1.0e-4, 1.0e-2]},
        }
    )
    assert grid.grid_size() == 3 and parse_space(SPACE).grid_size() == 1
    rng, param_space = np.random.default_rng(0), grid.param_space(seed=0)
    # Tune's BasicVariantGenerator calls generate_variants once per num_samples.
    configs = [spec for _ in range(4) for _, spec in generate_variants(param_space, random_state=rng)]
    assert sorted(c["model.preset"] for c in configs) == sorted(
        ["late_concat", "low_rank_tensor", "unimodal_audio"] * 4
    )
    _rank_only_with_lrtf(configs)
    assert len({c["train.lr"] for c in configs}) == 12  # the sampled keys are drawn afresh for every trial
    # Optuna has no grid: it asks for it as a categorical.
    import optuna

    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
    study.optimize(lambda t: DefineByRun(grid)(t) or 0.0, n_trials=12)
    assert {t.params["model.preset"] for t in study.trials} <= {
        "late_concat",
        "low_rank_tensor",
        "unimodal_audio",
    }


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ({"model.widht": {"choice": [8]}}, "unknown key 'model.widht' (did you mean 'model.width'?)"),
        ({"model.width": {"choice": ["wide"]}}, "model.width: expected an integer"),
        ({"model.width": {"uniform": [8, 16]}}, "model.width: expected an integer"),
        ({"model.preset": {"choice": ["late_concat", "mystery"]}}, "unknown preset(s) ['mystery']"),
        ({"image.size": {"choice": [32]}}, "image.size: only model.* and train.* keys"),
        ({"train.num_workers": {"choice": [1, 2]}}, "train.num_workers: fixed for the whole sweep"),
        ({"train.epochs": {"choice": [1, 2]}}, "train.epochs: fixed for the whole sweep"),
        ({"train.lr": {"loguniform": [0, 1]}}, "train.lr.loguniform: low must be > 0"),
        ({"train.lr": {"uniform": [1, 0.1]}}, "train.lr.uniform: expected [low, high] with low < high"),
        ({"model.rank": {"randint": [2.5, 8]}}, "model.rank.randint: expected integers"),
        ({"model.width": {"choice": [8], "uniform": [1, 2]}}, "model.width: expected exactly one of"),
        ({"model.width": {"choice": [[8]]}}, "model.width.choice: values must be strings"),
        ({"model.width": 8}, "model.width: expected a mapping"),
        ({"train.lr_by_modality.txt": {"uniform": [0.1, 0.2]}}, "train.lr_by_modality.txt: not a modality"),
        (
            {"model.rank": {"randint": [2, 8], "when": {"model.preset": "low_rank_tensor"}}},
            "model.rank.when: 'model.preset' must be a choice or grid parameter listed before 'model.rank'",
        ),
        (
            {
                "model.preset": {"choice": ["gated", "tensor"]},
                "model.rank": {"randint": [2, 8], "when": {"model.preset": "low_rank_tensr"}},
            },
            "model.rank.when: model.preset never takes ['low_rank_tensr']",
        ),
        (
            {"model.width": {"grid": [8, 16], "when": {"model.preset": "gated"}}},
            "model.width: a grid cannot have a when",
        ),
        ({"model.width": {"grid": []}}, "model.width.grid: expected a non-empty list"),
    ],
)
def test_bad_spaces_name_the_key(spec: dict, message: str) -> None:
    with pytest.raises(ConfigError) as err:
        parse_space(spec)
    assert message in str(err.value)


def test_load_space_names_the_file(tmp_path: Path) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text("model.widht: {choice: [8]}\n")
    with pytest.raises(ConfigError, match=r"bad\.yaml: unknown key 'model\.widht'"):
        load_space(path)
    with pytest.raises(ConfigError, match="search space file not found"):
        load_space(tmp_path / "missing.yaml")


@pytest.mark.parametrize("pipeline", TUNE_PIPELINES, ids=lambda p: p.name)
def test_shipped_tune_pipelines_name_a_valid_space(pipeline: Path) -> None:
    cfg = load_config(pipeline)
    assert cfg.tune.space, f"{pipeline.name} sets no tune.space"
    space = load_space(Path(__file__).parents[2] / cfg.tune.space)
    presets = next(p.args for p in space.params if p.key == "model.preset")
    assert set(presets) <= set(PRESETS)  # load_space checks it too; this says so where a reader looks
    assert cfg.train.epochs >= cfg.tune.grace_period


def test_tune_pipelines_are_shipped() -> None:
    assert {p.name for p in TUNE_PIPELINES} >= {"tune_small.yaml", "tune_gpu.yaml"}
