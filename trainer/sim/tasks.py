"""Task definitions: names, schemas (keypoint and signal names) and instruction templates.

The schema is the contract that `.grc` files bind to (docs/architecture.md, "Environment
schema"); change it there first. Templates use `{object}`, `{container}`, `{obstacle}`,
`{target}` and `{base}`, filled from the names of the bodies drawn for an episode.
"""

from __future__ import annotations

from dataclasses import dataclass

from grape_dsl.util.nearname import did_you_mean

SIGNAL_NAMES: tuple[str, ...] = (
    "gripper.opening",
    "grasped",
    "contact.obstacle",
    "contact.distractor",
    "contact.table",
    "action.norm",
    "knocked_over",
)

_OBJECT_KEYPOINTS = ("gripper.tip", "object.center", "object.top", "object.bottom")


@dataclass(frozen=True)
class TaskSpec:
    """One task kind of the suite.

    name: registry key. goal: which body the object must reach ("container", "target", "base").
    keypoint_names / signal_names: the per-step schema, in the order of the arrays.
    templates: in-domain instruction phrasings; paraphrases: held out for the semantic split.
    has_obstacle: whether the scene holds an obstacle between object and goal.
    """

    name: str
    goal: str
    keypoint_names: tuple[str, ...]
    templates: tuple[str, ...]
    paraphrases: tuple[str, ...]
    has_obstacle: bool = False
    signal_names: tuple[str, ...] = SIGNAL_NAMES
    description: str = ""


TASKS: dict[str, TaskSpec] = {
    "pick_place": TaskSpec(
        name="pick_place",
        goal="container",
        keypoint_names=_OBJECT_KEYPOINTS + ("container.center", "container.top"),
        templates=(
            "pick up the {object} and place it into the {container}",
            "put the {object} in the {container}",
            "place the {object} inside the {container}",
        ),
        paraphrases=(
            "grab the {object} and drop it in the {container}",
            "move the {object} into the {container}",
            "could you get the {object} into the {container}",
            "the {object} belongs in the {container}, put it there",
        ),
        description="pick an object and place it into an open container",
    ),
    "pick_place_obstacle": TaskSpec(
        name="pick_place_obstacle",
        goal="container",
        keypoint_names=_OBJECT_KEYPOINTS + ("container.center", "container.top", "obstacle.center", "obstacle.top"),
        templates=(
            "pick up the {object} and place it into the {container} without touching the {obstacle}",
            "put the {object} in the {container}, avoiding the {obstacle}",
            "place the {object} inside the {container} and do not hit the {obstacle}",
        ),
        paraphrases=(
            "carefully move the {object} over the {obstacle} into the {container}",
            "get the {object} into the {container} and stay clear of the {obstacle}",
            "without bumping the {obstacle}, drop the {object} in the {container}",
        ),
        has_obstacle=True,
        description="pick_place with a tall obstacle between the object and the container",
    ),
    "push_to_target": TaskSpec(
        name="push_to_target",
        goal="target",
        keypoint_names=_OBJECT_KEYPOINTS + ("target.center",),
        templates=(
            "push the {object} to the {target}",
            "slide the {object} onto the {target}",
            "push the {object} onto the {target}",
        ),
        paraphrases=(
            "nudge the {object} until it sits on the {target}",
            "shove the {object} over to the {target}",
            "move the {object} onto the {target} without lifting it",
        ),
        description="push an object across the table into a marked target region",
    ),
    "stack": TaskSpec(
        name="stack",
        goal="base",
        keypoint_names=_OBJECT_KEYPOINTS + ("base.center", "base.top"),
        templates=(
            "stack the {object} on the {base}",
            "put the {object} on top of the {base}",
            "place the {object} on the {base}",
        ),
        paraphrases=(
            "build a tower with the {object} on the {base}",
            "set the {object} down on top of the {base}",
            "the {object} goes onto the {base}, stack them",
        ),
        description="put one block on top of another",
    ),
}


class UnknownNameError(ValueError):
    """A task, split or other registry name that does not exist; the message lists the known ones."""


def lookup(kind: str, name: str, known: dict) -> object:
    """Return `known[name]`, or raise UnknownNameError naming the near match and every known name."""
    if name in known:
        return known[name]
    raise UnknownNameError(f"unknown {kind} '{name}'{did_you_mean(str(name), known)} (known: {', '.join(known)})")


def task_names(values: str | list[str] | tuple[str, ...]) -> list[str]:
    """Task names as given to a `--tasks` flag: `a b`, the older `a,b`, or `all` (every stock task).

    Names are not checked here: callers report unknown ones in their own words (`get_task`).
    """
    items = [values] if isinstance(values, str) else list(values)
    names = [name.strip() for item in items for name in item.split(",") if name.strip()]
    return list(TASKS) if names == ["all"] else names


def get_task(name: str) -> TaskSpec:
    """The TaskSpec called `name`; an unknown name raises UnknownNameError listing the known tasks."""
    return lookup("task", name, TASKS)  # type: ignore[return-value]
