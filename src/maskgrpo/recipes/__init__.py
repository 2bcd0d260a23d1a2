"""Demos: thin recipes over the public training entry points (``maskgrpo demo``)."""
