"""The subcommands of `chargepoint`, one module per group; chargepoint/cli.py parses the
command line and calls them."""
