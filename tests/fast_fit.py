"""Recipe arguments for tests that check training mechanics (checkpoints, export), not learning."""

FAST_FIT = [
    "--trainer.accelerator=cpu",
    "--trainer.enable_progress_bar=false",
    "--trainer.enable_model_summary=false",
    "--trainer.limit_val_batches=0",
    "--data.num_groups=2",
    "--data.group_size=2",
    "--data.sampler.init_args.num_episodes=2",
    "--data.eval_episodes=2",
    "--data.game.init_args.fallback=random",
    # the smallest tiny model (the recipe's may grow): these tests check mechanics, not learning speed
    "--model.policy.init_args.tiny.hidden_size=64",
    "--model.policy.init_args.tiny.intermediate_size=128",
]
