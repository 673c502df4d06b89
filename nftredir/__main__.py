"""`python -m nftredir` runs the CLI, for environments without the console script."""

from nftredir.cli import main

main()
