"""grape-eval's table comparing iterations and the plot title (run name and n)."""

from rich.console import Console

from trainer.eval import EpisodeOutcome, summarize
from trainer.evalreport import comparison_table, plot_title


def outcomes(successes: int, n: int = 10) -> list:
    return [
        EpisodeOutcome(
            task="stack", split=split, seed=i, success=i < successes, grasp=True, collision=i == 0, length=40 + i
        )
        for split in ("in_domain", "visual")
        for i in range(n)
    ]


def test_one_row_per_iteration_and_split_with_the_change_from_the_base() -> None:
    per_iteration = {0: summarize(outcomes(4)), 2: summarize(outcomes(7))}
    console = Console(record=True, width=200)
    console.print(comparison_table(per_iteration, title="run: iterations compared"))
    text = console.export_text()
    rows = [line.split("│")[1:3] for line in text.splitlines() if line.startswith("│")]
    assert [(i.strip(), s.strip()) for i, s in rows] == [
        ("0", "in_domain"),
        ("0", "visual"),
        ("2", "in_domain"),
        ("2", "visual"),
    ]
    assert "40.0%" in text and "70.0%" in text and "+30.0" in text
    assert "in_domain" in text and "visual" in text


def test_plot_title_names_the_run_and_n() -> None:
    per_iteration = {0: summarize(outcomes(4)), 1: summarize(outcomes(5))}
    assert plot_title("grape", per_iteration) == "grape: success per iteration (n = 10 episodes per split)"
    per_iteration[1] = summarize(outcomes(5, n=20))
    assert "n = 10-20" in plot_title("grape", per_iteration)
