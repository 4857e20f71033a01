"""Host features built as plugins of the host itself (they use the same hooks)."""

PLUGINS: list = []
