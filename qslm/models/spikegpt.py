"""SpikeGPT-style spiking RWKV language model (Zhu et al., arXiv 2302.13939).

Parameter names and shapes follow SpikeGPT so a SpikeGPT ``state_dict`` loads strictly:
``emb``, ``blocks.{i}.{ln0,ln1,ln2,att.*,ffn.*}``, ``ln_out``, ``head``.
The token axis is the SNN time axis: each block's residual updates pass through LIF neurons,
``x = x + lif1(att(ln1(x))); x = x + lif2(ffn(ln2(x)))``.
The WKV recurrence is computed in pure PyTorch (a masked softmax over past tokens), so it runs anywhere.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from . import config_checks as checks
from .neurons import LIF


@dataclass
class SpikeGPTConfig:
    vocab_size: int = 2048
    n_embd: int = 256
    n_layer: int = 6
    ctx_len: int = 128
    ffn_mult: int = 4
    task: str = "lm"  # "lm" or "classification"
    num_classes: int = 2
    tau: float = 2.0
    v_threshold: float = 1.0
    dropout: float = 0.0  # on the embeddings and the pooled features, during training only
    arch: str = "spikegpt"

    def __post_init__(self) -> None:
        checks.check_choice(self, "arch", ("spikegpt",))
        checks.check_shared_fields(self)
        checks.check_int(self, "ctx_len", 1, checks.MAX_LENGTH)
        checks.check_int(self, "ffn_mult", 1, checks.MAX_MULT)
        checks.check_choice(self, "task", ("lm", "classification"))


def wkv(time_decay: torch.Tensor, time_first: torch.Tensor, k: torch.Tensor, v: torch.Tensor,
        chunk: int = 16) -> torch.Tensor:
    """RWKV-4 WKV (see ``wkv_chunked``). Without autograd the token-by-token recurrence is used: it does
    a few element-wise ops per token instead of a softmax over a chunk, several times faster."""
    needs_grad = torch.is_grad_enabled() and any(t.requires_grad for t in (time_decay, time_first, k, v))
    if needs_grad:
        return wkv_chunked(time_decay, time_first, k, v, chunk)
    return wkv_recurrent(time_decay, time_first, k, v)


def wkv_recurrent(time_decay: torch.Tensor, time_first: torch.Tensor, k: torch.Tensor, v: torch.Tensor
                  ) -> torch.Tensor:
    """WKV token by token with RWKV-4's stable state (numerator, denominator, shared exponent):

        out_t = (e1 num_t + e2 v_t) / (e1 den_t + e2),  (e1, e2) = exp((exponent_t, u + k_t) - their max)
        exponent_{t+1} = max(exponent_t - w, k_t)
        num_{t+1}, den_{t+1} = f1 num_t + f2 v_t, f1 den_t + f2,  (f1, f2) = exp((exponent_t - w, k_t) - exponent_{t+1})

    The cost of a loop step is a Python dispatch per op, so only what is truly sequential is looped: the
    exponents depend on nothing else (two ops a token), and given them every weight is one op over all
    tokens at once; the state is then two ops a token and the outputs one pass. Every value is computed by
    the same float operations as the plain token-by-token loop (no fused multiply-add), so results are equal.
    """
    B, T, C = k.shape
    # The loops append fresh tensors and stack them once: a view into a buffer costs about as much as an op.
    decay = (-torch.exp(time_decay.float())).expand(B, C).contiguous()  # no broadcasting inside the loop
    first = time_first.float()
    keys, values = k.float(), v.float()
    exponent = k.new_full((B, C), -1e38, dtype=torch.float32)
    exponent_list, decayed_list = [exponent], []
    for key in keys[:, :-1].unbind(1):
        decayed = exponent + decay
        exponent = torch.maximum(decayed, key)
        decayed_list.append(decayed)
        exponent_list.append(exponent)
    exponents = torch.stack(exponent_list, dim=1)  # before token t: [B, T, C]
    # Below, whole-sequence tensors are updated in place where they are not needed again: a fresh
    # megabyte-sized tensor more than doubles the cost of the pass that fills it (69 against 28 µs here).
    new_weight = first + keys
    peak = torch.maximum(exponents, new_weight)
    new_weight.sub_(peak).exp_()
    own_weight = peak.neg_().add_(exponents).exp_()  # exponents + (-peak) is exponents - peak exactly
    state = k.new_zeros((2, B, C), dtype=torch.float32)  # (num_t, den_t) before token t
    state_list = [state]
    if T > 1:  # folding token t into the state, t < T - 1: the state after the last token is not needed
        next_exponents = exponents[:, 1:]
        keep_weight = torch.stack(decayed_list, dim=1).sub_(next_exponents).exp_()
        added = k.new_empty((2, B, T - 1, C), dtype=torch.float32)  # (f2 v_t, f2 * 1)
        torch.sub(keys[:, :-1], next_exponents, out=added[1]).exp_()
        torch.mul(added[1], values[:, :-1], out=added[0])
        for keep, add in zip(keep_weight.unbind(1), added.unbind(2)):
            state = state * keep + add
            state_list.append(state)
    numerators, denominators = torch.stack(state_list, dim=2)  # [2, B, T, C]
    denominators.mul_(own_weight).add_(new_weight)
    numerators.mul_(own_weight).add_(new_weight.mul_(values))
    out = numerators.div_(denominators)
    return out.to(time_first.dtype)


def wkv_chunked(time_decay: torch.Tensor, time_first: torch.Tensor, k: torch.Tensor, v: torch.Tensor,
                chunk: int = 16) -> torch.Tensor:
    """RWKV-4 weighted key-value: for each token t and channel c,

        wkv_t = (sum_{i<t} e^{-(t-1-i) w + k_i} v_i + e^{u + k_t} v_t) / (same sums without v)

    with w = exp(time_decay), u = time_first. Each output is a softmax-weighted mean of values,
    computed chunk by chunk: inside a chunk the log-weights form a small [L, L] matrix; everything
    before the chunk is carried as one virtual token (log-mass ``state_logmass``, mean value
    ``state_value``). Exact, numerically stable, and O(T * L) instead of O(T^2). k, v: [B, T, C].
    """
    B, T, C = k.shape
    decay = torch.exp(time_decay.float())  # [C]
    k = k.transpose(1, 2).float()  # [B, C, T]
    v = v.transpose(1, 2).float()
    state_logmass = k.new_full((B, C, 1), float("-inf"))
    state_value = k.new_zeros((B, C, 1))
    outputs = []
    for s0 in range(0, T, chunk):
        L = min(chunk, T - s0)
        k_c, v_c = k[:, :, s0:s0 + L], v[:, :, s0:s0 + L]
        pos = torch.arange(L, device=k.device)
        distance = (pos[:, None] - 1 - pos[None, :]).float()  # t-1-i
        log_w = -distance[None] * decay[:, None, None]  # [C, L, L]
        log_w = torch.where(torch.eye(L, dtype=torch.bool, device=k.device)[None],
                            time_first.float()[:, None, None].expand_as(log_w), log_w)
        log_w = log_w.masked_fill(pos[None, :] > pos[:, None], float("-inf"))
        logits = log_w[None] + k_c[:, :, None, :]  # [B, C, L, L]
        past = state_logmass - pos.float()[None, None, :] * decay[None, :, None]  # [B, C, L]
        weights = torch.softmax(torch.cat([past[..., None], logits], dim=-1), dim=-1)
        out = weights[..., 0] * state_value + torch.einsum("bcti,bci->bct", weights[..., 1:], v_c)
        outputs.append(out)
        # Fold this chunk into the carried state: log-weights as seen from the next chunk's start.
        carry_logits = torch.cat([state_logmass - L * decay[None, :, None],
                                  k_c - (L - 1 - pos.float())[None, None, :] * decay[None, :, None]], dim=-1)
        carry_weights = torch.softmax(carry_logits, dim=-1)
        state_value = (carry_weights * torch.cat([state_value, v_c], dim=-1)).sum(-1, keepdim=True)
        state_logmass = torch.logsumexp(carry_logits, dim=-1, keepdim=True)
    return torch.cat(outputs, dim=-1).transpose(1, 2).to(time_first.dtype)


def time_shift(x: torch.Tensor) -> torch.Tensor:
    """Previous token's features (zeros for the first token): [B, T, C]."""
    return F.pad(x, (0, 0, 1, -1))


