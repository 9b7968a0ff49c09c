"""Ray rollout workers: one worker against two on the same 32 pick_place episodes (60 steps cap).

python bench/rollout_workers.py
"""

import os
import time

import torch

from trainer.policy import make_policy
from trainer.rollout import EpisodeSpec
from trainer.sim.env import STATE_DIM
from trainer.workers import RolloutWorkers

torch.set_num_threads(1)
torch.manual_seed(0)
p = make_policy(
    "embedded", state_dim=STATE_DIM, hidden_size=128, num_layers=2, num_heads=4, intermediate_size=256
).eval()
specs = [EpisodeSpec("pick_place", "in_domain", s) for s in range(32)]
res = {}
for n in (1, 2):
    w = RolloutWorkers(n)
    w.collect(p, specs[: n * 8], sample_seed=0, max_steps=20, batch_envs=8)  # warm workers and pools
    t = time.perf_counter()
    r = w.collect(p, specs, sample_seed=1, max_steps=60, batch_envs=8)
    dt = time.perf_counter() - t
    steps = sum(x.episode.length for x in r)
    res[n] = steps / dt
    print(n, "workers", steps, "steps", round(dt, 2), "s", round(steps / dt, 1), "steps/s", "load", os.getloadavg())
    w.close()
print("2 vs 1:", round(res[2] / res[1], 2))
