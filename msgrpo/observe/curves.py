"""Curves of a run: ``curves.png`` beside its ``metrics.csv`` (matplotlib, the ``plot`` extra).

    python -m msgrpo.tools.plot runs/snake/version_0          # redraw any past run

Four panels: the training rollouts' success rate and mean return; the evaluation success rate per
scenario, with the reference players (random, optimal or scripted: ``references.json``, written by
``fit``) as dashed lines; the policy's entropy; the KL terms (to the reference, and how far each update
moved from the rollout policy). ``fit`` draws it at the end of training and names it in its summary.
"""

from __future__ import annotations

import csv
import json
from collections import defaultdict
from pathlib import Path

REFERENCES_FILE = "references.json"
CURVES_FILE = "curves.png"


def read_metrics(run_dir: str | Path) -> dict[str, dict[int, float]]:
    """``metric -> {iteration: value}`` from a run's Lightning ``metrics.csv`` (last value per iteration)."""
    files = sorted(Path(run_dir).rglob("metrics.csv"))
    if not files:
        raise FileNotFoundError(f"no metrics.csv under {run_dir}")
    out: dict[str, dict[int, float]] = defaultdict(dict)
    with open(files[-1], newline="") as f:
        for row in csv.DictReader(f):
            epoch = row.get("epoch")
            if epoch in (None, ""):
                continue
            for key, value in row.items():
                if key not in ("epoch", "step") and value not in (None, ""):
                    out[key][int(float(epoch))] = float(value)
    return dict(out)


def plot_run(log_dir: str | Path, out: str | Path | None = None) -> Path:
    """Draw ``log_dir``'s ``metrics.csv`` (and ``references.json`` if there) into ``curves.png``."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    log_dir = Path(log_dir)
    metrics = read_metrics(log_dir)
    ref_path = log_dir / REFERENCES_FILE
    references = json.loads(ref_path.read_text()) if ref_path.is_file() else {}
    fig, axes = plt.subplots(2, 2, figsize=(11, 7))

    def curve(ax, key: str, label: str, **style) -> None:
        points = sorted(metrics.get(key, {}).items())
        if points:
            ax.plot([p[0] for p in points], [p[1] for p in points], label=label, **style)

    ax = axes[0][0]
    curve(ax, "rollout/success_rate", "success rate")
    curve(ax, "rollout/return_mean", "mean return")
    ax.set_title("training rollouts")
    ax = axes[0][1]
    scenarios = sorted({k.split("/")[1] for k in metrics if k.startswith("eval/") and k.endswith("/success_rate")})
    for n, name in enumerate(scenarios):
        colour = f"C{n}"
        curve(ax, f"eval/{name}/success_rate", name, color=colour, marker="o")
        for m, by_scenario in enumerate(references.values()):
            if name in by_scenario:
                style = ("--", ":", "-.")[m % 3]
                ax.axhline(by_scenario[name]["success_rate"], color=colour, linestyle=style, alpha=0.6, linewidth=1)
    if references:
        ax.text(0.01, 0.01, "dashed/dotted: " + ", ".join(references), transform=ax.transAxes, fontsize=7)
    ax.set_title("evaluation success rate (reference players as lines)")
    ax.set_ylim(-0.02, 1.02)
    ax = axes[1][0]
    curve(ax, "loss/entropy", "entropy (nats)")
    ax.set_title("policy entropy")
    ax = axes[1][1]
    curve(ax, "loss/kl", "KL to the reference")
    curve(ax, "loss/approx_kl", "approx. KL to the rollout policy")
    ax.set_title("KL")
    for ax in (a for row in axes for a in row):
        ax.set_xlabel("iteration")
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize=8)
    fig.tight_layout()
    out = Path(out) if out is not None else log_dir / CURVES_FILE
    fig.savefig(out, dpi=90)
    plt.close(fig)
    return out
