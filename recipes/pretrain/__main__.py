"""``python -m rlft.pretrain [key=value ...]``, the same as ``rlft pretrain``."""

import sys

from rlft.pretrain import main

sys.exit(main(sys.argv[1:]))
