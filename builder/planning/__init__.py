"""Arithmetic before any heavy work: whether the layout fits the model (layout), what each rank needs on a GPU
(plan, from the model's config: model_config), and whether the disk holds what the stages write (diskspace)."""
