"""`sslhub embed` on image files decodes them exactly as the image modality does in training."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from sslhub import BuildContext
from sslhub.embed_files import EmbedError, FileEmbedder
from sslhub.export import export_encoder
from sslhub_vision.encoders.small_cnn import SmallCNN, SmallCNNParams
from sslhub_vision.modality import ImageModality, ImageParams
from sslhub_vision.sources import FolderImageDataset

# (height, width): at the model size, larger and non-square (shrunk, cropped), smaller (enlarged)
SIZES = [(16, 16), (40, 23), (9, 12)]


@pytest.fixture(scope="module")
def image_folder(tmp_path_factory):
    folder = tmp_path_factory.mktemp("images")
    rng = np.random.default_rng(0)
    for index, (height, width) in enumerate(SIZES):
        # smooth content, as in photos: noise would make every resampling difference maximal
        base = rng.uniform(0, 255, size=(4, 4, 3))
        pixels = np.asarray(Image.fromarray(base.astype(np.uint8)).resize((width, height), Image.Resampling.BICUBIC))
        Image.fromarray(pixels).save(folder / f"{index}.png")
    (folder / "notes.md").write_text("not an image: skipped when the folder is expanded\n")
    return folder


@pytest.fixture(scope="module")
def exported(image_folder, tmp_path_factory):
    modality = ImageModality(ImageParams(source={"type": "folder", "path": image_folder}, image_size=16))
    torch.manual_seed(0)
    encoder = SmallCNN(SmallCNNParams(width=8), BuildContext(modality=modality, modality_name="image")).eval()
    out = tmp_path_factory.mktemp("export")
    export_encoder(encoder, modality, out, modality_name="image")
    return modality, encoder, out


def test_embedding_image_files_matches_the_training_decoder(image_folder, exported):
    modality, encoder, out = exported
    paths = sorted(image_folder.glob("*.png"))
    embeddings = FileEmbedder(out, threads=1).embed([image_folder], batch_size=2)

    decoder = FolderImageDataset(paths, image_size=16, channels=3)
    images = torch.stack([decoder.decode(str(p)) for p in paths]).float() / 255.0
    with torch.no_grad():
        expected = encoder({"image": images}).pooled.numpy()
    assert embeddings.sources == [str(p) for p in paths]
    # Pillow and torch's antialiased bilinear resize agree up to rounding of single pixel values
    np.testing.assert_allclose(embeddings.vectors, expected, atol=2e-2)
    same_size = [i for i, size in enumerate(SIZES) if size == (16, 16)]
    np.testing.assert_allclose(embeddings.vectors[same_size], expected[same_size], atol=1e-4)


def test_a_file_of_the_wrong_kind_is_refused_with_what_is_accepted(exported, tmp_path):
    _, _, out = exported
    text = tmp_path / "caption.txt"
    text.write_text("a caption\n")
    with pytest.raises(EmbedError, match=r"caption.txt: this image model reads \.png"):
        FileEmbedder(out, threads=1).embed([text])


def test_a_corrupt_image_names_the_file(exported, tmp_path):
    _, _, out = exported
    broken = tmp_path / "broken.png"
    broken.write_bytes(b"\x89PNG not really")
    with pytest.raises(EmbedError, match="broken.png: cannot decode the image"):
        FileEmbedder(out, threads=1).embed([broken])
