"""Which InfoNCE kernel variant a MoCo training step selects under autocast.

The GPU trainer runs under bf16 autocast, where F.normalize returns float32 and the queues may be float32:
info_nce casts q, keys and queue to the autocast dtype, so the Triton kernel runs its "16bit" variant
(bf16 tiles, fp32 accumulation), not the float32 one. Shown on CPU: CPU autocast, the Triton path forced
(SKELCL_INFONCE=triton) and interpreted (TRITON_INTERPRET=1).
"""

import os

os.environ["TRITON_INTERPRET"] = "1"  # before triton / skelcl.kernels.infonce_triton are imported

import pytest  # noqa: E402
import skelcl.kernels.infonce_triton as infonce_triton  # noqa: E402
import torch  # noqa: E402

import skelcl.models as models  # noqa: E402

CUDA = torch.device("cuda")  # dot_mode only reads the device type: no GPU needed


def _step(monkeypatch, amp, backend):
    """One MoCo forward + backward (second step: the queues are filled); returns (loss, [q dtypes])."""
    monkeypatch.setenv("SKELCL_INFONCE", backend)
    seen = []
    dense_lse = infonce_triton.dense_lse

    def spy(q, k, queue, *args):
        seen.append(q.dtype)
        assert k.dtype == q.dtype and (queue is None or queue.dtype == q.dtype)
        return dense_lse(q, k, queue, *args)

    monkeypatch.setattr(infonce_triton, "dense_lse", spy)
    torch.manual_seed(0)
    m = models.MoCo(dict(kind="stgcn", width=0.125), method="skeletonclr", dim=16, queue_size=16,
                    snippet_queue_size=32, num_snippets=3, momentum=0.9)  # fmt: skip
    g = torch.Generator().manual_seed(1)
    views = [torch.randn(2, 16, 2, 25, 3, generator=g) for _ in range(2)]
    for _ in range(2):
        seen.clear()
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=amp):
            loss, _ = m(views, epoch=1)
        loss.backward()
        m.flush_queues()
    return float(loss.detach()), seen


def test_moco_step_under_autocast_selects_the_16bit_variant(monkeypatch):
    loss_amp, seen = _step(monkeypatch, True, "triton")
    assert seen, "the MoCo step made no InfoNCE call through the Triton path"
    modes = {infonce_triton.dot_mode(dt, CUDA) for dt in seen}
    assert modes == {"16bit"}, seen
    # Without autocast the same step sends float32: at torch's default matmul precision ("highest") that
    # is the 3xtf32 variant (the test can tell the two apart).
    _, seen32 = _step(monkeypatch, False, "triton")
    assert seen32 and {infonce_triton.dot_mode(dt, CUDA) for dt in seen32} == {
        "tf32x3" if torch.get_float32_matmul_precision() == "highest" else "tf32"
    }
    # The reference path follows autocast the same way: same loss up to accumulation order.
    loss_ref, seen_ref = _step(monkeypatch, True, "reference")
    assert seen_ref == [] and loss_amp == pytest.approx(loss_ref, rel=1e-3)
