"""grape-eval's cross-iteration views: one table comparing iterations, and the plot's title."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from trainer.eval import _split_order

if TYPE_CHECKING:
    import rich.table


def episodes_per_split(per_iteration: dict[int, dict[str, Any]]) -> str:
    """'n = 40' when every (iteration, split) ran 40 episodes over all tasks, else 'n = 20-40'."""
    counts = sorted({m["all"]["episodes"] for metrics in per_iteration.values() for m in metrics.values()})
    if not counts:
        return "n = 0"
    return f"n = {counts[0]}" if len(counts) == 1 else f"n = {counts[0]}-{counts[-1]}"


def plot_title(run: str, per_iteration: dict[int, dict[str, Any]]) -> str:
    return f"{run}: success per iteration ({episodes_per_split(per_iteration)} episodes per split)"


def comparison_table(per_iteration: dict[int, dict[str, Any]], title: str) -> rich.table.Table:
    """One row per (iteration, split) over all tasks: success, collision (with 95% CIs) and steps,
    each success and collision also as the change from iteration 0 (the base policy) where it ran."""
    from rich.table import Table

    table = Table(title=title)
    for column in ("iteration", "split", "n", "success", "Δ success", "collision", "Δ collision", "steps"):
        table.add_column(column, justify="left" if column in ("iteration", "split") else "right")
    base = per_iteration.get(0, {})
    for iteration in sorted(per_iteration):
        for split in sorted(per_iteration[iteration], key=_split_order):
            m = per_iteration[iteration][split]["all"]
            cells = []
            for metric in ("success", "collision"):
                rate, (low, high) = m[metric]["rate"], m[metric]["ci95"]
                cells.append(f"{100 * rate:5.1f}% [{100 * low:.0f}, {100 * high:.0f}]")
                reference = base.get(split, {}).get("all")
                cells.append(f"{100 * (rate - reference[metric]['rate']):+.1f}" if reference and iteration else "")
            steps = m["step_length"]
            half = (steps["ci95"][1] - steps["ci95"][0]) / 2
            table.add_row(str(iteration), split, str(m["episodes"]), *cells, f"{steps['mean']:.1f} ± {half:.1f}")
    return table
