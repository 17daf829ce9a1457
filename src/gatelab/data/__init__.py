"""Data: text corpora (`text`, the default standard-library corpus; `memmap_corpus`, corpora
larger than memory) and the synthetic memory tasks of the experiments (`synthetic`)."""
