"""An image processor without Pillow installed is a one-line user error, not Transformers' ImportError."""

from __future__ import annotations

from pathlib import Path

import pytest
import transformers

from exporter_core import loading
from exporter_core.errors import MissingDependencyError, UserError


def test_missing_pillow_names_the_install(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "preprocessor_config.json").write_text("{}")
    try:
        import PIL  # noqa: F401
    except ImportError:
        pass  # Pillow really is missing (exporter-core's own nox session): the real path runs.
    else:

        def no_pillow(*args: object, **kwargs: object) -> None:
            raise ImportError("AutoImageProcessor requires the PIL library but it was not found in your environment.")

        monkeypatch.setattr(transformers.AutoImageProcessor, "from_pretrained", no_pillow)
    with pytest.raises(MissingDependencyError, match=r"needs Pillow.*pip install 'exporter-core\[vision\]'") as info:
        loading.load_preprocessor(tmp_path)
    assert isinstance(info.value, UserError) and "\n" not in str(info.value)
