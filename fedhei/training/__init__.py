"""Local training and evaluation on in-memory arrays, and pre-training of the shared base model."""
