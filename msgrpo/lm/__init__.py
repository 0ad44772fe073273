"""The policy's parts: loading models and tokenizers, the tiny and pretrained presets, the sampling
distribution, decoding, shared-prefix and frozen-trunk machinery. :class:`msgrpo.policy.LanguagePolicy` is
the facade the rest of the code talks to."""
