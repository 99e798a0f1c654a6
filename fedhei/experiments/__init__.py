"""What a user starts without Flower: one user's compression study, the plain in-process federation, where runs go,
and the SuperLink that `flwr run` leaves behind; federated runs and benches start in ``strategies.simulation``."""
