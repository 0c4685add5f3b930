"""The shared core of the captioner: the data contract, caption text, encoders, the decoder, storage, BLEU.

`pipelines/` and `trainer/` import this package; it imports neither of them.
"""
from captioner import quiet

quiet.install()  # before anything imports TensorFlow: its start-up notices stay out of every stage's output
