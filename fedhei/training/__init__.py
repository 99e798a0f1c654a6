"""Local training and evaluation, optimizers, distillation, and pre-training of the base model."""
