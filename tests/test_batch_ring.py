"""The worker-to-loader hand-over: a slot is reused only after its batch's tensors are gone; overflow packs."""

from __future__ import annotations

import gc

import numpy as np
import pytest
import torch
from atomforge import batch_ring
from atomforge.batch_ring import RingReader, RingSlot, WorkerRing


def arrays(seed: int, atoms: int = 50) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    return {"pos": rng.normal(size=(atoms, 3)).astype(np.float32), "edge_index": rng.integers(0, atoms, (2, 7 * atoms)),
            "has_forces": rng.random(atoms // 10) < 0.5, "empty": np.zeros((2, 0), dtype=np.int64),
            "energy": rng.normal(size=atoms // 10), "z": rng.integers(1, 90, atoms).astype(np.uint8)}


def assert_tensors_equal(tensors: dict[str, torch.Tensor], expected: dict[str, np.ndarray]) -> None:
    assert list(tensors) == list(expected)
    for name, array in expected.items():
        assert tensors[name].numpy().dtype == array.dtype and tensors[name].shape == array.shape, name
        assert np.array_equal(tensors[name].numpy(), array), name


def test_a_slot_is_rewritten_only_after_its_batch_is_freed(tmp_path):
    ring, reader = WorkerRing(tmp_path, num_slots=2, slot_bytes=1 << 16), RingReader()
    kept = reader.tensors(ring.put(arrays(0)))
    for seed in range(1, 6):  # the other slot is reused every time: the first is never overwritten
        message = ring.put(arrays(seed))
        assert isinstance(message, RingSlot)
        assert_tensors_equal(reader.tensors(message), arrays(seed))
        gc.collect()
    assert_tensors_equal(kept, arrays(0))
    held = [reader.tensors(ring.put(arrays(seed))) for seed in range(6, 8)]  # kept + one more: the ring is full
    overflow = ring.put(arrays(8))
    assert not isinstance(overflow, RingSlot)  # packed into its own buffer instead of waiting or overwriting
    assert_tensors_equal(reader.tensors(overflow), arrays(8))
    assert_tensors_equal(kept, arrays(0)) and assert_tensors_equal(held[0], arrays(6))
    del kept, held
    gc.collect()
    assert isinstance(ring.put(arrays(9)), RingSlot)


def test_a_view_kept_alone_still_holds_its_slot(tmp_path):
    ring, reader = WorkerRing(tmp_path, num_slots=1, slot_bytes=1 << 16), RingReader()
    pos = reader.tensors(ring.put(arrays(0)))["pos"][3:7]  # the batch dict is gone, one slice of one field is not
    gc.collect()
    assert not isinstance(ring.put(arrays(1)), RingSlot)
    assert np.array_equal(pos.numpy(), arrays(0)["pos"][3:7])


def test_a_batch_larger_than_a_slot_is_packed(tmp_path):
    ring = WorkerRing(tmp_path, num_slots=2, slot_bytes=4096)
    message = ring.put(arrays(0, atoms=400))
    assert not isinstance(message, RingSlot)
    assert_tensors_equal(RingReader().tensors(message), arrays(0, atoms=400))


def test_pack_round_trip_and_layout_alignment():
    buffer, layout = batch_ring.pack(arrays(3))
    assert all(start % batch_ring.ALIGN == 0 for *_, start in layout)
    assert_tensors_equal(batch_ring.views(buffer, layout), arrays(3))


@pytest.mark.parametrize("slots", [0, -1])
def test_a_ring_needs_a_slot(tmp_path, slots):
    with pytest.raises(ValueError, match="num_slots"):
        WorkerRing(tmp_path, num_slots=slots, slot_bytes=4096)
