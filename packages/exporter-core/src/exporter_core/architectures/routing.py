"""Mixture-of-experts layers (NLLB-MoE, Switch Transformers, DBRX, JetMoE) captured with fixed shapes.

Transformers runs these experts in a loop over the experts some token was routed to, each over the tokens routed
to it (``nonzero``, ``where``, ``index_add_``): shapes that depend on the routing, which an exporter fixes at the
traced routing or cannot write. While exporting (and computing the reference outputs), `dense_experts_specs` swap
that loop for the same sums over every expert and every token, each token's contribution weighted by its dispatch
mask (0 or 1) times its routing weight: a token not routed to an expert adds an exact zero. The router itself
(top-1 / top-2 choice, expert capacity, dropped tokens) is left as Transformers writes it: it is made of tensor
operations only, so the graph routes each input as PyTorch does, whatever the batch and length.

The loop's arithmetic is kept term for term (the expert's output times the weight, the token-dropout scale, added in
the loop's order), so the swapped forward gives the loop's numbers; `dense_experts_specs` lists the patches, which
`exporter_core.modeling.prepared_for_export` applies and restores.

Two decoders route likewise: DBRX's experts loop over the experts hit (`dense_dbrx_experts` runs every expert over
every token instead), and JetMoE groups the rows of each expert by counts read back to Python (``tolist``) and split
at those counts, which a trace writes down as constants (ONNX Runtime then fails in Split at other inputs, and a
TorchScript trace would compute with the traced routing). `jetmoe_top_k_gating` hands on each grouped row's expert
id instead of the counts, and `jetmoe_parallel_experts` applies to each row its own expert's weights.
"""

from __future__ import annotations

from typing import Any

from exporter_core.config import PatchingSpec

__all__ = [
    "dense_dbrx_experts",
    "dense_experts_specs",
    "dense_nllb_moe_experts",
    "dense_switch_experts",
    "jetmoe_parallel_experts",
    "jetmoe_top_k_gating",
    "nllb_moe_route_tokens",
    "routing_refusal",
]


def _weighted_sum(experts: Any, hidden_states: Any, expert_mask: Any, weights: Any) -> Any:
    """Σ over expert c and slot k of ``expert_c(hidden_states) * (expert_mask[c, k] * weights[:, k])``, in that order.

    `expert_mask` is (experts, slots, tokens) of 0/1, `weights` (tokens, slots): the loop's dispatch, densely.
    """
    import torch

    final = torch.zeros_like(hidden_states)
    scale = getattr(experts, "moe_token_dropout", 0.0)
    for expert_index in range(expert_mask.shape[0]):
        output = experts[f"expert_{expert_index}"](hidden_states)
        for slot in range(expert_mask.shape[1]):
            weight = expert_mask[expert_index, slot].to(weights.dtype) * weights[:, slot]
            contribution = output * weight[:, None]
            if scale > 0:
                contribution = contribution * (1 - scale)
            final = final + contribution.to(hidden_states.dtype)
    return final


def dense_switch_experts(self: Any, hidden_states: Any, selected_experts: Any, routing_weights: Any) -> Any:
    """`SwitchTransformersExperts.forward` without routing-dependent shapes (same arguments, same sums)."""
    return _weighted_sum(self, hidden_states, selected_experts.permute(2, 1, 0), routing_weights)


def dense_nllb_moe_experts(self: Any, hidden_states: Any, router_mask: Any, router_probs: Any) -> Any:
    """`NllbMoeExperts.forward` without routing-dependent shapes (same arguments, same sums).

    Transformers one-hot encodes the router's dispatch mask once more (classes 0 and 1 of each (token, expert)
    slot pick experts 0 and 1); this keeps that, so the export computes what the PyTorch model computes.
    """
    import torch

    expert_mask = torch.nn.functional.one_hot(router_mask, num_classes=self.num_experts).permute(2, 1, 0)
    return _weighted_sum(self, hidden_states, expert_mask, router_probs)


def nllb_moe_route_tokens(
    self: Any, router_logits: Any, input_dtype: Any = None, padding_mask: Any = None
) -> tuple[Any, Any]:
    """`NllbMoeTop2Router.route_tokens` (second-expert policy ``all``) with the capacity as a tensor.

    In eval mode Transformers sets each expert's capacity to ``ceil(moe_eval_capacity_token_fraction * tokens)``
    with Python arithmetic on the number of tokens, which a trace fixes at the traced batch and length; here the same
    number is computed from the tokens tensor, so the graph drops the tokens PyTorch drops at every shape.
    """
    import torch

    input_dtype = router_logits.dtype if input_dtype is None else input_dtype
    functional = torch.nn.functional
    router_probs = functional.softmax(router_logits, dim=-1, dtype=self.dtype).to(input_dtype)
    top_1 = functional.one_hot(torch.argmax(router_probs, dim=-1), num_classes=self.num_experts)
    except_top_1 = router_logits.masked_fill(top_1.bool(), float("-inf"))
    top_2 = functional.one_hot(torch.argmax(except_top_1, dim=-1), num_classes=self.num_experts)
    if self.normalize_router_prob_before_dropping:
        probs_1, probs_2 = self.normalize_router_probabilities(router_probs, top_1, top_2)
    if padding_mask is not None and not self.router_ignore_padding_tokens:
        tokens = router_logits.shape[0]
        if len(padding_mask.shape) == 4:
            padding_mask = padding_mask[:, :, -1, :].reshape(-1)[-tokens:]
        non_padding = (~padding_mask.bool()).unsqueeze(-1).to(top_1.dtype)
        top_1, top_2 = top_1 * non_padding, top_2 * non_padding
    if self.batch_prioritized_routing:
        order = (-1 * router_probs.max(dim=1)[0]).argsort(dim=0)
        restore = order.argsort(dim=0)
        locations_1 = ((torch.cumsum(top_1[order], dim=0) - 1) * top_1[order])[restore]
        locations_2 = ((torch.cumsum(top_2[order], dim=0) - 1) * top_2[order])[restore]
    else:
        locations_1 = torch.cumsum(top_1, dim=0) - 1
        locations_2 = torch.cumsum(top_2, dim=0) - 1
    locations_2 = locations_2 + torch.sum(top_1, dim=0, keepdim=True)
    if self.moe_eval_capacity_token_fraction > 0:
        tokens_tensor = torch.ones_like(router_logits[:, 0], dtype=torch.float64).sum()
        capacity = torch.ceil(self.moe_eval_capacity_token_fraction * tokens_tensor)
    else:
        capacity = self.expert_capacity
    top_1 = top_1 * torch.lt(locations_1, capacity)
    top_2 = top_2 * torch.lt(locations_2, capacity)
    if not self.normalize_router_prob_before_dropping:
        probs_1, probs_2 = self.normalize_router_probabilities(router_probs, top_1, top_2)
    return top_1, probs_1[:, None] * top_1 + probs_2[:, None] * top_2


