"""What the gates do, made visible: the self-contained HTML report (`gatelab inspect`),
interpretable features of Python text, and the training-curve plot."""
