"""The ``python -m`` tools: ``baselines``, ``report``, ``ablate``, ``export``, ``replay``, ``plot``,
``tiny_tokenizer`` (``python -m msgrpo.tools.<name> --help``)."""
