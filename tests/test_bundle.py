"""The bundle format: `Captioner.load` reads what earlier versions exported, and refuses what it cannot read."""
import json
import os
import shutil

import numpy as np
import pytest
from PIL import Image

from captioner import bundle, text
from captioner.decoder.decoding import Decoding
from captioner.layout import BUNDLE_FILE
from tests.conftest import PROJECT_ROOT

LEGACY = os.path.join(PROJECT_ROOT, "tests", "fixtures", "legacy_bundle_v1")


@pytest.fixture(scope="module")
def legacy():
    with open(os.path.join(LEGACY, "expected_captions.json")) as handle:
        expected = json.load(handle)
    names = [row["image"] for row in expected["captions"]["beam1"]]
    images = np.stack([np.array(Image.open(os.path.join(LEGACY, "images", name)).convert("RGB")) for name in names])
    return bundle.Captioner.load(os.path.join(LEGACY, "export")), images, expected


@pytest.mark.parametrize("decoding", ["beam1", "beam3"])
def test_a_bundle_exported_before_the_move_captions_as_it_did_then(legacy, decoding):
    captioner, images, expected = legacy
    # then, a caption was at most as long as the bundle's training captions (bundle.json's max_length)
    then_decoding = Decoding(**expected["decoding"][decoding], max_length=captioner.bundle["max_length"])
    results = captioner.caption_images(images, then_decoding)
    then = expected["captions"][decoding]
    assert [caption for caption, _ in results] == [row["caption"] for row in then]
    np.testing.assert_allclose([score for _, score in results], [row["log_prob"] for row in then],
                               rtol=1e-5, atol=1e-5)
    assert len({caption for caption, _ in results}) > 3  # the scenes get different captions


def test_todays_bundle_json_has_the_same_fields_as_the_legacy_one(legacy):
    captioner, _, _ = legacy
    today = bundle.describe(decoder="attention", feature="spatial", info={"shape": [8, 8, 5], "dtype": "float32"},
                            max_length=8, vocabulary_size=14, encoder={}, encoder_files={}, config={},
                            trained_on={}, checksums={}, cleaning=text.KEEP_ARTICLES)
    assert sorted(today) == sorted(list(captioner.bundle) + ["checksums", "text"])  # new keys, optional on load
    assert today["bundle_version"] == bundle.BUNDLE_VERSION == 2  # 2 may carry a fine-tuned encoder
    assert captioner.bundle["bundle_version"] == 1 and 1 in bundle.READABLE_BUNDLE_VERSIONS


def test_folders_that_are_not_bundles_of_this_version_are_refused(tmp_path):
    with pytest.raises(bundle.BundleError, match="holds no bundle.json: point at the export/ folder"):
        bundle.Captioner.load(str(tmp_path))
    copy = tmp_path / "export"
    shutil.copytree(os.path.join(LEGACY, "export"), copy)
    info = json.loads((copy / BUNDLE_FILE).read_text())
    (copy / BUNDLE_FILE).write_text(json.dumps(dict(info, bundle_version=bundle.BUNDLE_VERSION + 1)))
    with pytest.raises(bundle.BundleError, match="bundle version 3; this code reads"):
        bundle.read_info(str(copy))
