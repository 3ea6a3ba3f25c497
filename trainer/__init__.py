"""Offline training of the neural encoder: data, augmentations, swapping, models, losses, evaluation, export."""
