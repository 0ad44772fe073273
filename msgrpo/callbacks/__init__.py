"""Lightning callbacks: a graceful stop with atomic checkpoints (:mod:`.fault`), the best-validating policy
(:mod:`.selection`), weight averaging (:mod:`.averaging`), the iteration progress bar (:mod:`.progress`) and
the end-of-fit summary (:mod:`.summary`)."""

from msgrpo.callbacks.fault import AtomicCheckpointIO, GracefulShutdown, checkpoint_dir, remove_stale_temporaries

__all__ = ["AtomicCheckpointIO", "GracefulShutdown", "checkpoint_dir", "remove_stale_temporaries"]
