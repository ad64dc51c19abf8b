"""logwatchd: reads mail logs, grants relay after POP/IMAP login, bans guessers."""

__version__ = "0.1.0"
