"""Whether padding changes a model's outputs, and the eager reference to validate padded calls against when it does.

Most encoders ignore padded positions through the attention mask, so a shorter input padded up to the traced
shape gives, at its real positions, what the model gives unpadded; validation then compares the padded call of
the saved module with the unpadded eager model. Some models mix neighbouring positions outside attention (ConvBERT's
convolutions see the padding tokens): for them padding itself changes the outputs, whatever the format. Validation
then compares with the eager model on the same padded inputs, and the size of the padding effect is recorded.

Imports torch at module scope: import it only where torch is already loaded.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Mapping

import torch

from exporter_core.modeling import export_module, prepared_for_export
from exporter_core.padding import pad_inputs
from exporter_torchscript.tracing import max_abs_difference

if TYPE_CHECKING:  # pragma: no cover
    from exporter_core.config import OnnxConfig

__all__ = ["PaddedReference", "padding_effect"]


class PaddedReference(torch.nn.Module):
    """The eager model called on inputs padded to a static shape, its outputs cut back to the caller's sizes."""

    def __init__(
        self,
        model: torch.nn.Module,
        config: OnnxConfig,
        static_shape: Mapping[str, int],
        pad_token_id: int,
        padding_side: str = "right",
    ) -> None:
        super().__init__()
        self.model = model
        self.export_config = config
        self.static_shape = dict(static_shape)
        self.pad_token_id = pad_token_id
        #: Must be the side the artifact's loader pads on (the metadata's ``padding_side``).
        self.padding_side = padding_side
        self.training = model.training

    @property
    def config(self) -> Any:
        """The wrapped model's Transformers config (so export-time overrides reach it)."""
        return self.model.config

    def forward(self, **kwargs: Any) -> dict[str, Any]:
        """Pad the config's named inputs, rebuild the model's keywords from them, run, cut the outputs back.

        The keywords are rebuilt (`model_kwargs`) because some are derived from the inputs (position ids from the
        attention mask): derived from the unpadded inputs they would no longer fit.
        """
        axes = self.export_config.inputs
        missing = [name for name in axes if name not in kwargs]
        if missing:
            raise TypeError(f"PaddedReference needs the config's inputs by name; {missing} were not passed through")
        padded = pad_inputs(
            {name: kwargs[name] for name in axes},
            axes,
            self.static_shape,
            pad_token_id=self.pad_token_id,
            padding_side=self.padding_side,
        )
        output = self.model(**self.export_config.model_kwargs(padded.inputs))
        selected = dict(zip(self.export_config.outputs, self.export_config.select_outputs(output)))
        return padded.unpad(selected, self.export_config.outputs)


def padding_effect(
    model: torch.nn.Module,
    config: OnnxConfig,
    inputs: Mapping[str, Any],
    static_shape: Mapping[str, int],
    pad_token_id: int,
    padding_side: str = "right",
) -> float:
    """Largest change padding `inputs` up to `static_shape` makes to the eager model's outputs at real positions."""
    tensors = {name: torch.as_tensor(value) for name, value in inputs.items()}
    names = list(tensors)
    reference = PaddedReference(model, config, static_shape, pad_token_id, padding_side)
    with prepared_for_export(model, config), torch.no_grad():
        plain = export_module(model, config, names)(**tensors)
        padded = export_module(reference, config, names)(**tensors)
    return max_abs_difference(plain, padded, config.outputs, tensors)
