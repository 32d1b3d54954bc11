"""Task-level figures (`exporter_validate.task_checks.output_figures`) count real positions only.

A sequence-wide output (question answering's start and end logits: one score per token) is compared over each
row's real tokens, also for a left-padded row whose first position is padding; per-token vectors (hidden states,
a decoder's logits) are kept where their position is real.
"""

from __future__ import annotations

import numpy as np

from exporter_validate.task_checks import output_figures

AXES = {0: "batch", 1: "sequence"}


def _mask() -> np.ndarray:
    mask = np.ones((3, 6), dtype=np.int64)
    mask[0, :2] = 0  # left padding
    mask[1, 4:] = 0  # right padding
    return mask


def test_a_left_padded_row_of_a_sequence_wide_output_is_compared_on_its_real_tokens() -> None:
    rng = np.random.default_rng(0)
    mask = _mask()
    reference = rng.normal(size=(3, 6)).astype(np.float32)
    exported = reference.copy()
    exported[mask == 0] = 1e3  # what padding computes means nothing: it must neither pass nor fail the check
    figures = output_figures("start_logits", AXES, reference, exported, {"attention_mask": mask})
    assert figures is not None and figures["passed"] and figures["vectors"] == 3
    assert figures["top1_agreement"] == 1.0 and figures["min_cosine"] > 0.999999
    # A wrong answer span in the left-padded row (its real tokens reversed) is seen.
    exported[0, 2:] = reference[0, 2:][::-1]
    figures = output_figures("start_logits", AXES, reference, exported, {"attention_mask": mask})
    assert figures is not None and not figures["passed"] and figures["top1_agreement"] < 1.0


def test_per_token_vectors_are_kept_where_their_position_is_real() -> None:
    rng = np.random.default_rng(1)
    mask = _mask()
    reference = rng.normal(size=(3, 6, 4)).astype(np.float32)
    exported = reference.copy()
    exported[mask == 0] = -reference[mask == 0]  # padded tokens' vectors differ: not counted
    figures = output_figures("last_hidden_state", AXES, reference, exported, {"attention_mask": mask})
    assert figures is not None and figures["passed"] and figures["vectors"] == int(mask.sum())
    exported[0, 3] = -reference[0, 3]  # one real token of the left-padded row
    figures = output_figures("last_hidden_state", AXES, reference, exported, {"attention_mask": mask})
    assert figures is not None and not figures["passed"] and figures["min_cosine"] < -0.99
