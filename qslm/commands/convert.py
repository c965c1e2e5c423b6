"""``qslm convert spikegpt``: turn an original SpikeGPT checkpoint into a qslm model folder.

    qslm convert spikegpt SpikeGPT-216M.pth --tokenizer 20B_tokenizer.json --out spikegpt-216m
"""
from __future__ import annotations

import argparse

from .common import print_json

SOURCE_FORMATS = ("spikegpt",)


def run(args: argparse.Namespace) -> int:
    from ..convert import convert_spikegpt

    result = convert_spikegpt(args.checkpoint, args.tokenizer, args.out, ctx_len=args.ctx_len, tau=args.tau,
                              v_threshold=args.v_threshold, binary_embedding=args.binary_embedding)
    if args.json:
        print_json(result.to_dict())
        return 0
    for note in result.notes:
        print(f"note: {note}")
    config = result.config
    print(f"wrote {result.path}: SpikeGPT, {config.n_layer} blocks, width {config.n_embd}, vocabulary "
          f"{config.vocab_size}, FFN {config.ffn_mult}x, ctx_len {config.ctx_len}, LIF tau {config.tau} "
          f"threshold {config.v_threshold}, {'binary' if result.binary_embedding else 'real-valued'} embeddings")
    return 0


def add_parser(subparsers) -> None:
    parser = subparsers.add_parser(
        "convert", help="convert an original SpikeGPT checkpoint (.pth) into a model folder",
        description="Read a state dict saved by the original SpikeGPT code (loaded with weights_only, so no "
                    "code in the file runs), infer the model's shape from its tensors, and write config.json, "
                    "model.safetensors and tokenizer.json. Keys the qslm SpikeGPT cannot represent are refused.")
    parser.add_argument("source_format", choices=SOURCE_FORMATS, metavar="FORMAT",
                        help="checkpoint format: spikegpt (github.com/ridgerchu/SpikeGPT)")
    parser.add_argument("checkpoint", metavar="CHECKPOINT.pth", help="state dict written by torch.save")
    parser.add_argument("--tokenizer", required=True, metavar="TOKENIZER.json",
                        help="the model's Hugging Face tokenizers file (e.g. 20B_tokenizer.json)")
    parser.add_argument("--out", required=True, metavar="DIR", help="new model folder (must not exist or be empty)")
    parser.add_argument("--ctx-len", type=int, default=1024,
                        help="context length the model was trained on (default: 1024, as upstream)")
    parser.add_argument("--tau", type=float, default=2.0,
                        help="LIF membrane time constant (default: 2, as upstream)")
    parser.add_argument("--v-threshold", type=float, default=1.0,
                        help="LIF firing threshold (default: 1, as upstream; early revisions used 0.1)")
    parser.add_argument("--binary-embedding", choices=("auto", "on", "off"), default="auto",
                        help="apply upstream's spike (emb >= 0) to the embeddings; auto: as upstream's runner, "
                             "only for the 77-symbol character model")
    parser.add_argument("--json", action="store_true", help="print one JSON object on stdout")
    parser.set_defaults(func=run)
