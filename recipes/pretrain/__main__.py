"""``python -m recipes.pretrain [key=value ...]`` (from the repository root): build ``rlft-base``."""

import sys

from recipes.pretrain import main

sys.exit(main(sys.argv[1:]))
