"""Results read back from the run folders, the paper's tables, target checks, plots and report.md."""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from grape_dsl.util.atomic import atomic_write, atomic_write_text
from trainer.experiment.plan import DONE_FILE, PLAN, TABLE2_SPLIT, TABLES, TableSpec, get_run, is_done, run_dir
from trainer.experiment.presets import Preset, decoding
from trainer.experiment.state import Experiment, load_experiment

REPORT_FILE = "report.md"


@dataclass
class Cell:
    """One rate or mean with its 95% interval, as read from eval_info.json."""

    value: float
    low: float
    high: float
    count: int | None = None
    n: int | None = None


def load_results(out: Path) -> dict[str, dict[int, dict[str, Any]]]:
    """{run: {iteration: summary}} for every completed run (and partial evaluations of others)."""
    results: dict[str, dict[int, dict[str, Any]]] = {}
    for run in PLAN:
        folder = run_dir(out, run.name)
        info = folder / "eval_info.json"
        if info.is_file():
            data = json.loads(info.read_text())
            results[run.name] = {int(k): v for k, v in data["iterations"].items()}
        elif (folder / "eval").is_dir():
            partial = {}
            for path in sorted((folder / "eval").glob("iter_*.json")):
                record = json.loads(path.read_text())
                partial[int(record["iteration"])] = record["metrics"]
            if partial:
                results[run.name] = partial
    return results


def final_summary(results: dict[str, dict[int, dict[str, Any]]], name: str, preset: Preset) -> dict[str, Any] | None:
    """The run's summary at its last iteration (the SFT policy's own for sft), if evaluated."""
    per_iteration = results.get(name)
    if not per_iteration:
        return None
    want = 0 if name == "sft" else preset.iterations
    return per_iteration.get(want)


def rate_cell(summary: dict[str, Any] | None, split: str, metric: str) -> Cell | None:
    if summary is None or split not in summary:
        return None
    block = summary[split]["all"]
    if metric == "step_length":
        m = block["step_length"]
        return Cell(m["mean"], m["ci95"][0], m["ci95"][1], None, block["episodes"])
    m = block[metric]
    return Cell(m["rate"], m["ci95"][0], m["ci95"][1], m.get("count"), block["episodes"])


def pooled_cell(summary: dict[str, Any] | None, splits: Sequence[str], metric: str) -> Cell | None:
    """A rate pooled over splits (counts summed, Wilson interval of the pooled proportion)."""
    from trainer.eval import wilson_interval

    if summary is None or any(s not in summary for s in splits):
        return None
    count = sum(summary[s]["all"][metric]["count"] for s in splits)
    n = sum(summary[s]["all"]["episodes"] for s in splits)
    low, high = wilson_interval(count, n)
    return Cell(count / n, low, high, count, n)


def format_cell(cell: Cell | None, percent: bool = True) -> str:
    if cell is None:
        return "—"
    if percent:
        return f"{100 * cell.value:.1f} [{100 * cell.low:.1f}, {100 * cell.high:.1f}]"
    return f"{cell.value:.1f} [{cell.low:.1f}, {cell.high:.1f}]"


def markdown_table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    lines = [
        "| " + " | ".join(header) + " |",
        "|" + "|".join("---" if i == 0 else "---:" for i in range(len(header))) + "|",
    ]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(lines)


def render_table(table: TableSpec, results: dict[str, dict[int, dict[str, Any]]], exp: Experiment) -> str:
    """One table in the paper's shape; cells are % (or steps) with the 95% interval in brackets."""
    if table.kind == "splits":
        header = ["variant", *exp.splits, "all splits"]
        rows = []
        for name, label in table.rows:
            summary = final_summary(results, name, exp.preset)
            rows.append(
                [
                    label,
                    *(format_cell(rate_cell(summary, s, "success")) for s in exp.splits),
                    format_cell(pooled_cell(summary, exp.splits, "success")),
                ]
            )
        return markdown_table(header, rows)
    header = ["objective", "collision rate %", "step length", "success %"]
    rows = []
    for name, label in table.rows:
        summary = final_summary(results, name, exp.preset)
        rows.append(
            [
                label,
                format_cell(rate_cell(summary, TABLE2_SPLIT, "collision")),
                format_cell(rate_cell(summary, TABLE2_SPLIT, "step_length"), percent=False),
                format_cell(rate_cell(summary, TABLE2_SPLIT, "success")),
            ]
        )
    return markdown_table(header, rows)


