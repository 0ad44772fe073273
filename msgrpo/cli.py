"""MSGRPOCLI: LightningCLI with the framework's defaults, a summary line and one-line user errors."""

from __future__ import annotations

import importlib
import json
import os
import re
import sys
from importlib import resources
from pathlib import Path

from lightning.pytorch.callbacks import ModelCheckpoint, ProgressBar
from lightning.pytorch.cli import LightningArgumentParser, LightningCLI

from msgrpo.callbacks import AtomicCheckpointIO, GracefulShutdown
from msgrpo.callbacks.averaging import PolicyAveraging
from msgrpo.callbacks.progress import IterationProgressBar
from msgrpo.callbacks.selection import BestPolicy
from msgrpo.data import RolloutDataModule
from msgrpo.errors import ConfigError
from msgrpo.evaluation import format_table
from msgrpo.module import MSGRPOModule

SUBCOMMANDS = ("fit", "validate", "test", "predict")

# The policy's settings given as dataclasses (LanguagePolicy's ``lora`` and ``tiny``; a test keeps this in
# step with its signature). jsonargparse (4.53) refuses ``null`` for an optional field of such a setting
# inside ``class_path``/``init_args`` (``--model.policy.init_args.lora.layers=null``: "Expected a list;
# got None"), but takes the same value as a dict, which it merges into the setting.
DATACLASS_SETTINGS = ("lora", "tiny")
_FIELD = re.compile(rf"^--((?:[\w-]+\.)*(?:{'|'.join(DATACLASS_SETTINGS)}))\.(\w+)(?:=(.*))?$")
_NULLS = ("null", "Null", "NULL", "None", "~")


def _null_fields_as_dicts(args: list[str]) -> list[str]:
    """``--a.lora.layers=null`` (or ``--a.lora.layers null``) -> ``--a.lora={"layers": null}``: the same
    setting (see :data:`DATACLASS_SETTINGS`), so a field of a dataclass setting can be reset to None on
    the command line. Every other argument is left as it is."""
    out: list[str] = []
    i = 0
    while i < len(args):
        arg = args[i]
        match = _FIELD.match(arg) if not (i and args[i - 1] in ("--config", "-c")) else None
        value = match[3] if match else None
        if match and value is None and i + 1 < len(args) and args[i + 1] in _NULLS:  # --key null
            value = args[i + 1]
            i += 1
        out.append(f'--{match[1]}={{"{match[2]}": null}}' if match and value in _NULLS else arg)
        i += 1
    return out


def config_path(name: str) -> str:
    """Absolute path of a packaged recipe config (``msgrpo/recipes/configs/<name>``)."""
    path = resources.files("msgrpo.recipes") / "configs" / name
    if not path.is_file():
        raise ConfigError(f"no packaged config named {name!r}")
    return str(path)


class ShortErrorParser(LightningArgumentParser):
    """Argument parser whose errors are one line naming the bad setting (``--help`` lists every option)."""

    def print_usage(self, file=None) -> None:
        print(
            f"usage: {self.prog.replace(' [options]', '')} --help  (lists every option)",
            file=file or sys.stderr,
        )

    def error(self, message: str, ex: Exception | None = None):
        if not self.exit_on_error or os.environ.get("MSGRPO_TRACEBACK"):
            return super().error(message, ex)  # nested parsers: jsonargparse catches and reports these
        print(f"error: {one_line(message)}", file=sys.stderr)
        sys.exit(2)


_KEY = re.compile(r'Parser key "([^"]+)":')
_NOISE = ("Does not validate against", "Subtypes:", "Errors:", "Given value", "- Expected a <class 'NoneType'>")
_CHECKS = ("__init__", "__post_init__", "validate")
"""Methods whose ``self`` owns a bad setting they raise on: constructors, and the sampler's ``validate``
(:meth:`~msgrpo.components.samplers.EpisodeSampler.validate`, which the data module calls)."""


