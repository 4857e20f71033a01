"""CLI commands the plugin adds (``crowdpower demo`` lives here)."""

COMMANDS: list = []
