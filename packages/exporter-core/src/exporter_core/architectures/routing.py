"""Mixture-of-experts layers of encoder-decoders (NLLB-MoE, Switch Transformers) captured with fixed shapes.

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
"""

from __future__ import annotations

from typing import Any

from exporter_core.config import PatchingSpec

__all__ = [
    "dense_experts_specs",
    "dense_nllb_moe_experts",
    "dense_switch_experts",
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
    return []
