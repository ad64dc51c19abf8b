"""The daemon: configuration, wiring, the loop, signals, sd_notify, the actions log."""
