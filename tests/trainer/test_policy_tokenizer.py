import json

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from trainer.policy.tokenizer import ActionStatsError, ActionTokenizer

Q01 = np.array([-0.02, -0.015, -0.02, -0.1, -0.05, -0.1, -1.0])
Q99 = np.array([0.02, 0.01, 0.018, 0.1, 0.08, 0.1, 1.0])
TOKENIZER = ActionTokenizer(q01=Q01, q99=Q99)


@st.composite
def in_range_actions(draw):
    fractions = draw(arrays(np.float64, (draw(st.integers(1, 20)), 7), elements=st.floats(0.0, 1.0)))
    actions = Q01 + fractions * (Q99 - Q01)
    actions[:, 6] = np.where(fractions[:, 6] > 0.5, 1.0, -1.0)
    return actions


@settings(max_examples=200, deadline=None)
@given(in_range_actions())
def test_round_trip_error_is_at_most_half_a_bin(actions):
    restored = TOKENIZER.detokenize(TOKENIZER.tokenize(actions))
    error = np.abs(restored.astype(np.float64) - actions)
    # float32 output costs ~1e-9 on these magnitudes; half a bin is ~1e-4 or more.
    assert np.all(error[:, :6] <= TOKENIZER.bin_width[:6] / 2 + 1e-7)
    assert np.array_equal(restored[:, 6], actions[:, 6])


@settings(max_examples=100, deadline=None)
@given(arrays(np.float64, (5, 7), elements=st.floats(-10, 10)))
def test_tokens_stay_in_range_and_outliers_clip_to_edge_bins(actions):
    tokens = TOKENIZER.tokenize(actions)
    assert tokens.dtype == np.int64 and tokens.min() >= 0 and tokens.max() <= 255
    assert np.all(tokens[:, :6][actions[:, :6] >= Q99[:6]] == 255)
    assert np.all(tokens[:, :6][actions[:, :6] <= Q01[:6]] == 0)


def test_gripper_is_binary_both_ways():
    actions = np.zeros((4, 7))
    actions[:, 6] = [-1.0, -0.2, 0.3, 1.0]
    tokens = TOKENIZER.tokenize(actions)
    assert tokens[:, 6].tolist() == [0, 0, 255, 255]
    all_bins = np.zeros((256, 7), dtype=np.int64)
    all_bins[:, 6] = np.arange(256)
    decoded = TOKENIZER.detokenize(all_bins)[:, 6]
    assert set(decoded.tolist()) == {-1.0, 1.0}
    assert decoded[127] == -1.0 and decoded[128] == 1.0


def test_fit_uses_percentiles_and_fixes_gripper_range():
    rng = np.random.default_rng(0)
    actions = rng.uniform(-0.02, 0.02, size=(5000, 7))
    actions[:, 3:6] = 0.0  # a dimension the expert never moves
    actions[:, 6] = rng.choice([-1.0, 1.0], 5000)
    tokenizer = ActionTokenizer.fit(actions)
    assert np.allclose(tokenizer.q01[:3], -0.0196, atol=5e-4)
    assert np.allclose(tokenizer.q99[:3], 0.0196, atol=5e-4)
    assert tokenizer.q01[6] == -1.0 and tokenizer.q99[6] == 1.0
    restored = tokenizer.detokenize(tokenizer.tokenize(actions))
    assert np.all(np.abs(restored[:, 3:6]) < 1e-5)  # frozen dimension decodes to no motion


def test_save_load_round_trip_and_dim_mismatch(tmp_path):
    path = tmp_path / "stats.json"
    TOKENIZER.save(path)
    loaded = ActionTokenizer.load(path, expected_action_dim=7)
    assert np.array_equal(loaded.q01, Q01) and np.array_equal(loaded.q99, Q99)
    with pytest.raises(ActionStatsError, match="7-D actions but the policy emits 6-D"):
        ActionTokenizer.load(path, expected_action_dim=6)


def test_actions_of_the_wrong_width_are_named():
    with pytest.raises(ActionStatsError, match=r"actions has shape \(3, 6\).*7-D actions"):
        TOKENIZER.tokenize(np.zeros((3, 6)))
    with pytest.raises(ActionStatsError, match="tokens must lie in"):
        TOKENIZER.detokenize(np.full((1, 7), 256))


def test_bad_statistics_files(tmp_path):
    broken = tmp_path / "broken.json"
    broken.write_text('{"q01": [0, 0],')
    with pytest.raises(ActionStatsError, match=r"broken.json:1:\d+: invalid JSON"):
        ActionTokenizer.load(broken)
    partial = tmp_path / "partial.json"
    partial.write_text(json.dumps({"q01": [0.0] * 7}))
    with pytest.raises(ActionStatsError, match=r"missing field\(s\) \['q99'\]"):
        ActionTokenizer.load(partial)
    with pytest.raises(FileNotFoundError, match="nowhere.json"):
        ActionTokenizer.load(tmp_path / "nowhere.json")
    with pytest.raises(ActionStatsError, match="q01 has 7 dims but q99 has 6"):
        ActionTokenizer(q01=np.zeros(7), q99=np.ones(6))
    with pytest.raises(ActionStatsError, match="q99 < q01 in dimension 2"):
        ActionTokenizer(q01=np.zeros(7), q99=np.array([1, 1, -1, 1, 1, 1, 1.0]))
