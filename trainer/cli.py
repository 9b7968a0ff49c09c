"""`grape-train` and `grape-eval`: the user's entry points to the GRAPE loop and its evaluation.

Each command's flags are the fields of one dataclass (grape-train: trainer.config.TrainConfig,
grape-eval: trainer.eval.EvalConfig), turned into argparse by trainer.flags; `--config` replays
a saved one. Exit status as every trainer command (trainer.command): 0 done, 1 failure (bad
constraints, policy, run folder), 2 usage, 130 interrupted (the run resumes from its last
complete iteration, the evaluation reuses finished iterations, when the same command runs again).
"""

from __future__ import annotations

import argparse
import json
import shlex
import sys
from pathlib import Path
from typing import Any

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
  grape-train --config runs/safety --output-dir runs/safety-seed1 --seed 1
      the settings of an earlier run (its config.json), with another seed into a new folder
"""

EVAL_EXAMPLES = """\
examples:
  grape-eval --policy runs/safety__tpo__seed0__20261125-160000
      every iteration's checkpoint of a run (iteration 0 = the base policy): table, eval_info.json,
      success-per-iteration plot, GIFs
  grape-eval --policy runs/.../checkpoints/iter_0003 --splits in_domain visual --episodes 100
  grape-eval --policy cache/sft/sft-<hash>/policy --tasks stack --episodes 20 --json
  grape-eval --config runs/.../eval --episodes 50
      replay an earlier evaluation's settings (saved as eval_config.json) with more episodes
