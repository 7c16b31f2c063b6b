"""`maas run MODEL [PROMPT]`: a streamed answer in the terminal, or an interactive chat."""

from __future__ import annotations

import argparse
import sys
import uuid
from typing import Any

from maas.cli.engine_args import add_engine_args, engine_config


def add_parser(sub: Any) -> None:
    """Register the verb."""
    p = sub.add_parser(
        "run",
        help="answer a prompt in the terminal (or chat interactively)",
        description="Stream a chat answer to PROMPT; with no PROMPT, chat interactively (Ctrl-D to quit).",
    )
    p.add_argument("model", metavar="MODEL", help="built-in model name, .gguf file, or HF directory")
    p.add_argument("prompt", nargs="?", help="the question; omit for an interactive chat")
    p.add_argument("--max-tokens", type=int, default=512, help="answer length limit (default %(default)s)")
    p.add_argument("--temperature", type=float, default=0.7, help="0 = greedy (default %(default)s)")
    p.add_argument("--top-p", type=float, default=0.95, help="nucleus sampling (default %(default)s)")
    p.add_argument("--seed", type=int, default=None, help="fix sampling for repeatable answers")
    p.add_argument("--system", default=None, help="a system message")
    add_engine_args(p)
    p.set_defaults(func=run, log_level="warning")


def _answer(engine: Any, messages: list[dict[str, str]], params: Any) -> str:
    ids = engine.tokenizer.encode(engine.lm.chat_template.render(messages), add_special_tokens=True)
    max_tokens = min(params.max_tokens, engine.max_model_len - len(ids))
    engine.check_prompt(len(ids), max_tokens)
    rid = uuid.uuid4().hex
    engine.add_request(rid, ids, params.with_(max_tokens=max_tokens))
    text = ""
    try:
        while engine.has_unfinished():
            for o in engine.step():
                sys.stdout.write(o.text)
                sys.stdout.flush()
                text += o.text
    except KeyboardInterrupt:
        engine.abort_request(rid)
    sys.stdout.write("\n")
    return text


def run(args: argparse.Namespace) -> int:
    """Load the model and answer."""
    from maas.engine.llm.engine import Engine
    from maas.engine.llm.sampling_params import SamplingParams
    from maas.store.locate import resolve

    _, path = resolve(args.model)
    cfg = engine_config(args)
    engine = Engine.from_path(path, cfg.__class__(**{**cfg.__dict__, "max_num_seqs": 1}))
    params = SamplingParams(
        max_tokens=args.max_tokens, temperature=args.temperature, top_p=args.top_p, seed=args.seed
    )
    messages: list[dict[str, str]] = [{"role": "system", "content": args.system}] if args.system else []
    if args.prompt is not None:
        _answer(engine, [*messages, {"role": "user", "content": args.prompt}], params)
        return 0
    interactive = sys.stdin.isatty()
    while True:
        try:
            line = input(">>> " if interactive else "")
        except EOFError:
            return 0
        if not line.strip():
            continue
        if line.strip() in ("/bye", "/exit", "/quit"):
            return 0
        messages.append({"role": "user", "content": line})
        messages.append({"role": "assistant", "content": _answer(engine, messages, params)})
