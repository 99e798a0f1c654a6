"""``python -m fedhei.cli``: the same as the ``fedhei`` command."""

import sys

from fedhei.cli.main import main

sys.exit(main())
