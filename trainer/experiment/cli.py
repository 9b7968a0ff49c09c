"""`grape-experiment paper|alignment|report|plan`: flags, preset overrides, exit codes."""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import shlex
import sys
from pathlib import Path
from typing import Any

from trainer.bounds import SEED, namespace_problems
from trainer.command import UsageError, run_command
from trainer.config import OptimConfig, PolicyConfig, validate
from trainer.experiment.alignment import METHODS, AlignmentPreset, run_alignment
from trainer.experiment.alignment import PRESETS as ALIGNMENT_PRESETS
from trainer.experiment.alignment import method as alignment_method
from trainer.experiment.plan import PLAN, ExperimentError, describe_plan, get_run, is_done, train_config
from trainer.experiment.presets import PRESETS, Preset
from trainer.experiment.report import REPORT_FILE, check_targets, load_results, write_report
from trainer.experiment.runner import run_experiment
from trainer.experiment.state import load_experiment
from trainer.flags import literal_values

EXAMPLES = """\
examples:
  grape-experiment paper --out runs/paper
      every run of the plan with the full preset (SFT, step-DPO, GRAPE-TC K=3, Table I ablations,
      Table II objectives), then runs/paper/report.md and runs/paper/plots/
  grape-experiment paper --out runs/paper
      the same command again after a kill: completed runs are skipped, a half-trained run resumes
  grape-experiment paper --out runs/smoke --quick
      tiny sizes (one task, K=2, 2 episodes per cell): a smoke test of the whole pipeline
  grape-experiment paper --out runs/paper --only sft grape_tc step_dpo
      only the baselines (more runs can be added to the same folder later)
  grape-experiment report --out runs/paper
      re-render report.md and the plots from the run folders
  grape-experiment plan --quick
      list the runs, their grape-train flags and the episode counts without running anything
  grape-experiment alignment --out runs/alignment
      SFT vs GRAPE-TC (group-relative and TPO), step-DPO, SFT on own successes, GRAPE-Safety and
      GRAPE-Efficiency at one rollout budget; paired evaluation against SFT -> summary.json, report.md
  grape-experiment alignment --out runs/alignment_b --eval-seed-offset 5000
      the same on evaluation seeds no earlier run has seen
"""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="grape-experiment",
        description="Reproduce the GRAPE paper's experiments (Fig. 6, Table I, Table II, baselines) "
        "on the pybullet suite, "
        "from one SFT policy, resumable after a kill.",
        epilog=EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="{paper,alignment,report,plan}")

    def sizes(p: argparse.ArgumentParser) -> None:
        p.add_argument("--quick", action="store_true", help="the quick preset (smoke tests); same as --preset quick")
        p.add_argument("--preset", choices=sorted(PRESETS), default=None, help="sizes of every run (default: full)")
        group = p.add_argument_group("preset overrides (the report lists the sizes used)")
        for name, kind, what in SIZE_FLAGS:
            group.add_argument(
                "--" + name.replace("_", "-"),
                type=kind,
                default=None,
                metavar="N",
                help=f"{what} (default: the preset's)",
            )
        group.add_argument("--tasks", nargs="+", default=None, metavar="TASK", help="tasks (default: the preset's)")
        group.add_argument(
            "--lr",
            type=float,
            default=None,
            metavar="LR",
            help="learning rate of every trained run (default: the preset's)",
        )
        group.add_argument(
            "--nll-weight",
            type=float,
            default=None,
            metavar="W",
            help="NLL on the chosen trajectories added to TPO / step-DPO; 0 = the paper's pure losses "
            "(default: the preset's)",
        )
        group.add_argument(
            "--ref-update",
            choices=literal_values(OptimConfig, "ref_update"),
            default=None,
            help="reference policy of the preference losses (default: the preset's)",
        )
        group.add_argument(
            "--eval-temperature",
            type=float,
            default=None,
            metavar="T",
            help="evaluate by sampling at temperature T (seeded alike for every policy); 0 = greedy "
            "(default: the preset's)",
        )
        group.add_argument(
            "--lora-targets",
            choices=literal_values(PolicyConfig, "lora_targets"),
            default=None,
            help="layers the LoRA adapter adapts (default: the preset's)",
        )

    paper = sub.add_parser(
        "paper",
        help="run (or resume) the experiments",
        epilog=EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    paper.add_argument("--out", required=True, help="experiment folder (created, or resumed if it holds one)")
    sizes(paper)
    paper.add_argument("--seed", type=int, default=0, help="training seed of every run (default: 0)")
    paper.add_argument(
        "--policy", default=None, help="SFT policy folder to start from (default: the cached default SFT policy)"
    )
    paper.add_argument(
        "--sft-cache", default="cache/sft", help="where the default SFT policy is trained once and cached"
    )
    paper.add_argument(
        "--only",
        nargs="+",
        metavar="RUN",
        default=None,
        help=f"only these runs, in plan order: {' '.join(r.name for r in PLAN)}",
    )
    paper.add_argument("--no-progress", action="store_true", help="no progress bars (log lines only)")
    paper.add_argument(
        "--json", action="store_true", help="print a JSON summary (folder, report, runs done) when finished"
    )
    alignment = sub.add_parser(
        "alignment",
        help="does alignment beat SFT, and does the objective steer it? (paired evaluation)",
        epilog=EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    alignment.add_argument("--out", required=True, help="experiment folder (created, or resumed if it holds one)")
    alignment.add_argument("--quick", action="store_true", help="tiny sizes (a smoke test); same as --preset quick")
    alignment.add_argument("--preset", choices=sorted(ALIGNMENT_PRESETS), default=None, help="default: full")
    for name, kind, what in ALIGNMENT_OVERRIDES:
        alignment.add_argument(
            "--" + name.replace("_", "-"), type=kind, default=None, help=f"{what} (default: the preset's)"
        )
    alignment.add_argument(
        "--splits",
        nargs="+",
        default=None,
        metavar="SPLIT",
        help="splits of the headline comparison (default: the preset's; greedy decoding is always in_domain only)",
    )
    alignment.add_argument("--seed", type=int, default=0, help="training seed of every method (default: 0)")
    alignment.add_argument("--policy", default=None, help="SFT policy folder (default: the cached default SFT policy)")
    alignment.add_argument("--sft-cache", default="cache/sft", help="where the default SFT policy is cached")
    alignment.add_argument(
        "--only",
        nargs="+",
        metavar="METHOD",
        default=None,
        help=f"only these methods (SFT is always evaluated): {' '.join(m.name for m in METHODS)}",
    )
    alignment.add_argument(
        "--jobs",
        type=int,
        default=1,
        help="methods run at once, each in its own process (default: 1; 2 uses both cores here)",
    )
    alignment.add_argument("--no-progress", action="store_true", help="no progress bars (log lines only)")
    alignment.add_argument("--json", action="store_true", help="print summary.json's path and records when done")
    report = sub.add_parser("report", help="re-render report.md and plots from an experiment folder")
    report.add_argument("--out", required=True, help="experiment folder")
    report.add_argument("--json", action="store_true", help="print the target checks as JSON")
    plan = sub.add_parser("plan", help="show the runs and their settings without running anything")
    sizes(plan)
    plan.add_argument("--json", action="store_true", help="machine-readable plan")
    return parser


SIZE_FLAGS = (
    ("iterations", int, "GRAPE iterations K of every trained run"),
    ("states_per_task", int, "initial states per task and iteration"),
    ("samples_per_state", int, "rollouts per initial state"),
    ("m", int, "top m x bottom m pairing"),
    ("epochs", int, "passes over each iteration's pairs"),
    ("eval_episodes", int, "evaluation episodes per task and split"),
)


def _preset_from(args: argparse.Namespace) -> Preset:
    """The named preset with any size flags applied; bad values are usage errors."""
    from trainer.sim.tasks import TASKS

    if args.quick and args.preset not in (None, "quick"):
        raise UsageError(f"--quick contradicts --preset {args.preset}")
    preset = PRESETS["quick" if args.quick else (args.preset or "full")]
    changes: dict[str, Any] = {}
    for name, _, _ in SIZE_FLAGS:
        value = getattr(args, name)
        if value is not None:
            if value < 1:
                raise UsageError(f"--{name.replace('_', '-')} must be >= 1, got {value}")
            changes[name] = value
    problems = namespace_problems(
        {name: getattr(args, name, None) for name in ("eval_temperature", "seed")}, {"seed": SEED}
    )
    if problems:
        raise UsageError("; ".join(problems))
    for name in ("lr", "nll_weight", "ref_update", "lora_targets", "eval_temperature"):
        if getattr(args, name) is not None:
            changes[name] = getattr(args, name)
    if changes.get("eval_temperature") == 0:
        changes["eval_temperature"] = None
    if args.tasks:
        unknown = [t for t in args.tasks if t not in TASKS]
        if unknown:
            raise UsageError(f"--tasks: unknown task(s) {unknown}; known tasks: {', '.join(TASKS)}")
        changes["tasks"] = tuple(args.tasks)
    if changes:  # the name says the sizes are not the preset's own
        described = ", ".join(f"{k}={' '.join(v) if isinstance(v, tuple) else v}" for k, v in changes.items())
        preset = dataclasses.replace(preset, name=f"{preset.name} ({described})", **changes)
    # The training settings are grape-train's: its own checks, with its flag names, judge them.
    problems = validate(train_config(get_run("grape_tc"), preset, Path("."), 0, "policy"))
    if problems:
        raise UsageError("; ".join(problems))
    return preset


ALIGNMENT_OVERRIDES = (
    ("iterations", int, "GRAPE iterations K of every method"),
    ("max_rollouts", int, "rollouts per iteration, the budget of every method"),
    ("eval_episodes", int, "evaluation episodes per task and split"),
    ("eval_seed_offset", int, "start this many seeds into the evaluation range (unseen seeds)"),
    ("lr", float, "learning rate of every method"),
    ("epochs", int, "passes over each iteration's pairs or trajectories"),
)


def _alignment_preset(args: argparse.Namespace) -> AlignmentPreset:
    if args.quick and args.preset not in (None, "quick"):
        raise UsageError(f"--quick contradicts --preset {args.preset}")
    if args.jobs < 1:
        raise UsageError(f"--jobs must be >= 1, got {args.jobs}")
    preset = ALIGNMENT_PRESETS["quick" if args.quick else (args.preset or "full")]
    changes = {name: getattr(args, name) for name, _, _ in ALIGNMENT_OVERRIDES if getattr(args, name) is not None}
    for name, value in changes.items():
        minimum = 0 if name in ("eval_seed_offset", "lr") else 1
        if not (value >= minimum and math.isfinite(value)) or (name == "lr" and value <= 0):
            raise UsageError(
                f"--{name.replace('_', '-')} must be {'> 0' if name == 'lr' else f'>= {minimum}'}, got {value}"
            )
    for name in args.only or ():
        try:
            alignment_method(name)
        except ExperimentError as error:
            raise UsageError(f"--only: {error}") from None
    if args.splits:
        from trainer.sim.splits import SPLITS

        unknown = [x for x in args.splits if x not in SPLITS]
        if unknown:
            raise UsageError(f"--splits: unknown split(s) {unknown}; known splits: {', '.join(SPLITS)}")
        changes["splits"] = tuple(args.splits)
    if changes:
        described = ", ".join(f"{k}={' '.join(v) if isinstance(v, tuple) else v}" for k, v in changes.items())
        preset = dataclasses.replace(preset, name=f"{preset.name} ({described})", **changes)
    return preset


def _run_alignment(args: argparse.Namespace, argv: list[str] | None) -> int:
    from tqdm.auto import tqdm

    preset = _alignment_preset(args)
    command = shlex.join(["grape-experiment", *(sys.argv[1:] if argv is None else argv)])
    summary = run_alignment(
        Path(args.out),
        preset,
        seed=args.seed,
        policy=args.policy,
        sft_cache=args.sft_cache,
        only=args.only,
        progress=not args.no_progress,
        command=command,
        echo=lambda line: tqdm.write(line, file=sys.stderr),
        jobs=args.jobs,
    )
    if args.json:
        print(json.dumps({"out": args.out, "summary": str(Path(args.out) / "summary.json"), **summary}))
    else:
        print(f"done: {Path(args.out) / 'report.md'}")
    return 0


def main(argv: list[str] | None = None) -> int:
    """Exit status as every trainer command (trainer.command): 0 ok, 1 failure, 2 usage, 130 interrupted."""
    parser = build_parser()
    return run_command(
        "grape-experiment",
        lambda: _main(parser, argv),
        parser=parser,
        failures=(ExperimentError,),
        interrupted="interrupted; run the same command again to resume (completed runs are kept)",
    )


def _main(parser: argparse.ArgumentParser, argv: list[str] | None) -> int:
    from trainer.command import CommandError

    args = parser.parse_args(argv)
    try:
        if args.command == "alignment":
            return _run_alignment(args, argv)
        if args.command == "plan":
            preset = _preset_from(args)
            rows = describe_plan(preset)
            if args.json:
                print(json.dumps({"preset": dataclasses.asdict(preset), "runs": rows}, indent=2))
            else:
                print(f"preset {preset.name}: {dataclasses.asdict(preset)}")
                for row in rows:
                    flags = shlex.join(row["grape_train"]) if row["grape_train"] else "(evaluation only)"
                    print(
                        f"- {row['run']:17} {row['label']:20} train {row['train_episodes']:4} ep, "
                        f"eval {row['eval_episodes']:5} ep (state splits) "
                        f"at iterations {row['eval_iterations']}\n    {flags}"
                    )
            return 0
        if args.command == "report":
            path = write_report(Path(args.out))
            if args.json:
                checks = check_targets(load_results(Path(args.out)), load_experiment(Path(args.out)))
                print(json.dumps({"report": str(path), "targets": [dataclasses.asdict(c) for c in checks]}, indent=2))
            else:
                print(f"wrote {path}")
            return 0
        preset = _preset_from(args)
        for name in args.only or ():
            try:
                get_run(name)
            except ExperimentError as error:
                raise UsageError(f"--only: {error}") from None
        from tqdm.auto import tqdm

        def echo(line: str) -> None:
            tqdm.write(line, file=sys.stderr)

        command = shlex.join(["grape-experiment", *(sys.argv[1:] if argv is None else argv)])
        exp = run_experiment(
            Path(args.out),
            preset,
            seed=args.seed,
            policy=args.policy,
            sft_cache=args.sft_cache,
            only=args.only,
            progress=not args.no_progress,
            command=command,
            echo=echo,
        )
    except OSError as error:
        raise CommandError(f"{error}; completed runs are kept, run the same command again to resume") from None
    report = Path(args.out) / REPORT_FILE
    if args.json:
        print(
            json.dumps(
                {
                    "out": args.out,
                    "report": str(report),
                    "runs_done": [n for n in exp.runs if is_done(Path(args.out), n)],
                }
            )
        )
    else:
        print(f"done: {report}")
    return 0
