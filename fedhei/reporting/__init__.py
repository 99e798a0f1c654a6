"""Results files, summaries, tables, figures and progress displays."""