def one_line(message: str) -> str:
    """jsonargparse's multi-line parse error as one line: the full key of the bad setting and what is wrong.

    ``Parser key "data.sampler": ... Parser key "scheme": Expected a Literal[...]. Got value: best`` becomes
    ``data.sampler.init_args.scheme: Expected a Literal[...]. Got value: best``.
    """
    lines = [line.strip() for line in message.strip().splitlines() if line.strip()]
    keys = [m.group(1) for line in lines for m in [_KEY.search(line)] if m]
    detail = [
        line.lstrip("- ")
        for line in lines
        if not _KEY.search(line) and not line.startswith(_NOISE) and not line.startswith("- Problem with given")
    ]
    text = detail[-1] if detail else (lines[-1] if lines else message)
    given = next((line.split(":", 1)[1].strip() for line in lines if line.startswith("Given value:")), None)
    if given is not None and "Got value" not in text and given not in text.split():
        text += f"; got {given}"
    subtypes = next((line for line in lines if line.startswith("Subtypes:")), "")
    cls = re.search(r"<class '([\w.]+\.(\w+))'>", subtypes)
    if cls and "msgrpo." in cls.group(1) and len(keys) == 1:
        text += f" (expected a subclass of {cls.group(2)}: its class name or class_path)"
    if not keys:
        return text
    key = keys[0] + "".join(f".init_args.{k}" for k in keys[1:])
    return f"{key}: {text}"


