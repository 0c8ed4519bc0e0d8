import math

import pytest
import torch
from hypothesis import given, settings, strategies as st

from s4rec_recbole.layers import (
    LengthAdversary, MaskableEmbedding, PrototypeLayer, SequenceAugmenter, distill_kl, grad_reverse,
    head_threshold, info_nce, kmeans, sinkhorn, swav_loss,
)
from s4rec_recbole.layers import augment as A

# ---------------------------------------------------------------- Sinkhorn / prototypes


@pytest.mark.parametrize("B, K, iters", [(256, 32, 30), (512, 128, 30), (64, 64, 300)])
def test_sinkhorn_equal_partition(B, K, iters):
    torch.manual_seed(0)
    scores = torch.nn.functional.normalize(torch.randn(B, 16), dim=1) @ \
        torch.nn.functional.normalize(torch.randn(K, 16), dim=1).t()
    scores.requires_grad_(True)
    q = sinkhorn(scores, eps=0.05, n_iters=iters)
    assert not q.requires_grad and q.grad_fn is None
    assert torch.allclose(q.sum(1), torch.ones(B), atol=1e-5)
    assert (q.sum(0) - B / K).abs().max() < 1e-3
    assert (q >= 0).all()


def test_sinkhorn_default_iterations_balance_better_than_softmax():
    torch.manual_seed(1)
    scores = torch.rand(512, 128) * 2 - 1
    scores[:, 0] += 0.5  # one prototype attracts everybody
    q = sinkhorn(scores)  # eps 0.05, 3 iterations (the defaults)
    soft = torch.softmax(scores / 0.05, dim=1)
    assert torch.allclose(q.sum(1), torch.ones(512), atol=1e-5)
    assert (q.sum(0) - 4).abs().max() < (soft.sum(0) - 4).abs().max() / 10


def test_prototype_scores_are_cosines_and_swav_loss_grad():
    layer = PrototypeLayer(8, 4)
    z = torch.randn(5, 4, requires_grad=True)
    s = layer(z)
    assert s.shape == (5, 8) and s.abs().max() <= 1 + 1e-6
    loss = swav_loss(s, sinkhorn(s), 0.1)
    loss.backward()
    assert z.grad is not None and layer.weight.grad is not None
    with pytest.raises(ValueError, match="n_clusters=0"):
        PrototypeLayer(0, 4)

# ---------------------------------------------------------------- GRL / adversary


def test_grl_reverses_and_scales_encoder_gradient():
    torch.manual_seed(0)
    z = torch.randn(6, 4, requires_grad=True)
    adv = LengthAdversary(4, grl_scale=0.5)
    labels = torch.tensor([0, 1, 0, 1, 1, 0])
    adv.loss(z, labels).backward()
    g_rev, g_cls = z.grad.clone(), adv.classifier.weight.grad.clone()
    # the same loss without reversal
    z2 = z.detach().clone().requires_grad_(True)
    cls = torch.nn.Linear(4, 2)
    cls.load_state_dict(adv.classifier.state_dict())
    torch.nn.functional.cross_entropy(cls(z2), labels).backward()
    assert torch.allclose(g_rev, -0.5 * z2.grad, atol=1e-7)
    assert torch.allclose(g_cls, cls.weight.grad)  # the classifier itself learns normally
    x = torch.randn(3, requires_grad=True)
    y = grad_reverse(x, 2.0)
    assert torch.equal(y, x)
    y.sum().backward()
    assert torch.equal(x.grad, torch.full((3,), -2.0))


def test_head_threshold():
    lengths = list(range(1, 101))
    assert head_threshold(lengths, 0.2) == 81  # the longest 20%: 81..100
    assert sum(l >= head_threshold(lengths, 0.2) for l in lengths) == 20
    with pytest.raises(ValueError, match="head_ratio=1.5"):
        head_threshold(lengths, 1.5)

# ---------------------------------------------------------------- InfoNCE / KL


