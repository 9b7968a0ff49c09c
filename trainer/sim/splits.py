"""Splits: fixed seed lists and the variations each split draws scenes from.

Every split draws a scene from `(task, split, seed)` alone, so an episode is reproducible
from those three values. The in-domain split is what demonstrations and training rollouts
use; the others hold out one axis each (the paper's generalization axes):

- in_domain: cubes and blocks of the in-domain palette and sizes, in-domain phrasings.
- subject:   unseen objects: meshes from pybullet_data/random_urdfs named with unseen nouns.
- physical:  unseen sizes and shapes: small/large cubes, tall blocks, cylinders, other containers.
- semantic:  in-domain scenes, instructions only from held-out paraphrase templates.
- visual:    unseen colours (objects, containers, table) and lighting; changes the instruction's
             colour words too, and the camera image when the env renders one.

Seed lists: `train_seeds` (0 .. 999_999) for demonstrations and training rollouts;
`eval_seeds(n)` are `EVAL_SEED_BASE + i` for i < n, disjoint from the training range.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from trainer.sim.tasks import TASKS, TaskSpec, lookup

MAX_SEED = 2**31 - 1
TRAIN_SEED_LIMIT = 1_000_000
EVAL_SEED_BASE = 1_000_000

# Colour palettes (name, rgba). Visual-split colours never appear in the other splits.
IN_DOMAIN_COLOURS = {
    "red": (0.85, 0.15, 0.12, 1.0),
    "green": (0.15, 0.7, 0.2, 1.0),
    "blue": (0.15, 0.3, 0.85, 1.0),
    "yellow": (0.92, 0.82, 0.15, 1.0),
    "orange": (0.95, 0.5, 0.1, 1.0),
}
VISUAL_COLOURS = {
    "purple": (0.55, 0.2, 0.7, 1.0),
    "pink": (0.98, 0.55, 0.7, 1.0),
    "cyan": (0.1, 0.8, 0.85, 1.0),
    "grey": (0.5, 0.5, 0.5, 1.0),
}
CONTAINER_COLOURS = {"white": (0.92, 0.92, 0.9, 1.0), "brown": (0.55, 0.35, 0.2, 1.0), "black": (0.12, 0.12, 0.12, 1.0)}
VISUAL_CONTAINER_COLOURS = {"teal": (0.0, 0.5, 0.5, 1.0), "maroon": (0.5, 0.05, 0.1, 1.0)}
SUBJECT_NOUNS = ("toy", "gadget", "trinket", "figurine", "widget")
OBSTACLE_NAMES = ("tall block", "pillar", "wall")
TABLE_RGBA = (0.72, 0.6, 0.45, 1.0)
VISUAL_TABLE_RGBAS = ((0.3, 0.3, 0.35, 1.0), (0.85, 0.85, 0.8, 1.0), (0.4, 0.55, 0.35, 1.0))
LIGHT_DIRECTION = (1.0, 1.0, 2.0)


@dataclass(frozen=True)
class ObjectSpec:
    """A movable body. extent: full size in its own frame (x, y, z), metres.

    shape: "box", "cylinder" or "mesh" (mesh_path relative to pybullet_data, scaled by mesh_scale;
    its extent is measured when loaded). grasp_period: the yaw symmetry of its grasp (pi/2 for a
    square footprint, pi otherwise).
    """

    name: str
    shape: str
    extent: tuple[float, float, float]
    rgba: tuple[float, float, float, float]
    mass: float = 0.1
    mesh_path: str = ""
    mesh_scale: float = 1.0
    grasp_period: float = math.pi / 2


@dataclass(frozen=True)
class ContainerSpec:
    """An open box: inner size (x, y), wall height and thickness, metres."""

    name: str
    inner: tuple[float, float]
    wall_height: float
    rgba: tuple[float, float, float, float]
    wall: float = 0.01


@dataclass(frozen=True)
class Placement:
    """Where a body starts: xy on the table and yaw (radians)."""

    xy: tuple[float, float]
    yaw: float


@dataclass(frozen=True)
class SceneSpec:
    """Everything an episode's initial state is built from (a pure function of task, split, seed)."""

    task: str
    split: str
    seed: int
    instruction: str
    obj: ObjectSpec
    obj_at: Placement
    goal_at: Placement
    container: ContainerSpec | None = None
    base: ObjectSpec | None = None
    target_radius: float = 0.0
    target_rgba: tuple[float, float, float, float] = (0.2, 0.75, 0.3, 1.0)
    target_name: str = ""
    obstacle: ObjectSpec | None = None
    obstacle_at: Placement | None = None
    distractors: tuple[tuple[ObjectSpec, Placement], ...] = ()
    ee_start: tuple[float, float, float] = (0.45, 0.0, 0.25)
    table_rgba: tuple[float, float, float, float] = TABLE_RGBA
    light_direction: tuple[float, float, float] = LIGHT_DIRECTION
    names: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class Split:
    """A named split: what it varies (description) and its fixed seed lists."""

    name: str
    description: str

    def eval_seeds(self, n: int = 100) -> list[int]:
        """The split's fixed evaluation seeds (the same for every split, so scenes line up by index)."""
        return [EVAL_SEED_BASE + i for i in range(n)]

    @staticmethod
    def train_seeds(n: int, start: int = 0) -> list[int]:
        """Seeds for demonstrations and training rollouts (never evaluation seeds)."""
        if start < 0 or start + n > TRAIN_SEED_LIMIT:
            raise ValueError(f"training seeds must lie in [0, {TRAIN_SEED_LIMIT}); got start={start}, n={n}")
        return list(range(start, start + n))


