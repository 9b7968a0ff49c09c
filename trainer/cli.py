"""`grape-train` and `grape-eval`: the user's entry points to the GRAPE loop and its evaluation.

Exit codes: 0 done, 1 bad input (constraints, policy, run folder), 2 usage. Errors go to
stderr as one clear message, never a traceback; 130 when interrupted (the run resumes from its
last complete iteration when the same command runs again).
"""

from __future__ import annotations

import argparse
import json
import shlex
import sys
from pathlib import Path
from typing import Any

from trainer.bounds import AT_LEAST_ONE, POSITIVE, SEED, namespace_problems
from trainer.runfolder import RESUME_CHOICES

TRAIN_EXAMPLES = """\
examples:
  grape-train --constraints constraints/safety.grc
      align the embedded SFT policy (trained and cached first) with the safety objective
      on all four stock tasks, K=3 iterations
  grape-train --constraints constraints/tasks/stack.grc --iterations 5 --samples-per-state 8 --m 3
      train on one task with its own constraints
  grape-train --constraints constraints/efficiency.grc --loss dpo-step --policy cache/sft/sft-<hash>/policy
      the step-wise DPO baseline from a given policy
  grape-train --constraints constraints/safety.grc --output-dir runs/safety
      run again with the same options to resume after an interruption
"""

EVAL_EXAMPLES = """\
examples:
  grape-eval --policy runs/safety__tpo__seed0__20261125-160000
      every iteration's checkpoint of a run (iteration 0 = the base policy): table, eval_info.json,
      success-per-iteration plot, GIFs
  grape-eval --policy runs/.../checkpoints/iter_0003 --splits in_domain visual --episodes 100
  grape-eval --policy cache/sft/sft-<hash>/policy --tasks stack --episodes 20 --json
"""


def _fail(message: str, code: int = 1) -> int:
    print(f"error: {message}", file=sys.stderr)
    return code


# ---------------------------------------------------------------------- grape-train
def train_main(argv: list[str] | None = None) -> int:
    from trainer.config import build_parser, config_from_args, validate

    parser = build_parser("grape-train", epilog=TRAIN_EXAMPLES)
    parser.add_argument("--json", action="store_true", help="print a JSON summary (run folder, final metrics) on stdout when done")
    parser.add_argument("--no-progress", action="store_true", help="no progress bars (log lines only)")
    parser.add_argument("--resume-from", choices=RESUME_CHOICES, default="latest",
                        help="which checkpoint a resumed run continues from: latest (a corrupt newest checkpoint is an error "
                             "naming it) or previous (corrupt checkpoints are moved to checkpoints/.corrupt/ and the newest "
                             "one that verifies is used) (default: latest)")
    from trainer.envs import EnvError, add_env_arguments, register_from_args

    add_env_arguments(parser)
    args = parser.parse_args(argv)
    as_json, progress, resume_from = args.json, not args.no_progress, args.resume_from
    del args.json, args.no_progress, args.resume_from
    try:
        own_task = register_from_args(args)
    except EnvError as error:
        return _fail(str(error))
    config = config_from_args(args)
    if own_task is not None and config.policy.base_policy is None:
        return _fail("--env needs --policy: the default SFT policy knows only the stock tasks (train one with grape-sft --env)", 2)
    problems = validate(config)
    if problems:
        parser.print_usage(sys.stderr)
        return _fail("; ".join(problems), 2)

    from tqdm.auto import tqdm

    from trainer.loop import TrainError, train
    from trainer.runfolder import CorruptCheckpointError, describe_write_failure

    def echo(line: str) -> None:
        tqdm.write(line, file=sys.stderr)

    try:
        run_dir = train(config, progress=progress, echo=echo, resume_from=resume_from)
    except (TrainError, EnvError) as error:
        if isinstance(error.__cause__, CorruptCheckpointError):
            command = ["grape-train", *(sys.argv[1:] if argv is None else argv), "--resume-from", "previous"]
            return _fail(f"{error}: {shlex.join(command)}")
        return _fail(str(error))
    except KeyboardInterrupt:
        return _fail("interrupted; run the same command again to resume from the last complete iteration", 130)
    except OSError as error:
        where = config.output_dir or "the run folder"
        return _fail(f"{describe_write_failure(error, where)}; completed iterations are kept, run the same command again to resume")
    summary = {"run_dir": str(run_dir), "checkpoint": str(run_dir / "checkpoints" / f"iter_{config.iterations:04d}")}
    if as_json:
        print(json.dumps(summary))
    else:
        print(f"done: {run_dir}  (evaluate with: grape-eval --policy {run_dir})")
    return 0


