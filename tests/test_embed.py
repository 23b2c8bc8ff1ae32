import h5py
import numpy as np
import pandas as pd
import pytest
from conftest import IMDB, needs_imdb

from textvision.config.settings import DataSettings, EmbedSettings, MergeSettings
from textvision.core.device import native_bf16
from textvision.core.errors import ConfigError, InputError
from textvision.core.io import attrs_dict
from textvision.data.prepare import prepare_dataset
from textvision.embed.encoder import (
    OFFLINE_MODEL,
    check_precision,
    embed_padded,
    embed_texts,
    embed_unpadded,
    layer_indices,
    load_encoder,
    resolve_model,
)
from textvision.embed.step import embed_dataset, merge_shards


def embed(texts, encoder, layers, max_length, batch_size=32):
    tokenizer, model, _ = encoder
    return embed_texts(
        texts,
        tokenizer,
        model,
        layers,
        max_length=max_length,
        batch_size=batch_size,
        precision="float32",
    )


@pytest.fixture(scope="module")
def encoder():
    return load_encoder(OFFLINE_MODEL, "cpu")


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    path = tmp_path_factory.mktemp("embed") / "dataset.parquet"
    prepare_dataset(path, DataSettings.make(synthetic={"n_per_class": 15}))
    return path


def test_layer_indices():
    assert layer_indices(6, 6) == [1, 2, 3, 4, 5, 6]
    assert layer_indices(2, 12) == [11, 12]
    assert layer_indices([7, 8, -1], 12) == [7, 8, 12]
    with pytest.raises(InputError, match="embedding.layers"):
        layer_indices(7, 6)
    with pytest.raises(InputError, match="layer 13 out of range"):
        layer_indices([13], 12)


TEXTS = [
    "short.",
    "a somewhat longer review of a film that goes on " * 8,
    "mid length text here",
    "x " * 300,
]


def test_batched_equals_one_at_a_time(encoder):
    texts = TEXTS
    batched = embed(texts, encoder, [5, 6], max_length=128, batch_size=3)
    alone = np.concatenate([embed([t], encoder, [5, 6], max_length=128) for t in texts])
    assert batched.shape == (4, 2, 384) and batched.dtype == np.float32
    assert np.abs(batched - alone).max() < 1e-4


def test_padded_path_equals_one_at_a_time_on_the_cpu(encoder):
    """The GPU path (padded batches, attention masks) run on the CPU against the reference."""
    tokenizer, model, _ = encoder
    encoded = tokenizer(TEXTS, truncation=True, max_length=128)["input_ids"]
    padded = embed_padded(encoded, tokenizer, model, [5, 6], 3, "float32")
    alone = np.concatenate([embed([t], encoder, [5, 6], max_length=128) for t in TEXTS])
    assert len({len(ids) for ids in encoded}) == 4  # every batch of 3 holds padding
    assert padded.shape == (4, 2, 384) and np.abs(padded - alone).max() < 1e-4


def test_sharded_and_unsharded_runs_give_identical_cls(dataset, tmp_path):
    embed_dataset(dataset, tmp_path / "one.h5", EmbedSettings.make(layers=2, max_length=64))
    merge_shards([tmp_path / "one.h5"], dataset, tmp_path / "whole.h5", MergeSettings.make())
    shards = []
    three = EmbedSettings.make(layers=2, max_length=64, shards=3, batch_size=4)
    for i in range(3):
        shards.append(tmp_path / f"s{i}.h5")
        embed_dataset(dataset, shards[-1], three, shard=i)
    merge_shards(shards, dataset, tmp_path / "merged.h5", MergeSettings.make(compression="gzip"))
    with h5py.File(tmp_path / "whole.h5") as a, h5py.File(tmp_path / "merged.h5") as b:
        np.testing.assert_allclose(a["cls"][:], b["cls"][:], atol=1e-5)
        assert a["cls"].shape == (30, 2, 384)
        assert a["cls"].compression is None and b["cls"].compression == "gzip"
        assert (a["id"][:] == b["id"][:]).all() and (a["split"][:] == b["split"][:]).all()
        attrs = attrs_dict(a)
    assert attrs["layers"] == [5, 6] and attrs["synthetic"] is True
    assert len(attrs["weights_sha256"]) == 64
    with pytest.raises(InputError, match="expected to start at row"):
        merge_shards([shards[0], shards[2]], dataset, tmp_path / "bad.h5", MergeSettings.make())
    assert not (tmp_path / "bad.h5").exists()


def test_offline_unknown_model_explains(tmp_path, monkeypatch, dataset):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    with pytest.raises(InputError, match="not in the local Hugging Face cache.*prefetch"):
        embed_dataset(dataset, tmp_path / "e.h5", EmbedSettings.make(model="nobody/no-such-bert"))
    assert not (tmp_path / "e.h5").exists()


