"""msgrpo."""
