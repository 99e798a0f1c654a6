"""The client side of a round without Flower: merge, classify, prune, train, reply, export; the wire format."""
