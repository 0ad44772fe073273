"""Export a trained policy as a Hugging Face model directory.

Usage::

    python -m msgrpo.tools.export --ckpt_path CKPT --config CONFIG --out DIR [--merge | --adapter-only]

``CONFIG`` is the run's configuration: the ``config.yaml`` that ``fit`` writes next to its metrics, or the
recipe's own config plus the overrides the run used (``--recipe frozen_lake --model.policy.init_args...``:
every argument not listed here goes to the recipe's CLI, so ``--config`` may repeat for overlays).
``CKPT`` is a Lightning checkpoint: a file, or the folder a sharded ``ModelParallelStrategy`` run writes.

The directory holds the model (``config.json``, safetensors weights, generation config) and the tokenizer
with its chat template, loadable with ``AutoModelForCausalLM.from_pretrained(DIR)`` and
``AutoTokenizer.from_pretrained(DIR)``. For a LoRA policy, ``--merge`` (the default) folds the adapter into
the base weights (``merge_and_unload``); ``--adapter-only`` writes the peft adapter alone
(``PeftModel.from_pretrained(base, DIR)``), with the base model in ``DIR/base`` when the base is the
built-in tiny preset (hub ids and local directories are referred to by name). ``msgrpo_policy.json``
records the decoding settings the policy was trained with (response prefix, temperature...).
"""

from __future__ import annotations

import argparse
import json
import sys
import warnings
from pathlib import Path
from typing import Any

import torch

from msgrpo.cli import MSGRPOCLI, config_path
from msgrpo.errors import ConfigError
from msgrpo.module import MSGRPOModule
from msgrpo.policy import TINY, LanguagePolicy

POLICY_FILE = "msgrpo_policy.json"


class _ModelCLI(MSGRPOCLI):
    """The recipe CLI without a subcommand: builds the module from a run's configuration."""

    def add_arguments_to_parser(self, parser) -> None:
        super().add_arguments_to_parser(parser)
        # keys of the `fit` subcommand that a run's saved config.yaml holds: accepted and ignored here
        parser.add_argument("--ckpt_path", type=str | None, default=None)
        parser.add_argument("--weights_only", type=bool | None, default=None)


def build_run(cli_args: list[str], recipe: str | None = None) -> MSGRPOCLI:
    """The CLI (module, data module, trainer) a run's configuration describes (weights as initialised)."""
    default = config_path(f"{recipe}.yaml") if recipe else None
    with warnings.catch_warnings():  # "args given and sys.argv too": the exporter's own options
        warnings.filterwarnings("ignore", message=".*args parameter is intended to run from within Python.*")
        return _ModelCLI(default_config=default, args=cli_args, run=False)


def build_module(cli_args: list[str], recipe: str | None = None) -> MSGRPOModule:
    """The :class:`MSGRPOModule` a run's configuration describes (weights as initialised)."""
    return build_run(cli_args, recipe).model


def read_checkpoint(path: str | Path) -> dict[str, Any]:
    """A Lightning checkpoint as one dictionary: a file, or a sharded checkpoint folder (consolidated)."""
    path = Path(path)
    if path.is_dir():
        from lightning.fabric.utilities.load import _load_distributed_checkpoint

        return _load_distributed_checkpoint(path)
    if not path.is_file():
        raise ConfigError(f"checkpoint {str(path)!r} does not exist")
    return torch.load(path, map_location="cpu", weights_only=False)


def load_checkpoint(module: MSGRPOModule, path: str | Path) -> MSGRPOModule:
    """Load a training checkpoint's weights into ``module`` (adapter-only LoRA checkpoints included)."""
    checkpoint = read_checkpoint(path)
    module.on_load_checkpoint(checkpoint)
    module.load_state_dict(checkpoint["state_dict"], strict=True)
    return module


def export_policy(policy: LanguagePolicy, out: str | Path, adapter_only: bool = False) -> Path:
    """Write ``policy`` as a Hugging Face directory (see the module docstring).

    Args:
        policy: The trained policy (its model is modified when a LoRA adapter is merged or unloaded).
        out: Target directory (created).
        adapter_only: For a LoRA policy, write the adapter alone instead of the merged model.

    Returns:
        The directory.
    """
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    model = policy.model
    if adapter_only and not policy.uses_lora:
        raise ConfigError("--adapter-only needs a LoRA policy (this one was fully fine-tuned)")
    if adapter_only:
        config = model.peft_config["default"]
        if policy.model_name_or_path == TINY:  # no name to refer to: ship the base beside the adapter
            config.base_model_name_or_path = str((out / "base").resolve())
            model.save_pretrained(out)
            base = model.unload()  # the base model without the adapter layers
            base.save_pretrained(out / "base")
            policy.tokenizer.save_pretrained(out / "base")
        else:
            config.base_model_name_or_path = policy.model_name_or_path
            model.save_pretrained(out)
    else:
        if policy.uses_lora:
            model = model.merge_and_unload()
        model.save_pretrained(out)
    policy.tokenizer.save_pretrained(out)
    settings = {
        "base_model": policy.model_name_or_path,
        "lora": "adapter" if adapter_only else ("merged" if policy.uses_lora else None),
        "response_prefix": policy.response_prefix,
        "max_new_tokens": policy.max_new_tokens,
        **policy.distribution.settings(),  # the whole sampling distribution, from where it is defined
        "allowed_tokens": policy.allowed_tokens,
    }
    (out / POLICY_FILE).write_text(json.dumps(settings, indent=2) + "\n")
    return out


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m msgrpo.tools.export",
        description="Export a trained policy as a Hugging Face model directory. Arguments not listed here "
        "(--config FILE, --model.policy.init_args.X=Y...) describe the run, as for the recipe's CLI.",
    )
    parser.add_argument("--ckpt_path", required=True, help="Lightning checkpoint (file or sharded folder)")
    parser.add_argument("--out", required=True, help="output directory")
    parser.add_argument(
        "--recipe", default=None, help="start from this packaged recipe config (frozen_lake, snake, ...)"
    )
    mode = parser.add_mutually_exclusive_group()
    mode.add_argument("--merge", dest="adapter_only", action="store_false", help="LoRA: merge the adapter (default)")
    mode.add_argument(
        "--adapter-only", "--adapter_only", dest="adapter_only", action="store_true", help="LoRA: adapter alone"
    )
    parser.set_defaults(adapter_only=False)
    return parser


def main(argv: list[str] | None = None) -> Path:
    """Run the exporter (``argv`` as on the command line; None = ``sys.argv[1:]``)."""
    args, rest = _parser().parse_known_args(sys.argv[1:] if argv is None else argv)
    try:
        module = build_module(rest, args.recipe)
        load_checkpoint(module, args.ckpt_path)
        out = export_policy(module.policy, args.out, adapter_only=args.adapter_only)
    except ConfigError as err:
        print(f"error: {err}", file=sys.stderr)
        sys.exit(2)
    print(f"msgrpo: exported {'the LoRA adapter' if args.adapter_only else 'the model'} to {out}", flush=True)
    return out


if __name__ == "__main__":
    main()
