"""The regulatory sandbox: the gateway every participant call passes, the launcher and the CLI."""