"""


# ---------------------------------------------------------------------- grape-train
def _train_parser() -> argparse.ArgumentParser:
    from trainer.config import RUN_CONFIG_FILE, build_parser
    from trainer.envs import add_env_arguments
    from trainer.flags import add_config_file_argument
    from trainer.runfolder import RESUME_CHOICES

    parser = build_parser("grape-train", epilog=TRAIN_EXAMPLES)
    add_config_file_argument(parser, RUN_CONFIG_FILE)
    parser.add_argument(
        "--json", action="store_true", help="print a JSON summary (run folder, final metrics) on stdout when done"
    )
    parser.add_argument("--no-progress", action="store_true", help="no progress bars (log lines only)")
    # how to resume, not what the run is: outside TrainConfig, like --json
    parser.add_argument(
        "--resume-from",
        choices=RESUME_CHOICES,
        default="latest",
        help="which checkpoint a resumed run continues from: latest (a corrupt newest checkpoint is an error "
        "naming it) or previous (corrupt checkpoints are moved to checkpoints/.corrupt/ and the newest "
        "one that verifies is used) (default: latest)",
    )
    add_env_arguments(parser)
    return parser


def train_main(argv: list[str] | None = None) -> int:
    from trainer.command import run_command
    from trainer.envs import EnvError

    parser = _train_parser()  # trainer.loop (and torch) is imported only once the flags are judged
    return run_command(
        "grape-train",
        lambda: _train(parser, argv),
        parser=parser,
        failures=(EnvError,),
        interrupted="interrupted; run the same command again to resume from the last complete iteration",
    )


def _train(parser: argparse.ArgumentParser, argv: list[str] | None) -> int:
    from trainer.command import CommandError, UsageError
    from trainer.config import LEGACY_DEFAULTS, RUN_CONFIG_FILE, TrainConfig, validate
    from trainer.envs import register_from_args
    from trainer.flags import parse_config

    # a run folder saved before a field existed replays what that version did
    config, rest = parse_config(parser, TrainConfig, argv, RUN_CONFIG_FILE, missing=LEGACY_DEFAULTS)
    own_task = register_from_args(rest)
    if own_task is not None and config.policy.base_policy is None:
        raise UsageError(
            "--env needs --policy: the default SFT policy knows only the stock tasks (train one with grape-sft --env)"
        )
    problems = validate(config)
    if problems:
        raise UsageError("; ".join(problems))

    from tqdm.auto import tqdm

    from trainer.envs import EnvError
    from trainer.loop import TrainError, train
    from trainer.runfolder import CorruptCheckpointError, describe_write_failure

    def echo(line: str) -> None:
        tqdm.write(line, file=sys.stderr)

    try:
        run_dir = train(config, progress=not rest.no_progress, echo=echo, resume_from=rest.resume_from)
    except (TrainError, EnvError) as error:
        if isinstance(error.__cause__, CorruptCheckpointError):
            command = ["grape-train", *(sys.argv[1:] if argv is None else argv), "--resume-from", "previous"]
            raise CommandError(f"{error}: {shlex.join(command)}") from None
        raise CommandError(str(error)) from None
    except OSError as error:
        where = config.output_dir or "the run folder"
        raise CommandError(
            f"{describe_write_failure(error, where)}; completed iterations are kept, "
            "run the same command again to resume"
        ) from None
    summary = {"run_dir": str(run_dir), "checkpoint": str(run_dir / "checkpoints" / f"iter_{config.iterations:04d}")}
    if rest.json:
        print(json.dumps(summary))
    else:
        print(f"done: {run_dir}  (evaluate with: grape-eval --policy {run_dir})")
    return 0


# ---------------------------------------------------------------------- grape-eval
def _eval_parser() -> argparse.ArgumentParser:
    from trainer.envs import add_env_arguments
    from trainer.eval import EVAL_CONFIG_FILE, EvalConfig
    from trainer.flags import add_config_arguments, add_config_file_argument

    parser = argparse.ArgumentParser(
        prog="grape-eval",
        description=(
            "Evaluate a policy, a checkpoint or every checkpoint of a grape-train run on the fixed evaluation seeds."
        ),
        epilog=EVAL_EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_config_arguments(parser, EvalConfig)
    add_config_file_argument(parser, EVAL_CONFIG_FILE)
    parser.add_argument("--json", action="store_true", help="print eval_info.json on stdout instead of the table")
    parser.add_argument("--no-progress", action="store_true", help="no progress bars")
    add_env_arguments(parser)
    return parser


def _policies_to_evaluate(
    path: Path, iterations: list[int] | None
) -> tuple[dict[int, Path], dict[str, Any] | None, Path]:
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
        iteration = int(name[len("iter_") :]) if name.startswith("iter_") and name[len("iter_") :].isdigit() else 0
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


def eval_main(argv: list[str] | None = None) -> int:
    from trainer.command import run_command
    from trainer.envs import EnvError

    parser = _eval_parser()
    return run_command(
        "grape-eval",
        lambda: _eval(parser, argv),
        parser=parser,
        failures=(EnvError,),
        interrupted="interrupted; run the same command again: finished iterations are reused",
    )


def _eval_config(parser: argparse.ArgumentParser, argv: list[str] | None) -> tuple[Any, argparse.Namespace]:
    """The EvalConfig from the flags (over a --config file), checked; --env registered."""
    from trainer.command import UsageError
    from trainer.envs import register_from_args
    from trainer.eval import EVAL_CONFIG_FILE, EvalConfig
    from trainer.flags import parse_config

    config, rest = parse_config(parser, EvalConfig, argv, EVAL_CONFIG_FILE)
    own_task = register_from_args(rest)
    if own_task is not None and config.tasks is None:
        config.tasks = [own_task]
    problems = config.problems()
    if problems:
        raise UsageError("; ".join(problems))
    return config, rest


def _eval(parser: argparse.ArgumentParser, argv: list[str] | None) -> int:
    from trainer.command import CommandError
    from trainer.config import STOCK_TASKS
    from trainer.eval import EVAL_CONFIG_FILE, EVAL_INFO_FILE, plot_iterations, write_eval_info
    from trainer.evalreport import plot_title
    from trainer.flags import save_config

    config, rest = _eval_config(parser, argv)
    import torch

    try:
        policies, run_config, default_out = _policies_to_evaluate(Path(config.policy), config.iterations)
    except (FileNotFoundError, ValueError, json.JSONDecodeError) as error:
        raise CommandError(str(error)) from None
    tasks = config.tasks or (_run_tasks(run_config) if run_config else list(STOCK_TASKS))
    out_dir = Path(config.output_dir) if config.output_dir else default_out
    torch.set_num_threads(1)  # small matrices: see trainer.loop.train
    save_config(config, out_dir / EVAL_CONFIG_FILE)
    setting = _eval_setting(config, tasks)
    per_iteration, gifs = _evaluate_iterations(config, policies, tasks, out_dir, setting, progress=not rest.no_progress)
    plot = plot_iterations(
        per_iteration, out_dir / "success_per_iteration.png", title=plot_title(Path(config.policy).name, per_iteration)
    )
    info = {
        **setting,
        "iterations": {str(k): per_iteration[k] for k in sorted(per_iteration)},
        "gifs": gifs,
        "plot": str(plot),
    }
    paired = paired_against_base(out_dir, sorted(per_iteration))
    if paired:
        info["paired_vs_base"] = paired
    write_eval_info(info, out_dir / EVAL_INFO_FILE)
    if rest.json:
        print(json.dumps(info, indent=2))
    else:
        _print_tables(
            per_iteration,
            Path(config.policy).name,
            f"wrote {out_dir / EVAL_INFO_FILE}, {plot}" + (f", {len(gifs)} GIFs" if gifs else ""),
        )
        for line in paired_lines(paired):
            print(line)
    return 0


EPISODES_DIR = "episodes"
"""Per-episode outcomes of each evaluated iteration (eval folder/episodes/iter_000k.json), kept so
that iterations can be compared episode by episode."""


def write_episodes(outcomes: list[Any], path: Path) -> None:
    import dataclasses

    from grape_dsl.util.atomic import atomic_write_text

    atomic_write_text(path, json.dumps([dataclasses.asdict(o) for o in outcomes]) + "\n")


def paired_against_base(out_dir: Path, iterations: list[int]) -> dict[str, Any]:
    """Each iteration against the first evaluated one (iteration 0 = the base policy), paired on
    the same episodes (trainer.paired); iterations without an episodes file are left out."""
    from trainer.eval import EpisodeOutcome
    from trainer.paired import compare_outcomes

    def load(k: int) -> list[Any] | None:
        path = out_dir / EPISODES_DIR / f"iter_{k:04d}.json"
        return [EpisodeOutcome(**row) for row in json.loads(path.read_text())] if path.is_file() else None

    if len(iterations) < 2 or (base := load(iterations[0])) is None:
        return {}
    result: dict[str, Any] = {"base_iteration": iterations[0]}
    for k in iterations[1:]:
        outcomes = load(k)
        if outcomes is not None:
            result[str(k)] = compare_outcomes(base, outcomes)
    return result


def paired_lines(paired: dict[str, Any]) -> list[str]:
    if not paired:
        return []
    lines = [f"paired against iteration {paired['base_iteration']} (same episodes; 95% paired bootstrap intervals):"]
    for k, splits in paired.items():
        if k == "base_iteration":
            continue
        for split, block in splits.items():
            s = block["success"]
            low, high = s["difference_ci95"]
            lines.append(
                f"  iteration {k} {split:<10} success {100 * s['a']:.1f}% -> {100 * s['b']:.1f}% "
                f"({100 * s['difference']:+.1f} points [{100 * low:+.1f}, {100 * high:+.1f}], "
                f"McNemar p {s['mcnemar_p']:.3g}, n {s['n']})"
            )
    return lines


def _eval_setting(config: Any, tasks: list[str]) -> dict[str, Any]:
    """What decides the numbers: an earlier evaluation with the same setting is reused."""
    sampled = {"temperature": config.temperature, "sample_seed": config.seed} if config.temperature is not None else {}
    return {
        "policy": str(config.policy),
        "tasks": tasks,
        "splits": config.splits,
        "episodes_per_task_and_split": config.episodes,
        "seed_offset": config.seed_offset,
        "max_steps": config.max_steps,
        "greedy": config.temperature is None,
        **sampled,
    }


def _evaluate_iterations(
    config: Any, policies: dict[int, Path], tasks: list[str], out_dir: Path, setting: dict[str, Any], progress: bool
) -> tuple[dict[int, dict[str, Any]], list[str]]:
    """Metrics per iteration (earlier results with the same setting reused) and the GIFs written."""
    from trainer.command import CommandError
    from trainer.device import resolve
    from trainer.eval import EVAL_INFO_FILE, evaluate_policy, summarize, write_eval_info
    from trainer.policy import CheckpointError
    from trainer.policy.source import HFOptions, open_policy

    device, dtype = resolve(config.device, config.dtype)
    policy_options = {
        "policy_type": config.policy_type,
        "device": device,
        "dtype": dtype,
        "hf": HFOptions(config.trust_remote_code, config.action_stats, config.unnorm_key),
    }

    per_iteration = _previous_results(out_dir / EVAL_INFO_FILE, setting)
    reused = sorted(k for k in per_iteration if k in policies)
    if reused:
        print(f"reusing iterations {reused} from {out_dir / EVAL_INFO_FILE} (same settings)", file=sys.stderr)
    gifs: list[str] = []
    last = max(policies)
    # every checkpoint is checked against its manifest before any is evaluated
    corrupt = {
        k: problem
        for k, folder in policies.items()
        if k not in per_iteration and (problem := _checkpoint_problem(folder)) is not None
    }
    if corrupt:
        iteration = min(corrupt)
        others = [k for k in sorted(policies) if k not in corrupt]
        hint = f"; evaluate the others with --iterations {' '.join(map(str, others))}" if others else ""
        more = f" ({len(corrupt)} checkpoints are corrupt)" if len(corrupt) > 1 else ""
        raise CommandError(f"checkpoint {policies[iteration].parent} is corrupt: {corrupt[iteration]}{more}{hint}")
    for iteration, folder in sorted(policies.items()):
        if iteration in per_iteration:
            continue
        try:
            policy = open_policy(folder, **policy_options)
        except (CheckpointError, OSError, ValueError) as error:
            raise CommandError(f"--policy {folder}: cannot load the policy: {error}") from None
        outcomes, written = evaluate_policy(
            policy,
            tasks,
            config.splits,
            config.episodes,
            seed_offset=config.seed_offset,
            max_steps=config.max_steps,
            gif_dir=out_dir / "gifs" / f"iter_{iteration:04d}" if config.gifs and iteration == last else None,
            gifs_per_task=config.gifs,
            progress=progress,
            desc=f"eval iter {iteration}",
            batch_envs=config.batch_envs,
            temperature=config.temperature,
            sample_seed=config.seed,
        )
        per_iteration[iteration] = summarize(outcomes)
        write_episodes(outcomes, out_dir / EPISODES_DIR / f"iter_{iteration:04d}.json")
        gifs += [str(p) for p in written]
        # written after every policy, so an interrupted evaluation keeps what it finished
        info = {**setting, "iterations": {str(k): per_iteration[k] for k in sorted(per_iteration)}, "gifs": gifs}
        write_eval_info(info, out_dir / EVAL_INFO_FILE)
    return per_iteration, gifs


def _checkpoint_problem(policy_dir: Path) -> str | None:
    """What is wrong with a policy inside a grape-train checkpoint, checked against the
    checkpoint's manifest (None: it verifies). A policy folder without one is left to loading."""
    from trainer.loop import POLICY_DIR
    from trainer.runfolder import MANIFEST_FILE, verify_checkpoint

    checkpoint = policy_dir.parent
    if policy_dir.name != POLICY_DIR or not (checkpoint / MANIFEST_FILE).is_file():
        return None
    return verify_checkpoint(checkpoint, within=POLICY_DIR)


def _print_tables(per_iteration: dict[int, dict[str, Any]], name: str, footer: str) -> None:
    from rich.console import Console

    from trainer.eval import render_table
    from trainer.evalreport import comparison_table

    console = Console(width=max(Console().width, 120))
    for iteration, metrics in sorted(per_iteration.items()):
        console.print(render_table(metrics, title=f"{name}: iteration {iteration}"))
    if len(per_iteration) > 1:
        console.print(comparison_table(per_iteration, title=f"{name}: iterations compared (all tasks)"))
    console.print(footer)
