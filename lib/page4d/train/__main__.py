"""`python -m page4d.train ...` (and `torchrun ... -m page4d.train ...`): see `page4d.train.cli`."""

from page4d.train.cli import main

main()
