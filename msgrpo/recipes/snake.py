"""MS-GRPO on Snake: ``python -m msgrpo.recipes.snake fit`` (the main job).

The packaged ``configs/snake.yaml`` trains the built-in tiny offline model against one random opponent
snake; override anything on the command line (``--trainer.max_epochs=5``, ``--data.sampler=Uniform``)
or add overlays (``--config my.yaml``).
"""

from msgrpo.cli import config_path, run


def main(args=None):
    """Run the Snake recipe (``args`` as on the command line; None = ``sys.argv``)."""
    return run(config_path("snake.yaml"), args)


if __name__ == "__main__":
    main()
