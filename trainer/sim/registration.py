"""The stock tasks as gymnasium ids: `gymnasium.make("GrapeSim/PickPlaceObstacle-v0")` after
`import trainer.sim` (or, without importing first, `gymnasium.make("trainer.sim:GrapeSim/Stack-v0")`).

Keyword arguments of `make` go to `GrapeSimEnv` (split, seed, image_size, max_steps). Each step's
`info["keypoints"]` (float32 [K, 3]) and `info["signals"]` (float32 [S]) follow
`env.metadata["keypoint_names"]` / `["signal_names"]`; `info["success"]` is the task's success.
"""

from __future__ import annotations

NAMESPACE = "GrapeSim"
VERSION = 0


def gym_id(task: str) -> str:
    """`pick_place_obstacle` -> `GrapeSim/PickPlaceObstacle-v0`."""
    return f"{NAMESPACE}/{''.join(part.capitalize() for part in task.split('_'))}-v{VERSION}"


def register_stock_tasks() -> list[str]:
    """Register every stock task (idempotent); returns the ids."""
    import gymnasium

    from trainer.sim.tasks import TASKS

    ids = []
    for task, spec in TASKS.items():
        if spec.goal == "external":  # an env registered by trainer.envs is already a gymnasium env
            continue
        env_id = gym_id(task)
        if env_id not in gymnasium.registry:
            # The env truncates itself at max_steps; no TimeLimit wrapper on top.
            gymnasium.register(
                env_id, entry_point="trainer.sim.env:GrapeSimEnv", kwargs={"task": task}, disable_env_checker=True
            )
        ids.append(env_id)
    return ids
