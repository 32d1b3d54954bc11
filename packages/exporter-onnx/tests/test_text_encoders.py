"""The text encoder family's ONNX files: the extra inputs and outputs a few types declare are in the graph, and the
types a dynamic graph cannot serve are refused with the reason while a static trace serves them.

Matrix tier only: the outcomes are the generated cases' (the kit's cache exports each once per run)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from exporter_core.export_cases import CaseOutcome
from exporter_core.pytest_plugin import assert_case

#: The kit's ``exported(model_type, feature, backend)`` fixture.
Exported = Callable[..., CaseOutcome]

pytestmark = pytest.mark.exporter_matrix


def _graph(outcome: CaseOutcome) -> Any:
    import onnx

    assert_case(outcome)
    (path,) = outcome.artifacts(".onnx")
    return onnx.load(str(path), load_external_data=False).graph


def test_luke_takes_its_entities_and_returns_their_states(exported: Exported) -> None:
    graph = _graph(exported("luke", "default", "onnx"))
    assert [i.name for i in graph.input] == [
        "input_ids",
        "attention_mask",
        "token_type_ids",
        "entity_ids",
        "entity_attention_mask",
        "entity_token_type_ids",
        "entity_position_ids",
    ]
    assert [o.name for o in graph.output] == ["last_hidden_state", "entity_last_hidden_state"]


def test_layoutlmv3_takes_boxes_and_the_page_image(exported: Exported) -> None:
    graph = _graph(exported("layoutlmv3", "token-classification", "onnx"))
    inputs = {i.name: i.type.tensor_type.shape.dim for i in graph.input}
    assert list(inputs) == ["input_ids", "bbox", "attention_mask", "token_type_ids", "pixel_values"]
    assert [d.dim_value for d in inputs["pixel_values"]][1:] == [3, 16, 16]  # batch dynamic, the page fixed
    assert inputs["bbox"][2].dim_value == 4


def test_markuplm_and_roc_bert_take_their_extra_ids(exported: Exported) -> None:
    markup = _graph(exported("markuplm", "question-answering", "onnx"))
    assert [i.name for i in markup.input][:3] == ["input_ids", "xpath_tags_seq", "xpath_subs_seq"]
    roc = _graph(exported("roc_bert", "sequence-classification", "onnx"))
    assert {"input_shape_ids", "input_pronunciation_ids"} <= {i.name for i in roc.input}


@pytest.mark.parametrize("model_type", ["canine", "funnel", "longformer"])
def test_what_a_dynamic_graph_cannot_serve_is_refused_and_traced_statically(
    exported: Exported, model_type: str
) -> None:
    onnx_outcome = exported(model_type, "sequence-classification", "onnx")
    assert onnx_outcome.refused and "static-shape backend" in (onnx_outcome.reason or "")
    assert_case(exported(model_type, "sequence-classification", "torchscript"))
