"""Command line: `python -m model_service {info,tokenize,score,generate} ...`.

Each subcommand is a small function taking the parsed arguments and returning an exit
status; `build_parser` registers them, so a new one is a function and a few lines there.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from model_service.config import PRESETS, get_config
from model_service.xla_options import use_serving_flags


def cmd_info(args: argparse.Namespace) -> int:
    """Prints a config's parameter counts and fields."""
    from model_service.transformer import parameter_counts

    config = get_config(args.config)
    embedding, non_embedding = parameter_counts(config)
    info = {
        "config": args.config,
        "embedding_params": embedding,
        "non_embedding_params": non_embedding,
        "total_params": embedding + non_embedding,
        **config.to_dict(),
    }
    if args.json:
        _print_json(info)
    else:
        for key, value in info.items():
            print(f"{key}: {value:,}" if isinstance(value, int) else f"{key}: {value}")
    return 0


def cmd_tokenize(args: argparse.Namespace) -> int:
    """Prints the ids (and pieces) of a text."""
    from model_service.registry import load_tokenizer

    tokenizer = load_tokenizer(args.model)
    ids = tokenizer.encode(args.text, add_bos=args.bos)
    if args.json:
        pieces = [tokenizer.id_to_piece(i) for i in ids]
        _print_json({"token_ids": ids, "pieces": pieces})
    else:
        print(" ".join(str(i) for i in ids))
    return 0


def cmd_score(args: argparse.Namespace) -> int:
    """Prints teacher-forced top-1 predictions and log-probs of a text file."""
    from model_service.registry import load_model
    from model_service.scoring import score

    text = Path(args.text_file).read_text(encoding="utf-8")
    model = load_model(args.model)
    result = score(model, model.tokenizer.encode(text, add_bos=True))
    if args.json:
        _print_json(result.to_dict())
    else:
        hits = sum(
            p == t for p, t in zip(result.top1, result.token_ids[1:], strict=False)
        )
        print(f"tokens: {len(result.token_ids)}")
        print(f"perplexity: {result.perplexity:.4f}")
        print(f"top-1 hits: {hits} / {len(result.logprobs)}")
    return 0


def cmd_generate(args: argparse.Namespace) -> int:
    """Streams a sampled answer to a text (or to a chat message with --chat)."""
    from model_service.chat_format import format_conversation
    from model_service.quantize import quantize_params
    from model_service.registry import load_model
    from model_service.sampler import Sampler
    from model_service.sampling import SamplingParams

    params = SamplingParams(
        temperature=args.temperature,
        top_k=args.top_k,
        top_p=args.top_p,
        seed=args.seed,
        max_new_tokens=args.max_new_tokens,
        stop=tuple(args.stop),
    )
    model = load_model(args.model)
    if args.chat:
        prompt = format_conversation(
            model.tokenizer, [{"role": "user", "content": args.prompt}]
        )
    else:
        prompt = model.tokenizer.encode(args.prompt, add_bos=True)
    weights = model.params
    if args.quantize == "int8":
        weights = quantize_params(weights)
    sampler = Sampler(model.config, weights, max_length=args.max_length)
    pieces = []
    for piece in sampler.stream(prompt, params, model.tokenizer):
        pieces.append(piece)
        if not args.json:
            print(piece.text, end="", flush=True)
    if args.json:
        _print_json(
            {
                "model": args.model,
                "params": params.to_dict(),
                "text": "".join(p.text for p in pieces),
                "token_ids": [t for p in pieces for t in p.token_ids],
                "logprobs": [lp for p in pieces for lp in p.logprobs],
                "finish_reason": pieces[-1].finish_reason,
            }
        )
    else:
        print(f"\n[{pieces[-1].finish_reason}]", file=sys.stderr)
    return 0


def build_parser() -> argparse.ArgumentParser:
    """The argument parser with every subcommand."""
    parser = argparse.ArgumentParser(prog="python -m model_service")
    commands = parser.add_subparsers(dest="command", required=True)

    info = commands.add_parser("info", help="parameter counts of a config")
    info.add_argument("config", choices=sorted(PRESETS))
    info.add_argument("--json", action="store_true")
    info.set_defaults(run=cmd_info)

    tokenize = commands.add_parser("tokenize", help="token ids of a text")
    tokenize.add_argument("--model", required=True, help="model name or path")
    tokenize.add_argument("--bos", action="store_true", help="put BOS first")
    tokenize.add_argument("--json", action="store_true")
    tokenize.add_argument("text")
    tokenize.set_defaults(run=cmd_tokenize)

    score = commands.add_parser("score", help="teacher-forced predictions of a text")
    score.add_argument("--model", required=True, help="model name or path")
    score.add_argument("--text-file", required=True)
    score.add_argument("--json", action="store_true")
    score.set_defaults(run=cmd_score)

    generate = commands.add_parser("generate", help="sample an answer, streamed")
    generate.add_argument("--model", required=True, help="model name or path")
    generate.add_argument("--chat", action="store_true", help="as a user message")
    generate.add_argument("--temperature", type=float, default=0.0)
    generate.add_argument("--top-k", type=int, default=None)
    generate.add_argument("--top-p", type=float, default=None)
    generate.add_argument("--seed", type=int, default=0)
    generate.add_argument("--max-new-tokens", type=int, default=256)
    generate.add_argument("--max-length", type=int, default=None)
    generate.add_argument("--stop", action="append", default=[], help="stop string")
    generate.add_argument("--quantize", choices=["none", "int8"], default="none")
    generate.add_argument("--json", action="store_true")
    generate.add_argument("--prompt", required=True, help="the prompt text")
    generate.set_defaults(run=cmd_generate)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Runs one subcommand; errors in the input exit with status 2 and a message."""
    parser = build_parser()
    args = parser.parse_args(argv)
    use_serving_flags()  # the subcommands import JAX only when they run
    try:
        return args.run(args)
    except (ValueError, OSError) as error:
        parser.exit(2, f"error: {error}\n")


def _print_json(value: Any) -> None:
    json.dump(value, sys.stdout)
    sys.stdout.write("\n")
