"""MS-GRPO on Frozen Lake: ``python -m msgrpo.recipes.frozen_lake fit``.

The packaged ``configs/frozen_lake.yaml`` trains the built-in tiny offline model; override anything on
the command line (``--trainer.max_epochs=5``, ``--data.sampler=Uniform``) or add overlays
(``--config my.yaml``).
"""

from msgrpo.cli import config_path, run


def main(args=None):
    """Run the Frozen Lake recipe (``args`` as on the command line; None = ``sys.argv``)."""
    return run(config_path("frozen_lake.yaml"), args)


if __name__ == "__main__":
    main()
