"""Builds a SceneSpec into a pybullet world: table, object, goal body, obstacle, distractors."""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from trainer.sim.splits import ContainerSpec, ObjectSpec, Placement, SceneSpec

TABLE_HALF = (0.7, 0.7, 0.02)
TABLE_CENTER = (0.45, 0.0, -0.02)  # top face at z = 0
OBJECT_FRICTION = 1.2


@dataclass
class Bodies:
    """pybullet body ids of one scene, and what was measured while building it."""

    table: int
    obj: int
    obj_extent: np.ndarray  # full size in the object's own frame, metres
    container: int | None = None
    base: int | None = None
    target: int | None = None
    obstacle: int | None = None
    distractors: list[int] = field(default_factory=list)

    def upright_bodies(self) -> list[int]:
        """Non-target bodies that count as knocked over when they tilt (see docs/sim.md)."""
        ids = [self.container, self.base, self.obstacle, *self.distractors]
        return [b for b in ids if b is not None]


def _yaw_quat(p, yaw: float):
    return p.getQuaternionFromEuler([0.0, 0.0, yaw])


def _box(p, c: int, half, rgba, mass: float, pos, yaw: float) -> int:
    col = p.createCollisionShape(p.GEOM_BOX, halfExtents=list(half), physicsClientId=c)
    vis = p.createVisualShape(p.GEOM_BOX, halfExtents=list(half), rgbaColor=list(rgba), physicsClientId=c)
    return p.createMultiBody(mass, col, vis, list(pos), _yaw_quat(p, yaw), physicsClientId=c)


def add_object(p, c: int, data_path: str, spec: ObjectSpec, at: Placement) -> tuple[int, np.ndarray]:
    """Create a movable body resting on the table; returns its id and its own-frame extent."""
    if spec.shape == "box":
        half = [e / 2 for e in spec.extent]
        body = _box(p, c, half, spec.rgba, spec.mass, (at.xy[0], at.xy[1], half[2]), at.yaw)
        extent = np.array(spec.extent)
    elif spec.shape == "cylinder":
        radius, height = spec.extent[0] / 2, spec.extent[2]
        col = p.createCollisionShape(p.GEOM_CYLINDER, radius=radius, height=height, physicsClientId=c)
        vis = p.createVisualShape(
            p.GEOM_CYLINDER, radius=radius, length=height, rgbaColor=list(spec.rgba), physicsClientId=c
        )
        body = p.createMultiBody(
            spec.mass, col, vis, [at.xy[0], at.xy[1], height / 2], _yaw_quat(p, at.yaw), physicsClientId=c
        )
        extent = np.array(spec.extent)
    elif spec.shape == "mesh":
        body = p.loadURDF(
            f"{data_path}/{spec.mesh_path}", [0, 0, 0.5], globalScaling=spec.mesh_scale, physicsClientId=c
        )
        lo, hi = (np.array(v) for v in p.getAABB(body, physicsClientId=c))
        extent = hi - lo
        offset = np.array([0.0, 0.0, 0.5]) - 0.5 * (lo + hi)  # base origin relative to the AABB centre
        centre = np.array([at.xy[0], at.xy[1], extent[2] / 2 + 0.001])
        rot = np.array(p.getMatrixFromQuaternion(_yaw_quat(p, at.yaw))).reshape(3, 3)
        p.resetBasePositionAndOrientation(
            body, (centre + rot @ offset).tolist(), _yaw_quat(p, at.yaw), physicsClientId=c
        )
        p.changeVisualShape(body, -1, rgbaColor=list(spec.rgba), physicsClientId=c)
    else:
        raise ValueError(f"unknown object shape '{spec.shape}' (known: box, cylinder, mesh)")
    p.changeDynamics(
        body, -1, lateralFriction=OBJECT_FRICTION, spinningFriction=0.002, rollingFriction=0.0001, physicsClientId=c
    )
    return body, extent


def add_container(p, c: int, spec: ContainerSpec, at: Placement) -> int:
    """An open box built from a floor and four walls, as one rigid body."""
    ix, iy = spec.inner[0] / 2, spec.inner[1] / 2
    w, h = spec.wall / 2, spec.wall_height / 2
    halves = [[ix + 2 * w, iy + 2 * w, w], [w, iy + 2 * w, h], [w, iy + 2 * w, h], [ix, w, h], [ix, w, h]]
    frames = [[0, 0, w], [ix + w, 0, h], [-ix - w, 0, h], [0, iy + w, h], [0, -iy - w, h]]
    col = p.createCollisionShapeArray(
        [p.GEOM_BOX] * 5, halfExtents=halves, collisionFramePositions=frames, physicsClientId=c
    )
    vis = p.createVisualShapeArray(
        [p.GEOM_BOX] * 5,
        halfExtents=halves,
        visualFramePositions=frames,
        rgbaColors=[list(spec.rgba)] * 5,
        physicsClientId=c,
    )
    body = p.createMultiBody(1.5, col, vis, [at.xy[0], at.xy[1], 0.0], _yaw_quat(p, at.yaw), physicsClientId=c)
    p.changeDynamics(body, -1, lateralFriction=0.8, physicsClientId=c)
    return body


def build_scene(p, c: int, data_path: str, scene: SceneSpec) -> Bodies:
    """Create every body of `scene` in client `c` (the robot is added separately)."""
    table = _box(p, c, TABLE_HALF, scene.table_rgba, 0.0, TABLE_CENTER, 0.0)
    p.changeDynamics(table, -1, lateralFriction=0.6, physicsClientId=c)
    obj, extent = add_object(p, c, data_path, scene.obj, scene.obj_at)
    bodies = Bodies(table=table, obj=obj, obj_extent=extent)
    if scene.container is not None:
        bodies.container = add_container(p, c, scene.container, scene.goal_at)
    if scene.base is not None:
        bodies.base, _ = add_object(p, c, data_path, scene.base, scene.goal_at)
    if scene.target_radius > 0:
        # A flat disc drawn on the table; visual only, so it never blocks the pushed object.
        vis = p.createVisualShape(
            p.GEOM_CYLINDER,
            radius=scene.target_radius,
            length=0.002,
            rgbaColor=list(scene.target_rgba),
            physicsClientId=c,
        )
        bodies.target = p.createMultiBody(
            0.0, -1, vis, [scene.goal_at.xy[0], scene.goal_at.xy[1], 0.001], physicsClientId=c
        )
    if scene.obstacle is not None and scene.obstacle_at is not None:
        bodies.obstacle, _ = add_object(p, c, data_path, scene.obstacle, scene.obstacle_at)
    for spec, at in scene.distractors:
        body, _ = add_object(p, c, data_path, spec, at)
        bodies.distractors.append(body)
    return bodies


def tilt(p, c: int, body: int) -> float:
    """Angle between a body's z-axis and the world's z-axis, radians."""
    _, q = p.getBasePositionAndOrientation(body, physicsClientId=c)
    m = p.getMatrixFromQuaternion(q)
    return math.acos(max(-1.0, min(1.0, m[8])))
