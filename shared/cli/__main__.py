"""``python -m bdurable.cli``: the same as the ``bdurable`` console script."""

from bdurable.cli import main

main()
