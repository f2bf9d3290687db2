"""``python -m dtrtrust.cli``: the same as the ``dtrtrust`` command."""

import sys

from dtrtrust.cli import main

sys.exit(main())
