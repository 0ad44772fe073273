"""Episode transcripts: what the agent saw, said and did, as JSON lines under the run's log directory.

Evaluations write the first ``model.transcripts`` episodes of every scenario (fixed seeds, so the same
episodes can be compared across iterations) to ``<log dir>/transcripts/eval.jsonl``; with
``data.log_episodes`` training iterations write that many of their episodes to ``train.jsonl``. One line
per episode::

    {"split": "eval", "iteration": 99, "scenario": "default-8", "seed": 1000000, "return": -1.0,
     "success": false, "outcome": "terminated", "length": 3, "error": null,
     "steps": [{"observation": "...", "completion": "up", "action": "up", "valid": true, "reward": 0.0}, ...]}

Files grow by a few kilobytes per episode; ``python -m msgrpo.tools.replay`` shows a checkpoint's play frame by
frame instead.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from msgrpo.types import Episode

TRANSCRIPTS_DIR = "transcripts"


def outcome(episode: Episode) -> str:
    """``"error"``, ``"terminated"`` (ended by the game's rules), ``"truncated"`` (step limit) or ``"running"``."""
    if episode.error is not None:
        return "error"
    return "terminated" if episode.terminated else "truncated" if episode.truncated else "running"


def episode_record(episode: Episode, action_names: Sequence[str], **context: Any) -> dict[str, Any]:
    """One episode as a JSON-ready dict (``context``: split, iteration, scenario...)."""
    return {
        **context,
        "seed": episode.seed,
        "return": round(episode.total_reward, 6),
        "success": bool(episode.success),
        "outcome": outcome(episode),
        "length": episode.length,
        "error": episode.error,
        "steps": [
            {
                "observation": s.observation,
                "completion": s.text,
                "action": action_names[s.action] if 0 <= s.action < len(action_names) else s.action,
                "valid": s.valid,
                "reward": round(s.reward, 6),
            }
            for s in episode.steps
        ],
    }


def write(log_dir: str | Path, split: str, records: Sequence[dict[str, Any]]) -> Path:
    """Append records to ``<log_dir>/transcripts/<split>.jsonl``; returns the file."""
    path = Path(log_dir) / TRANSCRIPTS_DIR / f"{split}.jsonl"
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a", encoding="utf-8") as handle:
        for record in records:
            handle.write(json.dumps(record, ensure_ascii=False) + "\n")
    return path


def read(path: str | Path) -> list[dict[str, Any]]:
    """Every record of a transcript file."""
    with open(path, encoding="utf-8") as handle:
        return [json.loads(line) for line in handle if line.strip()]
