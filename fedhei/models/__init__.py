"""The model registry (ViTs and Qwen2 language models), per-architecture adapters, the tasks a model's outputs serve,
and safetensors checkpoints."""