# ---------------------------------------------------------------------- grape-eval
def _eval_parser() -> argparse.ArgumentParser:
    from trainer.eval import EVAL_SPLITS

    parser = argparse.ArgumentParser(
        prog="grape-eval",
        description="Evaluate a policy, a checkpoint or every checkpoint of a grape-train run on the fixed evaluation seeds.",
        epilog=EVAL_EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--policy", required=True, metavar="RUN_OR_CHECKPOINT",
                        help="a grape-train run folder (evaluates each iteration's checkpoint), a checkpoint folder, or a policy folder")
    parser.add_argument("--splits", nargs="+", default=list(EVAL_SPLITS), metavar="SPLIT",
                        help=f"splits to evaluate (default: all: {' '.join(EVAL_SPLITS)})")
    parser.add_argument("--tasks", nargs="+", default=None, metavar="TASK",
                        help="tasks (default: the run's tasks, else all four stock tasks)")
    parser.add_argument("--episodes", type=int, default=10, help="episodes per task and split (default: 10)")
    parser.add_argument("--seed-offset", type=int, default=0, help="skip this many evaluation seeds (default: 0)")
    parser.add_argument("--iterations", nargs="+", type=int, default=None, metavar="K",
                        help="with a run folder: only these iterations (default: all; 0 = the base policy)")
    parser.add_argument("--max-steps", type=int, default=None, help="cap on steps per episode (default: each task's limit)")
    parser.add_argument("--batch-envs", type=int, default=24, help="environments stepped in lockstep, one policy batch (default: 24)")
    parser.add_argument("--temperature", type=float, default=None,
                        help="sample actions at this temperature (seeded by --seed) instead of greedy decoding (default: greedy)")
    parser.add_argument("--seed", type=int, default=0, help="sampling seed with --temperature (default: 0)")
    parser.add_argument("--gifs", type=int, default=1, help="GIFs per task of the last policy, first split (default: 1; 0 = none)")
    parser.add_argument("--output-dir", default=None, help="where results go (default: <run or checkpoint>/eval)")
    parser.add_argument("--json", action="store_true", help="print eval_info.json on stdout instead of the table")
    parser.add_argument("--no-progress", action="store_true", help="no progress bars")
    from trainer.envs import add_env_arguments
    from trainer.policy.source import add_policy_arguments

    add_policy_arguments(parser)

    add_env_arguments(parser)
    return parser


def _policies_to_evaluate(path: Path, iterations: list[int] | None) -> tuple[dict[int, Path], dict[str, Any] | None, Path]:
    """{iteration: policy folder}, the run config (if a run), and the default output folder."""
    from trainer.loop import CONFIG_FILE, POLICY_DIR, completed_checkpoints
    from trainer.policy.base import POLICY_META_FILE

    if not path.exists():
        raise FileNotFoundError(f"--policy: not found: {path}")
    if (path / CONFIG_FILE).is_file() and (path / "checkpoints").is_dir():
        done = completed_checkpoints(path)
        if not done:
            raise FileNotFoundError(f"--policy: run folder {path} has no complete checkpoint yet")
        wanted = iterations if iterations is not None else sorted(done)
        missing = [k for k in wanted if k not in done]
        if missing:
            raise FileNotFoundError(f"--iterations: run {path} has no checkpoint for {missing} (has {sorted(done)})")
        config = json.loads((path / CONFIG_FILE).read_text())
        return {k: done[k] / POLICY_DIR for k in wanted}, config, path / "eval"
    if (path / POLICY_DIR / POLICY_META_FILE).is_file():
        name = path.name
        iteration = int(name[len("iter_"):]) if name.startswith("iter_") and name[len("iter_"):].isdigit() else 0
        return {iteration: path / POLICY_DIR}, None, path / "eval"
    return {0: path}, None, path.parent / f"{path.name}-eval"


def _run_tasks(run_config: dict[str, Any]) -> list[str]:
    """The tasks a run trained on: the task of a task-file run, else its --tasks."""
    from grape_dsl import ast, parse
    from grape_dsl.diagnostics import GrcError

    try:
        module = parse(Path(run_config["constraints"]).read_text(encoding="utf-8"), run_config["constraints"])
    except (OSError, UnicodeDecodeError, GrcError):
        return list(run_config["rollout"]["tasks"])  # the file moved or changed; the saved list still holds
    return [module.name] if isinstance(module, ast.TaskFile) else list(run_config["rollout"]["tasks"])


def _previous_results(path: Path, setting: dict[str, Any]) -> dict[int, dict[str, Any]]:
    """Per-iteration metrics of an earlier grape-eval into the same folder with the same settings."""
    try:
        previous = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError):
        return {}
    if any(previous.get(key) != value for key, value in setting.items()):
        return {}
    return {int(k): v for k, v in previous.get("iterations", {}).items()}


EVAL_BOUNDS = {"episodes": AT_LEAST_ONE, "max_steps": AT_LEAST_ONE, "batch_envs": AT_LEAST_ONE,
               "temperature": POSITIVE, "seed": SEED}
