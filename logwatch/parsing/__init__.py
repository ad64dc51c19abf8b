"""Parsing: framing of syslog lines, rule loading and self-test, the literal scan, the parser, events."""
