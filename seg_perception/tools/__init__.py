"""The seg-perception command line tools (one module per subcommand)."""
