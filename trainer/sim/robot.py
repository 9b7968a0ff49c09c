"""The Franka Panda from pybullet_data: end-effector pose control through IK, and the gripper."""

from __future__ import annotations

import math

import numpy as np

ARM_JOINTS = tuple(range(7))
FINGER_JOINTS = (9, 10)
FINGER_LINKS = (9, 10)
TIP_LINK = 11  # panda_grasptarget: between the fingertips
READY_POSE = (0.0, -0.6, 0.0, -2.4, 0.0, 1.8, 0.785)
ARM_FORCES = (87.0, 87.0, 87.0, 87.0, 12.0, 12.0, 12.0)
FINGER_OPEN = 0.04  # per finger, metres
FINGER_FORCE = 60.0
# Null-space IK keeps the elbow near the ready pose so long episodes do not wander into odd postures.
_LOWER = (-2.9, -1.8, -2.9, -3.0, -2.9, -0.05, -2.9)
_UPPER = (2.9, 1.8, 2.9, -0.08, 2.9, 3.8, 2.9)
_RANGES = tuple(upper - lower for lower, upper in zip(_LOWER, _UPPER))


def down_quaternion(p, yaw: float, roll: float = math.pi, pitch: float = 0.0) -> tuple[float, ...]:
    """Orientation of the hand pointing down (fingers toward -z) with the given yaw."""
    return p.getQuaternionFromEuler([roll, pitch, yaw])


class Panda:
    """A fixed-base Panda at the world origin, standing on the table surface (z = 0)."""

    def __init__(self, p, client: int, data_path: str) -> None:
        self.p = p
        self.client = client
        self.body = p.loadURDF(
            f"{data_path}/franka_panda/panda.urdf",
            [0, 0, 0],
            useFixedBase=True,
            flags=p.URDF_USE_SELF_COLLISION_EXCLUDE_PARENT,
            physicsClientId=client,
        )
        for link in FINGER_LINKS:
            p.changeDynamics(self.body, link, lateralFriction=1.5, spinningFriction=0.002, physicsClientId=client)
        self.links = tuple(range(-1, p.getNumJoints(self.body, physicsClientId=client)))

    def reset(self, tip: np.ndarray, yaw: float) -> None:
        """Teleport the arm so its tip sits at `tip` with the given yaw, gripper open."""
        p, c = self.p, self.client
        for j, q in zip(ARM_JOINTS, READY_POSE):
            p.resetJointState(self.body, j, q, physicsClientId=c)
        for j in FINGER_JOINTS:
            p.resetJointState(self.body, j, FINGER_OPEN, physicsClientId=c)
        for _ in range(4):  # IK from the ready pose, refined a few times since resets are exact
            q = self.solve_ik(tip, down_quaternion(p, yaw))
            for j in ARM_JOINTS:
                p.resetJointState(self.body, j, q[j], physicsClientId=c)
        self.command(q, close=False)

    def solve_ik(self, tip: np.ndarray, orientation) -> tuple[float, ...]:
        return self.p.calculateInverseKinematics(
            self.body,
            TIP_LINK,
            [float(v) for v in tip],
            orientation,
            lowerLimits=_LOWER + (0.0, 0.0),
            upperLimits=_UPPER + (0.04, 0.04),
            jointRanges=_RANGES + (0.04, 0.04),
            restPoses=READY_POSE + (0.02, 0.02),
            maxNumIterations=20,
            residualThreshold=1e-4,
            physicsClientId=self.client,
        )

    def command(self, joint_targets, close: bool) -> None:
        """Position targets for the arm joints; close or open the gripper."""
        p, c = self.p, self.client
        p.setJointMotorControlArray(
            self.body,
            ARM_JOINTS,
            p.POSITION_CONTROL,
            targetPositions=list(joint_targets[:7]),
            forces=ARM_FORCES,
            physicsClientId=c,
        )
        finger = 0.0 if close else FINGER_OPEN
        p.setJointMotorControlArray(
            self.body,
            FINGER_JOINTS,
            p.POSITION_CONTROL,
            targetPositions=[finger, finger],
            forces=[FINGER_FORCE, FINGER_FORCE],
            physicsClientId=c,
        )

    def tip_pose(self) -> tuple[np.ndarray, float]:
        """Tip position (world) and the hand's yaw (angle of its x-axis in the table plane)."""
        state = self.p.getLinkState(self.body, TIP_LINK, computeForwardKinematics=True, physicsClientId=self.client)
        m = self.p.getMatrixFromQuaternion(state[5])
        return np.array(state[4], dtype=np.float64), math.atan2(m[3], m[0])

    def opening(self) -> float:
        """Distance between the fingers, metres (0 .. 0.08)."""
        states = self.p.getJointStates(self.body, FINGER_JOINTS, physicsClientId=self.client)
        return float(states[0][0] + states[1][0])
