"""The inputs both pipelines share, each a Beam transform over (image id, path) elements.

    sources        images from a glob, a listing file or earlier dead letters (`read_images`, for both jobs);
                   caption, split and name files
    joins          joins by the name a caption file uses (CoGroupByKey, no side input) and by id
    decode         reading and decoding images, bad ones to dead letters
    dead_letters   the dead-letter record: what failed, where, and why
    shards         TFRecord shards read with their checks (CRC, --skip_damaged_shards)
"""
