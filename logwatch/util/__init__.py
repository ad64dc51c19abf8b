"""Small helpers with no logwatchd state: durations, safe file reads, YAML with line numbers."""
