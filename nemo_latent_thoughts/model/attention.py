"""Causal core attention for megatron-core's local layers, computed by torch's fused
`scaled_dot_product_attention` (flash/memory-efficient kernels, grouped-query heads without
copying) instead of materialising the `[b, heads, s, s]` score matrix as `DotProductAttention`
does. Same mathematics, so logits match the Hugging Face export; on CPU it makes training faster.
"""

from __future__ import annotations

import torch.nn.functional as F
from megatron.core.transformer.dot_product_attention import DotProductAttention


class SDPAttention(DotProductAttention):
    """Drop-in `core_attention` for causal self-attention (the mask tensor is not consulted)."""

    def forward(self, query, key, value, attention_mask, attn_mask_type=None, attention_bias=None,
                packed_seq_params=None):
        if attention_bias is not None or packed_seq_params is not None:
            raise NotImplementedError("SDPAttention supports plain causal self-attention only")
        seq, batch = query.shape[0], query.shape[1]
        # [s, b, heads, head_dim] -> [b, heads, s, head_dim]
        q, k, v = (t.permute(1, 2, 0, 3) for t in (query, key, value))
        if self.config.apply_query_key_layer_scaling:
            raise NotImplementedError("SDPAttention does not apply query-key layer scaling")
        out = F.scaled_dot_product_attention(
            q, k, v, is_causal=True, scale=self.softmax_scale, enable_gqa=k.shape[1] != q.shape[1],
            dropout_p=self.attention_dropout.p if self.training else 0.0)
        return out.permute(2, 0, 1, 3).reshape(seq, batch, -1)
