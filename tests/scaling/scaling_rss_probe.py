"""Run in a subprocess by test_scaling_memmap.py: encode a corpus and train on it through
the memory map, and report peak resident memory before and after, as JSON on stdout.

    python scaling_rss_probe.py CORPUS OUT_DIR

Baseline: the peak resident set after importing torch and running one training step of a
small character model (so the model's own working set is in the baseline). Then: encode
the corpus (one streaming pass), read every token of it through the map in windows, and
run more training steps on windows drawn from the whole corpus. The report gives both
peaks (ru_maxrss, KiB on Linux), the corpus size and the model's working set in bytes.
"""

import json
import resource
import sys


def peak_kib() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss


def main(corpus: str, out_dir: str) -> None:
    import numpy as np
    import torch

    from gatelab.data import memmap_corpus

    torch.manual_seed(0)
    V, E, H, B, T = 256, 32, 32, 8, 32
    emb = torch.nn.Embedding(V, E)
    rnn = torch.nn.LSTM(E, H)
    head = torch.nn.Linear(H, V)
    params = [*emb.parameters(), *rnn.parameters(), *head.parameters()]
    opt = torch.optim.Adam(params, lr=1e-3)

    def step(tokens: np.ndarray) -> None:  # tokens (B, T + 1)
        ids = torch.from_numpy(tokens).t().contiguous()  # (T + 1, B)
        out, _ = rnn(emb(ids[:-1]))  # (T, B, H)
        loss = torch.nn.functional.cross_entropy(head(out).reshape(-1, V), ids[1:].reshape(-1))
        opt.zero_grad()
        loss.backward()
        opt.step()

    rng = np.random.default_rng(0)
    for _ in range(3):  # the first steps also allocate the optimizer state and caches
        step(rng.integers(0, V, size=(B, T + 1)))
    n_params = sum(p.numel() for p in params)
    # parameters, gradients and Adam's two moments, plus one step's activations
    # (embeddings, 6 gate/state values per unit, logits and their gradient), 4 bytes each
    working_set = 4 * (4 * n_params + T * B * (E + 6 * H + 2 * V))
    baseline = peak_kib()

    corpus_data = memmap_corpus.encode([corpus], out_dir)
    after_encode = peak_kib()
    n = len(corpus_data)
    window = 1 << 16
    checksum = 0
    for start in range(0, n, window):  # every token, through the map
        checksum += int(corpus_data.read(start, min(n, start + window)).sum())
    after_sweep = peak_kib()
    for _ in range(20):  # training steps on windows from anywhere in the corpus
        starts = rng.integers(0, n - T - 1, size=B)
        step(np.minimum(corpus_data.windows(starts, T + 1), V - 1))
    print(json.dumps({"baseline_kib": baseline, "after_encode_kib": after_encode,
                      "after_sweep_kib": after_sweep, "peak_kib": peak_kib(), "n_tokens": n,
                      "vocab": len(corpus_data.vocab), "checksum": checksum,
                      "working_set_bytes": working_set}))


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
