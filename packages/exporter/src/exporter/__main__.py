"""``python -m exporter``: the same as the ``exporter`` console script."""

from __future__ import annotations

from exporter.cli import console

if __name__ == "__main__":
    console()
