"""CIFAR-10 sources and their non-IID partitions over simulated users; generated topic text for language models."""
