"""The input files a user brings, read the same way by every stage.

    listings     where images come from and what each is called: ids, keys by file name or path, listing files
    captions     caption files (Flickr8k token, CSV, or the JSON formats below) and split lists
    annotations  COCO captions and Karpathy split JSON files
"""