SPLITS: dict[str, Split] = {
    "in_domain": Split("in_domain", "training distribution: in-domain objects, sizes, colours, phrasings"),
    "subject": Split("subject", "unseen objects: random_urdfs meshes with unseen nouns"),
    "physical": Split("physical", "unseen sizes and shapes of objects and containers"),
    "semantic": Split("semantic", "unseen instruction phrasings (held-out paraphrase templates)"),
    "visual": Split("visual", "unseen colours of objects, containers and table; unseen lighting"),
}


def get_split(name: str) -> Split:
    """The Split called `name`; an unknown name raises UnknownNameError listing the known splits."""
    return lookup("split", name, SPLITS)  # type: ignore[return-value]


def check_seed(seed: object) -> int:
    """Return `seed` as an int in [0, 2**31 - 1], or raise ValueError saying what is wrong."""
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)):
        raise ValueError(f"seed must be an integer in [0, {MAX_SEED}], got {seed!r} ({type(seed).__name__})")
    if not 0 <= int(seed) <= MAX_SEED:
        raise ValueError(f"seed {seed} is out of range: must lie in [0, {MAX_SEED}]")
    return int(seed)


def _pick(rng: np.random.Generator, options: dict) -> tuple[str, tuple]:
    key = list(options)[int(rng.integers(len(options)))]
    return key, options[key]


def _block(rng: np.random.Generator, colours: dict, exclude: set[str] = frozenset()) -> ObjectSpec:
    """An in-domain movable block: a cube (4-5 cm) or a 4 x 5.5 cm block."""
    choices = {k: v for k, v in colours.items() if k not in exclude}
    colour, rgba = _pick(rng, choices)
    if rng.random() < 0.6:
        side = float(rng.uniform(0.04, 0.05))
        return ObjectSpec(f"{colour} cube", "box", (side, side, side), rgba)
    return ObjectSpec(f"{colour} block", "box", (0.04, 0.055, 0.04), rgba, grasp_period=math.pi)


def _physical_object(rng: np.random.Generator, colours: dict) -> ObjectSpec:
    """Sizes and shapes never drawn in-domain."""
    colour, rgba = _pick(rng, colours)
    kind = int(rng.integers(4))
    if kind == 0:
        side = float(rng.uniform(0.028, 0.034))
        return ObjectSpec(f"small {colour} cube", "box", (side, side, side), rgba)
    if kind == 1:
        side = float(rng.uniform(0.056, 0.062))
        return ObjectSpec(f"large {colour} cube", "box", (side, side, side), rgba, mass=0.15)
    if kind == 2:
        return ObjectSpec(f"tall {colour} block", "box", (0.035, 0.035, 0.08), rgba)
    radius = float(rng.uniform(0.018, 0.024))
    return ObjectSpec(f"{colour} cylinder", "cylinder", (2 * radius, 2 * radius, 0.05), rgba, grasp_period=2 * math.pi)


