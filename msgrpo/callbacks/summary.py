"""The end-of-fit summary, as a Lightning callback: any ``Trainer.fit`` of an :class:`MSGRPOModule` gets it.

After the last iteration it prints what the training rollouts did (first and last iterations), where the
checkpoint, metrics and curves are, what went wrong if something did (:mod:`msgrpo.diagnostics`: a return
that peaked and fell back, an entropy collapse) and the last evaluation with the game's reference players
(random, optimal or scripted) on the same seeds and more. The recipes' CLI adds it to every trainer.
"""

from __future__ import annotations

import json
from pathlib import Path

import lightning as L

from msgrpo.diagnostics import notes
from msgrpo.evaluation import format_table


class RunSummary(L.Callback):
    """Print the summary of a run when ``fit`` ends (rank 0).

    Args:
        window: Iterations averaged at each end of the run (one iteration's rollouts are noisy).
    """

    def __init__(self, window: int = 10) -> None:
        self.window = window

    def on_fit_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        history = getattr(pl_module, "history", None)
        log_dir = Path(trainer.log_dir or trainer.default_root_dir)  # (a collective under DDP: every rank asks)
        if trainer.global_rank != 0 or not history:
            return
        window = max(1, min(self.window, len(history) // 2))
        first, last = history[:window], history[-window:]

        def fmt(rows, key):
            values = [row[key] for row in rows if key in row]
            return f"{sum(values) / len(values):.2f}" if values else "n/a"

        ckpt = trainer.checkpoint_callback
        best = getattr(ckpt, "last_model_path", "") or getattr(ckpt, "best_model_path", "")
        data = trainer.datamodule
        game = getattr(data, "game", None)
        meaning = f" ({game.success_meaning})" if getattr(game, "success_meaning", "") else ""
        results = getattr(pl_module, "eval_results", {})
        references = reference_results(data, results) if results else {}
        curves = draw_curves(log_dir, references)
        print(
            f"\nmsgrpo: trained {len(history)} iterations. Training rollouts"
            + (f" (mean of the first and last {window} iterations)" if window > 1 else "")
            + f": success rate{meaning} "
            f"{fmt(first, 'rollout/success_rate')} -> {fmt(last, 'rollout/success_rate')}, mean return "
            f"{fmt(first, 'rollout/return_mean')} -> {fmt(last, 'rollout/return_mean')}, invalid actions "
            f"{fmt(first, 'rollout/invalid_action_rate')} -> {fmt(last, 'rollout/invalid_action_rate')}."
            + (f" Checkpoint: {best}" if best else "")
            + f" Metrics: {log_dir}"
            + (f" Curves: {curves}" if curves else ""),
            flush=True,
        )
        for note in notes(history, self.window):
            print(f"msgrpo: warning: {note}.", flush=True)
        if results:
            legend = f" (success = {game.success_meaning})" if meaning else ""
            names = ", ".join(references)
            print(
                f"Last evaluation{legend}, with the reference players ({names}) on the same seeds and more:\n"
                + format_table(results, references),
                flush=True,
            )


def reference_results(data, results: dict[str, dict[str, float]]) -> dict[str, dict[str, dict[str, float]]]:
    """The game's reference players (no model: cheap) on the evaluated scenarios' seeds and, up to the
    data module's ``reference_episodes``, the ones after them: ``player -> scenario -> summary``."""
    from msgrpo.evaluation import summarize
    from msgrpo.players import play_reference

    panel = [s for s in getattr(data, "reference_panel", getattr(data, "panel", [])) if s.name in results]
    if not panel:
        return {}
    policies = panel[0].game.reference_policies()
    return {name: {s.name: summarize(play_reference(p, s)) for s in panel} for name, p in policies.items()}


def draw_curves(log_dir: Path, references: dict) -> Path | None:
    """Write ``references.json`` and, with matplotlib installed and a ``metrics.csv``, ``curves.png``."""
    from msgrpo.observe.curves import REFERENCES_FILE, plot_run

    if references:
        log_dir.mkdir(parents=True, exist_ok=True)
        (log_dir / REFERENCES_FILE).write_text(json.dumps(references, indent=1, sort_keys=True))
    if not (log_dir / "metrics.csv").is_file():
        return None
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        return None
    return plot_run(log_dir)
