"""Multi-seed reports: run a recipe over k seeds, aggregate evaluation curves, write CSV/JSON and plots.

    python -m msgrpo.tools.report --recipe frozen_lake --seeds 0 1 2 --out reports/frozen_lake -- \\
        --trainer.max_epochs=60 --trainer.check_val_every_n_epoch=10

Each run is its own process (``msgrpo.tools.runs``, the one multi-seed runner), ``--parallel`` at once;
``--float-paths native avx2 budget`` adds the float paths of another machine to the grid. On a cluster,
launch one job per seed with any launcher and aggregate their run directories with ``--aggregate-only``.

For every evaluation scenario and metric the report gives, per iteration, the mean, the std, the 95%
confidence interval of the mean (Student t) and the best run; the bar chart compares the final evaluation with
reference policies (random; value-iteration optimal for Frozen Lake; the greedy scripted policy for Snake) and
states each result as a fraction of the best reference.
"""

from __future__ import annotations

import argparse
import csv
import importlib
import importlib.util
import json
import math
import sys
from pathlib import Path

from msgrpo.observe.curves import read_metrics
from msgrpo.tools.runs import FLOAT_PATHS, Run, add_grid_arguments, float_path, run_each

# Two-sided 95% Student t critical values by degrees of freedom (1..30); 1.96 beyond.
_T975 = [12.706, 4.303, 3.182, 2.776, 2.571, 2.447, 2.365, 2.306, 2.262, 2.228, 2.201, 2.179, 2.160, 2.145,
         2.131, 2.120, 2.110, 2.101, 2.093, 2.086, 2.080, 2.074, 2.069, 2.064, 2.060, 2.056, 2.052, 2.048,
         2.045, 2.042]  # fmt: skip


def t975(dof: int) -> float:
    """Two-sided 95% critical value of Student's t with ``dof`` degrees of freedom."""
    if dof < 1:
        return float("nan")
    return _T975[dof - 1] if dof <= len(_T975) else 1.96


def mean_ci(values: list[float]) -> dict[str, float]:
    """Mean, sample std (n - 1) and the 95% CI half-width of the mean (0 for a single value)."""
    n = len(values)
    if n == 0:
        raise ValueError("mean_ci() needs at least one value")
    mean = sum(values) / n
    std = math.sqrt(sum((v - mean) ** 2 for v in values) / (n - 1)) if n > 1 else 0.0
    half = t975(n - 1) * std / math.sqrt(n) if n > 1 else 0.0
    return {"mean": mean, "std": std, "ci95": half, "n": float(n)}


def auc(curve: dict[int, float]) -> float:
    """Area under a learning curve, normalised by its iteration span (trapezoid rule; mean for one point)."""
    points = sorted(curve.items())
    if len(points) == 1:
        return points[0][1]
    area = sum((x1 - x0) * (y0 + y1) / 2 for (x0, y0), (x1, y1) in zip(points, points[1:]))
    return area / (points[-1][0] - points[0][0])


def aggregate(runs: dict[str, dict[str, dict[int, float]]], prefix: str = "eval/") -> dict:
    """Aggregate metric curves over runs.

    Args:
        runs: ``run name -> metric -> {iteration: value}``.
        prefix: Only metrics starting with this are aggregated.

    Returns:
        ``{"curves": {metric: [{"iteration", "mean", "std", "ci95", "n", "best"}...]},
        "final": {metric: {"mean", "std", "ci95", "n", "values", "best_run"}}, "auc": {...}}`` where ``best``
        is the value of the run with the highest final value of that metric.
    """
    metrics = sorted({m for r in runs.values() for m in r if m.startswith(prefix)})
    curves, final, areas = {}, {}, {}
    for metric in metrics:
        per_run = {name: r[metric] for name, r in runs.items() if metric in r and r[metric]}
        finals = {name: c[max(c)] for name, c in per_run.items()}
        best = max(finals, key=lambda n: finals[n])
        iterations = sorted({i for c in per_run.values() for i in c})
        curves[metric] = [
            {
                "iteration": i,
                **mean_ci([c[i] for c in per_run.values() if i in c]),
                "best": per_run[best].get(i),
            }
            for i in iterations
        ]
        final[metric] = {**mean_ci(list(finals.values())), "values": finals, "best_run": best}
        areas[metric] = mean_ci([auc(c) for c in per_run.values()])
    return {"curves": curves, "final": final, "auc": areas}