def test_a_model_folder_under_home_is_found_and_a_missing_one_named(tmp_path, monkeypatch):
    folder = tmp_path / "models" / "encoder"
    folder.mkdir(parents=True)
    monkeypatch.setenv("HOME", str(tmp_path))
    assert resolve_model("~/models/encoder") == folder
    with pytest.raises(InputError, match="'~/models/missing': no such folder"):
        resolve_model("~/models/missing")


@needs_imdb
def test_real_imdb_reviews_embed_with_offline_minilm(tmp_path):
    reviews = pd.read_parquet(IMDB).groupby("label").head(100)
    src = tmp_path / "imdb200.parquet"
    reviews.to_parquet(src)
    prepare_dataset(tmp_path / "d.parquet", DataSettings.make(source=str(src)))
    embedding = EmbedSettings.make(layers=6, max_length=512)
    embed_dataset(tmp_path / "d.parquet", tmp_path / "e.h5", embedding)
    merge_shards(
        [tmp_path / "e.h5"], tmp_path / "d.parquet", tmp_path / "emb.h5", MergeSettings.make()
    )
    with h5py.File(tmp_path / "emb.h5") as fh:
        assert fh["cls"].shape == (200, 6, 384)
        assert np.isfinite(fh["cls"][:]).all()
        attrs = attrs_dict(fh)
    assert attrs["model"] == OFFLINE_MODEL and attrs["max_length"] == 512
    assert attrs["layers"] == [1, 2, 3, 4, 5, 6] and attrs["clean_html"] is True
    assert attrs["synthetic"] is False and attrs["dtype"] == "float32"


def test_layer_numbering_matches_hidden_states_and_the_original_code():
    """On a 12-layer BERT with known hidden states: layer k is `hidden_states[k]` (0 is the
    embedding output), and the original code's `hidden_states[6:]` minus the last is
    `[6, ..., 11]`."""
    import torch
    from transformers import BertConfig, BertModel

    torch.manual_seed(0)
    config = BertConfig(
        vocab_size=50, hidden_size=16, num_hidden_layers=12, num_attention_heads=2,
        intermediate_size=32, max_position_embeddings=32,
    )  # fmt: skip
    model = BertModel(config).eval()
    ids = torch.tensor([[2, 7, 9, 11, 3]])
    with torch.no_grad():
        hidden = model(input_ids=ids, output_hidden_states=True).hidden_states
    original = torch.stack(hidden[6:], dim=1)[:, :-1, 0]  # bert_rep_gen.py, deepinsight_imdb.py
    ours = layer_indices([6, 7, 8, 9, 10, 11], 12)
    assert ours == [6, 7, 8, 9, 10, 11]
    torch.testing.assert_close(torch.stack([hidden[i][:, 0] for i in ours], dim=1), original)
    assert layer_indices(6, 12) == [7, 8, 9, 10, 11, 12]
    model.config.output_hidden_states = True
    encoded = [ids[0].tolist()]
    unpadded = embed_unpadded(encoded, model, ours, 4)
    torch.testing.assert_close(torch.from_numpy(unpadded), original, atol=1e-5, rtol=1e-5)


@pytest.mark.skipif(not native_bf16(), reason="this CPU has no native bfloat16 (AMX, AVX-512-BF16)")
def test_bfloat16_on_the_cpu_stays_within_its_tolerance_and_float32_is_unchanged(encoder):
    """bfloat16 (opt-in): every [CLS] vector within cosine 0.995 of float32 (the stated
    tolerance); float32 runs give the same bits twice."""
    tokenizer, model, _ = encoder
    encoded = tokenizer(TEXTS, truncation=True, max_length=128)["input_ids"]
    exact = embed_unpadded(encoded, model, [5, 6], 3)
    again = embed_unpadded(encoded, model, [5, 6], 3, precision="float32")
    assert np.array_equal(exact, again)
    bf16 = embed_unpadded(encoded, model, [5, 6], 3, precision="bfloat16")
    assert bf16.dtype == np.float32 and not np.array_equal(bf16, exact)  # it did run in bf16
    a, b = exact.reshape(-1, 384), bf16.reshape(-1, 384)
    cosine = (a * b).sum(1) / np.linalg.norm(a, axis=1) / np.linalg.norm(b, axis=1)
    assert cosine.min() >= 0.995


