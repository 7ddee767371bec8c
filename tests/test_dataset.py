import numpy as np
import pytest
import torch

from nemo_latent_thoughts.data.dataset import LatentDocuments, build_datasets
from nemo_latent_thoughts.errors import NLTError
from nemo_latent_thoughts.tokens import latent_token_ids

SEQ = 64


@pytest.fixture(scope="module")
def ids(tokenizer):
    return latent_token_ids(tokenizer)


def dataset(data_dir, ids, samples=None, seed=11, prefix="train"):
    train, _ = build_datasets([(str(data_dir / prefix), 1.0)], None, sequence_length=SEQ, seed=seed,
                              token_ids=ids, train_samples=samples)
    return train


def parse_document(doc: list[int], ids) -> tuple[list[int], list[int], list[bool]]:
    """Undo a layout: (raw tokens BOS x.. EOS, latent tokens, per-latent prior flags)."""
    assert doc[0] == ids.bos and doc[-1] == ids.eos
    raw, latents, prior, i = [ids.bos], [], [], 1
    body = doc[1:-1]

    def until(stop_set, j):
        k = j
        while k < len(body) and body[k] not in stop_set:
            k += 1
        return body[j:k], k

    while i - 1 < len(body):
        j = i - 1
        if body[j] == ids.sol and body[j + 1] == ids.prior:
            z, k = until({ids.eol}, j + 2)
            x, k2 = until({ids.sol}, k + 1)
            latents += z; raw += x; prior.append(True)
        elif body[j] == ids.sol and body[j + 1] == ids.eol:
            x, k = until({ids.sol}, j + 2)
            assert body[k + 1] == ids.post
            z, k2 = until({ids.eol}, k + 2)
            k2 += 1
            latents += z; raw += x; prior.append(False)
        else:
            x, k2 = until({ids.sol}, j)
            raw += x
        i = k2 + 1
    return raw + [ids.eos], latents, prior


def test_every_token_appears_once_per_epoch(written_run, ids):
    _, data_dir, _ = written_run
    docs = LatentDocuments(str(data_dir / "train"))
    one_epoch = dataset(data_dir, ids)
    ds = dataset(data_dir, ids, samples=3 * len(one_epoch))
    stream = np.concatenate([ds.window(i)[:SEQ] for i in range(len(ds))])
    for epoch in range(2):
        start, end = ds._epoch_starts[epoch], ds._epoch_starts[epoch + 1]
        epoch_stream = stream[start:end].tolist()
        cuts = [i for i, t in enumerate(epoch_stream) if t == ids.bos] + [len(epoch_stream)]
        parsed = [parse_document(epoch_stream[a:b], ids) for a, b in zip(cuts, cuts[1:])]
        expected = sorted((docs.raw.get(i).tolist(), docs.latents.get(i).tolist()) for i in range(len(docs)))
        assert sorted((r, z) for r, z, _ in parsed) == expected
        assert cuts[0] == 0 and len(parsed) == len(docs)


def test_layout_coin_is_fair_redrawn_per_epoch_and_reproducible(written_run, ids):
    _, data_dir, _ = written_run
    ds = dataset(data_dir, ids, samples=10)
    coins = [ds.layout_coins(e) for e in range(6)]
    share = np.mean(np.concatenate(coins))
    assert 0.45 < share < 0.55, share
    assert all(not np.array_equal(coins[0], c) for c in coins[1:])
    again = dataset(data_dir, ids, samples=10)
    for e in range(6):
        assert np.array_equal(again.layout_coins(e), coins[e])
    assert all(torch.equal(ds[i]["tokens"], again[i]["tokens"]) for i in range(10))
    other_seed = dataset(data_dir, ids, samples=10, seed=12)
    assert not np.array_equal(other_seed.layout_coins(0), coins[0])


def test_both_layouts_appear_in_windows(written_run, ids):
    _, data_dir, _ = written_run
    ds = dataset(data_dir, ids)
    tokens = torch.cat([ds[i]["tokens"] for i in range(len(ds))])
    prior = ((tokens[:-1] == ids.sol) & (tokens[1:] == ids.prior)).sum().item()
    posterior = ((tokens[:-1] == ids.sol) & (tokens[1:] == ids.post)).sum().item()
    assert prior > 20 and posterior > 20  # ~90 chunks with latents: the share is 0.5 +- 0.05
    assert 0.3 < prior / (prior + posterior) < 0.7


