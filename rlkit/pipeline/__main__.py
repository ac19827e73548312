"""``python -m rlkit.pipeline``: what ``train_optimized.sh`` runs."""

import sys

from rlkit.pipeline import main

sys.exit(main())
