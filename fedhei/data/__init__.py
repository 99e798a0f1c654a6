"""CIFAR-10 sources and the non-IID partitions of it over simulated users."""
