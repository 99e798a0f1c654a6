"""The scenario: one typed object parsed from kebab-case run-config keys, checked once when read."""
