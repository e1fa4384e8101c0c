"""The sandbox console: a web UI on the sandbox's public APIs (sandbox/console/main.py)."""
