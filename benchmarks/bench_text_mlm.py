"""Tokens/s of sslhub's MLM step (hf encoder + mlm objective) vs a hand-written transformers loop.

Both sides train the same BERT configuration (same vocabulary, sizes, SDPA attention, AdamW,
precision) on the same packed batches of the embedded pydoc corpus. The reference is the
usual transformers recipe: ``BertForMaskedLM`` fed by ``DataCollatorForLanguageModeling``
(CPU-side padding and 80/10/10 masking, logits over every position, ignore_index=-100).
sslhub masks on the device and decodes only the selected positions. Collation is timed on
both sides, since each is part of its loop.

    python benchmarks/bench_text_mlm.py --device cpu --steps 20
    python benchmarks/bench_text_mlm.py --device cuda --hidden 768 --layers 12 --heads 12 \
        --batch-size 64 --max-length 128 --precision bf16

Prints the median tokens/s (non-padding tokens per second) of each, their ratio and the ratio of
their peak memory; asserts nothing.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import time

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import torch  # noqa: E402
from bench_common import (  # noqa: E402
    PeakMemory,
    Result,
    alternate,
    check_device,
    median,
    memory_ratio,
    synchronize,
    torch_threads,
)

from sslhub import BuildContext  # noqa: E402
from sslhub_text.encoders.hf_encoder import HFEncoder, HFParams  # noqa: E402
from sslhub_text.modality import TextModality, TextParams, TrainTokenizer  # noqa: E402
from sslhub_text.objectives.mlm import MLMObjective, MLMParams  # noqa: E402


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", choices=["cpu", "cuda"], default="cpu")
    parser.add_argument("--precision", choices=["fp32", "bf16"], default="fp32")
    parser.add_argument("--hidden", type=int, default=128)
    parser.add_argument("--layers", type=int, default=2)
    parser.add_argument("--heads", type=int, default=2)
    parser.add_argument("--intermediate", type=int, default=None, help="default 4 * hidden")
    parser.add_argument("--vocab-size", type=int, default=4000)
    parser.add_argument("--max-length", type=int, default=64)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--steps", type=int, default=20, help="timed steps per side")
    parser.add_argument("--warmup", type=int, default=3, help="untimed steps per side")
    parser.add_argument("--rounds", type=int, default=3, help="alternate the sides this many times (medians)")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    return parser.parse_args()


def batches_of(modality: TextModality, batch_size: int, count: int) -> list[list[dict]]:
    """``count`` lists of samples (the same ones for both sides), cycling over the train set."""
    dataset = modality.train_dataset()
    order = torch.randperm(len(dataset), generator=torch.Generator().manual_seed(0)).tolist()
    out = []
    for i in range(count):
        start = (i * batch_size) % max(1, len(order) - batch_size)
        out.append([dataset[j] for j in order[start : start + batch_size]])
    return out


def autocast(device: torch.device, precision: str):
    if precision == "bf16":
        return torch.autocast(device.type, dtype=torch.bfloat16)
    return contextlib.nullcontext()


def build_ours(args: argparse.Namespace, modality: TextModality, device: torch.device):
    torch.manual_seed(0)
    context = BuildContext(modality=modality, modality_name="text", device=device)
    params = HFParams(
        architecture="bert",
        hidden_size=args.hidden,
        num_layers=args.layers,
        num_heads=args.heads,
        intermediate_size=args.intermediate,
        dropout=0.1,
    )
    encoder = HFEncoder(params, context).to(device)
    context.encoder = encoder
    objective = MLMObjective(MLMParams(), context).to(device)
    optimizer = torch.optim.AdamW([*encoder.parameters(), *objective.parameters()], lr=1e-4, weight_decay=0.01)

    def step(samples: list[dict]) -> int:
        batch = modality.collate(samples)
        batch = {k: v.to(device, non_blocking=True) for k, v in batch.items()}
        with autocast(device, args.precision):
            loss = objective([batch], encoder).loss
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        return int(sum(len(s["input_ids"]) for s in samples))

    return step, encoder.model.config


def build_reference(args: argparse.Namespace, modality: TextModality, config, device: torch.device):
    from transformers import BertForMaskedLM, DataCollatorForLanguageModeling, PreTrainedTokenizerFast

    torch.manual_seed(0)
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=modality.tokenizer,
        pad_token="[PAD]",
        unk_token="[UNK]",
        cls_token="[CLS]",
        sep_token="[SEP]",
        mask_token="[MASK]",
    )
    collator = DataCollatorForLanguageModeling(tokenizer=tokenizer, mlm_probability=0.15, return_tensors="pt")
    model = BertForMaskedLM._from_config(config.__class__(**config.to_dict()), attn_implementation="sdpa").to(device)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4, weight_decay=0.01)

    def step(samples: list[dict]) -> int:
        features = [{"input_ids": s["input_ids"].tolist()} for s in samples]
        batch = collator(features)
        batch = {k: v.to(device, non_blocking=True) for k, v in batch.items()}
        with autocast(device, args.precision):
            loss = model(**batch).loss
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        return int(sum(len(s["input_ids"]) for s in samples))

    return step


def time_steps(step, batches: list[list[dict]], warmup: int, device: torch.device) -> float:
    for samples in batches[:warmup]:
        step(samples)
    synchronize(device)
    tokens = 0
    start = time.perf_counter()
    for samples in batches[warmup:]:
        tokens += step(samples)
    synchronize(device)
    return tokens / (time.perf_counter() - start)


def compare_mlm(
    device: str = "cpu",
    *,
    precision: str = "fp32",
    hidden: int = 128,
    layers: int = 2,
    heads: int = 2,
    intermediate: int | None = None,
    vocab_size: int = 4000,
    max_length: int = 64,
    batch_size: int = 64,
    steps: int = 20,
    warmup: int = 3,
    rounds: int = 3,
    threads: int | None = 1,
) -> Result:
    """Median tokens/s and peak memory of our MLM step vs the transformers loop, alternating ``rounds`` times."""
    args = argparse.Namespace(precision=precision, hidden=hidden, layers=layers, heads=heads, intermediate=intermediate)
    target = torch.device(device)
    with torch_threads(threads):
        modality = TextModality(TextParams(max_length=max_length, tokenizer=TrainTokenizer(vocab_size=vocab_size)))
        modality.prepare(None)
        batches = batches_of(modality, batch_size, warmup + steps)
        ours, config = build_ours(args, modality, target)
        reference = build_reference(args, modality, config, target)

        def measured(step):
            def run() -> tuple[float, int | None]:
                with PeakMemory(target) as memory:
                    tokens_per_s = time_steps(step, batches, warmup, target)
                return tokens_per_s, memory.peak

            return run

        results = alternate({"sslhub": measured(ours), "transformers": measured(reference)}, rounds)
    return Result(
        benchmark="text MLM step",
        ours=median([rate for rate, _ in results["sslhub"]]),
        baseline=median([rate for rate, _ in results["transformers"]]),
        unit="tokens/s",
        higher_is_better=True,
        baseline_name="BertForMaskedLM + DataCollatorForLanguageModeling, same BERT config",
        target=1.0,
        memory_ratio=memory_ratio([p for _, p in results["sslhub"]], [p for _, p in results["transformers"]]),
        details={
            "device": device,
            "precision": precision,
            "bert": {"hidden": hidden, "layers": layers, "heads": heads, "vocab": modality.info().vocab_size},
            "batch_size": batch_size,
            "max_length": max_length,
            "timed_steps": steps,
            "warmup_steps": warmup,
            "rounds": rounds,
            "sslhub_tokens_per_s_per_round": [round(rate) for rate, _ in results["sslhub"]],
            "transformers_tokens_per_s_per_round": [round(rate) for rate, _ in results["transformers"]],
        },
    )


def main() -> None:
    args = parse_args()
    check_device(args.device)
    result = compare_mlm(
        args.device,
        precision=args.precision,
        hidden=args.hidden,
        layers=args.layers,
        heads=args.heads,
        intermediate=args.intermediate,
        vocab_size=args.vocab_size,
        max_length=args.max_length,
        batch_size=args.batch_size,
        steps=args.steps,
        warmup=args.warmup,
        rounds=args.rounds,
        threads=args.threads,
    )
    details = result.details
    bert = details["bert"]
    print(
        f"device={args.device} precision={args.precision} bert hidden={args.hidden} layers={args.layers} "
        f"heads={args.heads} vocab={bert['vocab']} batch={args.batch_size} "
        f"max_length={args.max_length} steps={args.steps} rounds={args.rounds} (medians)"
    )
    for name, key, value in (
        ("sslhub", "sslhub_tokens_per_s_per_round", result.ours),
        ("transformers", "transformers_tokens_per_s_per_round", result.baseline),
    ):
        print(f"{name:>13}: {value:10.0f} tokens/s  (rounds: {', '.join(str(v) for v in details[key])})")
    print(f"ratio sslhub / transformers: {result.ratio:.3f}")
    if result.memory_ratio is not None:
        print(f"peak memory sslhub / transformers: {result.memory_ratio:.3f}")


if __name__ == "__main__":
    main()
