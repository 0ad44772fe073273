"""Ablation runner: a grid of component variants x seeds of one recipe, one table and one plot.

    python -m msgrpo.tools.ablate --recipe frozen_lake --seeds 0 1 2 3 --out reports/ablation_sampler \\
        --variant AbsoluteAdvantageWeighted=sampler_aaw.yaml --variant Uniform=sampler_uniform.yaml \\
        --variant All=sampler_all.yaml -- --trainer.max_epochs=40

A variant is ``name=overlay`` where the overlay is a packaged config name (``sampler_uniform.yaml``) or a
path, optionally followed by extra arguments after commas (``lr3=base.yaml,--model.optimizer.init_args.lr=3e-3``).
Each variant runs through :func:`msgrpo.tools.report.run_seeds` (each run its own process; ``--float-paths`` and
``--parallel`` as in ``msgrpo.tools.report``) into ``<out>/<name>/seed_<k>``
(``<out>/<name>/<path>-...-seed_<k>`` with several float paths); the table gives, per scenario, the final
evaluation success rate and return as mean ± 95% CI, the area under the evaluation success curve, the
training-rollout return of the last iteration (mean ± 95% CI) and its area under the curve, and the mean
wall-clock per run.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from msgrpo.tools.report import aggregate, finished_runs, mean_ci, read_metrics, read_walls, run_seeds, write_report
from msgrpo.tools.runs import add_grid_arguments


def parse_variant(spec: str) -> tuple[str, list[str]]:
    """``name=overlay[,arg...]`` -> (name, recipe arguments)."""
    if "=" not in spec:
        raise argparse.ArgumentTypeError(f"variant {spec!r} must look like name=overlay.yaml[,--extra=value]")
    name, rest = spec.split("=", 1)
    overlay, *extra = rest.split(",")
    args = []
    if overlay:
        from msgrpo.cli import config_path

        path = overlay if Path(overlay).is_file() else config_path(overlay)
        args.append(f"--config={path}")
    return name, args + extra


def table(results: dict[str, dict]) -> str:
    """Markdown table: one row per variant and scenario."""
    lines = [
        "| variant | scenario | final success (mean ± 95% CI) | final return (mean ± 95% CI) | AUC success "
        "| training return, last iteration | AUC training return | wall s/run |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for name, summary in results.items():
        wall = summary.get("wall_s") or {}
        nan = {"mean": float("nan"), "ci95": float("nan")}
        train = summary.get("rollout", {}).get("final", {}).get("rollout/return_mean", nan)
        train_auc = summary.get("rollout", {}).get("auc", {}).get("rollout/return_mean", nan)
        for metric, final in summary["final"].items():
            if not metric.endswith("/success_rate"):
                continue
            scenario = metric.split("/")[1]
            ret = summary["final"].get(f"eval/{scenario}/return_mean", {"mean": float("nan"), "ci95": float("nan")})
            lines.append(
                f"| {name} | {scenario} | {final['mean']:.3f} ± {final['ci95']:.3f} | "
                f"{ret['mean']:.3f} ± {ret['ci95']:.3f} | {summary['auc'][metric]['mean']:.3f} | "
                f"{train['mean']:.3f} ± {train['ci95']:.3f} | {train_auc['mean']:.3f} | "
                f"{wall.get('mean', float('nan')):.0f} |"
            )
    return "\n".join(lines)


def plot(results: dict[str, dict], out: Path, title: str) -> list[Path]:
    """Final evaluation success per variant and scenario (95% CI error bars), and the training-rollout
    return curve of each variant (mean ± 95% CI over seeds: informative even when evaluation is all 0)."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return []
    scenarios = sorted({m.split("/")[1] for r in results.values() for m in r["final"] if m.endswith("/success_rate")})
    if not scenarios:
        return []
    fig, (bars, curves) = plt.subplots(1, 2, figsize=(11, 3.8))
    width = 0.8 / len(results)
    for k, (name, summary) in enumerate(results.items()):
        finals = [summary["final"].get(f"eval/{s}/success_rate", {"mean": 0.0, "ci95": 0.0}) for s in scenarios]
        xs = [i + k * width for i in range(len(scenarios))]
        bars.bar(xs, [f["mean"] for f in finals], width, yerr=[f["ci95"] for f in finals], capsize=3, label=name)
        rows = summary.get("rollout", {}).get("curves", {}).get("rollout/return_mean", [])
        curves.errorbar(
            [r["iteration"] for r in rows], [r["mean"] for r in rows], yerr=[r["ci95"] for r in rows],
            capsize=2, label=name,
        )  # fmt: skip
    bars.set_xticks([i + width * (len(results) - 1) / 2 for i in range(len(scenarios))], scenarios, fontsize=8)
    bars.set_ylabel("final success rate")
    bars.set_ylim(0, 1.05)
    bars.legend(fontsize=7)
    curves.set_title("training-rollout return (mean ± 95% CI over seeds)", fontsize=9)
    curves.set_xlabel("iteration")
    curves.legend(fontsize=7)
    fig.suptitle(title)
    fig.tight_layout()
    path = out / "ablation.png"
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return [path]


def main(argv: list[str] | None = None) -> dict:
    argv = list(sys.argv[1:] if argv is None else argv)
    common: list[str] = []
    if "--" in argv:
        common = argv[argv.index("--") + 1 :]
        argv = argv[: argv.index("--")]
    parser = argparse.ArgumentParser(prog="python -m msgrpo.tools.ablate", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)  # fmt: skip
    parser.add_argument("--recipe", default="frozen_lake")
    add_grid_arguments(parser, default_seeds=[0, 1, 2, 3], default_threads=None)
    parser.add_argument("--variant", type=parse_variant, action="append", required=True, help="name=overlay[,args]")
    parser.add_argument("--out", default="reports/ablation")
    parser.add_argument("--aggregate-only", action="store_true", help="only aggregate the finished runs under --out")
    args = parser.parse_args(argv)
    out = Path(args.out)
    results: dict[str, dict] = {}
    failed: list[str] = []
    for name, variant_args in args.variant:
        vdir = out / name
        if args.aggregate_only:
            dirs = finished_runs(vdir)
        else:
            dirs, _, lost = run_seeds(args.recipe, args.seeds, vdir, [*variant_args, *common], args.float_paths,
                                      args.threads, args.parallel)  # fmt: skip
            failed += [f"{name}/{run}" for run in lost]
        walls = read_walls(dirs)
        runs = {n: read_metrics(d) for n, d in dirs.items()}
        summary = aggregate(runs)
        summary["rollout"] = aggregate(runs, prefix="rollout/")
        summary["wall_s"] = mean_ci(list(walls.values())) if walls else None
        write_report(summary, vdir, title=f"{args.recipe} / {name}")
        results[name] = summary
    out.mkdir(parents=True, exist_ok=True)
    md = table(results)
    (out / "ablation.md").write_text(md + "\n")
    (out / "ablation.json").write_text(json.dumps(results, indent=2, sort_keys=True))
    runs_each = f"{len(args.seeds)} seeds x {len(args.float_paths)} float paths"
    files = plot(results, out, f"{args.recipe}: {runs_each} a variant")
    print(md)
    print(json.dumps({"report": str(out), "files": [str(out / "ablation.md"), *map(str, files)], "failed": failed}))
    if failed:
        raise SystemExit(f"msgrpo.tools.ablate: runs failed: {', '.join(failed)} (their logs are under {out})")
    return results


if __name__ == "__main__":
    main()
