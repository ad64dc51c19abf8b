"""Command-line tools: logwatchctl and its offline commands (parse, test-rules)."""
