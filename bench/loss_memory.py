"""Peak memory of the loss + its backward: the model's own (full logits) against ftg.chunked_loss, on the CPU.

Each variant runs in a fresh child process; the figure is the child's peak RSS after its setup (hidden states,
lm_head, labels) was already in memory, so it is the memory the loss itself needs. Gemma-3n's vocabulary (262,400)
and softcap (30.0); 60 % of the tokens carry a label, as in chat data.

Run:
    python bench/loss_memory.py                           1024 tokens, hidden 256
    python bench/loss_memory.py --tokens 2048 --hidden 2048
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
VOCAB = 262_400
SOFTCAP = 30.0


def child(variant: str, tokens: int, hidden: int, chunk: int) -> dict:
    sys.path.insert(0, str(ROOT / "scripts"))
    import torch
    from transformers.loss.loss_utils import ForCausalLMLoss

    from ftg.chunked_loss import chunked_causal_lm_loss

    torch.manual_seed(0)
    torch.set_num_threads(2)
    lm_head = torch.nn.Linear(hidden, VOCAB, bias=False).requires_grad_(False)
    states = torch.randn(1, tokens, hidden, requires_grad=True)
    labels = torch.randint(0, VOCAB, (1, tokens))
    labels[:, : int(tokens * 0.4)] = -100
    baseline = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # bytes (ru_maxrss is KiB on Linux)
    start = time.perf_counter()
    if variant == "plain":  # what Gemma3nForCausalLM.forward + ForCausalLMLoss do
        logits = lm_head(states)
        logits = torch.tanh(logits / SOFTCAP) * SOFTCAP
        loss = ForCausalLMLoss(logits, labels, VOCAB)
    else:
        loss = chunked_causal_lm_loss(states, lm_head, labels, softcap=SOFTCAP, chunk_tokens=chunk)
    loss.backward()
    seconds = time.perf_counter() - start
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    return {"variant": variant, "chunk_tokens": chunk if variant != "plain" else None, "loss": loss.item(),
            "grad_sum": states.grad.double().abs().sum().item(), "seconds": round(seconds, 2),
            "loss_peak_bytes": peak - baseline}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tokens", type=int, default=1024)
    parser.add_argument("--hidden", type=int, default=256)
    parser.add_argument("--chunks", type=int, nargs="+", default=[1024, 256])
    parser.add_argument("--child", nargs=2, metavar=("VARIANT", "CHUNK"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        print(json.dumps(child(args.child[0], args.tokens, args.hidden, int(args.child[1]))))
        return 0
    print(f"{args.tokens} tokens, hidden {args.hidden}, vocab {VOCAB}: one fp32 logits tensor is "
          f"{args.tokens * VOCAB * 4 / 2**30:.2f} GiB")
    for variant, chunk in [("plain", 0)] + [("chunked", c) for c in args.chunks]:
        output = subprocess.run(
            [sys.executable, __file__, "--tokens", str(args.tokens), "--hidden", str(args.hidden),
             "--child", variant, str(chunk)], capture_output=True, text=True, check=True).stdout
        result = json.loads(output.strip().splitlines()[-1])
        print(f"{variant:>8} chunk={str(result['chunk_tokens']):>5}: loss {result['loss']:.6f}, "
              f"|grad| sum {result['grad_sum']:.6f}, {result['seconds']:.2f} s, "
              f"peak for the loss {result['loss_peak_bytes'] / 2**30:.2f} GiB")
    return 0


if __name__ == "__main__":
    sys.exit(main())
