"""The trainer: the caption decoder (and the encoder with it) under tf.distribute, resumable, then its bundle.

    task, local_cluster    the entry points: one job; a multi-worker job on this machine
    job, job_folder        one job end to end (phases, resume) and what is where in its job dir
    features_folder, data, image_inputs, grouped   the checked input, tf.data rows, kept images, grouped captions
    training, callbacks, finetune                  cross-entropy training and fine-tuning the encoder
    distributed/           strategies, the multi-worker loop, each worker's inputs
    self_critical/         self-critical epochs and their rewards
    evaluation, export     dev/test scores of the exported bundle; writing the bundle
"""
