"""Hugging Face transformers, layer by layer: two BERT-style encoders and a GPT-style decoder.

Builds three small transformers from ``transformers`` configs (no download): two BERT-style
encoders (``BertForMaskedLM``, 4 layers of width 64) that differ only in their random seed,
and a GPT-style decoder (``GPT2LMHeadModel``, the same size). Each is trained briefly on the
same batches of a synthetic text-like corpus (a bigram Markov chain over a Zipf-distributed
vocabulary of 100 "words"): the encoders to fill in masked words, the decoder to predict the
next word. Then all three read the same held-out sentences, each as its own tokenizer would
give them: ``[CLS] words [SEP]`` padded on the right for the encoders, the words padded on the
left (with position ids that skip the padding) for the decoder.

:func:`dask_repsim.capture_hidden_states` records every hidden state of
each network (``embeddings``, ``layer_1`` ... ``layer_4``), mean-pooled over each sentence's
tokens under its attention mask, into a local Zarr store per network
(``hf_models_bert_a.zarr``, ``hf_models_bert_b.zarr``, ``hf_models_gpt2.zarr``).
:func:`dask_repsim.compare` then compares every layer of one network with every layer of
another on a local Dask cluster, pairing sentences by their ids: encoder against encoder of
another seed, and encoder against decoder. Writes both comparisons
(``hf_models_bert_a_bert_b.nc``, ``hf_models_bert_a_gpt2.nc``) and their CKA heatmaps
(``hf_models.png``) into ``--out``.

    python examples/hf_models.py [--steps 150] [--sequences 2000] [--out examples/output]
    python examples/hf_models.py --quick --out /tmp/quick   # a few seconds
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
import torch
import transformers
from distributed import Client, LocalCluster
from matplotlib.figure import Figure  # not pyplot: writes files, needs no display

import dask_repsim
from dask_repsim.capture.hugging_face import capture_hidden_states
from dask_repsim.plot import heatmap

PAD, CLS, SEP, MASK = 0, 1, 2, 3  # the special tokens; words are 4 ... 4 + WORDS - 1
WORDS, SHORTEST, LONGEST = 100, 4, 30
WIDTH, DEPTH, BATCH = 64, 4, 64
transformers.logging.set_verbosity_error()  # no notes about untrained weights


def corpus(n: int, seed: int) -> list[np.ndarray]:
    """``n`` sentences of a bigram chain: a Zipf-distributed first word, then each word drawn
    from its own sparse row of successors; lengths uniform in SHORTEST ... LONGEST words."""
    chain = np.random.default_rng(0)  # one language for every call
    zipf = 1.0 / np.arange(1, WORDS + 1)
    zipf /= zipf.sum()
    successors = 0.8 * chain.dirichlet(np.full(WORDS, 0.05), size=WORDS) + 0.2 * zipf
    cumulative = np.cumsum(successors, axis=1)
    rng = np.random.default_rng(seed)
    words = np.empty((n, LONGEST), dtype=np.int64)
    words[:, 0] = rng.choice(WORDS, size=n, p=zipf)
    for t in range(1, LONGEST):  # all sentences at once, one word at a time
        u = rng.random(n)[:, None] * cumulative[words[:, t - 1], -1:]
        words[:, t] = (cumulative[words[:, t - 1]] < u).sum(axis=1)
    lengths = rng.integers(SHORTEST, LONGEST + 1, size=n)
    return [words[i, :length] + 4 for i, length in enumerate(lengths)]


def encoder_batch(sentences: list[np.ndarray]) -> dict[str, torch.Tensor]:
    """``[CLS] words [SEP]``, padded on the right, as a BERT tokenizer gives them."""
    ids = torch.full((len(sentences), LONGEST + 2), PAD)
    for i, words in enumerate(sentences):
        ids[i, : len(words) + 2] = torch.from_numpy(np.r_[CLS, words, SEP])
    return {"input_ids": ids, "attention_mask": (ids != PAD).long()}


def decoder_batch(sentences: list[np.ndarray]) -> dict[str, torch.Tensor]:
    """The words padded on the left (as for generation), positions counted from the first."""
    ids = torch.full((len(sentences), LONGEST), PAD)
    for i, words in enumerate(sentences):
        ids[i, LONGEST - len(words):] = torch.from_numpy(words)
    mask = (ids != PAD).long()
    return {"input_ids": ids, "attention_mask": mask,
            "position_ids": (mask.cumsum(1) - 1).clamp(min=0)}


def build(kind: str, seed: int) -> transformers.PreTrainedModel:
    """A BERT-style encoder with a masked-word head, or a GPT-style decoder with a next-word
    head, from its config (random weights from ``seed``)."""
    torch.manual_seed(seed)
    if kind == "encoder":
        return transformers.BertForMaskedLM(transformers.BertConfig(
            vocab_size=WORDS + 4, hidden_size=WIDTH, num_hidden_layers=DEPTH,
            num_attention_heads=4, intermediate_size=4 * WIDTH,
            max_position_embeddings=LONGEST + 2, pad_token_id=PAD))
    return transformers.GPT2LMHeadModel(transformers.GPT2Config(
        vocab_size=WORDS + 4, n_embd=WIDTH, n_layer=DEPTH, n_head=4, n_positions=LONGEST,
        bos_token_id=CLS, eos_token_id=SEP, pad_token_id=PAD))


def loss(kind: str, model: transformers.PreTrainedModel, sentences: list[np.ndarray],
         generator: torch.Generator) -> torch.Tensor:
    """The encoder's loss on 15% of the words masked, the decoder's on every next word."""
    if kind == "encoder":
        batch = encoder_batch(sentences)
        words = batch["input_ids"] >= 4
        masked = words & (torch.rand(words.shape, generator=generator) < 0.15)
        labels = torch.where(masked, batch["input_ids"], -100)
        batch["input_ids"] = torch.where(masked, MASK, batch["input_ids"])
        return model(**batch, labels=labels).loss
    batch = decoder_batch(sentences)
    labels = torch.where(batch["attention_mask"] == 1, batch["input_ids"], -100)
    return model(**batch, labels=labels).loss


def train(nets: dict[str, tuple[str, transformers.PreTrainedModel]], steps: int) -> str:
    """Every network trained on the same batches of fresh sentences; their last losses."""
    optimisers = {name: torch.optim.AdamW(model.parameters(), lr=1e-3)
                  for name, (_, model) in nets.items()}
    losses = {}
    for step in range(steps):
        sentences = corpus(32, seed=10_000 + step)
        for name, (kind, model) in nets.items():
            value = loss(kind, model, sentences, torch.Generator().manual_seed(step))
            optimisers[name].zero_grad()
            value.backward()
            optimisers[name].step()
            losses[name] = value.item()
    return (f"after {steps} steps of 32 sentences, loss (uniform guess {np.log(WORDS):.2f}): "
            + ", ".join(f"{name} {value:.2f}" for name, value in losses.items()))


def batches(sentences: list[np.ndarray], tokenize):
    """Tokenised batches in a fixed order: a sentence's position is its id in every store."""
    for start in range(0, len(sentences), BATCH):
        yield tokenize(sentences[start : start + BATCH])


