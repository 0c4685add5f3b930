"""The shared core of the captioner: the data contract, caption text, encoders, images, storage, BLEU.

`pipelines/` and `trainer/` import this package; it imports neither of them.
"""
