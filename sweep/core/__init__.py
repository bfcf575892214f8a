"""The foundation every layer shares: errors, arm64's Kconfig tables, the memory-map vocabulary
and the row schema. It imports nothing of va-sweep."""