#: the networks: kind, seed
NETS = {"bert_a": ("encoder", 0), "bert_b": ("encoder", 1), "gpt2": ("decoder", 0)}
#: the comparisons drawn: (rows, columns, title)
PAIRS = [("bert_a", "bert_b", "encoder vs encoder (another seed)"),
         ("bert_a", "gpt2", "encoder vs decoder")]


def capture(nets: dict[str, tuple[str, transformers.PreTrainedModel]], sentences, out: Path
            ) -> dict[str, Path]:
    """Each network's mean-pooled hidden states on the sentences, a Zarr store each."""
    stores = {}
    for name, (kind, model) in nets.items():
        tokenize, layout = ((encoder_batch, "[CLS] words [SEP], right padding")
                            if kind == "encoder" else
                            (decoder_batch, "words, left padding, position ids from the mask"))
        stores[name] = out / f"hf_models_{name}.zarr"
        group = capture_hidden_states(
            model, batches(sentences, tokenize), store=stores[name], tokens="mean",
            n_sequences=len(sentences), overwrite=True,
            preprocessing=f"synthetic bigram corpus, {WORDS} words; {layout}")
        layers = group.attrs["dask_repsim_capture"]["layers"]
        print(f"{name}: {type(model).__name__}, hidden states {', '.join(layers)}, each "
              f"{group['layer_1'].shape} (sentences x units), mean over tokens")
    return stores


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=150, help="training steps per model")
    parser.add_argument("--sequences", type=int, default=2000, help="sentences captured")
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "output")
    parser.add_argument("--quick", action="store_true", help="15 steps, 300 sentences")
    args = parser.parse_args()
    if args.quick:
        args.steps, args.sequences = 15, 300
    torch.set_num_threads(1)  # tiny matrices: more threads only contend for the cores
    args.out.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    nets = {name: (kind, build(kind, seed)) for name, (kind, seed) in NETS.items()}
    print(train(nets, args.steps))
    stores = capture(nets, corpus(args.sequences, seed=1), args.out)

    figure = Figure(figsize=(11, 5), layout="constrained")
    # threads, not worker processes: a spawned worker would import torch and transformers anew
    with LocalCluster(n_workers=1, threads_per_worker=2, processes=False) as cluster:
        with Client(cluster):
            for k, (a, b, title) in enumerate(PAIRS):
                result = dask_repsim.compare(str(stores[a]), str(stores[b]),
                                             metrics=["cka", "cka_debiased"])
                result.to_netcdf(args.out / f"hf_models_{a}_{b}.nc")
                print(f"\nlinear CKA, {title}: {a} layers (rows) x {b} layers (columns), "
                      f"{result.attrs['n_samples']} sentences paired by id")
                print(result.cka.to_pandas().round(3).to_string())
                ax = heatmap(result, "cka", ax=figure.add_subplot(1, len(PAIRS), k + 1))
                ax.set(title=f"linear CKA, {title}", ylabel=a, xlabel=b)
    figure.savefig(args.out / "hf_models.png", dpi=110)
    print(f"\nwrote {args.out / 'hf_models.png'} ({time.perf_counter() - start:.0f} s)")


if __name__ == "__main__":
    main()
