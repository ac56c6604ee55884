"""Analysis tools over models, checkpoints and saved predictions (models never import this)."""
