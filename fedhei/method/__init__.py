"""The HEI method: layer scoring, role classification, pruning masks, schedules and structured pruning."""