def time_mix(x: torch.Tensor, previous: torch.Tensor, ratio: torch.Tensor, scratch: torch.Tensor | None
             ) -> torch.Tensor:
    """``x * ratio + previous * (1 - ratio)``. Without autograd the second product goes into ``scratch`` (a
    tensor shaped as ``x`` that the mixes of one layer share) and is added in place: the same float ops,
    one fresh sequence-sized tensor instead of three."""
    if scratch is None:
        return x * ratio + previous * (1 - ratio)
    return torch.mul(x, ratio).add_(torch.mul(previous, 1 - ratio, out=scratch))


def mixing_scratch(x: torch.Tensor) -> torch.Tensor | None:
    return None if torch.is_grad_enabled() else torch.empty_like(x)


class RWKVTimeMix(nn.Module):
    def __init__(self, cfg: SpikeGPTConfig, layer_id: int):
        super().__init__()
        d = cfg.n_embd
        ratio_0_to_1 = layer_id / max(cfg.n_layer - 1, 1)
        ratio_1_to_almost0 = 1.0 - layer_id / cfg.n_layer
        # RWKV's initialisation: faster decay for early channels, mixing ramps with depth.
        decay_speed = torch.tensor([-5 + 8 * (h / max(d - 1, 1)) ** (0.7 + 1.3 * ratio_0_to_1) for h in range(d)])
        self.time_decay = nn.Parameter(decay_speed)
        zigzag = torch.tensor([(i + 1) % 3 - 1 for i in range(d)]) * 0.5
        self.time_first = nn.Parameter(torch.ones(d) * torch.log(torch.tensor(0.3)) + zigzag)
        ramp = (torch.arange(d) / d).view(1, 1, d)
        self.time_mix_k = nn.Parameter(ramp ** ratio_1_to_almost0)
        self.time_mix_v = nn.Parameter(ramp ** ratio_1_to_almost0 + 0.3 * ratio_0_to_1)
        self.time_mix_r = nn.Parameter(ramp ** (0.5 * ratio_1_to_almost0))
        self.key = nn.Linear(d, d, bias=False)
        self.value = nn.Linear(d, d, bias=False)
        self.receptance = nn.Linear(d, d, bias=False)
        self.output = nn.Linear(d, d, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        xx, scratch = time_shift(x), mixing_scratch(x)
        xk = time_mix(x, xx, self.time_mix_k, scratch)
        xv = time_mix(x, xx, self.time_mix_v, scratch)
        xr = time_mix(x, xx, self.time_mix_r, scratch)
        k = self.key(xk)
        v = self.value(xv)
        mixed = wkv(self.time_decay, self.time_first, k, v)
        if torch.is_grad_enabled():
            return self.output(torch.sigmoid(self.receptance(xr)) * mixed)
        # Without autograd, in place: fresh sequence-sized tensors cost as much as the ops themselves.
        return self.output(self.receptance(xr).sigmoid_().mul_(mixed))


class RWKVChannelMix(nn.Module):
    def __init__(self, cfg: SpikeGPTConfig, layer_id: int):
        super().__init__()
        d = cfg.n_embd
        ratio_1_to_almost0 = 1.0 - layer_id / cfg.n_layer
        ramp = (torch.arange(d) / d).view(1, 1, d)
        self.time_mix_k = nn.Parameter(ramp ** ratio_1_to_almost0)
        self.time_mix_r = nn.Parameter(ramp ** ratio_1_to_almost0)
        hidden = cfg.ffn_mult * d
        self.key = nn.Linear(d, hidden, bias=False)
        self.receptance = nn.Linear(d, d, bias=False)
        self.value = nn.Linear(hidden, d, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        xx, scratch = time_shift(x), mixing_scratch(x)
        xk = time_mix(x, xx, self.time_mix_k, scratch)
        xr = time_mix(x, xx, self.time_mix_r, scratch)
        if torch.is_grad_enabled():
            k = torch.square(torch.relu(self.key(xk)))
            return torch.sigmoid(self.receptance(xr)) * self.value(k)
        # Without autograd, in place (as in the time mix); square is x * x either way.
        k = self.key(xk).relu_().square_()
        return self.receptance(xr).sigmoid_().mul_(self.value(k))


class Block(nn.Module):
    def __init__(self, cfg: SpikeGPTConfig, layer_id: int):
        super().__init__()
        d = cfg.n_embd
        if layer_id == 0:
            self.ln0 = nn.LayerNorm(d)
        self.ln1 = nn.LayerNorm(d)
        self.ln2 = nn.LayerNorm(d)
        self.att = RWKVTimeMix(cfg, layer_id)
        self.ffn = RWKVChannelMix(cfg, layer_id)
        self.lif1 = LIF(cfg.tau, cfg.v_threshold)
        self.lif2 = LIF(cfg.tau, cfg.v_threshold)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if hasattr(self, "ln0"):
            x = self.ln0(x)
        # The LIF time axis is the token axis: [B, T, C] -> [T, B, C] and back.
        x = x + self.lif1(self.att(self.ln1(x)).transpose(0, 1)).transpose(0, 1)
        x = x + self.lif2(self.ffn(self.ln2(x)).transpose(0, 1)).transpose(0, 1)
        return x


class SpikeGPT(nn.Module):
    def __init__(self, cfg: SpikeGPTConfig):
        super().__init__()
        if cfg.task not in ("lm", "classification"):
            raise ValueError(f"SpikeGPT task must be 'lm' or 'classification', got {cfg.task!r}")
        self.config = cfg
        d = cfg.n_embd
        self.emb = nn.Embedding(cfg.vocab_size, d)
        self.drop = nn.Dropout(cfg.dropout)
        self.blocks = nn.ModuleList([Block(cfg, i) for i in range(cfg.n_layer)])
        self.ln_out = nn.LayerNorm(d)
        if cfg.task == "lm":
            self.head = nn.Linear(d, cfg.vocab_size, bias=False)
        else:
            self.classifier = nn.Linear(d, cfg.num_classes)
        self.apply(self._init_weights)

    @staticmethod
    def _init_weights(module: nn.Module) -> None:
        if isinstance(module, nn.Linear):
            nn.init.normal_(module.weight, std=0.02)
            if module.bias is not None:
                nn.init.zeros_(module.bias)
        elif isinstance(module, nn.Embedding):
            nn.init.uniform_(module.weight, -1e-4, 1e-4)  # RWKV habit; ln0 rescales

    def features(self, idx: torch.Tensor) -> torch.Tensor:
        x = self.drop(self.emb(idx))
        for block in self.blocks:
            x = block(x)
        return self.ln_out(x)

    def forward(self, idx: torch.Tensor, attention_mask: torch.Tensor | None = None) -> torch.Tensor:
        """idx [B, T] token ids. LM: logits [B, T, vocab]. Classification: logits [B, classes],
        mean-pooled over the tokens where ``attention_mask`` is 1 (right padding is safe: the model is causal)."""
        h = self.features(idx)
        if self.config.task == "lm":
            return self.head(h)
        if attention_mask is None:
            pooled = h.mean(dim=1)
        else:
            mask = attention_mask.to(h.dtype).unsqueeze(-1)
            pooled = (h * mask).sum(dim=1) / mask.sum(dim=1).clamp_min(1.0)
        return self.classifier(self.drop(pooled))
