"""Experiments that reproduce the claims made for the LSTM, each a small module with `run()`.

    gradient-flow  gradient_flow.py  how far back ∂ŷ_T/∂h_t reaches, at init and trained
    adding         adding.py         the adding problem at T = 50, 100, 200
    copy           copy_memory.py    the copy-memory task at delays 50 and 100
    noise          noise.py          one flagged symbol among distractors; input-gate means
    cost           cost.py           parameters, FLOPs, time and memory per step

`gatelab experiment NAME [--out DIR] [--quick]` runs one (see `cli.py`). Every run compares
the tanh RNN, the GRU and the LSTM at equal hidden size, is seeded, and writes
`results.json` and PNG figures.
"""
