"""The critic layer: CLIP models by name (names, models), one frozen model or an ensemble (critic), what a
model sees of a picture (views), where weights and image files come from (weights, images), the shipped
mini checkpoints (mini) and the fast paths of the vision towers (fast_vision)."""
