"""The latent model and its exact caps: hand-computed cases, Monte-Carlo agreement, the default's structure."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from mm_ray.demo.bayes import (
    additive_reference,
    all_subsets,
    cap,
    joint_table,
    reference_numbers,
    subset_caps,
    subset_key,
)
from mm_ray.demo.latents import (
    DEFAULT_CORRUPTION,
    MODALITY_OBSERVATIONS,
    OBSERVATIONS,
    check_params,
    corrupt,
    draw_latents,
    label_rule,
)

NO_CORRUPTION = dict.fromkeys(OBSERVATIONS, 0.0)


def test_label_rule_regimes_for_k4():
    # topic 0/1 "scene": topic + 2 * shape parity; topic 2 "sound": pitch; topic 3 "synergy": (shape+pitch) % 4
    topic, shape, pitch = np.array([[0, 0, 3], [1, 1, 0], [2, 3, 1], [2, 0, 2], [3, 1, 2], [3, 3, 3]]).T
    assert label_rule(topic, shape, pitch, 4).tolist() == [0, 3, 1, 2, 3, 2]


@pytest.mark.parametrize("k", [4, 6, 8])
def test_label_is_uniform_so_chance_is_one_over_k(k):
    grid = np.meshgrid(*[np.arange(k)] * 3, indexing="ij")
    counts = np.bincount(label_rule(*grid, k).ravel(), minlength=k)
    assert (counts == k**2).all()


def test_corrupt_replaces_with_another_symbol_at_the_given_rate():
    rng = np.random.default_rng(0)
    values = rng.integers(0, 4, size=100_000)
    out = corrupt(rng, values, 0.3, 4)
    changed = out != values
    assert changed.mean() == pytest.approx(0.3, abs=0.01)
    # the wrong values are uniform over the 3 others
    shifts = np.bincount(((out - values) % 4)[changed], minlength=4)
    assert shifts[0] == 0
    assert shifts[1:] / changed.sum() == pytest.approx([1 / 3] * 3, abs=0.01)


def test_check_params_rejects_bad_input():
    with pytest.raises(ValueError, match="even"):
        check_params(5, None)
    with pytest.raises(ValueError, match="unknown corruption"):
        check_params(4, {"image_colour": 0.1})
    with pytest.raises(ValueError, match=r"\(K-1\)/K"):
        check_params(4, {"audio_pitch": 0.8})
    assert check_params(4, {"audio_pitch": 0.2})["audio_pitch"] == 0.2


def test_subset_keys_are_canonical():
    assert subset_key(["text", "image"]) == "image+text"
    assert subset_key({"audio", "text", "image"}) == "image+text+audio"
    assert [subset_key(s) for s in all_subsets()] == [
        "image", "text", "audio", "image+text", "image+audio", "text+audio", "image+text+audio",
    ]  # fmt: skip
    with pytest.raises(ValueError):
        subset_key(["video"])


def test_zero_corruption_caps_match_hand_computation():
    caps = subset_caps(joint_table(num_symbols=4, corruption=NO_CORRUPTION))
    # image knows topic and shape: scene regime (1/2 of samples) always right, other two regimes 1/4 each
    assert caps["image"] == pytest.approx(0.5 + 0.5 * 0.25)
    # text knows topic only: scene regime 1/2 (shape parity unknown), others 1/4
    assert caps["text"] == pytest.approx(0.5 * 0.5 + 0.5 * 0.25)
    # audio alone: guess label = pitch; right in the sound regime (1/4), and by luck 1/4 of the time otherwise
    assert caps["audio"] == pytest.approx(0.25 + 0.75 * 0.25)
    # text+audio: scene 1/2, sound always, synergy 1/4
    assert caps["text+audio"] == pytest.approx(0.5 * 0.5 + 0.25 + 0.25 * 0.25)
    assert caps["image+text"] == pytest.approx(caps["image"])
    assert caps["image+audio"] == pytest.approx(1.0)
    assert caps["image+text+audio"] == pytest.approx(1.0)


def test_pure_noise_channels_drop_to_chance():
    # at rate (K-1)/K an observation is independent of its symbol
    noise = {"text_topic": 0.75, "image_color": 0.75, "image_shape": 0.75, "audio_pitch": 0.75}
    caps = subset_caps(joint_table(num_symbols=4, corruption=noise))
    assert all(v == pytest.approx(0.25) for v in caps.values())


def test_joint_table_and_caps_agree_with_monte_carlo():
    rng = np.random.default_rng(1)
    n = 200_000
    lat = draw_latents(rng, n, num_symbols=4, corruption=DEFAULT_CORRUPTION)
    joint = joint_table(num_symbols=4, corruption=DEFAULT_CORRUPTION)
    cells = (lat.label, *(lat.observed[name] for name in OBSERVATIONS))
    empirical = np.zeros_like(joint)
    np.add.at(empirical, cells, 1.0 / n)
    assert np.abs(empirical - joint).max() < 0.002
    for subset in all_subsets():
        axes = [OBSERVATIONS.index(o) for m in subset for o in MODALITY_OBSERVATIONS[m]]
        # accuracy on the samples of the table's Bayes classifier for this subset
        marginal = joint.sum(axis=tuple(1 + a for a in range(4) if a not in axes))
        predict = marginal.argmax(axis=0)
        seen = tuple(lat.observed[OBSERVATIONS[a]] for a in sorted(axes))
        accuracy = (predict[seen] == lat.label).mean()
        assert accuracy == pytest.approx(cap(joint, subset), abs=0.006), subset


def test_defaults_separate_the_families():
    ref = reference_numbers(num_symbols=4, corruption=DEFAULT_CORRUPTION)
    caps, bayes, additive = ref["caps"], ref["bayes_accuracy"], ref["additive_fusion"]
    assert ref["chance_accuracy"] == pytest.approx(0.25)
    singles = sorted(caps[m] for m in ("image", "audio", "text"))
    assert singles[0] > 0.25 + 0.05
    assert min(b - a for a, b in itertools.pairwise(singles)) > 0.03
    assert bayes - additive >= 0.05
    assert additive > max(caps["image+text"], caps["text+audio"])
    assert bayes > max(caps["image+text"], caps["text+audio"]) + 0.2
    for small, big in itertools.combinations(all_subsets(), 2):
        if set(small) < set(big):
            assert caps[subset_key(small)] <= caps[subset_key(big)] + 1e-12


def test_additive_fit_reaches_bayes_when_only_one_modality_informs():
    # audio and text pure noise: the Bayes classifier is a function of the image alone, hence additive
    corruption = {"text_topic": 0.75, "image_color": 0.1, "image_shape": 0.2, "audio_pitch": 0.75}
    joint = joint_table(num_symbols=4, corruption=corruption)
    assert additive_reference(joint) == pytest.approx(cap(joint, ["image"]), abs=1e-9)


def test_additive_fit_misses_synergy_without_corruption():
    joint = joint_table(num_symbols=4, corruption=NO_CORRUPTION)
    # scene and sound regimes are additive in (image, audio); the synergy regime (1/4) is not learnt
    assert additive_reference(joint) < 1.0 - 0.15
