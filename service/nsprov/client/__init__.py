"""The client (``pip install nsprov``): talks HTTP, never imports the server."""
