"""The client side of a round without Flower: merge, classify, prune, train (through a client-side algorithm), reply,
export; the wire format."""
