"""fedhei's core: data, models, layer scoring, pruning, client logic and reports, without Flower.

Flower lives in ``strategies/`` (server) and ``clients/`` (client); only the command
line (``fedhei.cli``, through ``strategies.simulation``) reaches them, at call time.
"""

__version__ = "0.1.0"
