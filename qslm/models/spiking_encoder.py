"""Spiking encoder classifier in the Spikformer / SpikeBERT style.

The embedded sentence is presented for ``time_steps`` SNN time steps. Each block applies
spiking self-attention (query, key and value are spike trains; attention is a product of
spike matrices, no softmax) and a spiking MLP, so every Linear inside the blocks sees spikes.
Names: ``emb``, ``pos_emb``, ``ln_in``, ``blocks.{i}.attn.{query,key,value,proj}``, ``blocks.{i}.mlp.{fc1,fc2}``,
``ln_out``, ``classifier``. A masked-language-model pre-training stage (``task="mlm"``) has ``lm_head``
(per-token vocabulary logits) in place of ``classifier``; fine-tuning keeps every other tensor.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from . import config_checks as checks
from .neurons import LIF


@dataclass
class SpikingEncoderConfig:
    vocab_size: int = 2048
    n_embd: int = 192
    n_layer: int = 4
    n_head: int = 4
    max_len: int = 64
    time_steps: int = 4
    mlp_mult: int = 4
    num_classes: int = 2
    tau: float = 2.0
    v_threshold: float = 1.0
    dropout: float = 0.0  # on the input currents and the pooled features, during training only
    # None: each query sums its attention over the keys, as Spikformer does (images have a fixed token
    # count), so the attention current grows with sentence length. K: the sum is averaged over the
    # sentence's real keys and scaled by K, so long sentences drive the neurons as short ones do.
    attention_keys: int | None = None
    task: str = "classification"  # or "mlm": masked language model, the pre-training stage
    arch: str = "spiking-encoder"

    def __post_init__(self) -> None:
        checks.check_choice(self, "arch", ("spiking-encoder",))
        checks.check_shared_fields(self)
        checks.check_int(self, "n_head", 1, checks.MAX_WIDTH)
        if self.n_embd % self.n_head:
            raise checks.ConfigError(f"config field n_embd ({self.n_embd}) must be divisible by n_head "
                                     f"({self.n_head})")
        checks.check_int(self, "max_len", 1, checks.MAX_LENGTH)
        checks.check_int(self, "time_steps", 1, checks.MAX_TIME_STEPS)
        checks.check_int(self, "mlp_mult", 1, checks.MAX_MULT)
        if self.attention_keys is not None and not (checks.is_int(self.attention_keys)
                                                    and 1 <= self.attention_keys <= checks.MAX_LENGTH):
            raise checks.ConfigError(f"config field attention_keys must be a positive integer (at most "
                                     f"{checks.MAX_LENGTH}) or null, got {self.attention_keys!r}")
        checks.check_choice(self, "task", ("classification", "mlm"))


class SeqBatchNorm(nn.BatchNorm1d):
    """BatchNorm over the feature (last) axis of a [..., D] tensor, as Spikformer normalises after each
    Linear. Unlike LayerNorm it has no trouble with a token whose spike input was all zeros (LayerNorm
    of a constant vector sends 1/sqrt(eps)-sized gradients back); in eval mode it is a fixed affine map."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return super().forward(x.reshape(-1, x.shape[-1])).reshape(x.shape)


