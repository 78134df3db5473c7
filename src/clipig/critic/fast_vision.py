"""Faster, numerically equivalent forward+backward of open_clip's image towers.

The critic is frozen and only ever asked for features of a batch of views and their gradient with respect to the
pixels, so a few of open_clip's general-purpose layers can be replaced by leaner ones that use the same weights
(no copies) and compute the same function (differences at float32 rounding level; `tests/test_critic.py`):

- self-attention of a vision transformer block: `nn.MultiheadAttention` transposes its batch-first input and its
  in-projection then runs as one small matrix product per token position. Here it is one `F.linear` on the
  contiguous `[batch, tokens, width]` input, `F.scaled_dot_product_attention` and the out-projection.
- the patch embedding (a convolution whose kernel equals its stride): a reshape into patches and one matrix
  product, instead of a convolution whose input gradient is ten times slower than its arithmetic.
- ResNet towers run in `channels_last` memory format, which oneDNN/cuDNN convolutions prefer.
- bf16 on the CPU (autocast): the frozen weights of the matrix products and convolutions are cast once, on
  first use, instead of on every call, and attention over CLIP's short sequences is two matrix products and a
  softmax, not the CPU's flash-attention kernel (4x faster at 50 tokens). The float32 path is untouched.

See docs/benchmarks.md for the measured effect.
"""

from __future__ import annotations

import types

import torch
import torch.nn.functional as F
from torch import nn


class PatchEmbedding(nn.Module):
    """A bias-free convolution with kernel == stride, as reshape + matmul; output laid out like the conv's."""

    def __init__(self, conv: nn.Conv2d):
        super().__init__()
        self.weight = conv.weight  # the same Parameter: state dicts and devices stay as they were
        self.patch = conv.kernel_size[0]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        batch, channels, height, width = x.shape
        p = self.patch
        gh, gw = height // p, width // p
        x = x[..., :gh * p, :gw * p]  # as the convolution: incomplete patches at the border are dropped
        patches = x.reshape(batch, channels, gh, p, gw, p).permute(0, 2, 4, 1, 3, 5).reshape(batch * gh * gw, -1)
        weight = frozen(self, "weight")
        out = patches @ weight.reshape(weight.shape[0], -1).to(patches.dtype).T
        # [B, gh, gw, C] viewed as [B, C, gh, gw]: the tower's reshape+permute back to tokens is then free
        return out.view(batch, gh, gw, -1).permute(0, 3, 1, 2)


def lowered() -> torch.dtype | None:
    """The dtype CPU autocast runs matrix products in (bfloat16), or None (float32)."""
    return torch.get_autocast_dtype("cpu") if torch.is_autocast_enabled("cpu") else None


def frozen(module: nn.Module, name: str) -> torch.Tensor | None:
    """A frozen weight of `module` as the pass uses it: itself, or under CPU autocast its copy in the lower
    precision, made once (autocast would cast it on every call: it caches only weights that need gradients)."""
    tensor, dtype = getattr(module, name), lowered()
    if tensor is None or dtype is None or tensor.device.type != "cpu":
        return tensor
    copies = module.__dict__.setdefault("_lowered", {})
    if (name, dtype) not in copies:
        copies[name, dtype] = tensor.detach().to(dtype)
    return copies[name, dtype]


def _linear(self, x):
    return F.linear(x, frozen(self, "weight"), frozen(self, "bias"))


def _conv(self, x):
    return self._conv_forward(x, frozen(self, "weight"), frozen(self, "bias"))


def short_attention(q, k, v):
    """Attention as two matrix products and a softmax (in float32): on the CPU in bf16 four times faster than
    the flash-attention kernel for CLIP's sequences of 50 tokens."""
    weights = (q @ k.transpose(-2, -1)).float() * q.shape[-1] ** -0.5
    return weights.softmax(-1).to(v.dtype) @ v


def _attention(self, q_x, k_x=None, v_x=None, attn_mask=None):
    """Replacement for `ResidualAttentionBlock.attention` (self-attention, batch-first, no mask)."""
    if k_x is not None or v_x is not None or attn_mask is not None:
        return type(self).attention(self, q_x, k_x, v_x, attn_mask)
    attn = self.attn
    batch, tokens, width = q_x.shape
    heads = attn.num_heads
    qkv = F.linear(q_x, frozen(attn, "in_proj_weight"), frozen(attn, "in_proj_bias"))
    q, k, v = qkv.view(batch, tokens, 3, heads, width // heads).permute(2, 0, 3, 1, 4).unbind(0)
    out = short_attention(q, k, v) if lowered() else F.scaled_dot_product_attention(q, k, v)
    return F.linear(out.transpose(1, 2).reshape(batch, tokens, width), frozen(attn.out_proj, "weight"),
                    frozen(attn.out_proj, "bias"))


def vision_forward(self, x, parts: list[int] | None = None):
    """open_clip's `VisionTransformer.forward`, with the final projection (a small matrix product, whose
    rounding depends on its row count) done for each of `parts` (row counts) apart: so that the features of
    one run's views do not depend on the runs beside them in the batch (clipig.run.together)."""
    pooled, tokens = self._pool(self.transformer(self._embeds(x)))
    if self.proj is not None:
        proj = frozen(self, "proj")
        pooled = torch.cat([p @ proj for p in pooled.split(parts)]) if parts else pooled @ proj
    return (pooled, tokens) if self.output_tokens else pooled


def _plain_self_attention(block: nn.Module) -> bool:
    from open_clip.transformer import ResidualAttentionBlock
    attn = getattr(block, "attn", None)
    return (type(block) is ResidualAttentionBlock and isinstance(attn, nn.MultiheadAttention)
            and attn.batch_first and attn._qkv_same_embed_dim and attn.bias_k is None
            and not attn.add_zero_attn and attn.dropout == 0.0 and attn.in_proj_weight is not None)


def speed_up(visual: nn.Module) -> list[str]:
    """Patch an open_clip image tower in place; returns what was changed (empty when nothing applied)."""
    changed = []
    conv = getattr(visual, "conv1", None)
    if (hasattr(visual, "transformer") and isinstance(conv, nn.Conv2d) and conv.bias is None
            and conv.kernel_size == conv.stride and conv.kernel_size[0] == conv.kernel_size[1]
            and conv.padding == (0, 0) and conv.dilation == (1, 1) and conv.groups == 1):
        visual.conv1 = PatchEmbedding(conv)
        changed.append("patch embedding as matmul")
    if all(hasattr(visual, a) for a in ("_embeds", "_pool", "transformer", "proj", "output_tokens")):
        visual.forward = types.MethodType(vision_forward, visual)
        visual.takes_parts = True
        changed.append("final projection per run")
    blocks = [b for b in visual.modules() if _plain_self_attention(b)]
    for block in blocks:
        block.attention = types.MethodType(_attention, block)
    if blocks:
        changed.append(f"{len(blocks)} attention blocks with one in-projection + SDPA")
    if not hasattr(visual, "transformer") and any(isinstance(m, nn.Conv2d) for m in visual.modules()):
        visual.to(memory_format=torch.channels_last)
        changed.append("channels_last")
    lowered_once = [m for m in visual.modules() if type(m) in (nn.Linear, nn.Conv2d)]
    for module in lowered_once:
        module.forward = types.MethodType(_linear if isinstance(module, nn.Linear) else _conv, module)
    if lowered_once:
        changed.append(f"{len(lowered_once)} layers with bf16 weights cast once")
    return changed