def test_info_nce_hand_computed():
    z1 = torch.tensor([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]])
    z2 = torch.tensor([[1.0, 0.5], [0.5, 1.0], [0.0, 1.0]])
    protos = torch.tensor([[2.0, 0.0], [0.0, 2.0]])
    assigned = torch.tensor([0, 1, 0])
    t = 0.5
    dot = lambda a, b: float(a @ b)
    expected = 0.0
    for u in range(3):
        pos = math.exp(dot(z1[u], z2[u]) / t)
        neg = sum(math.exp(dot(z1[u], z2[n]) / t) + math.exp(dot(z1[u], z1[n]) / t) for n in range(3) if n != u)
        neg += sum(math.exp(dot(z1[u], protos[k]) / t) for k in range(2) if k != assigned[u])
        expected += -math.log(pos / (pos + neg))
    got = info_nce(z1, z2, t, "dot", protos, assigned)
    assert abs(got.item() - expected / 3) < 1e-5
    # without extra negatives: the plain NT-Xent over the other 2B-2 views
    expected = sum(-math.log(math.exp(dot(z1[u], z2[u]) / t) / sum(
        [math.exp(dot(z1[u], z2[n]) / t) for n in range(3)] +
        [math.exp(dot(z1[u], z1[n]) / t) for n in range(3) if n != u])) for u in range(3)) / 3
    assert abs(info_nce(z1, z2, t).item() - expected) < 1e-5
    # cosine similarity: the same loss on unit vectors; scaling a view's rows changes nothing
    unit = lambda z: z / z.norm(dim=1, keepdim=True)
    got_cos = info_nce(z1, z2 * torch.tensor([[3.0], [0.5], [2.0]]), t, "cos", protos, assigned)
    assert abs(got_cos.item() - info_nce(unit(z1), unit(z2), t, "dot", unit(protos), assigned).item()) < 1e-5
    assert abs(got_cos.item() - got.item()) > 1e-3  # and it differs from the dot-product loss here
    with pytest.raises(ValueError, match="sim='l2'"):
        info_nce(z1, z2, t, "l2")


def test_distill_kl_hand_computed_and_teacher_detached():
    teacher = torch.tensor([[1.0, 0.0, 0.0], [0.0, 0.0, 0.0], [2.0, 1.0, 0.0]], requires_grad=True)
    student = torch.tensor([[0.0, 1.0, 0.0], [1.0, 0.0, 0.0], [2.0, 1.0, 0.0]], requires_grad=True)
    expected = 0.0
    for u in range(3):
        p = torch.softmax(teacher[u].detach(), 0)
        q = torch.softmax(student[u].detach(), 0)
        expected += sum(float(p[i]) * math.log(float(p[i]) / float(q[i])) for i in range(3))
    got = distill_kl(teacher, student, 1.0)
    assert abs(got.item() - expected / 3) < 1e-6
    got.backward()
    assert teacher.grad is None and student.grad is not None
    assert distill_kl(student, student.detach().clone(), 0.5).item() == pytest.approx(0.0, abs=1e-7)


def test_distill_kl_cos_space_compares_directions_only():
    torch.manual_seed(0)
    teacher, student = torch.randn(4, 8) * 0.05, torch.randn(4, 8) * 6.0
    cos = distill_kl(teacher, student, 0.1, space="cos")
    assert cos.item() == pytest.approx(distill_kl(teacher * 30, student / 7, 0.1, space="cos").item(), rel=1e-5)
    unit = torch.nn.functional.normalize
    assert cos.item() == pytest.approx(distill_kl(unit(teacher, dim=-1), unit(student, dim=-1), 0.1).item(), rel=1e-6)
    assert distill_kl(teacher, teacher * 5, 0.1, space="cos").item() == pytest.approx(0.0, abs=1e-6)
    with pytest.raises(ValueError, match="space='l2': expected 'raw' or 'cos'"):
        distill_kl(teacher, student, space="l2")

# ---------------------------------------------------------------- mask-token embedding


def test_maskable_embedding():
    w = torch.nn.Parameter(torch.randn(5, 3))
    emb = MaskableEmbedding(w)
    ids = torch.tensor([[1, 5, 0]])
    out = emb(ids)
    assert out.shape == (1, 3, 3) and emb.weight.shape == (5, 3)
    assert torch.equal(out[0, 0], w[1]) and torch.equal(out[0, 1], emb.mask_weight)

# ---------------------------------------------------------------- augmentations (property tests)

L = 12
N_ITEMS = 40


@st.composite
def batches(draw):
    B = draw(st.integers(1, 8))
    lengths = draw(st.lists(st.integers(1, L), min_size=B, max_size=B))
    seq = torch.zeros(B, L, dtype=torch.long)
    for b, n in enumerate(lengths):
        items = draw(st.lists(st.integers(1, N_ITEMS - 1), min_size=n, max_size=n, unique=True))
        seq[b, :n] = torch.tensor(items)
    ratio = draw(st.sampled_from([0.0, 0.2, 0.5, 0.7, 1.0]))
    seed = draw(st.integers(0, 2 ** 16))
    return seq, torch.tensor(lengths), ratio, torch.Generator().manual_seed(seed)


def assert_well_formed(out, out_len, seq):
    assert out.shape == seq.shape and out.dtype == seq.dtype
    assert (out_len >= 1).all() and (out_len <= L).all()
    pos = torch.arange(L).unsqueeze(0)
    assert (out[pos >= out_len.unsqueeze(1)] == 0).all()  # right padding only
    assert (out[pos < out_len.unsqueeze(1)] != 0).all()   # never an empty or holed sequence