"""grape-eval's flags with ranges of their own; every other number must be finite and >= 0."""


def eval_main(argv: list[str] | None = None) -> int:
    parser = _eval_parser()
    args = parser.parse_args(argv)
    problems = namespace_problems(args, EVAL_BOUNDS)
    if problems:
        return _fail("; ".join(problems), 2)
    from trainer.device import DeviceError
    from trainer.policy.source import options_from_args

    try:
        policy_options = options_from_args(args)
    except DeviceError as error:
        return _fail(str(error), 2)
    from trainer.config import STOCK_TASKS
    from trainer.envs import EnvError, register_from_args
    from trainer.sim.splits import SPLITS
    from trainer.sim.tasks import TASKS

    try:
        own_task = register_from_args(args)
    except EnvError as error:
        return _fail(str(error))
    if own_task is not None and args.tasks is None:
        args.tasks = [own_task]

    unknown = [s for s in args.splits if s not in SPLITS] + [t for t in (args.tasks or []) if t not in TASKS]
    if unknown:
        return _fail(f"unknown split/task {unknown}; splits: {', '.join(SPLITS)}; tasks: {', '.join(TASKS)}", 2)

    import torch

    from trainer.eval import EVAL_INFO_FILE, evaluate_policy, plot_iterations, render_table, summarize, write_eval_info
    from trainer.policy import CheckpointError
    from trainer.policy.source import open_policy

    try:
        policies, run_config, default_out = _policies_to_evaluate(Path(args.policy), args.iterations)
    except (FileNotFoundError, ValueError, json.JSONDecodeError) as error:
        return _fail(str(error))
    tasks = args.tasks or (_run_tasks(run_config) if run_config else list(STOCK_TASKS))
    out_dir = Path(args.output_dir) if args.output_dir else default_out
    torch.set_num_threads(1)  # small matrices: see trainer.loop.train
    setting = {"policy": str(args.policy), "tasks": tasks, "splits": args.splits, "episodes_per_task_and_split": args.episodes,
               "seed_offset": args.seed_offset, "max_steps": args.max_steps, "greedy": args.temperature is None,
               **({"temperature": args.temperature, "sample_seed": args.seed} if args.temperature is not None else {})}
    per_iteration = _previous_results(out_dir / EVAL_INFO_FILE, setting)
    reused = sorted(k for k in per_iteration if k in policies)
    if reused:
        print(f"reusing iterations {reused} from {out_dir / EVAL_INFO_FILE} (same settings)", file=sys.stderr)
    gifs: list[str] = []
    last = max(policies)
    info: dict[str, Any] = {}
    for iteration, folder in sorted(policies.items()):
        if iteration in per_iteration:
            continue
        try:
            policy = open_policy(folder, **policy_options)
        except (CheckpointError, OSError, ValueError) as error:
            return _fail(f"--policy {folder}: cannot load the policy: {error}")
        try:
            outcomes, written = evaluate_policy(
                policy, tasks, args.splits, args.episodes, seed_offset=args.seed_offset, max_steps=args.max_steps,
                gif_dir=out_dir / "gifs" / f"iter_{iteration:04d}" if args.gifs and iteration == last else None,
                gifs_per_task=args.gifs, progress=not args.no_progress, desc=f"eval iter {iteration}", batch_envs=args.batch_envs,
                temperature=args.temperature, sample_seed=args.seed,
            )
        except EnvError as error:
            return _fail(str(error))
        per_iteration[iteration] = summarize(outcomes)
        gifs += [str(p) for p in written]
        # written after every policy, so an interrupted evaluation keeps what it finished
        info = {**setting, "iterations": {str(k): per_iteration[k] for k in sorted(per_iteration)}, "gifs": gifs}
        write_eval_info(info, out_dir / EVAL_INFO_FILE)
    from trainer.evalreport import comparison_table, plot_title

    plot = plot_iterations(per_iteration, out_dir / "success_per_iteration.png",
                           title=plot_title(Path(args.policy).name, per_iteration))
    info = {**setting, "iterations": {str(k): per_iteration[k] for k in sorted(per_iteration)}, "gifs": gifs, "plot": str(plot)}
    write_eval_info(info, out_dir / EVAL_INFO_FILE)
    if args.json:
        print(json.dumps(info, indent=2))
    else:
        from rich.console import Console

        console = Console(width=max(Console().width, 120))
        for iteration, metrics in sorted(per_iteration.items()):
            console.print(render_table(metrics, title=f"{Path(args.policy).name}: iteration {iteration}"))
        if len(per_iteration) > 1:
            console.print(comparison_table(per_iteration, title=f"{Path(args.policy).name}: iterations compared (all tasks)"))
        console.print(f"wrote {out_dir / EVAL_INFO_FILE}, {plot}" + (f", {len(gifs)} GIFs" if gifs else ""))
    return 0
