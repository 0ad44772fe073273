"""Watching an agent: transcripts, board frames, TensorBoard views and the curves of a run."""
