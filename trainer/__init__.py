"""The caption decoder trainer (tf.distribute.MirroredStrategy) and its export bundle."""
