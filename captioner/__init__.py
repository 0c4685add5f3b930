"""The shared core: the data contract, input files, caption text, encoders, the decoder, metrics and storage.

    schema, manifest, layout, bundle   the files the stages hand each other, and the one way to load a bundle
    input_files/, images, text         what users bring: listing, caption and split files, images, captions
    encoders/, decoder/, metrics/      the models and the captioning field's scores
    config/, cli, errors, storage      configs, strict flags and one-line errors, local or gs:// paths
    photos, caption, annotate          captioning a few photos from Python and the shell
    interrupts, output_folder, quiet, threads   Ctrl-C, one run per output folder, quiet start-up, thread caps

`pipelines/` and `trainer/` import this package; it imports neither of them.
"""
from captioner import quiet

quiet.install()  # before anything imports TensorFlow: its start-up notices stay out of every stage's output