def test_int8_on_the_cpu_stays_within_its_tolerance_whatever_the_thread_count():
    """int8 (opt-in): each text's [CLS] vectors (its chosen layers together, the classifier's
    input) within cosine 0.995 of float32, the stated tolerance, and each layer's within 0.99
    (the last layer's least here: 0.9946); the same bits run to run and on one or two threads."""
    import torch

    from textvision.embed.int8 import Int8Linear

    tokenizer, model, _ = load_encoder(OFFLINE_MODEL, "cpu")
    int8 = load_encoder(OFFLINE_MODEL, "cpu", "int8")[1]
    assert isinstance(int8.encoder.layer[0].intermediate.dense, Int8Linear)
    encoded = tokenizer(TEXTS * 3, truncation=True, max_length=128)["input_ids"]
    exact = embed_unpadded(encoded, model, [1, 3, 6], 2)
    threads = torch.get_num_threads()
    try:
        runs = []
        for n in (1, 2, 2):
            torch.set_num_threads(n)
            runs.append(embed_unpadded(encoded, int8, [1, 3, 6], 2, precision="int8"))
    finally:
        torch.set_num_threads(threads)
    assert all(np.array_equal(runs[0], run) for run in runs[1:])
    assert not np.array_equal(runs[0], exact)  # it did run in int8
    for shape, least in (((len(exact), -1), 0.995), ((-1, 384), 0.99)):
        a, b = exact.reshape(shape), runs[0].reshape(shape)
        cosine = (a * b).sum(1) / np.linalg.norm(a, axis=1) / np.linalg.norm(b, axis=1)
        assert cosine.min() >= least, shape


def test_precisions_a_cpu_cannot_run_are_refused(monkeypatch):
    import textvision.core.device

    check_precision("float32", "cpu")
    check_precision("float16", "cuda")
    with pytest.raises(ConfigError, match="float16 runs on CUDA only"):
        check_precision("float16", "cpu")
    monkeypatch.setattr(textvision.core.device, "native_bf16", lambda: False)
    with pytest.raises(ConfigError, match="lacks native bfloat16"):
        check_precision("bfloat16", "cpu")
    check_precision("bfloat16", "cuda:0")
    check_precision("int8", "cpu")
    with pytest.raises(ConfigError, match="int8 runs on a CPU only"):
        check_precision("int8", "cuda:0")


def tiny_mpnet(folder):
    """A randomly initialised MPNet (3 layers, hidden 32) with its own tokenizer (`<s>` first,
    not `[CLS]`), built from a config: no download."""
    import torch
    from transformers import MPNetConfig, MPNetModel, MPNetTokenizer

    words = "the a film movie good bad great awful plot actor review story and was is it"
    vocab = [
        "<s>",
        "<pad>",
        "</s>",
        "<unk>",
        "<mask>",
        *words.split(),
        *"abcdefghijklmnopqrstuvwxyz.",
    ]
    folder.mkdir()
    tokenizer = MPNetTokenizer(vocab={w: i for i, w in enumerate(vocab)}, unk_token="<unk>")
    tokenizer.save_pretrained(folder)
    config = MPNetConfig(
        vocab_size=len(vocab), hidden_size=32, num_hidden_layers=3, num_attention_heads=2,
        intermediate_size=37, max_position_embeddings=80, pad_token_id=1,
    )  # fmt: skip
    torch.manual_seed(0)
    MPNetModel(config).eval().save_pretrained(folder)
    return folder


def test_an_encoder_without_sdpa_loads_eager_and_embeds_its_first_token(tmp_path, dataset):
    """MPNet has no scaled_dot_product_attention path: the encoder loads with its own (eager)
    attention, recorded in the embeddings; `[CLS]` is the first position whatever the tokenizer
    calls it (`<s>` here), and `layers: 2` are the last two of its 3 layers."""
    import torch
    from transformers import AutoModel, AutoTokenizer

    folder = tiny_mpnet(tmp_path / "mpnet")
    out = tmp_path / "e.h5"
    embed_dataset(dataset, out, EmbedSettings.make(model=str(folder), layers=2, max_length=32))
    with h5py.File(out) as fh:
        attrs, cls = attrs_dict(fh), fh["cls"][:]
    assert attrs["attention"] == "eager" and attrs["layers"] == [2, 3]
    assert cls.shape[1:] == (2, 32) and np.isfinite(cls).all()
    tokenizer = AutoTokenizer.from_pretrained(folder)
    model = AutoModel.from_pretrained(folder, attn_implementation="eager").eval()
    texts = pd.read_parquet(dataset)["text"].tolist()[:3]
    for row, text in enumerate(texts):
        enc = tokenizer(text, truncation=True, max_length=32, return_tensors="pt")
        assert tokenizer.convert_ids_to_tokens(int(enc["input_ids"][0, 0])) == "<s>"
        with torch.no_grad():
            states = model(**enc, output_hidden_states=True).hidden_states
        expected = np.stack([states[i][0, 0].numpy() for i in (2, 3)])
        np.testing.assert_allclose(cls[row], expected, rtol=1e-4, atol=1e-5)


def test_the_packaged_encoder_records_sdpa_attention(dataset, tmp_path):
    out = tmp_path / "e.h5"
    embed_dataset(dataset, out, EmbedSettings.make(layers=1, max_length=32))
    with h5py.File(out) as fh:
        assert attrs_dict(fh)["attention"] == "sdpa"
