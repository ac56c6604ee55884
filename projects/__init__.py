"""Plugins: each folder registers its modules through ``custom_imports`` in its own configs."""
