"""One module per `herdwatch` subcommand; see herdwatch/cli.py."""