def test_item_fields_match_gpt_dataset_conventions(written_run, ids):
    _, data_dir, _ = written_run
    ds = dataset(data_dir, ids, samples=5)
    item = ds[3]
    assert set(item) == {"tokens", "labels", "loss_mask", "position_ids"}
    assert item["tokens"].shape == item["labels"].shape == (SEQ,)
    assert torch.equal(item["tokens"][1:], item["labels"][:-1])
    assert torch.equal(ds[4]["tokens"][0], item["labels"][-1])  # windows overlap by one token
    assert item["loss_mask"].sum() == SEQ and torch.equal(item["position_ids"], torch.arange(SEQ))
    with pytest.raises(IndexError):
        ds[5]


def test_blend_of_latent_and_raw_data_by_weight(written_run, ids, tmp_path):
    from dataclasses import replace

    from nemo_latent_thoughts.data.writer import write_dataset

    cfg, data_dir, _ = written_run
    raw_dir = write_dataset(replace(cfg, write=replace(cfg.write, latents=[], out_dir=str(tmp_path / "raw"))))
    raw_docs = LatentDocuments(str(raw_dir / "train"))
    assert raw_docs.num_latent_chunks == 0
    train, valid = build_datasets([(str(data_dir / "train"), 3.0), (str(raw_dir / "train"), 1.0)],
                                  [(str(data_dir / "valid"), 1.0)], sequence_length=SEQ, seed=1, token_ids=ids,
                                  train_samples=400, valid_samples=20)
    assert len(train) == 400 and len(valid) == 20
    share = np.bincount(train.dataset_index, minlength=2) / 400
    assert abs(share[0] - 0.75) < 0.02
    raw_items = [train[i]["tokens"] for i in range(400) if train.dataset_index[i] == 1]
    assert not any(((t == ids.sol) | (t == ids.eol)).any() for t in raw_items)


def test_plain_megatron_data_is_read_verbatim(tmp_path, ids):
    from megatron.core.datasets.indexed_dataset import IndexedDatasetBuilder

    builder = IndexedDatasetBuilder(str(tmp_path / "plain.bin"), dtype=np.uint16)
    docs = [np.arange(10, 10 + n) for n in (30, 50, 70)]
    for doc in docs:
        builder.add_document(doc, [len(doc)])
    builder.finalize(str(tmp_path / "plain.idx"))
    ds = dataset(tmp_path, ids, prefix="plain")
    stream = np.concatenate([ds.window(i)[:SEQ] for i in range(len(ds))])
    assert len(ds) == (150 - 1) // SEQ
    order = ds._epoch(0)[0]
    assert sorted(order.tolist()) == [0, 1, 2]
    assert stream.tolist() == np.concatenate([docs[i] for i in order])[:len(stream)].tolist()


def test_clear_errors(tmp_path, written_run, ids):
    _, data_dir, _ = written_run
    with pytest.raises(NLTError, match="no indexed dataset at"):
        dataset(tmp_path, ids, prefix="absent")
    with pytest.raises(NLTError, match="fewer than one window"):
        build_datasets([(str(data_dir / "valid"), 1.0)], None, sequence_length=10**6, seed=1, token_ids=ids,
                       train_samples=None)


def test_interleaved_sequence_puts_a_chunk_after_its_documents_earlier_chunks_as_trained(ids):
    """Earlier chunks in the prior layout (raw where they have no thought); alone, it is the E-step's joint."""
    from nemo_latent_thoughts.data.layouts import interleaved_sequence
    from nemo_latent_thoughts.sampler.importance import ChunkInput, joint_sequence

    z, x = [40, 41], [50, 51, 52]
    assert interleaved_sequence(ids, [], z, x) == joint_sequence(ids, ChunkInput("d", 0, x, []), z, 64)
    sequence, (start, end) = interleaved_sequence(ids, [(None, [60]), ([70], [61])], z, x)
    assert sequence == [ids.bos, 60, ids.sol, ids.prior, 70, ids.eol, 61, ids.sol, ids.prior, 40, 41, ids.eol, *x]
    assert sequence[start:end] == [ids.prior, *z, ids.eol, *x]