def dense_dbrx_experts(self: Any, hidden_states: Any, top_k_index: Any, top_k_weights: Any) -> Any:
    """`DbrxExperts.forward` without routing-dependent shapes: every expert over every token, each token's output
    weighted by its routing weight for that expert (an exact zero where it was not routed there), in expert order."""
    import torch

    batch_size = hidden_states.shape[0]
    hidden = hidden_states.reshape(-1, self.hidden_size)
    final = torch.zeros_like(hidden)
    shape = (-1, self.ffn_hidden_size, self.hidden_size)
    for expert in range(self.num_experts):
        w1, v1, w2 = (weight.view(shape)[expert] for weight in (self.mlp.w1, self.mlp.v1, self.mlp.w2))
        output = self.mlp(hidden, w1, v1, w2).view(-1, self.hidden_size)
        weight = (top_k_weights * (top_k_index == expert).to(top_k_weights.dtype)).sum(dim=-1)
        final = final + output * weight[:, None]
    return final.view(batch_size, -1, self.hidden_size)


def jetmoe_top_k_gating(self: Any, hidden_states: Any) -> tuple[Any, Any, Any, Any, Any]:
    """`JetMoeTopKGating.forward` returning each grouped row's expert id (a tensor) where Transformers returns the
    number of rows of each expert as a Python list; the grouping (rows sorted by expert) is the same."""
    import torch

    logits = self.layer(hidden_states).float()
    top_k_logits, top_k_indices = logits.topk(self.top_k, dim=1)
    top_k_gates = torch.softmax(top_k_logits, dim=1).type_as(hidden_states)
    sorted_experts, index_sorted_experts = top_k_indices.flatten().sort(0)
    batch_index = index_sorted_experts.div(self.top_k, rounding_mode="trunc")
    batch_gates = top_k_gates.flatten()[index_sorted_experts]
    return index_sorted_experts, batch_index, batch_gates, sorted_experts, logits


def jetmoe_parallel_experts(self: Any, inputs: Any, row_experts: Any) -> Any:
    """`JetMoeParallelExperts.forward` given each row's expert id (`jetmoe_top_k_gating`): every expert's linear map
    of every row, each row keeping its own expert's (the same product as Transformers' per-expert ``linear``)."""
    import torch

    outputs = torch.einsum("ni,eoi->neo", inputs, self.weight)
    index = row_experts.view(-1, 1, 1).expand(-1, 1, outputs.shape[-1])
    return outputs.gather(1, index).squeeze(1)


def routing_refusal(config: Any) -> str | None:
    """Why the routing of `config`'s model cannot be captured so that it computes what PyTorch computes, or None."""
    policy = getattr(config, "second_expert_policy", "all")
    if getattr(config, "model_type", None) == "nllb-moe" and policy != "all":
        return (
            f"its second_expert_policy {policy!r} draws random numbers to route tokens in eval mode too, so no export "
            "can reproduce its outputs; set second_expert_policy to 'all' in config.json"
        )
    return None


def dense_experts_specs(model_type: str) -> list[PatchingSpec]:
    """The patches that make `model_type`'s experts dense while exporting (none for a model type without routers)."""
    if model_type == "nllb-moe":
        from transformers.models.nllb_moe import modeling_nllb_moe

        return [
            PatchingSpec(modeling_nllb_moe.NllbMoeExperts, "forward", dense_nllb_moe_experts),
            PatchingSpec(modeling_nllb_moe.NllbMoeTop2Router, "route_tokens", nllb_moe_route_tokens),
        ]
    if model_type == "switch_transformers":
        from transformers.models.switch_transformers import modeling_switch_transformers

        return [PatchingSpec(modeling_switch_transformers.SwitchTransformersExperts, "forward", dense_switch_experts)]
    if model_type == "dbrx":
        from transformers.models.dbrx import modeling_dbrx

        return [PatchingSpec(modeling_dbrx.DbrxExperts, "forward", dense_dbrx_experts)]
    if model_type == "jetmoe":
        from transformers.models.jetmoe import modeling_jetmoe

        return [
            PatchingSpec(modeling_jetmoe.JetMoeTopKGating, "forward", jetmoe_top_k_gating),
            PatchingSpec(modeling_jetmoe.JetMoeParallelExperts, "forward", jetmoe_parallel_experts),
        ]
    return []
