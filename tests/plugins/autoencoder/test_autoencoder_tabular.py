"""The tabular modality (CSV, numpy, bundled sets; skipped rows; train-only statistics) and the mlp encoder."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from sslhub import BuildContext
from sslhub_autoencoder.encoders import MLPEncoder, MLPParams
from sslhub_autoencoder.modality import TabularModality, TabularParams, VectorDataset
from sslhub_autoencoder.tables import encode_labels, read_csv, read_numpy

CSV = """a,b,kind,c
1.0,10,cat,0.5
2.0,20,dog,0.5
3.0,x,cat,0.5
4.0,40,dog
5.0,50,cat,0.5

6.0,60,,0.5
7.0,70,dog,0.5
8.0,80,cat,0.5
9.0,90,dog,0.5
10.0,100,cat,0.5
11.0,nan,dog,0.5
"""


@pytest.fixture
def csv_path(tmp_path):
    path = tmp_path / "table.csv"
    path.write_text(CSV)
    return path


def test_csv_rows_parse_and_bad_rows_are_skipped_and_counted(csv_path, caplog):
    table = read_csv(csv_path, label_column="kind")
    # skipped: 'x' (non-numeric), a row with 3 fields, an empty label, 'nan'; the blank line is not a row
    assert table.skipped_rows == 4
    assert table.column_names == ["a", "b", "c"]
    np.testing.assert_array_equal(table.features[:, 0], [1, 2, 5, 7, 8, 9, 10])
    np.testing.assert_array_equal(table.features[:, 1], [10, 20, 50, 70, 80, 90, 100])
    assert table.class_names == ["cat", "dog"]
    np.testing.assert_array_equal(table.labels, [0, 1, 0, 1, 0, 1, 0])
    assert "skipped 4 malformed rows" in caplog.text and "line 4" in caplog.text


def test_csv_columns_and_errors(csv_path):
    table = read_csv(csv_path, columns=["b"])
    # without a label column the row with an empty label is valid
    assert table.features.shape == (8, 1) and table.labels is None and table.skipped_rows == 3
    with pytest.raises(ValueError, match="label_column 'species' is not a column of"):
        read_csv(csv_path, label_column="species")
    with pytest.raises(ValueError, match=r"columns \['z'\] are not in"):
        read_csv(csv_path, columns=["z"])


def test_numeric_labels_sort_as_numbers():
    labels, names = encode_labels(["10", "9", "10", "1"])
    assert names == ["1", "9", "10"]
    assert labels.tolist() == [2, 1, 2, 0]


def test_modality_from_csv_standardises_with_training_statistics(csv_path):
    params = TabularParams(
        source={"type": "csv", "path": str(csv_path), "label_column": "kind"}, eval_fraction=0.3, split_seed=1
    )
    modality = TabularModality(params)
    modality.prepare(None)
    assert modality.skipped_rows == 4 and modality.info().dim == 3
    train = torch.stack([modality.train_dataset()[i]["vector"] for i in range(len(modality.train_dataset()))])
    # the training part is exactly standardised; the constant column c gets std 1 (so it becomes 0)
    torch.testing.assert_close(train.mean(0), torch.zeros(3), atol=1e-5, rtol=0)
    torch.testing.assert_close(train[:, :2].std(0, unbiased=False), torch.ones(2), atol=1e-5, rtol=0)
    assert torch.all(train[:, 2] == 0)
    split = modality.eval_split()
    assert len(split.train) + len(split.test) == 7 and split.class_names == ("cat", "dog")
    assert split.test[0]["label"].dtype == torch.int64
    assert "label" not in modality.held_out_dataset()[0]
    spec = modality.input_spec()
    assert spec["inputs"]["vector"]["shape"] == ["batch", 3] and len(spec["preprocessing"]["mean"]) == 3


def test_modality_from_npz_and_npy(tmp_path):
    rng = np.random.default_rng(0)
    features, labels = rng.normal(size=(40, 5)), np.repeat([0, 1], 20)
    features[3, 2] = np.nan
    np.savez(tmp_path / "data.npz", features=features, labels=labels)
    modality = TabularModality(TabularParams(source={"type": "numpy", "path": str(tmp_path / "data.npz")}))
    assert modality.skipped_rows == 1 and modality.dim == 5
    assert modality.eval_split() is not None
    np.save(tmp_path / "data.npy", np.column_stack([features[4:], labels[4:]]))
    modality = TabularModality(
        TabularParams(source={"type": "numpy", "path": str(tmp_path / "data.npy"), "label_column": -1})
    )
    assert modality.dim == 5 and modality.table.class_names == ["0.0", "1.0"]


def test_numpy_arrays_that_cannot_be_read_are_named(tmp_path):
    np.savez(tmp_path / "other.npz", values=np.zeros((4, 3)))
    with pytest.raises(ValueError, match=r"has no array 'features' \(arrays: values\)"):
        read_numpy(tmp_path / "other.npz")
    np.savez(tmp_path / "short.npz", features=np.zeros((4, 3)), labels=np.zeros(3))
    with pytest.raises(ValueError, match="3 labels for 4 rows"):
        read_numpy(tmp_path / "short.npz")
    np.save(tmp_path / "data.npy", np.zeros((4, 3)))
    with pytest.raises(ValueError, match="label_column 3 is out of range for 3 columns"):
        read_numpy(tmp_path / "data.npy", label_column=3)
    np.save(tmp_path / "flat.npy", np.zeros(4))
    with pytest.raises(ValueError, match=r"expected a 2-D numeric array \[rows, columns\]"):
        read_numpy(tmp_path / "flat.npy")


def test_without_labels_there_is_no_eval_split_but_a_held_out_set(csv_path):
    modality = TabularModality(TabularParams(source={"type": "csv", "path": str(csv_path), "columns": ["a", "b"]}))
    assert modality.eval_split() is None
    assert len(modality.held_out_dataset()) + len(modality.train_dataset()) == 8


def test_bundled_default_is_labeled_digits():
    modality = TabularModality()
    assert modality.dim == 64 and len(modality.table.class_names) == 10
    split = modality.eval_split()
    assert len(split.train) == 1437 and len(split.test) == 360
    # stratified: every class is in the test part
    assert len({int(split.test[i]["label"]) for i in range(len(split.test))}) == 10


def test_vector_dataset_is_picklable_and_deterministic():
    import pickle

    data = VectorDataset(np.arange(6, dtype=np.float32).reshape(3, 2), np.array([0, 1, 0]))
    copy = pickle.loads(pickle.dumps(data))
    assert torch.equal(copy[1]["vector"], data[1]["vector"]) and int(copy[1]["label"]) == 1


def test_mlp_encoder_shapes_and_errors():
    modality = TabularModality()
    encoder = MLPEncoder(MLPParams(hidden_sizes=[32, 16], output_dim=8, norm="batch"), BuildContext(modality=modality))
    out = encoder(modality.example_batch(4))
    assert out.pooled.shape == (4, 8) and encoder.feature_dim == 8 and out.tokens is None
    with pytest.raises(ValueError, match=r"mlp expects vector \[batch, 64\]"):
        encoder({"vector": torch.zeros(4, 3)})
    with pytest.raises(ValueError, match="needs a modality whose info\\(\\) has 'dim'"):
        MLPEncoder(MLPParams(), BuildContext())
    with pytest.raises(ValueError, match="hidden_sizes must all be > 0"):
        MLPParams(hidden_sizes=[4, 0])


def test_mlp_all_layers_readout_concatenates_every_hidden_layer_then_the_output():
    modality = TabularModality()
    torch.manual_seed(0)
    last = MLPEncoder(MLPParams(hidden_sizes=[32, 16], output_dim=8), BuildContext(modality=modality)).eval()
    both = MLPEncoder(
        MLPParams(hidden_sizes=[32, 16], output_dim=8, readout="all_layers"), BuildContext(modality=modality)
    ).eval()
    both.load_state_dict(last.state_dict())  # same weights: the readout adds no parameter
    batch = modality.example_batch(4)
    pooled = both(batch).pooled
    assert pooled.shape == (4, 32 + 16 + 8) and both.feature_dim == 56
    first_hidden = last.layers[:3](batch["vector"])  # Linear, LayerNorm, GELU
    torch.testing.assert_close(pooled[:, :32], first_hidden)
    torch.testing.assert_close(pooled[:, 48:], last(batch).pooled)
    torch.testing.assert_close(both.export_module()(batch["vector"]), pooled)


def test_mlp_export_module_takes_the_vector_positionally():
    modality = TabularModality()
    encoder = MLPEncoder(MLPParams(hidden_sizes=[16], output_dim=4), BuildContext(modality=modality)).eval()
    batch = modality.example_batch(2)
    torch.testing.assert_close(encoder.export_module()(batch["vector"]), encoder(batch).pooled)


def test_raw_features_are_the_standardised_columns():
    from sslhub.testing import check_raw_features

    modality = TabularModality()
    vectors = torch.randn(4, modality.dim)
    assert torch.equal(modality.raw_features({"vector": vectors}), vectors)
    scores = check_raw_features(modality)
    assert scores[""] > 0.8  # bundled digits, ten classes
