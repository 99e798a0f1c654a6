"""What a user starts: federated runs and benches, and one user's compression study."""
