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


# ------------------------------------------------------------------------------------------ features variant

FOUR = ("image", "text", "audio", "features")
SEES = {
    "image": ("image_color", "image_shape"),
    "text": ("text_topic",),
    "audio": ("audio_pitch",),
    "features": ("features_style",),
}
"""What each modality sees, written out here (not read from the code)."""
SHOWS = {"text_topic": 0, "image_color": 0, "image_shape": 1, "audio_pitch": 2, "features_style": 3}
"""The latent (index into (topic, shape, pitch, style)) each observation shows."""


def _label_by_hand(topic: int, shape: int, pitch: int, style: int, k: int) -> int:
    """The features variant's rule as documented, written independently of ``label_rule``."""
    h = k // 2
    if topic < h:
        return topic + h * ((shape if topic % 2 == 0 else style) % 2)
    if topic < h + k // 4:
        return pitch
    return (shape + pitch) % k


def _caps_by_brute_force(k: int, rates: dict[str, float]) -> dict[str, float]:
    """Every subset's Bayes accuracy by looping over latents and seen observations in plain Python: for each
    combination of seen values, the probability of the likeliest label, summed."""
    caps = {}
    for r in range(1, 5):
        for subset in itertools.combinations(FOUR, r):
            seen = [obs for m in subset for obs in SEES[m]]
            total = 0.0
            for values in itertools.product(range(k), repeat=len(seen)):
                by_label = [0.0] * k
                for latents in itertools.product(range(k), repeat=4):
                    p = 1.0 / k**4
                    for obs, value in zip(seen, values, strict=True):
                        true = latents[SHOWS[obs]]
                        p *= 1.0 - rates[obs] if value == true else rates[obs] / (k - 1)
                    by_label[_label_by_hand(*latents, k)] += p
                total += max(by_label)
            caps["+".join(subset)] = total
    return caps


def test_features_variant_label_rule_gives_the_style_the_shapes_role_in_odd_scene_topics():
    rows = [[0, 1, 3, 2], [1, 0, 0, 1], [1, 1, 0, 2], [2, 3, 1, 0], [3, 1, 2, 3]]
    topic, shape, pitch, style = np.array(rows).T
    assert label_rule(topic, shape, pitch, 4, style).tolist() == [2, 3, 1, 1, 3]
    assert label_rule(topic, shape, pitch, 4).tolist() == [2, 1, 3, 1, 3]  # without it: the shape's parity
    grid = np.meshgrid(*[np.arange(6)] * 4, indexing="ij")
    counts = np.bincount(label_rule(*grid[:3], 6, grid[3]).ravel(), minlength=6)
    assert (counts == 6**3).all()  # still uniform: chance is 1/K


def test_features_variant_caps_match_a_brute_force_enumeration():
    rates = {
        "text_topic": 0.1,
        "image_color": 0.2,
        "image_shape": 0.05,
        "audio_pitch": 0.15,
        "features_style": 0.3,
    }
    joint = joint_table(num_symbols=4, corruption=rates, features=True)
    assert joint.shape == (4,) * 6 and joint.sum() == pytest.approx(1.0)
    caps = subset_caps(joint)
    expected = _caps_by_brute_force(4, rates)
    assert list(caps) == list(expected) and len(caps) == 15
    for key, value in expected.items():
        assert caps[key] == pytest.approx(value, abs=1e-12), key


def test_features_variant_caps_by_hand_without_corruption():
    caps = subset_caps(joint_table(num_symbols=4, corruption=dict.fromkeys(SHOWS, 0.0), features=True))
    assert caps["image+text+audio+features"] == pytest.approx(1.0)
    # without the style the odd scene topic (1/4) is a coin flip between topic and topic + 2; the rest is known
    assert caps["image+text+audio"] == pytest.approx(0.25 + 0.25 * 0.5 + 0.25 + 0.25)
    # the style alone: label 1 + 2 * (style mod 2) in the odd scene topic (1/4), and in 1/8 of the rest by luck
    assert caps["features"] == pytest.approx(0.25 + 0.5 * 0.25)
    # the image alone: the even scene topic, half the odd one, 1/4 of the sound and synergy regimes
    assert caps["image"] == pytest.approx(0.25 + 0.125 + 0.5 * 0.25)


