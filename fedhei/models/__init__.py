"""The model registry, the linear-layer inventory and safetensors checkpoints."""
