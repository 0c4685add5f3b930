"""Small caption files in the field's exact JSON formats, written by the tests that read them.

COCO caption annotations as `captions_val2014.json` lays them out (info, licenses, images, annotations),
Karpathy split files as `dataset_coco.json` / `dataset_flickr8k.json` do (images with filepath, filename,
split, sentences with tokens and raw, and cocoid in the COCO one).
"""
import json
from typing import Dict, List, Optional


def write_coco(path: str, captions: Dict[str, List[str]], ids: Dict[str, int]) -> str:
    """captions: {file name: [caption]}, ids: {file name: COCO image id}."""
    images = [{"license": 3, "file_name": name, "coco_url": f"http://images.cocodataset.org/val2014/{name}",
               "height": 480, "width": 640, "date_captured": "2013-11-14 17:02:52",
               "flickr_url": "http://farm3.staticflickr.com/x.jpg", "id": ids[name]} for name in sorted(captions)]
    annotations = [{"image_id": ids[name], "id": 1000 + index, "caption": caption}
                   for index, (name, caption) in enumerate((n, c) for n in sorted(captions) for c in captions[n])]
    document = {"info": {"description": "COCO 2014 Dataset", "version": "1.0", "year": 2014},
                "images": images, "licenses": [{"url": "http://creativecommons.org/licenses/by/2.0/", "id": 3,
                                                "name": "Attribution License"}],
                "type": "captions", "annotations": annotations}
    with open(path, "w", encoding="utf-8") as handle:
        json.dump(document, handle)
    return path


def write_karpathy(path: str, captions: Dict[str, List[str]], splits: Dict[str, str],
                   cocoids: Optional[Dict[str, int]] = None, dataset: str = "flickr8k") -> str:
    """splits: {file name: "train" | "restval" | "val" | "test"}; cocoids only for a dataset_coco.json."""
    images, sentence_id = [], 0
    for image_id, name in enumerate(sorted(captions)):
        sentences = []
        for caption in captions[name]:
            tokens = [t for t in caption.lower().replace(".", " ").replace(",", " ").split()]
            sentences.append({"tokens": tokens, "raw": caption, "imgid": image_id, "sentid": sentence_id})
            sentence_id += 1
        image = {"sentids": [s["sentid"] for s in sentences], "imgid": image_id, "sentences": sentences,
                 "split": splits[name], "filename": name}
        if cocoids:
            image.update(filepath="val2014", cocoid=cocoids[name])
        images.append(image)
    with open(path, "w", encoding="utf-8") as handle:
        json.dump({"images": images, "dataset": dataset}, handle)
    return path