class MSGRPOCLI(LightningCLI):
    """LightningCLI for MS-GRPO recipes.

    Every swappable object (game, credit assigner, sampler, loss, optimizer, policy) is a
    ``class_path``/``init_args`` slot, selectable by short class name (``--data.sampler=Uniform``).
    One epoch is one MS-GRPO iteration, so the trainer always reloads the train dataloader every epoch.
    """

    def __init__(self, default_config: str | None = None, args=None, **kwargs) -> None:
        parser_kwargs = {"parser_mode": "omegaconf"}
        if default_config is not None:
            if kwargs.get("run", True):
                parser_kwargs.update({sub: {"default_config_files": [default_config]} for sub in SUBCOMMANDS})
            else:  # no subcommand: the top-level parser takes the defaults
                parser_kwargs["default_config_files"] = [default_config]
        super().__init__(
            MSGRPOModule,
            RolloutDataModule,
            parser_kwargs=parser_kwargs,
            save_config_kwargs={"overwrite": True},
            parser_class=ShortErrorParser,
            trainer_defaults={"callbacks": [GracefulShutdown()]},
            args=args,
            **kwargs,
        )

    def parse_arguments(self, parser, args) -> None:
        """LightningCLI's parsing, with ``null`` for a field of a dataclass setting passed on as a dict
        (:func:`_null_fields_as_dicts`), and the logger's ``save_dir`` following ``trainer.default_root_dir``
        when only the latter is given on the command line (:func:`_save_dir_follows_root`)."""
        if args is None or isinstance(args, list):
            given = list(sys.argv[1:] if args is None else args)
            rewritten = _save_dir_follows_root(_null_fields_as_dicts(given))
            if rewritten != given:
                self.config = parser.parse_args(rewritten)
                return
        super().parse_arguments(parser, args)

    def before_instantiate_classes(self) -> None:
        """``--reproducible``: pin the float path before any model is built (:mod:`msgrpo.reproducible`)."""
        config = self.config.get(str(self.subcommand), self.config) if self.subcommand else self.config
        if config.get("reproducible"):
            from msgrpo.reproducible import pin_float_path

            pinned = pin_float_path()
            if int(os.environ.get("LOCAL_RANK", 0)) == 0 and int(os.environ.get("NODE_RANK", 0)) == 0:
                print(f"msgrpo: reproducible float path: {', '.join(f'{k}={v}' for k, v in pinned.items())}",
                      file=sys.stderr, flush=True)  # fmt: skip

    def instantiate_classes(self) -> None:
        """Build every object; an invalid setting of any of them is one :class:`ConfigError` naming its
        configuration key (``data.game.init_args.size must be >= 2, got 1``)."""
        try:
            super().instantiate_classes()
        except ValueError as err:
            raise ConfigError(self._name_setting(err)) from err

    def _name_setting(self, err: ValueError) -> str:
        """The error's message, led by the configuration key of the object whose check (:data:`_CHECKS`) raised it."""
        chain = [err]  # jsonargparse may wrap the constructor's error (union types): find the original
        while (cause := chain[-1].__cause__ or chain[-1].__context__) is not None and cause not in chain:
            chain.append(cause)
        err = next((e for e in chain if isinstance(e, ConfigError)), None) or next(
            (e for e in reversed(chain) if isinstance(e, ValueError)), err
        )
        config = self.config.get(str(self.subcommand), self.config)
        keys: dict[type, str] = {self.model_class: "model", self.datamodule_class: "data"}
        for key, path in _class_paths(config):
            module, _, name = path.rpartition(".")
            try:
                keys[getattr(importlib.import_module(module), name)] = f"{key}.init_args"
            except (ImportError, AttributeError):
                continue
        owner = None
        tb = err.__traceback__
        while tb is not None:  # the innermost check (_CHECKS) of a configured class owns the setting
            frame = tb.tb_frame
            obj = frame.f_locals.get("self") if frame.f_code.co_name in _CHECKS else None
            owner = keys.get(type(obj), owner)
            tb = tb.tb_next
        if owner is None:
            return str(err)
        message = getattr(err, "detail", None) or str(err)  # the configuration key replaces the class name
        setting = getattr(err, "setting", None)
        if setting and message.startswith(setting):
            return f"{owner}.{message}"
        return f"{owner}: {message}"

    def instantiate_trainer(self, **kwargs):
        """The trainer, with atomic checkpoint writes unless the config names its own plugins, and checkpoints
        under ``<default_root_dir>/checkpoints`` (so ``--ckpt_path last`` finds them) unless a dirpath is set.

        With ``trainer.enable_checkpointing=false`` the recipe's ``ModelCheckpoint`` callbacks are dropped:
        the flag turns checkpointing off instead of clashing with them."""
        trainer_config = self._get(self.config_init, "trainer", default={})
        if not trainer_config.get("plugins"):
            kwargs.setdefault("plugins", [AtomicCheckpointIO()])
        if trainer_config.get("enable_progress_bar") is not False and not any(
            isinstance(c, ProgressBar) for c in trainer_config.get("callbacks") or []
        ):
            trainer_config["callbacks"] = [*(trainer_config.get("callbacks") or []), IterationProgressBar()]
        if trainer_config.get("enable_checkpointing") is False and trainer_config.get("callbacks"):
            trainer_config["callbacks"] = [c for c in trainer_config["callbacks"] if not isinstance(c, ModelCheckpoint)]
        _refuse_repeated_callbacks(trainer_config.get("callbacks") or [])
        trainer = super().instantiate_trainer(**kwargs)
        for callback in trainer.checkpoint_callbacks:
            if getattr(callback, "dirpath", None) is None:
                callback.dirpath = os.path.join(trainer.default_root_dir, "checkpoints")
        return trainer

    def add_arguments_to_parser(self, parser) -> None:
        parser.set_defaults({"trainer.reload_dataloaders_every_n_epochs": 1, "trainer.num_sanity_val_steps": 0})
        parser.add_argument(
            "--reproducible",
            type=bool,
            default=False,
            help="Pin the float path (ATen AVX2 kernels, MKL's compatible GEMM branch, 2 threads, deterministic "
            "algorithms) so that the same command gives the same figures on any x86-64 machine with AVX2; slower "
            "(msgrpo.reproducible).",
        )
        parser.add_argument(
            "--results_json",
            type=str | None,
            default=None,
            help="Where `validate`/`test` write per-scenario results as JSON (default: <log dir>/eval.json).",
        )

    def _log_dir(self) -> Path:
        return Path(self.trainer.log_dir or self.trainer.default_root_dir)

    def _after_eval(self) -> None:
        module: MSGRPOModule = self.model
        log_dir = self._log_dir()  # a collective under DDP/FSDP: every rank asks
        if self.trainer.global_rank != 0 or not module.eval_results:
            return
        sub = self.config.get("subcommand")
        target = self.config[sub].get("results_json") or str(log_dir / "eval.json")
        Path(target).parent.mkdir(parents=True, exist_ok=True)
        Path(target).write_text(json.dumps({"scenarios": module.eval_results}, indent=2, sort_keys=True))
        print("\n" + format_table(module.eval_results) + f"\nResults written to {target}", flush=True)

    after_validate = _after_eval
    after_test = _after_eval