@dataclass
class TargetCheck:
    target: str
    measured: str
    met: bool | None
    """None: not measurable (a run is missing, or the SFT baseline is 0 so there is no ratio)."""


def check_targets(results: dict[str, dict[int, dict[str, Any]]], exp: Experiment) -> list[TargetCheck]:
    """The paper's claims, measured on this experiment (see docs/experiments.md for the rules)."""
    preset = exp.preset
    sft, tc = final_summary(results, "sft", preset), final_summary(results, "grape_tc", preset)
    checks = []
    for split in exp.splits:
        a, b = rate_cell(tc, split, "success"), rate_cell(sft, split, "success")
        if a is None or b is None:
            checks.append(TargetCheck(f"GRAPE-TC success >= 1.5x SFT ({split})", "—", None))
            continue
        if b.value == 0:  # no ratio to a zero baseline
            checks.append(
                TargetCheck(
                    f"GRAPE-TC success >= 1.5x SFT ({split})", f"{100 * a.value:.1f}% vs SFT 0% (no ratio)", None
                )
            )
            continue
        r = a.value / b.value
        checks.append(
            TargetCheck(
                f"GRAPE-TC success >= 1.5x SFT ({split})",
                f"{100 * a.value:.1f}% vs {100 * b.value:.1f}% = {r:.2f}x",
                r >= 1.5,
            )
        )
    dpo = final_summary(results, "step_dpo", preset)
    a, b = pooled_cell(tc, exp.splits, "success"), pooled_cell(dpo, exp.splits, "success")
    checks.append(
        TargetCheck(
            "TPO > step-DPO (success, all splits pooled)",
            "—" if a is None or b is None else f"{format_cell(a)} vs {format_cell(b)}",
            None if a is None or b is None else a.value > b.value,
        )
    )
    for name in ("random_success", "no_r_self", "no_r_ext", "no_success"):
        c = pooled_cell(final_summary(results, name, preset), exp.splits, "success")
        label = get_run(name).label
        checks.append(
            TargetCheck(
                f"full GRAPE >= {label} (success, all splits pooled)",
                "—" if a is None or c is None else f"{format_cell(a)} vs {format_cell(c)}",
                None if a is None or c is None else a.value >= c.value,
            )
        )
    for name, metric, bound, what in (
        ("grape_safety", "collision", 0.63, "collision rate"),
        ("grape_efficiency", "step_length", 0.89, "step length"),
    ):
        a, b = (
            rate_cell(final_summary(results, name, preset), TABLE2_SPLIT, metric),
            rate_cell(sft, TABLE2_SPLIT, metric),
        )
        title = f"{get_run(name).label} {what} <= {bound}x SFT ({TABLE2_SPLIT})"
        if a is None or b is None:
            checks.append(TargetCheck(title, "—", None))
            continue
        percent = metric != "step_length"
        if b.value == 0:
            checks.append(
                TargetCheck(title, f"{format_cell(a, percent)} vs SFT {format_cell(b, percent)} (no ratio to 0)", None)
            )
            continue
        r = a.value / b.value
        checks.append(
            TargetCheck(title, f"{format_cell(a, percent)} vs {format_cell(b, percent)} = {r:.2f}x", r <= bound)
        )
    return checks


def iteration_curve(results: dict[str, dict[int, dict[str, Any]]]) -> dict[int, dict[str, Any]]:
    """GRAPE-TC success per iteration, iteration 0 being the SFT policy (Fig. 6)."""
    curve = dict(results.get("grape_tc", {}))
    if "sft" in results and 0 in results["sft"]:
        curve[0] = results["sft"][0]
    return dict(sorted(curve.items()))