@settings(max_examples=60, deadline=None)
@given(batches())
def test_crop_property(data):
    seq, lengths, ratio, g = data
    before = seq.clone()
    out, out_len = A.crop(seq, lengths, ratio, g)
    assert torch.equal(seq, before)
    assert_well_formed(out, out_len, seq)
    assert torch.equal(out_len, torch.clamp((ratio * lengths.float()).floor().long(), min=1))
    for b in range(len(seq)):
        real, kept = seq[b, :lengths[b]].tolist(), out[b, :out_len[b]].tolist()
        starts = [i for i in range(len(real) - len(kept) + 1) if real[i:i + len(kept)] == kept]
        assert starts, "crop must be a contiguous block"


@settings(max_examples=60, deadline=None)
@given(batches())
def test_mask_property(data):
    seq, lengths, ratio, g = data
    before = seq.clone()
    out, out_len = A.mask(seq, lengths, ratio, N_ITEMS, g)
    assert torch.equal(seq, before) and torch.equal(out_len, lengths)
    assert_well_formed(out, out_len, seq)
    for b in range(len(seq)):
        n = int(lengths[b])
        masked = (out[b, :n] == N_ITEMS)
        assert int(masked.sum()) == int(ratio * n)
        assert torch.equal(out[b, :n][~masked], seq[b, :n][~masked])


@settings(max_examples=60, deadline=None)
@given(batches())
def test_reorder_property(data):
    seq, lengths, ratio, g = data
    before = seq.clone()
    out, out_len = A.reorder(seq, lengths, ratio, g)
    assert torch.equal(seq, before) and torch.equal(out_len, lengths)
    assert_well_formed(out, out_len, seq)
    for b in range(len(seq)):
        n = int(lengths[b])
        real, new = seq[b, :n].tolist(), out[b, :n].tolist()
        assert sorted(real) == sorted(new)
        changed = [i for i in range(n) if real[i] != new[i]]
        if changed:  # all moved items lie within one block of the allowed span
            assert changed[-1] - changed[0] + 1 <= int(ratio * n)


def test_reorder_permutes_a_block_at_random_places():
    g = torch.Generator().manual_seed(0)
    seq = torch.arange(1, 11).repeat(200, 1)  # 10 distinct items per row
    lengths = torch.full((200,), 10)
    out, _ = A.reorder(seq, lengths, 1.0, g)
    assert (out != seq).any(1).float().mean() > 0.99  # the whole sequence is shuffled (identity: 1 in 10!)
    out, _ = A.reorder(seq, lengths, 0.5, g)
    changed = out != seq
    assert changed.any(1).float().mean() > 0.9  # a 5-item block stays in order with probability 1/120
    first = changed.float().argmax(1)[changed.any(1)]
    assert len(first.unique()) >= 4  # the block starts at different places (0 to 5)


@settings(max_examples=60, deadline=None)
@given(batches())
def test_insert_property(data):
    seq, lengths, ratio, g = data
    before = seq.clone()
    sampler = lambda n: torch.full((n,), 99, dtype=torch.long)  # recognisable inserted items
    out, out_len = A.insert(seq, lengths, ratio, sampler, g)
    assert torch.equal(seq, before)
    assert_well_formed(out, out_len, seq)
    for b in range(len(seq)):
        n = int(lengths[b])
        k = int(ratio * n)
        assert int(out_len[b]) == min(n + k, L)
        full = [x for x in seq[b, :n].tolist()]
        kept = out[b, :out_len[b]].tolist()
        originals = [x for x in kept if x != 99]
        assert originals == full[len(full) - len(originals):]  # most recent originals, in order
        assert kept.count(99) <= k and kept.count(99) >= k - (n + k - int(out_len[b]))


def test_augmenter_mixes_operators_and_validates():
    torch.manual_seed(0)
    freq = torch.zeros(N_ITEMS)
    freq[7] = 1.0
    aug = SequenceAugmenter(N_ITEMS, item_freq=freq, insert_ratio=0.5)
    seq = torch.randint(1, N_ITEMS, (200, L))
    lengths = torch.full((200,), L)
    before = seq.clone()
    out, out_len = aug(seq, lengths)
    assert torch.equal(seq, before)
    assert_well_formed(out, out_len, seq)
    assert (out == N_ITEMS).any() and (out_len < L).any()  # mask and crop both drawn
    assert (aug.sample_items(50) == 7).all()  # insert draws by frequency
    with pytest.raises(ValueError, match="augmentation operators"):
        SequenceAugmenter(N_ITEMS, operators=("shuffle",))
    with pytest.raises(ValueError, match="crop_ratio=1.5"):
        SequenceAugmenter(N_ITEMS, crop_ratio=1.5)
    with pytest.raises(ValueError, match=f"item_freq: expected {N_ITEMS} non-negative counts"):
        SequenceAugmenter(N_ITEMS, item_freq=torch.ones(N_ITEMS - 1))
    with pytest.raises(ValueError, match="item_freq"):
        SequenceAugmenter(N_ITEMS, item_freq=torch.zeros(N_ITEMS))


