"""The engine: pure state (grants, offender scores, bans, whitelist), clock injected, no I/O."""
