"""`python -m rlft ...` (and `accelerate launch -m rlft ...`): the same as the `rlft` command."""

from rlft.cli import main

raise SystemExit(main())
