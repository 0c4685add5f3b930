"""Thread limits for TensorFlow, shared by the encoders and the decoder.

Several Beam worker processes on one machine each start a TensorFlow that
would use every core; one thread each keeps them from oversubscribing it.
"""
from __future__ import annotations

import tensorflow as tf


def limit_tensorflow_threads(num_threads: int) -> None:
    """Caps TensorFlow's op threads in this process.

    Only possible before this process runs its first TensorFlow op; later calls leave the setting as is.
    """
    try:
        tf.config.threading.set_intra_op_parallelism_threads(num_threads)
        tf.config.threading.set_inter_op_parallelism_threads(num_threads)
    except RuntimeError:
        pass
