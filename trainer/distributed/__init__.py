"""Training across devices and machines with tf.distribute.

    strategy       which strategy for this process (one or more GPUs, the CPU, or a multi-worker cluster) and its role
    custom_loop    the multi-worker `fit`: the same loss, schedule and callbacks in a loop of our own
    worker_inputs  each worker's share of the training rows

`python -m trainer.local_cluster` starts such a cluster of workers on one machine.
"""
