"""Services: listening sockets that answer from read-only engine queries (control socket)."""
