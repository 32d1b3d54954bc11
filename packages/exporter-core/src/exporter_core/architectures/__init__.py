"""Ready-made architecture configs, one module per model family.

Each config class is declared as an ``exporter.architectures`` entry point in this package's
pyproject.toml; that declaration, not this package, is what makes an architecture available.
"""
