#!/bin/sh
# Written by grape-experiment; the same runs by hand, one grape-train / grape-eval per run.
# grape-experiment paper --out runs/paper_s2_seed1 --seed 1 --no-progress --only sft grape_tc step_dpo random_success
set -e

# sft: the SFT policy every other run starts from (evaluation only)
grape-eval --policy cache/sft/sft-9e48cb9e3908/policy --splits in_domain subject physical semantic --tasks pick_place pick_place_obstacle push_to_target stack --episodes 25 --gifs 0 --temperature 1 --seed 0 --output-dir runs/paper_s2_seed1/runs/sft/eval

# grape_tc: TPO on R_GCPG under the task-completion objective; evaluated after every iteration
grape-train --constraints /work/main/constraints/task_completion.grc --seed 1 --output-dir runs/paper_s2_seed1/runs/grape_tc/train --policy cache/sft/sft-9e48cb9e3908/policy --states-per-task 8 --samples-per-state 8
grape-eval --policy runs/paper_s2_seed1/runs/grape_tc/train --iterations 1 2 3 --splits in_domain subject physical semantic --tasks pick_place pick_place_obstacle push_to_target stack --episodes 25 --gifs 0 --temperature 1 --seed 0 --output-dir runs/paper_s2_seed1/runs/grape_tc/eval

# step_dpo: per-step DPO on the same GCPG pairs (the OpenVLA-DPO baseline)
grape-train --constraints /work/main/constraints/task_completion.grc --seed 1 --output-dir runs/paper_s2_seed1/runs/step_dpo/train --policy cache/sft/sft-9e48cb9e3908/policy --states-per-task 8 --samples-per-state 8 --loss dpo-step
grape-eval --policy runs/paper_s2_seed1/runs/step_dpo/train --iterations 3 --splits in_domain subject physical semantic --tasks pick_place pick_place_obstacle push_to_target stack --episodes 25 --gifs 0 --temperature 1 --seed 0 --output-dir runs/paper_s2_seed1/runs/step_dpo/eval

# random_success: pairs drawn at random among successes vs failures of each initial state
grape-train --constraints /work/main/constraints/task_completion.grc --seed 1 --output-dir runs/paper_s2_seed1/runs/random_success/train --policy cache/sft/sft-9e48cb9e3908/policy --states-per-task 8 --samples-per-state 8 --pairing random-success
grape-eval --policy runs/paper_s2_seed1/runs/random_success/train --iterations 3 --splits in_domain subject physical semantic --tasks pick_place pick_place_obstacle push_to_target stack --episodes 25 --gifs 0 --temperature 1 --seed 0 --output-dir runs/paper_s2_seed1/runs/random_success/eval

# no_r_self: GCPG with lambda_self = 0
grape-train --constraints /work/main/constraints/task_completion.grc --seed 1 --output-dir runs/paper_s2_seed1/runs/no_r_self/train --policy cache/sft/sft-9e48cb9e3908/policy --states-per-task 8 --samples-per-state 8 --lambda-self 0.0
grape-eval --policy runs/paper_s2_seed1/runs/no_r_self/train --iterations 3 --splits in_domain subject physical semantic --tasks pick_place pick_place_obstacle push_to_target stack --episodes 25 --gifs 0 --temperature 1 --seed 0 --output-dir runs/paper_s2_seed1/runs/no_r_self/eval

# no_r_ext: GCPG with lambda_ext = 0 (no guided costs)
grape-train --constraints /work/main/constraints/task_completion.grc --seed 1 --output-dir runs/paper_s2_seed1/runs/no_r_ext/train --policy cache/sft/sft-9e48cb9e3908/policy --states-per-task 8 --samples-per-state 8 --lambda-ext 0.0
grape-eval --policy runs/paper_s2_seed1/runs/no_r_ext/train --iterations 3 --splits in_domain subject physical semantic --tasks pick_place pick_place_obstacle push_to_target stack --episodes 25 --gifs 0 --temperature 1 --seed 0 --output-dir runs/paper_s2_seed1/runs/no_r_ext/eval

# no_success: GCPG with lambda_success = 0
grape-train --constraints /work/main/constraints/task_completion.grc --seed 1 --output-dir runs/paper_s2_seed1/runs/no_success/train --policy cache/sft/sft-9e48cb9e3908/policy --states-per-task 8 --samples-per-state 8 --lambda-success 0.0
grape-eval --policy runs/paper_s2_seed1/runs/no_success/train --iterations 3 --splits in_domain subject physical semantic --tasks pick_place pick_place_obstacle push_to_target stack --episodes 25 --gifs 0 --temperature 1 --seed 0 --output-dir runs/paper_s2_seed1/runs/no_success/eval

# grape_safety: TPO under constraints/safety.grc
grape-train --constraints /work/main/constraints/safety.grc --seed 1 --output-dir runs/paper_s2_seed1/runs/grape_safety/train --policy cache/sft/sft-9e48cb9e3908/policy --states-per-task 8 --samples-per-state 8
grape-eval --policy runs/paper_s2_seed1/runs/grape_safety/train --iterations 3 --splits in_domain subject physical semantic --tasks pick_place pick_place_obstacle push_to_target stack --episodes 25 --gifs 0 --temperature 1 --seed 0 --output-dir runs/paper_s2_seed1/runs/grape_safety/eval

# grape_efficiency: TPO under constraints/efficiency.grc
grape-train --constraints /work/main/constraints/efficiency.grc --seed 1 --output-dir runs/paper_s2_seed1/runs/grape_efficiency/train --policy cache/sft/sft-9e48cb9e3908/policy --states-per-task 8 --samples-per-state 8
grape-eval --policy runs/paper_s2_seed1/runs/grape_efficiency/train --iterations 3 --splits in_domain subject physical semantic --tasks pick_place pick_place_obstacle push_to_target stack --episodes 25 --gifs 0 --temperature 1 --seed 0 --output-dir runs/paper_s2_seed1/runs/grape_efficiency/eval
