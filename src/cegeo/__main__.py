"""``python -m cegeo`` (also what ``torchrun -m cegeo train ...`` runs)."""

import sys

from cegeo.cli import main

sys.exit(main())
