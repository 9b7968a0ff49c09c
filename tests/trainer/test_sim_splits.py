"""Splits: each holds out its axis, scenes are pure functions of (task, split, seed)."""

import re

import pytest

from trainer.sim.env import make_env
from trainer.sim.splits import (
    IN_DOMAIN_COLOURS,
    SPLITS,
    TRAIN_SEED_LIMIT,
    VISUAL_COLOURS,
    Split,
    get_split,
    sample_scene,
)
from trainer.sim.tasks import TASKS, UnknownNameError

SEEDS = range(40)


def template_pattern(template: str) -> re.Pattern:
    return re.compile("^" + re.sub(r"\\\{\w+\\\}", ".+", re.escape(template)) + "$")


@pytest.mark.parametrize("task", list(TASKS))
def test_scenes_are_deterministic_and_differ_across_splits(task):
    for split in SPLITS:
        assert sample_scene(task, split, 7) == sample_scene(task, split, 7)
    assert sample_scene(task, "in_domain", 7) != sample_scene(task, "in_domain", 8)
    assert sample_scene(task, "in_domain", 7).obj != sample_scene(task, "physical", 7).obj


@pytest.mark.parametrize("task", list(TASKS))
def test_semantic_split_uses_only_held_out_phrasings(task):
    spec = TASKS[task]
    assert not set(spec.templates) & set(spec.paraphrases)
    seen = [template_pattern(t) for t in spec.templates]
    held_out = [template_pattern(t) for t in spec.paraphrases]
    for seed in SEEDS:
        semantic = sample_scene(task, "semantic", seed).instruction
        in_domain = sample_scene(task, "in_domain", seed).instruction
        assert any(p.match(semantic) for p in held_out) and not any(p.match(semantic) for p in seen), semantic
        assert any(p.match(in_domain) for p in seen), in_domain


def test_visual_split_never_uses_in_domain_colours_for_the_object():
    for task in TASKS:
        for seed in SEEDS:
            visual = sample_scene(task, "visual", seed)
            assert visual.obj.name.split()[0] in VISUAL_COLOURS
            assert visual.obj.rgba not in IN_DOMAIN_COLOURS.values()
            assert sample_scene(task, "in_domain", seed).obj.name.split()[0] in IN_DOMAIN_COLOURS


def test_subject_split_uses_meshes_and_physical_split_unseen_sizes():
    for seed in SEEDS:
        subject = sample_scene("pick_place", "subject", seed).obj
        assert subject.shape == "mesh" and subject.mesh_path.startswith("random_urdfs/")
        physical = sample_scene("pick_place", "physical", seed).obj
        in_domain = sample_scene("pick_place", "in_domain", seed).obj
        assert in_domain.shape == "box" and 0.04 <= max(in_domain.extent) <= 0.055
        # in-domain: 4-5 cm cubes or 4 x 5.5 x 4 cm blocks; physical: none of those
        assert physical.shape == "cylinder" or physical.extent[2] > 0.06 or not 0.04 <= physical.extent[0] <= 0.05


def test_mesh_objects_load_and_rest_on_the_table():
    env = make_env("pick_place", split="subject")
    try:
        for seed in (0, 1, 2):
            obs, _ = env.reset(seed=seed)
            bottom = env._body_points(env.bodies.obj)[2][2]
            assert -0.005 < bottom < 0.01, (seed, bottom)
    finally:
        env.close()


def test_seed_lists_are_fixed_and_disjoint():
    evals = get_split("in_domain").eval_seeds(100)
    assert evals == get_split("visual").eval_seeds(100) and len(set(evals)) == 100
    assert min(evals) >= TRAIN_SEED_LIMIT
    assert Split.train_seeds(3, start=10) == [10, 11, 12]
    with pytest.raises(ValueError, match="training seeds"):
        Split.train_seeds(10, start=TRAIN_SEED_LIMIT - 5)
    with pytest.raises(UnknownNameError, match="known: in_domain, subject, physical, semantic, visual"):
        get_split("train")