def plot_table(
    table: TableSpec, results: dict[str, dict[int, dict[str, Any]]], exp: Experiment, path: Path
) -> Path | None:
    """A grouped bar chart of one table with 95% CI error bars (matplotlib, Agg)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    rows = [(name, label, final_summary(results, name, exp.preset)) for name, label in table.rows]
    rows = [r for r in rows if r[2] is not None]
    if not rows:
        return None
    if table.kind == "splits":
        panels = [("success rate (%)", [(s, "success") for s in exp.splits], 100.0)]
    else:
        panels = [
            ("collision rate (%)", [(TABLE2_SPLIT, "collision")], 100.0),
            ("step length", [(TABLE2_SPLIT, "step_length")], 1.0),
            ("success rate (%)", [(TABLE2_SPLIT, "success")], 100.0),
        ]
    fig, axes = plt.subplots(
        1, len(panels), figsize=(3.2 + 2.6 * len(panels) if len(panels) > 1 else 7.0, 3.8), dpi=120, squeeze=False
    )
    width = 0.8 / len(rows)
    for ax, (ylabel, groups, scale) in zip(axes[0], panels):
        x = np.arange(len(groups))
        for j, (_, label, summary) in enumerate(rows):
            cells = [rate_cell(summary, split, metric) for split, metric in groups]
            values = np.array([scale * c.value for c in cells])
            # Clipped at 0: Wilson bounds of 0% or 100% can sit a rounding error inside the rate.
            err = np.clip(
                [[scale * (c.value - c.low) for c in cells], [scale * (c.high - c.value) for c in cells]], 0, None
            )
            ax.bar(x + (j - (len(rows) - 1) / 2) * width, values, width, yerr=err, capsize=3, label=label)
        ax.set_xticks(x)
        ax.set_xticklabels([split if table.kind == "splits" else "" for split, _ in groups])
        ax.set_ylabel(ylabel)
        ax.grid(axis="y", alpha=0.3)
        if scale == 100.0:
            ax.set_ylim(0, 100)
    axes[0][-1].legend(fontsize="small", loc="best")
    fig.suptitle(table.title, fontsize="medium")
    fig.tight_layout()
    with atomic_write(path, "wb") as f:
        fig.savefig(f, format="png")
    plt.close(fig)
    return path


def render_report(
    out: Path, exp: Experiment, results: dict[str, dict[int, dict[str, Any]]], plots: dict[str, Path]
) -> str:
    """report.md: settings, tables, target checks, timings; paths are relative to `out`."""
    p = exp.preset
    done = {r.name: json.loads((run_dir(out, r.name) / DONE_FILE).read_text()) for r in PLAN if is_done(out, r.name)}
    lines = [
        f"# GRAPE paper experiments: preset `{p.name}`",
        "",
        f"Command: `{exp.command or 'grape-experiment paper --out ' + str(out)}` (started {exp.started}).",
        f"Runs done: {len(done)} of {len(exp.runs)} "
        f"({', '.join(n for n in exp.runs if n not in done) or 'none'} pending).",
        "",
        f"- SFT policy (shared by every run): `{exp.policy_dir}`",
        f"- Training seed {exp.seed}; tasks: {', '.join(p.tasks)}; K = {p.iterations} iterations; "
        f"{p.states_per_task} initial states per task x {p.samples_per_state} samples; m = {p.m}; "
        f"{p.epochs} epochs, {p.pairs_per_step} pairs per step"
        + (f"; episodes capped at {p.max_steps} steps" if p.max_steps else ""),
        f"- Optimiser: AdamW lr {p.lr:g}; reference `{p.ref_update}`; "
        f"NLL weight on chosen trajectories {p.nll_weight:g}"
        + (
            " (0: the paper's pure TPO / step-DPO)"
            if p.nll_weight == 0
            else " (not in the paper: RPO-style, see docs/training.md)"
        )
        + f"; LoRA on `{p.lora_targets}` layers",
        f"- Evaluation: {decoding(p)}, the sim's fixed evaluation seeds "
        f"(`EVAL_SEED_BASE + i`, i < {p.eval_episodes}) for every policy; "
        f"{p.eval_episodes} episodes per task and split = {p.episodes_per_cell} episodes per cell; "
        "95% Wilson intervals for rates, mean ± 1.96 s.e. for step length.",
        f"- Splits: {', '.join(exp.splits)}"
        + (
            ""
            if exp.pixels
            else " (not `visual`: the policy reads the state vector only, and `visual` changes only colours, "
            "so it would repeat in_domain)"
        ),
        "",
    ]
    for table in TABLES:
        lines += [f"## {table.title}", "", render_table(table, results, exp), ""]
        if table.key in plots:
            lines += [f"![{table.title}]({plots[table.key].relative_to(out)})", ""]
    if "fig6" in plots:
        lines += [
            "## Fig. 6: GRAPE-TC success per iteration (0 = SFT)",
            "",
            f"![success per iteration]({plots['fig6'].relative_to(out)})",
            "",
        ]
        curve = iteration_curve(results)
        lines += [
            markdown_table(
                ["iteration", *exp.splits],
                [[str(k), *(format_cell(rate_cell(curve[k], s, "success")) for s in exp.splits)] for k in curve],
            ),
            "",
        ]
    lines += [
        "## Targets from the paper",
        "",
        markdown_table(
            ["target", "measured", "met"],
            [
                [c.target, c.measured, "—" if c.met is None else ("yes" if c.met else "**no**")]
                for c in check_targets(results, exp)
            ],
        ),
        "",
    ]
    if done:

        def cpu(d: dict[str, Any], key: str) -> str:
            value = d.get(key)
            return "—" if value is None or math.isnan(value) else f"{value:.0f}"

        lines += [
            "## Time per run (wall time depends on what else the machine runs; CPU time does not)",
            "",
            markdown_table(
                ["run", "train s (wall)", "train CPU s", "eval s (wall)", "eval CPU s"],
                [
                    [
                        n,
                        f"{d['train_seconds']:.0f}",
                        cpu(d, "train_cpu_seconds_this_process"),
                        f"{d['eval_seconds']:.0f}",
                        cpu(d, "eval_cpu_seconds"),
                    ]
                    for n, d in done.items()
                ],
            ),
            "",
        ]
        wall = sum(d["train_seconds"] + d["eval_seconds"] for d in done.values())
        cpu_total = sum(
            d.get("train_cpu_seconds_this_process", math.nan) + d.get("eval_cpu_seconds", math.nan)
            for d in done.values()
        )
        cpu_text = "" if math.isnan(cpu_total) else f", {cpu_total / 60:.1f} CPU-minutes"
        lines += [f"Total: {wall / 60:.1f} min wall (summed over runs, which may have run in parallel){cpu_text}.", ""]
    lines += ["Raw results: `runs/<run>/eval_info.json`; equivalent commands: `commands.sh`.", ""]
    return "\n".join(lines)


def write_report(out: Path) -> Path:
    """Re-render report.md and the plots from whatever the run folders hold."""
    from trainer.eval import plot_iterations

    out = Path(out)
    exp = load_experiment(out)
    results = load_results(out)
    plots: dict[str, Path] = {}
    for table in TABLES:
        path = plot_table(table, results, exp, out / "plots" / f"{table.key}.png")
        if path is not None:
            plots[table.key] = path
    curve = iteration_curve(results)
    if len(curve) > 1:
        plots["fig6"] = plot_iterations(
            curve, out / "plots" / "fig6_success_per_iteration.png", title="GRAPE-TC: success per iteration"
        )
    path = out / REPORT_FILE
    atomic_write_text(path, render_report(out, exp, results, plots))
    return path