def test_kmeans_restarts_keep_the_best_run_and_converge():
    g = torch.Generator().manual_seed(0)
    centers = torch.tensor([[10.0, 0.0], [0.0, 10.0], [-10.0, -10.0]])
    x = (centers.repeat_interleave(50, 0) + 0.1 * torch.randn(150, 2, generator=g))

    def objective(c):
        return float(torch.cdist(x, c).min(1).values.pow(2).sum())

    single, best = kmeans(x, 3, seed=1), kmeans(x, 3, seed=1, n_redo=5)
    assert single.shape == best.shape == (3, 2)
    assert objective(best) <= objective(single) + 1e-3  # the first restart is the single run
    assert torch.cdist(centers, best).min(1).values.max() < 0.1  # here: each blob has a centroid at its centre
    nearest = torch.cdist(x, best).argmin(1)  # converged: each centroid is the mean of its points
    assert torch.allclose(best, torch.stack([x[nearest == j].mean(0) for j in range(3)]), atol=1e-3)
    with pytest.raises(ValueError, match="K-means with K=4 needs at least 4 points, got 3"):
        kmeans(x[:3], 4)

# ---------------------------------------------------------------- fast dropout


def test_fast_dropout_matches_dropout_semantics():
    from s4rec_recbole.layers import FastDropout, use_fast_dropout

    torch.manual_seed(0)
    drop = FastDropout(0.3)
    x = torch.ones(200, 500, requires_grad=True)
    y = drop(x)
    kept = y != 0
    assert abs(kept.float().mean().item() - 0.7) < 0.01
    assert torch.allclose(y[kept], torch.full_like(y[kept], 1 / 0.7))
    y.sum().backward()
    assert torch.allclose(x.grad, kept.float() / 0.7)  # gradient = the mask, scaled
    drop.eval()
    assert torch.equal(drop(x), x)
    net = torch.nn.Sequential(torch.nn.Linear(2, 2), torch.nn.Sequential(torch.nn.Dropout(0.2)))
    use_fast_dropout(net)
    assert isinstance(net[1][0], FastDropout) and net[1][0].p == 0.2
    with pytest.raises(ValueError, match="dropout probability 1.0"):
        FastDropout(1.0)


def test_fast_dropout_leaves_other_devices_to_torchs_fused_dropout(monkeypatch):
    from s4rec_recbole.layers import FastDropout

    calls = []
    real = torch.nn.functional.dropout
    monkeypatch.setattr(torch.nn.functional, "dropout", lambda x, p, training: calls.append((x.device.type, p)) or
                        real(x, p, training))
    drop = FastDropout(0.3).train()
    out = drop(torch.ones(4, 8, device="meta"))  # any non-CPU device: no tensor data needed
    assert out.shape == (4, 8) and out.device.type == "meta" and calls == [("meta", 0.3)]
    drop(torch.ones(4, 8))  # CPU keeps the cheap mask
    assert calls == [("meta", 0.3)]


# ---------------------------------------------------------------- fused GELU


def test_fused_gelu_is_recboles_gelu_in_one_kernel():
    from recbole.model.layers import FeedForward

    from s4rec_recbole.layers import use_fused_gelu

    torch.manual_seed(0)
    ffn = FeedForward(16, 64, 0.0, "gelu", 1e-12)
    relu = FeedForward(16, 64, 0.0, "relu", 1e-12)
    net = torch.nn.Sequential(ffn, torch.nn.Sequential(relu))
    x = torch.randn(8, 5, 16, requires_grad=True)
    ref = ffn(x)
    (g_ref,) = torch.autograd.grad(ref.sum(), x)
    assert use_fused_gelu(net) is net
    assert ffn.intermediate_act_fn is torch.nn.functional.gelu
    assert relu.intermediate_act_fn is torch.nn.functional.relu  # other activations untouched
    out = ffn(x)
    (g_out,) = torch.autograd.grad(out.sum(), x)
    assert torch.allclose(out, ref, atol=1e-5) and torch.allclose(g_out, g_ref, atol=1e-5)
    z = torch.linspace(-6, 6, 1001)
    assert (torch.nn.functional.gelu(z) - FeedForward.gelu(ffn, z)).abs().max() < 2e-6  # the exact (erf) GELU