def _subject_object(rng: np.random.Generator, colours: dict) -> ObjectSpec:
    """A random_urdfs mesh (about 10 x 13 cm at scale 1), scaled to fit the gripper."""
    colour, rgba = _pick(rng, colours)
    index = int(rng.integers(1000))
    noun = SUBJECT_NOUNS[int(rng.integers(len(SUBJECT_NOUNS)))]
    return ObjectSpec(
        f"{colour} {noun}",
        "mesh",
        (0.0, 0.0, 0.0),
        rgba,
        mesh_path=f"random_urdfs/{index:03d}/{index:03d}.urdf",
        mesh_scale=0.45,
        grasp_period=math.pi,
    )


def _container(rng: np.random.Generator, split: str) -> ContainerSpec:
    colours = VISUAL_CONTAINER_COLOURS if split == "visual" else CONTAINER_COLOURS
    colour, rgba = _pick(rng, colours)
    if split == "physical":
        if rng.random() < 0.5:
            return ContainerSpec(f"{colour} bin", (0.11, 0.11), 0.075, rgba)
        return ContainerSpec(f"{colour} crate", (0.2, 0.15), 0.035, rgba)
    if rng.random() < 0.5:
        return ContainerSpec(f"{colour} box", (0.13, 0.13), 0.05, rgba)
    return ContainerSpec(f"{colour} tray", (0.17, 0.17), 0.03, rgba)


def _far_enough(xy: np.ndarray, others: list[tuple[np.ndarray, float]], radius: float) -> bool:
    return all(np.linalg.norm(xy - o) >= radius + r for o, r in others)


def _sample_xy(
    rng: np.random.Generator,
    others: list[tuple[np.ndarray, float]],
    radius: float,
    x_range: tuple[float, float] = (0.38, 0.66),
    y_range: tuple[float, float] = (-0.26, 0.26),
) -> np.ndarray:
    for _ in range(200):
        xy = np.array([rng.uniform(*x_range), rng.uniform(*y_range)])
        if _far_enough(xy, others, radius):
            return xy
    raise RuntimeError("could not place a body without overlap (scene sampling is over-constrained)")