def reference_results(game, episodes: int | None = None) -> dict[str, dict[str, dict[str, float]]]:
    """Reference policies on the game's panel: ``policy -> scenario -> summary``."""
    from msgrpo.evaluation import build_panel, summarize
    from msgrpo.players import play_reference

    panel = build_panel(game, episodes=episodes or 50)
    return {
        name: {s.name: summarize(play_reference(policy, s)) for s in panel}
        for name, policy in game.reference_policies().items()
    }


def write_report(summary: dict, out: Path, references: dict | None = None, title: str = "") -> list[Path]:
    """Write ``report.json``, ``curves.csv``, ``final.csv`` and, when matplotlib is installed, PNG plots."""
    out.mkdir(parents=True, exist_ok=True)
    written = [out / "report.json", out / "curves.csv", out / "final.csv"]
    payload = dict(summary)
    if references:
        payload["references"] = references
        payload["fraction_of_best_reference"] = fraction_of_reference(summary, references)
    written[0].write_text(json.dumps(payload, indent=2, sort_keys=True))
    with open(written[1], "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["metric", "iteration", "mean", "std", "ci95", "n", "best"])
        for metric, rows in summary["curves"].items():
            for r in rows:
                w.writerow([metric, r["iteration"], r["mean"], r["std"], r["ci95"], int(r["n"]), r["best"]])
    with open(written[2], "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["metric", "mean", "std", "ci95", "n", "best_run", "auc_mean"])
        for metric, r in summary["final"].items():
            w.writerow(
                [
                    metric,
                    r["mean"],
                    r["std"],
                    r["ci95"],
                    int(r["n"]),
                    r["best_run"],
                    summary["auc"][metric]["mean"],
                ]
            )
    written += plot_report(summary, out, references, title)
    return written


def fraction_of_reference(summary: dict, references: dict) -> dict[str, float]:
    """Final mean success rate per scenario divided by the best reference policy's (None when that is 0)."""
    out = {}
    for metric, r in summary["final"].items():
        if not metric.endswith("/success_rate"):
            continue
        scenario = metric.split("/")[1]
        best = max((ref[scenario]["success_rate"] for ref in references.values() if scenario in ref), default=0.0)
        out[scenario] = r["mean"] / best if best > 0 else None
    return out


def plot_report(summary: dict, out: Path, references: dict | None, title: str) -> list[Path]:
    """Per-scenario curves (mean with 95% CI error bars, best run dashed) and a bar chart vs references."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("msgrpo.tools.report: matplotlib not installed (pip install 'msgrpo[plot]'): no plots", file=sys.stderr)
        return []
    metrics = [m for m in summary["curves"] if m.endswith("/success_rate")] or list(summary["curves"])
    files = []
    if metrics:
        fig, axes = plt.subplots(1, len(metrics), figsize=(4.2 * len(metrics), 3.4), squeeze=False)
        for ax, metric in zip(axes[0], metrics):
            rows = summary["curves"][metric]
            xs = [r["iteration"] for r in rows]
            ax.errorbar(
                xs,
                [r["mean"] for r in rows],
                yerr=[r["ci95"] for r in rows],
                capsize=3,
                label="mean ± 95% CI",
            )
            ax.plot(
                xs,
                [r["best"] for r in rows],
                "--",
                label=f"best run ({summary['final'][metric]['best_run']})",
            )
            ax.set_title(metric.split("/")[1])
            ax.set_xlabel("iteration")
            ax.set_ylabel(metric.split("/")[-1])
            ax.set_ylim(-0.05, 1.05) if metric.endswith("rate") else None
        axes[0][0].legend(fontsize=7)
        fig.suptitle(title)
        fig.tight_layout()
        files.append(out / "curves.png")
        fig.savefig(files[-1], dpi=110)
        plt.close(fig)
    if references and metrics:
        scenarios = [m.split("/")[1] for m in metrics]
        names = ["trained", *references]
        fig, ax = plt.subplots(figsize=(1.6 + 1.4 * len(scenarios), 3.4))
        width = 0.8 / len(names)
        for k, name in enumerate(names):
            if name == "trained":
                vals = [summary["final"][m]["mean"] for m in metrics]
                err = [summary["final"][m]["ci95"] for m in metrics]
            else:
                vals = [references[name].get(s, {}).get("success_rate", 0.0) for s in scenarios]
                err = None
            ax.bar([i + k * width for i in range(len(scenarios))], vals, width, yerr=err, capsize=3, label=name)
        ax.set_xticks([i + width * (len(names) - 1) / 2 for i in range(len(scenarios))], scenarios, fontsize=8)
        ax.set_ylabel("final success rate")
        ax.set_ylim(0, 1.05)
        ax.legend(fontsize=7)
        ax.set_title(title)
        fig.tight_layout()
        files.append(out / "references.png")
        fig.savefig(files[-1], dpi=110)
        plt.close(fig)
    return files


REFERENCES_FILE = "report_references.json"
"""Written into each run's folder by :func:`fit_one`: the reference players on the evaluated scenarios."""


def run_seeds(
    recipe: str,
    seeds: list[int],
    out: Path,
    extra: list[str],
    paths: list[str] | None = None,
    threads: int | None = None,
    parallel: int = 1,
    reference_episodes: int = 0,
) -> tuple[dict[str, Path], dict[str, float], list[str]]:
    """Fit ``recipe`` once per seed and float path (:func:`msgrpo.tools.runs.run_each`: each run in its own
    process, :func:`fit_one`), each into ``out/seed_<k>`` (one float path) or ``out/<run name>``.

    Args:
        recipe: module under ``msgrpo.recipes``.
        seeds: ``--seed_everything`` of each run.
        out: report folder (runs, their logs and ``runs.jsonl`` go under it).
        extra: recipe arguments of every run (the float path's own arguments come after them).
        paths: float paths (``native``, ``avx2@1``, ...; default native), see ``runs.FLOAT_PATHS``.
        threads: threads of a path given without ``@`` (None: the environment's).
        parallel: runs at once.
        reference_episodes: episodes a scenario for the reference players after each run (0: none).

    Returns:
        ``(run name -> run dir, run name -> wall seconds)`` of the runs that finished, and the names of
        those that failed.
    """
    runs = list(dict.fromkeys(Run(seed, *float_path(spec, threads)) for spec in paths or ["native"] for seed in seeds))
    single = len({(r.path, r.threads) for r in runs}) == 1

    def run_dir(run: Run) -> Path:
        return out / (f"seed_{run.seed}" if single else run.name)

    def command(run: Run) -> list[str]:
        return [sys.executable, "-c", "from msgrpo.tools.report import fit_one; fit_one()", recipe,
                str(reference_episodes), f"--seed_everything={run.seed}", f"--trainer.default_root_dir={run_dir(run)}",
                "--trainer.logger.init_args.version=0", "--trainer.enable_progress_bar=false", *extra,
                *FLOAT_PATHS[run.path][1]]  # fmt: skip

    print(f"msgrpo.tools.report: {recipe}, {len(runs)} runs -> {out}", file=sys.stderr, flush=True)
    results = run_each(runs, command, out, parallel, result=lambda run, log: {"run_dir": str(run_dir(run))})
    dirs, walls, failed = {}, {}, []
    for run, res in zip(runs, results):
        if "error" in res:
            print(f"msgrpo.tools.report: {run.name} failed: {res['error']}", file=sys.stderr, flush=True)
            failed.append(run_dir(run).name)
            continue
        name = run_dir(run).name
        dirs[name], walls[name] = run_dir(run), res["wall_s"]
        (run_dir(run) / "wall_s.txt").write_text(f"{res['wall_s']:.3f}\n")
    return dirs, walls, failed


def fit_one(argv: list[str] | None = None) -> None:
    """One run of a report, in its own process (``argv``: recipe, reference episodes, then ``fit``'s
    arguments): fit, evaluate once more if the last iteration was not (a run its time budget stopped), and
    write the reference players' results on the evaluated panel to ``<root>/report_references.json``."""
    recipe, episodes, *args = sys.argv[1:] if argv is None else argv
    cli = importlib.import_module(f"msgrpo.recipes.{recipe}").main(["fit", *args])
    if cli.model.history and not _validated_last(cli):
        cli.trainer.validate(cli.model, datamodule=cli.datamodule, verbose=False)
    if int(episodes) > 0:
        references = reference_results(cli.datamodule.game, int(episodes))
        Path(cli.trainer.default_root_dir, REFERENCES_FILE).write_text(json.dumps(references, sort_keys=True))


def _validated_last(cli) -> bool:
    trainer = cli.trainer
    every = trainer.check_val_every_n_epoch or 0
    last = trainer.current_epoch % every == 0 or trainer.current_epoch == trainer.max_epochs if every else False
    return last and trainer.limit_val_batches != 0


def read_walls(dirs: dict[str, Path]) -> dict[str, float]:
    """Wall-clock seconds of finished runs (``wall_s.txt`` written by :func:`run_seeds`)."""
    files = {n: Path(d) / "wall_s.txt" for n, d in dirs.items()}
    return {n: float(f.read_text()) for n, f in files.items() if f.exists()}


def finished_runs(out: Path) -> dict[str, Path]:
    """The run folders under ``out`` that finished (:func:`run_seeds` wrote their ``wall_s.txt``)."""
    return {p.parent.name: p.parent for p in sorted(out.glob("*seed_*/wall_s.txt"))}


def read_references(dirs: dict[str, Path]) -> dict | None:
    """The reference players' results a run wrote (the same panel for every run; None if none did)."""
    for d in dirs.values():
        if (Path(d) / REFERENCES_FILE).is_file():
            return json.loads((Path(d) / REFERENCES_FILE).read_text())
    return None


def main(argv: list[str] | None = None) -> dict:
    argv = list(sys.argv[1:] if argv is None else argv)
    extra = []
    if "--" in argv:
        extra = argv[argv.index("--") + 1 :]
        argv = argv[: argv.index("--")]
    parser = argparse.ArgumentParser(prog="python -m msgrpo.tools.report", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)  # fmt: skip
    parser.add_argument("--recipe", default="frozen_lake", help="recipe module under msgrpo.recipes")
    add_grid_arguments(parser, default_seeds=[0, 1, 2], default_threads=None)
    parser.add_argument(
        "--out", default="reports/run", help="report directory (runs go to <out>/seed_<k>, or <out>/<path>-...)"
    )
    parser.add_argument("--aggregate-only", action="store_true", help="only aggregate the finished runs under --out")
    parser.add_argument("--reference-episodes", type=int, default=50, help="reference players' episodes a scenario")
    args = parser.parse_args(argv)
    out = Path(args.out)
    failed: list[str] = []
    if args.aggregate_only:
        dirs = finished_runs(out)
        if not dirs:
            parser.error(f"no finished runs (*seed_*/wall_s.txt) under {out}")
    else:
        if importlib.util.find_spec(f"msgrpo.recipes.{args.recipe}") is None:
            parser.error(f"no recipe msgrpo.recipes.{args.recipe}")
        dirs, _, failed = run_seeds(args.recipe, args.seeds, out, extra, args.float_paths, args.threads,
                                    args.parallel, args.reference_episodes)  # fmt: skip
    walls = read_walls(dirs)
    runs = {name: read_metrics(d) for name, d in dirs.items()}
    summary = aggregate(runs)
    summary["wall_s"] = mean_ci(list(walls.values())) if walls else None
    summary["runs"] = {name: str(d) for name, d in dirs.items()}
    summary["failed"] = failed
    files = write_report(summary, out, read_references(dirs), title=f"{args.recipe}: {len(dirs)} runs")
    finals = {m: round(r["mean"], 3) for m, r in summary["final"].items() if m.endswith("success_rate")}
    print(json.dumps({"report": str(out), "files": [str(f) for f in files], "final_success_mean": finals,
                      "failed": failed}))  # fmt: skip
    if failed:
        raise SystemExit(f"msgrpo.tools.report: {len(failed)} of {len(failed) + len(dirs)} runs failed: "
                         f"{', '.join(failed)} (their logs are under {out})")  # fmt: skip
    return summary


if __name__ == "__main__":
    main()