class SpikingSelfAttention(nn.Module):
    def __init__(self, cfg: SpikingEncoderConfig):
        super().__init__()
        d = cfg.n_embd
        if d % cfg.n_head:
            raise ValueError(f"n_embd ({d}) must be divisible by n_head ({cfg.n_head})")
        if cfg.attention_keys is not None and cfg.attention_keys < 1:
            raise ValueError(f"attention_keys must be a positive integer or None, got {cfg.attention_keys}")
        self.n_head = cfg.n_head
        self.scale = (d // cfg.n_head) ** -0.5
        self.attention_keys = cfg.attention_keys
        self.input_lif = LIF(cfg.tau, cfg.v_threshold)
        self.query, self.key, self.value = (nn.Linear(d, d) for _ in range(3))
        self.bn_q, self.bn_k, self.bn_v = (SeqBatchNorm(d) for _ in range(3))
        self.q_lif, self.k_lif, self.v_lif = (LIF(cfg.tau, cfg.v_threshold) for _ in range(3))
        self.attn_lif = LIF(cfg.tau, 0.5 * cfg.v_threshold)
        self.proj = nn.Linear(d, d)
        self.bn_proj = SeqBatchNorm(d)

    def _heads(self, x: torch.Tensor) -> torch.Tensor:
        T, B, N, D = x.shape
        return x.view(T, B, N, self.n_head, D // self.n_head).transpose(2, 3)  # [T, B, H, N, Dh]

    def forward(self, x: torch.Tensor, key_mask: torch.Tensor) -> torch.Tensor:
        T, B, N, D = x.shape
        s = self.input_lif(x)
        q = self._heads(self.q_lif(self.bn_q(self.query(s))))
        k = self._heads(self.k_lif(self.bn_k(self.key(s))))
        v = self._heads(self.v_lif(self.bn_v(self.value(s))))
        scale = self.scale * key_mask[None, :, None, None, :]  # [1, B, 1, 1, N]
        if self.attention_keys is not None:
            scale = scale * (self.attention_keys / key_mask.sum(-1).clamp_min(1.0))[None, :, None, None, None]
        scores = (q @ k.transpose(-2, -1)) * scale
        out = (scores @ v).transpose(2, 3).reshape(T, B, N, D)
        return self.bn_proj(self.proj(self.attn_lif(out)))


class SpikingMLP(nn.Module):
    def __init__(self, cfg: SpikingEncoderConfig):
        super().__init__()
        d, hidden = cfg.n_embd, cfg.mlp_mult * cfg.n_embd
        self.input_lif = LIF(cfg.tau, cfg.v_threshold)
        self.fc1 = nn.Linear(d, hidden)
        self.bn1 = SeqBatchNorm(hidden)
        self.hidden_lif = LIF(cfg.tau, cfg.v_threshold)
        self.fc2 = nn.Linear(hidden, d)
        self.bn2 = SeqBatchNorm(d)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.hidden_lif(self.bn1(self.fc1(self.input_lif(x))))
        return self.bn2(self.fc2(h))


class EncoderBlock(nn.Module):
    def __init__(self, cfg: SpikingEncoderConfig):
        super().__init__()
        self.attn = SpikingSelfAttention(cfg)
        self.mlp = SpikingMLP(cfg)

    def forward(self, x: torch.Tensor, key_mask: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(x, key_mask)
        return x + self.mlp(x)


class SpikingEncoder(nn.Module):
    def __init__(self, cfg: SpikingEncoderConfig):
        super().__init__()
        self.config = cfg
        d = cfg.n_embd
        self.emb = nn.Embedding(cfg.vocab_size, d)
        self.pos_emb = nn.Embedding(cfg.max_len, d)
        # Normalise the input current so the first neurons fire from the start.
        self.ln_in = nn.LayerNorm(d)
        self.drop = nn.Dropout(cfg.dropout)
        self.blocks = nn.ModuleList([EncoderBlock(cfg) for _ in range(cfg.n_layer)])
        self.ln_out = nn.LayerNorm(d)
        if cfg.task == "classification":
            self.classifier = nn.Linear(d, cfg.num_classes)
        elif cfg.task == "mlm":
            self.lm_head = nn.Linear(d, cfg.vocab_size)
        else:
            raise ValueError(f"spiking-encoder task must be 'classification' or 'mlm', got {cfg.task!r}")
        for module in self.modules():
            if isinstance(module, (nn.Linear, nn.Embedding)):
                nn.init.normal_(module.weight, std=0.02)
            if isinstance(module, nn.Linear) and module.bias is not None:
                nn.init.zeros_(module.bias)

    def forward(self, idx: torch.Tensor, attention_mask: torch.Tensor | None = None,
                predict_at: torch.Tensor | None = None) -> torch.Tensor:
        """idx [B, N] token ids (N <= max_len) -> class logits [B, num_classes]; or, for ``task="mlm"``,
        vocabulary logits [B, N, vocab] or, given ``predict_at`` (bool [B, N]), [positions, vocab] for the
        chosen positions only (the head is the costliest layer, so training scores only masked ones)."""
        B, N = idx.shape
        if N > self.config.max_len:
            if predict_at is not None:  # the caller's targets would no longer line up
                raise ValueError(f"predict_at needs inputs of at most max_len={self.config.max_len} tokens, got {N}")
            idx, N = idx[:, : self.config.max_len], self.config.max_len
            if attention_mask is not None:
                attention_mask = attention_mask[:, :N]
        mask = torch.ones_like(idx, dtype=torch.float32) if attention_mask is None else attention_mask.float()
        x = self.drop(self.ln_in(self.emb(idx) + self.pos_emb(torch.arange(N, device=idx.device))[None]))
        x = x.unsqueeze(0).expand(self.config.time_steps, B, N, -1).contiguous()  # [T, B, N, D]
        for block in self.blocks:
            x = block(x, mask)
        h = self.ln_out(x.mean(dim=0))  # average over time steps
        if self.config.task == "mlm":
            return self.lm_head(h if predict_at is None else h[predict_at.bool()])
        pooled = (h * mask[..., None]).sum(dim=1) / mask.sum(dim=1, keepdim=True).clamp_min(1.0)
        return self.classifier(self.drop(pooled))
