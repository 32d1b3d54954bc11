"""The decoder graphs of an encoder-decoder exported with past, called as the exporters call them."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from exporter_core.architectures.seq2seq import Seq2SeqLMOnnxConfig
from exporter_core.modeling import argument_name, export_module, prepared_for_export
from exporter_core.plugins import load_architecture


def _tiny(model_type: str, auto_class: str) -> torch.nn.Module:
    import transformers

    config = transformers.AutoConfig.for_model(model_type, **load_architecture(model_type).tiny_sizes(model_type))
    torch.manual_seed(0)
    cls = getattr(transformers, auto_class)
    return (cls.from_config(config) if hasattr(cls, "from_config") else cls(config)).eval()


@pytest.mark.parametrize(("model_type", "auto_class"), [("fsmt", "FSMTModel"), ("bart", "AutoModel")])
def test_decoder_parts_run_by_keyword_over_a_given_encoder_output(model_type: str, auto_class: str) -> None:
    """The decoder graphs take no encoder ids: FSMTModel, whose forward requires ``input_ids``, is called with None
    (leaving it out failed both ONNX engines on fsmt default-with-past)."""
    model = _tiny(model_type, auto_class)
    config = load_architecture(model_type).for_feature(model.config, "default-with-past")
    if model_type == "fsmt":
        assert isinstance(config, Seq2SeqLMOnnxConfig)
    plan = config.export_plan(model)
    assert [part.name for part in plan.parts] == ["encoder", "decoder", "decoder_with_past"]
    for part in plan.parts[1:]:
        wrapped = export_module(part.module, part.config)
        with torch.no_grad(), prepared_for_export(model, part.config), plan.capture():
            for scenario in part.scenarios:
                inputs = {name: torch.from_numpy(np.asarray(value)) for name, value in scenario.inputs.items()}
                outputs = wrapped(**{argument_name(name): value for name, value in inputs.items()})
                assert len(outputs) == len(part.output_names)
                assert all(torch.isfinite(tensor).all() for tensor in outputs)
