"""Shared constants for the splinter tests."""

from runa.splinter import Geometry

SMALL = Geometry(
    slots=64, max_key=32, max_value=256, channels=8, channel_capacity=4096, subscribers=4,
    stats_entries=8, max_envelope=1024,
)
