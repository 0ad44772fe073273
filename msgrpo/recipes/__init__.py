"""Recipes: thin entry points over MSGRPOCLI with packaged default configs."""
