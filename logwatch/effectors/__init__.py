"""Effectors: what the engine's effects change outside (Postfix map, firewall, watchdog)."""