def test_features_variant_caps_agree_with_monte_carlo_draws():
    rng = np.random.default_rng(5)
    n = 200_000
    lat = draw_latents(rng, n, num_symbols=4, corruption=None, features=True)
    assert lat.style is not None and set(lat.observed) == set(SHOWS)
    joint = joint_table(num_symbols=4, features=True)
    names = list(SHOWS)
    fit, test = slice(0, n // 2), slice(n // 2, n)
    for modalities in [FOUR, *itertools.combinations(FOUR, 1), *itertools.combinations(FOUR, 3)]:
        seen = sorted(names.index(o) for m in modalities for o in SEES[m])
        # The Bayes rule read off an empirical table of half the draws, scored on the other half.
        counts = np.zeros((4,) * (1 + len(seen)))
        np.add.at(counts, (lat.label[fit], *(lat.observed[names[a]][fit] for a in seen)), 1.0)
        predict = counts.argmax(axis=0)
        accuracy = (predict[tuple(lat.observed[names[a]][test] for a in seen)] == lat.label[test]).mean()
        assert accuracy == pytest.approx(cap(joint, modalities), abs=0.008), modalities


def test_features_variant_draws_leave_the_three_modality_draws_alone():
    plain = draw_latents(np.random.default_rng(9), 500, num_symbols=4)
    four = draw_latents(np.random.default_rng(9), 500, num_symbols=4, features=True)
    for name in OBSERVATIONS:
        assert (plain.observed[name] == four.observed[name]).all()
    assert (plain.topic == four.topic).all() and plain.style is None
    odd_scene = four.topic == 1  # K=4: topic 0 keeps the shape, topic 1 takes the style
    assert (four.label[~odd_scene] == plain.label[~odd_scene]).all()
    assert (four.label[odd_scene] == 1 + 2 * (four.style[odd_scene] % 2)).all()
    with pytest.raises(ValueError, match="unknown corruption"):
        check_params(4, {"features_style": 0.1})  # only the features variant has a style
    assert check_params(4, {"features_style": 0.2}, features=True)["features_style"] == 0.2


def test_features_variant_needs_the_vector_to_reach_bayes():
    ref = reference_numbers(num_symbols=4, corruption=DEFAULT_CORRUPTION, features=True)
    caps, bayes = ref["caps"], ref["bayes_accuracy"]
    assert list(caps) == ["+".join(c) for r in range(1, 5) for c in itertools.combinations(FOUR, r)]
    assert bayes == caps["image+text+audio+features"] and ref["chance_accuracy"] == pytest.approx(0.25)
    without = [key for key in caps if "features" not in key.split("+")]
    assert len(without) == 7 and max(caps[k] for k in without) == caps["image+text+audio"] < bayes - 0.08
    for small, big in itertools.combinations(caps, 2):
        if set(small.split("+")) < set(big.split("+")):
            assert caps[small] <= caps[big] + 1e-12
    # The additive reference cannot model the synergy regime: below Bayes, and the method names four terms.
    assert ref["additive_fusion"] < bayes - 0.05 and "j(features)" in ref["additive_fusion_method"]


def test_additive_fit_of_four_modalities_reaches_the_cap_when_only_the_vector_informs():
    noise = dict.fromkeys(OBSERVATIONS, 0.75)
    joint = joint_table(num_symbols=4, corruption={**noise, "features_style": 0.2}, features=True)
    assert additive_reference(joint) == pytest.approx(cap(joint, ["features"]), abs=1e-9)
    assert cap(joint, ["features"]) > 0.3