def sample_scene(task: str | TaskSpec, split: str, seed: int) -> SceneSpec:
    """Draw the initial state of one episode from (task, split, seed); deterministic."""
    spec = task if isinstance(task, TaskSpec) else lookup("task", task, TASKS)
    get_split(split)
    seed = check_seed(seed)
    task_index = list(TASKS).index(spec.name)
    split_index = list(SPLITS).index(split)
    rng = np.random.default_rng([seed, task_index, split_index])
    visual = split == "visual"
    colours = VISUAL_COLOURS if visual else IN_DOMAIN_COLOURS

    if split == "subject":
        obj = _subject_object(rng, colours)
    elif split == "physical":
        obj = _physical_object(rng, colours)
    else:
        obj = _block(rng, colours)
    obj_colour = obj.name.split()[-2] if len(obj.name.split()) >= 2 else ""

    names = {"object": obj.name}
    container = base = obstacle = None
    obstacle_at = None
    target_radius = 0.0
    target_name = ""
    target_rgba = (0.2, 0.75, 0.3, 1.0)
    occupied: list[tuple[np.ndarray, float]] = []

    if spec.name == "pick_place_obstacle":
        # Object and container on opposite sides (in y) of a tall obstacle set across their line.
        side = 1.0 if rng.random() < 0.5 else -1.0
        obj_xy = np.array([rng.uniform(0.42, 0.6), side * rng.uniform(0.16, 0.22)])
        goal_xy = np.array([rng.uniform(0.42, 0.6), -side * rng.uniform(0.16, 0.22)])
        mid = 0.5 * (obj_xy + goal_xy)
        line = goal_xy - obj_xy
        across = math.atan2(line[1], line[0]) + math.pi / 2
        height = float(rng.uniform(0.1, 0.15)) if split != "physical" else float(rng.uniform(0.16, 0.19))
        width = float(rng.uniform(0.1, 0.14))
        ob_colour, ob_rgba = _pick(
            rng, VISUAL_COLOURS if visual else {"grey": (0.45, 0.45, 0.48, 1.0), "dark": (0.25, 0.25, 0.28, 1.0)}
        )
        ob_noun = OBSTACLE_NAMES[int(rng.integers(len(OBSTACLE_NAMES)))]
        obstacle = ObjectSpec(f"{ob_noun}", "box", (width, 0.03, height), ob_rgba, mass=0.6)
        obstacle_at = Placement((float(mid[0]), float(mid[1])), across + float(rng.uniform(-0.2, 0.2)))
        names["obstacle"] = obstacle.name
        occupied += [(mid, 0.09)]
    else:
        obj_xy = _sample_xy(rng, [], 0.0)
        if spec.name == "push_to_target":
            for _ in range(200):
                angle = rng.uniform(-math.pi, math.pi)
                dist = rng.uniform(0.12, 0.2)
                goal_xy = obj_xy + dist * np.array([math.cos(angle), math.sin(angle)])
                if 0.36 <= goal_xy[0] <= 0.68 and abs(goal_xy[1]) <= 0.28:
                    break
        else:
            goal_xy = _sample_xy(rng, [(obj_xy, 0.1)], 0.12)

    if spec.goal == "container":
        container = _container(rng, split)
        names["container"] = container.name
        occupied += [(obj_xy, 0.05), (goal_xy, 0.5 * max(container.inner) + 0.03)]
    elif spec.goal == "target":
        target_radius = 0.04
        colour, target_rgba = _pick(
            rng,
            {"green": (0.2, 0.75, 0.3, 1.0), "blue": (0.2, 0.4, 0.9, 1.0)}
            if not visual
            else {"white": (0.95, 0.95, 0.95, 1.0), "purple": (0.55, 0.2, 0.7, 1.0)},
        )
        target_name = f"{colour} target"
        names["target"] = target_name
        occupied += [(obj_xy, 0.05), (goal_xy, 0.05)]
    else:
        base_colours = {k: v for k, v in colours.items() if k != obj_colour} or colours
        colour, rgba = _pick(rng, base_colours)
        side = float(rng.uniform(0.055, 0.065)) if split != "physical" else float(rng.uniform(0.068, 0.075))
        base = ObjectSpec(
            f"{colour} base block" if split == "physical" else f"{colour} {'block' if side > 0.06 else 'cube'}",
            "box",
            (side, side, 0.045),
            rgba,
            mass=0.3,
        )
        if base.name == obj.name:
            base = ObjectSpec(f"large {base.name}", base.shape, base.extent, base.rgba, mass=base.mass)
        names["base"] = base.name
        occupied += [(obj_xy, 0.05), (goal_xy, 0.05)]

    distractors = []
    for _ in range(int(rng.integers(0, 3))):
        d = _block(rng, colours, exclude={obj_colour})
        try:
            xy = _sample_xy(rng, occupied, 0.07)
        except RuntimeError:
            break
        # Keep distractors off the straight path between object and goal, extended 8 cm behind
        # the object (where a pusher starts): the expert's route.
        unit = (goal_xy - obj_xy) / max(float(np.linalg.norm(goal_xy - obj_xy)), 1e-9)
        tail = obj_xy - 0.08 * unit
        seg = goal_xy - tail
        u = float(np.clip(np.dot(xy - tail, seg) / max(np.dot(seg, seg), 1e-9), 0, 1))
        if np.linalg.norm(tail + u * seg - xy) < 0.1:
            continue
        occupied.append((xy, 0.05))
        distractors.append((d, Placement((float(xy[0]), float(xy[1])), float(rng.uniform(-math.pi, math.pi)))))

    templates = spec.paraphrases if split == "semantic" else spec.templates
    template = templates[int(rng.integers(len(templates)))]
    instruction = template.format(**names)
    ee_start = (float(rng.uniform(0.4, 0.5)), float(rng.uniform(-0.08, 0.08)), float(rng.uniform(0.22, 0.28)))
    table_rgba = VISUAL_TABLE_RGBAS[int(rng.integers(len(VISUAL_TABLE_RGBAS)))] if visual else TABLE_RGBA
    light = (
        (float(rng.uniform(-2, 2)), float(rng.uniform(-2, 2)), float(rng.uniform(0.5, 2)))
        if visual
        else LIGHT_DIRECTION
    )
    return SceneSpec(
        task=spec.name,
        split=split,
        seed=seed,
        instruction=instruction,
        obj=obj,
        obj_at=Placement((float(obj_xy[0]), float(obj_xy[1])), float(rng.uniform(-math.pi, math.pi))),
        goal_at=Placement((float(goal_xy[0]), float(goal_xy[1])), float(rng.uniform(-0.4, 0.4))),
        container=container,
        base=base,
        target_radius=target_radius,
        target_rgba=target_rgba,
        target_name=target_name,
        obstacle=obstacle,
        obstacle_at=obstacle_at,
        distractors=tuple(distractors),
        ee_start=ee_start,
        table_rgba=table_rgba,
        light_direction=light,
        names=names,
    )
