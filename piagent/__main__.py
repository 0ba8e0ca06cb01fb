"""`python -m piagent`: the same command as the `piagent` console script."""

from piagent.cli.main import main

main()
