"""``python -m bridge`` is the ``bridge`` command."""
import sys

from .cli import main

sys.exit(main())
