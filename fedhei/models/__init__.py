"""The model registry (ViTs and Qwen2 language models), per-architecture adapters, and safetensors checkpoints."""
