"""Self-critical sequence training (SCST): the decoder fine-tuned on its own sampled captions.

    loop     the self-critical epochs: sample, reward, policy-gradient step, dev scores, resume and best weights
    rewards  the rewards of sampled captions (BLEU-4 gain, CIDEr-D, mixed) and their leave-one-out baselines
"""
