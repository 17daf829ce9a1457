"""The character-level language model: embedding -> gatelab.nn LSTM/GRU/RNN -> linear.

    config.py      ModelConfig, TrainConfig, RunConfig (what config.json holds)
    model.py       CharLM
    batches.py     which windows a step trains on: a pure function of (seed, step)
    checkpoint.py  atomic safetensors + json writes, exact-resume state, loading a run
    trainer.py     the training loop, validation bits per character
    sample.py      text from a trained model
    *_cmd.py       the `gatelab train | sample | demo` commands
"""
