"""`grape-experiment`: the paper's experiments on our pybullet suite, from one SFT policy.

The plan is data: `PLAN` lists every run (the SFT baseline, step-wise DPO, GRAPE-TC with
evaluation after each iteration, the Table I reward ablations, the Table II objectives) and
`TABLES` says which runs make up which table. `run_experiment` executes the runs that are not
done yet, in order, each in its own folder:

    <out>/experiment.json                 preset, seed, SFT policy, splits (checked on resume)
    <out>/commands.sh                     the equivalent grape-train / grape-eval commands
    <out>/runs/<name>/train/              a grape-train run folder (resumed by the loop itself)
    <out>/runs/<name>/eval/iter_000k.json one summary per evaluated checkpoint
    <out>/runs/<name>/eval_info.json      grape-eval's layout, every evaluated iteration
    <out>/runs/<name>/done.json           written last, atomically: the run is complete
    <out>/report.md, <out>/plots/*.png    tables and figures, re-rendered after every run

A killed experiment resumes with the same command: completed runs are skipped (done.json),
a run killed while training resumes after its newest checkpoint through the loop's own resume,
and a run killed while evaluating keeps every checkpoint's summary already written.

The package, one module per job (the order is the import order; each imports only those above it):

    presets.py   Preset, PRESETS: the sizes and training settings of an experiment
    plan.py      RunSpec, PLAN, TableSpec, TABLES: the runs, their grape-train configs and folders
    state.py     Experiment: experiment.json (checked on resume) and commands.sh
    report.py    results from the run folders, tables, target checks, plots, report.md
    runner.py    run_experiment: train, evaluate, mark done, resumable
    cli.py       grape-experiment paper|report|plan
"""

from trainer.experiment.cli import SIZE_FLAGS, UsageError, build_parser, main
from trainer.experiment.plan import (
    CONSTRAINTS_DIR,
    DONE_FILE,
    PLAN,
    STATE_SPLITS,
    TABLE2_SPLIT,
    TABLES,
    ExperimentError,
    RunSpec,
    TableSpec,
    describe_plan,
    evaluated_iterations,
    get_run,
    is_done,
    run_dir,
    train_argv,
    train_config,
)
from trainer.experiment.presets import EVAL_SAMPLE_SEED, PRESETS, Preset, decoding
from trainer.experiment.report import (
    REPORT_FILE,
    Cell,
    TargetCheck,
    check_targets,
    final_summary,
    format_cell,
    iteration_curve,
    load_results,
    markdown_table,
    plot_table,
    pooled_cell,
    rate_cell,
    render_report,
    render_table,
    write_report,
)
from trainer.experiment.runner import evaluate_checkpoints, execute_run, resolve_policy, run_experiment
from trainer.experiment.state import EXPERIMENT_FILE, Experiment, commands_script, load_experiment, open_experiment

__all__ = [
    "CONSTRAINTS_DIR",
    "DONE_FILE",
    "EVAL_SAMPLE_SEED",
    "EXPERIMENT_FILE",
    "PLAN",
    "PRESETS",
    "REPORT_FILE",
    "SIZE_FLAGS",
    "STATE_SPLITS",
    "TABLE2_SPLIT",
    "TABLES",
    "Cell",
    "Experiment",
    "ExperimentError",
    "Preset",
    "RunSpec",
    "TableSpec",
    "TargetCheck",
    "UsageError",
    "build_parser",
    "check_targets",
    "commands_script",
    "decoding",
    "describe_plan",
    "evaluate_checkpoints",
    "evaluated_iterations",
    "execute_run",
    "final_summary",
    "format_cell",
    "get_run",
    "is_done",
    "iteration_curve",
    "load_experiment",
    "load_results",
    "main",
    "markdown_table",
    "open_experiment",
    "plot_table",
    "pooled_cell",
    "rate_cell",
    "render_report",
    "render_table",
    "resolve_policy",
    "run_dir",
    "run_experiment",
    "train_argv",
    "train_config",
    "write_report",
]
