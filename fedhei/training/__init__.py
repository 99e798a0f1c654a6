"""Tasks (image classification, language modelling), local training and evaluation, and pre-training of the base model."""
