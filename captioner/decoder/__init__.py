"""The caption decoder: its architectures, one-token steps, and greedy, beam and sampling search.

    architectures  the Keras models the trainer fits (merge | init_lstm | attention | transformer)
    transformer    the Transformer decoder's blocks
    stepwise       the same layers run one token at a time with the state carried
    search         batched greedy and beam search (and sampling) over the stepwise decoder
    decoding       the decoding settings (beam size, length penalty, max length) as one value

The trainer builds and fits these models; the caption job only loads and
searches them (through `captioner.bundle.Captioner`), so it never imports the trainer.
"""

DECODERS = ("merge", "init_lstm", "attention", "transformer")  # train.decoder's choices; architectures.py builds each