def _save_dir_follows_root(args: list[str]) -> list[str]:
    """``--trainer.default_root_dir=X`` without a logger ``save_dir`` on the command line: append
    ``--trainer.logger.init_args.save_dir=X``, so one flag puts a run's checkpoints and its metrics in the same
    place (the recipes' loggers name the recipe's own directory); also for another logger named on the
    command line (CSV, TensorBoard, Weights & Biases: they all take a ``save_dir``). Not with the logger off."""
    root = None
    for i, arg in enumerate(args):  # (the last one wins, "=value" or the next argument)
        if arg.startswith("--trainer.default_root_dir="):
            root = arg.split("=", 1)[1]
        elif arg == "--trainer.default_root_dir" and i + 1 < len(args):
            root = args[i + 1]
    explicit = any(a.startswith(("--trainer.logger.init_args.save_dir", "--trainer.logger.save_dir")) for a in args)
    off = any(a.lower() in ("--trainer.logger=false", "--trainer.logger=null") for a in args)
    off = off or any(a == "--trainer.logger" and b.lower() in ("false", "null") for a, b in zip(args, args[1:]))
    if root is None or explicit or off:
        return args
    return [*args, f"--trainer.logger.init_args.save_dir={root}"]


def _refuse_repeated_callbacks(callbacks: list) -> None:
    """A one-line error for a weight-choosing callback listed twice (a recipe may list it already)."""
    for kind in (BestPolicy, PolicyAveraging):
        if sum(isinstance(c, kind) for c in callbacks) > 1:
            raise ConfigError(
                f"{kind.__name__} is listed more than once in trainer.callbacks (a recipe may list it already: "
                "change its settings with --trainer.callbacks.<setting>=... when it is the last callback listed)",
                setting="trainer.callbacks",
            )


def _class_paths(node, key: str = "") -> list[tuple[str, str]]:
    """``(configuration key, class_path)`` of every ``class_path`` object in a parsed config."""
    items = vars(node).items() if hasattr(node, "__dict__") and not isinstance(node, dict) else None
    if items is None:
        items = node.items() if isinstance(node, dict) else []
    out = []
    for name, value in items:
        child = f"{key}.{name}" if key else str(name)
        if name == "class_path" and isinstance(value, str):
            out.append((key, value))
        elif hasattr(value, "__dict__") or isinstance(value, dict):
            out.extend(_class_paths(value, child))
    return out


def _config_files(args: list[str]) -> list[str]:
    """The ``--config`` / ``-c`` files named on a command line."""
    files = []
    for i, arg in enumerate(args):
        if arg.startswith("--config="):
            files.append(arg.split("=", 1)[1])
        elif arg in ("--config", "-c") and i + 1 < len(args):
            files.append(args[i + 1])
    return files


def check_yaml(paths: list[str]) -> None:
    """Raise :class:`ConfigError` naming the file when a config file is missing or is not valid YAML."""
    import yaml

    for path in paths:
        try:
            with open(path) as handle:
                yaml.safe_load(handle)
        except OSError as err:
            raise ConfigError(f"cannot read config file {path}: {err.strerror}") from err
        except yaml.YAMLError as err:
            where = getattr(err, "problem_mark", None)
            line = f" (line {where.line + 1}, column {where.column + 1})" if where else ""
            problem = getattr(err, "problem", None) or str(err).splitlines()[0]
            raise ConfigError(f"malformed YAML in {path}{line}: {problem}") from err


def run(default_config: str | None, args=None) -> MSGRPOCLI | None:
    """Run the CLI; user errors end with a one-line message and exit code 2 instead of a traceback."""
    try:
        check_yaml(_config_files(list(sys.argv[1:] if args is None else args)))
        return MSGRPOCLI(default_config=default_config, args=args)
    except (ConfigError, FloatingPointError) as err:
        print(f"error: {err}", file=sys.stderr)
        if os.environ.get("MSGRPO_TRACEBACK"):
            raise
        sys.exit(2 if isinstance(err, ConfigError) else 1)
