"""grape-train's default SFT policy learns the run's tasks; the default 4 tasks keep the default cache key."""

from trainer.loop import sft_recipe_tasks
from trainer.sft import SFTConfig

DEFAULT = SFTConfig().tasks


def test_the_default_task_set_in_any_order_keeps_the_default_recipe_and_cache_key() -> None:
    recipe = SFTConfig()
    recipe.tasks = sft_recipe_tasks(list(reversed(DEFAULT)), recipe.tasks)
    assert recipe.tasks == DEFAULT and recipe.cache_key() == SFTConfig().cache_key()


def test_a_subset_gets_its_own_recipe_in_a_canonical_order() -> None:
    assert sft_recipe_tasks(["stack", "push_to_target"], DEFAULT) == ("push_to_target", "stack")
    assert sft_recipe_tasks(["push_to_target", "stack"], DEFAULT) == ("push_to_target", "stack")
    recipe = SFTConfig(tasks=sft_recipe_tasks(["stack"], DEFAULT))
    assert recipe.cache_key() != SFTConfig().cache_key()


def test_tasks_sft_cannot_demonstrate_fall_back_to_the_default() -> None:
    assert sft_recipe_tasks(["lift_cube"], DEFAULT) == DEFAULT
    assert sft_recipe_tasks(["lift_cube", "stack"], DEFAULT) == ("stack",)
