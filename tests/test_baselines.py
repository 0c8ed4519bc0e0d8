import torch
from recbole.utils import init_seed

from conftest import tiny_overrides
from s4rec_recbole.model import recbole_sequential_models
from s4rec_recbole.runner import build_config, prepare_data, run
from s4rec_recbole.trainer import S4RecTrainer


def make(model, data_path, seed=3, **overrides):
    cfg = build_config(model, "tiny", overrides=tiny_overrides(data_path, **overrides))
    _, train, valid, test = prepare_data(cfg)
    init_seed(seed, True)
    return cfg, cfg.model_class(cfg, train._dataset), train, valid


def test_cl4srec_parts_and_batch_untouched(tiny_data_path):
    _, m, train, _ = make("CL4SRec", tiny_data_path)
    batch = next(iter(train))
    before = batch["item_id_list"].clone(), batch["item_length"].clone()
    rec, cl = m.calculate_loss(batch)
    assert torch.equal(batch["item_id_list"], before[0]) and torch.equal(batch["item_length"], before[1])
    assert torch.isfinite(rec) and cl.item() > 0
    (rec + cl).backward()
    assert m.item_embedding.mask_weight.grad.abs().sum() > 0  # Mask views were made and encoded
    # the next-item part is exactly RecBole's SASRec loss on the original batch
    m.eval()
    assert torch.allclose(m.calculate_loss(batch)[0], recbole_sequential_models()["SASRec"].calculate_loss(m, batch),
                          atol=1e-6)
    _, off, _, _ = make("CL4SRec", tiny_data_path, cl_weight=0.0)
    assert off.calculate_loss(batch)[1].item() == 0


def test_iclrec_parts_and_centroids_each_epoch(tiny_data_path, tmp_path):
    cfg, m, train, valid = make("ICLRec", tiny_data_path, n_clusters=8, epochs=2)
    trainer = S4RecTrainer(cfg, m)
    trainer.fit(train, valid, saved=False)
    assert m.kmeans_epochs == [0, 1]
    c = m.centroids.clone()
    assert c.abs().sum() > 0
    batch = next(iter(train))
    rec, instance, intent = m.calculate_loss(batch)
    assert all(torch.isfinite(x) for x in (rec, instance, intent)) and instance.item() > 0 and intent.item() > 0
    m.eval()
    before = m.assign_clusters(batch["item_id_list"], batch["item_length"])
    m.on_epoch_start(trainer, train, 2)
    assert not torch.equal(c, m.centroids)  # recomputed from the new embeddings
    m.centroids.copy_(m.centroids.flip(0))
    assert not torch.equal(before, m.assign_clusters(batch["item_id_list"], batch["item_length"]))
    # intents are the L2-nearest centroids (faiss' index search), not the highest dot products
    m.centroids.zero_()
    m.centroids[0, 0], m.centroids[1, :2] = 10.0, torch.tensor([1.0, 0.5])
    m.centroids[2:, 2] = torch.arange(3.0, 3.0 + len(m.centroids) - 2)
    z = torch.zeros(2, m.hidden_size)
    z[0, :2], z[1, 0] = torch.tensor([1.0, 0.4]), 9.0
    assert m.intent_ids(z).tolist() == [1, 0]  # z[0] has its highest dot product with centroid 0
    # the intents are those centroids L2-normalised (ICLRec's reference), raw with normalize_intents: false
    expected = torch.zeros(2, m.hidden_size)
    expected[0, :2], expected[1, 0] = torch.tensor([1.0, 0.5]) / 1.25 ** 0.5, 1.0
    assert torch.allclose(m.intents(z), expected, atol=1e-6)
    assert torch.allclose(m.intents(z).norm(dim=1), torch.ones(2))
    m.normalize_intents = False
    assert torch.equal(m.intents(z), m.centroids[[1, 0]])


def reference_nce(a, b, t=1.0):
    """ICLRec's symmetric NCE written out row by row: 2B anchors (each a_i, then each b_i), each against
    every b_j and the other members of its own side; the positive is its partner of the same index."""
    rows = []
    for x, y in ((a, b), (b, a)):
        for i in range(len(x)):
            scores = [x[i] @ y[j] / t for j in range(len(y))] + [x[i] @ x[j] / t for j in range(len(x)) if j != i]
            rows.append(-(scores[i] - torch.logsumexp(torch.stack(scores), 0)))
    return torch.stack(rows).mean()


def test_iclrec_intent_loss_is_the_reference_symmetric_nce(tiny_data_path):
    _, m, _, _ = make("ICLRec", tiny_data_path, n_clusters=8)
    g = torch.Generator().manual_seed(0)
    view, c = torch.randn(5, 4, generator=g), torch.randn(5, 4, generator=g)
    c[3] = c[1]  # two sequences with the same intent: the duplicate stays a negative (no de-noising)
    assert m.intent_symmetric and torch.allclose(m.intent_loss(view, c), reference_nce(view, c), atol=1e-5)
    view.requires_grad_(True)
    m.intent_loss(view, c).backward()
    assert view.grad.abs().sum() > 0
    m.intent_symmetric = False
    one_way = torch.stack([-(view[i] @ c[i] - torch.logsumexp(torch.cat([view[i] @ c.T, view[i] @ view[
        torch.arange(5) != i].T]), 0)) for i in range(5)]).mean()
    assert torch.allclose(m.intent_loss(view, c), one_way, atol=1e-5)


def test_embed_all_equals_untrimmed_embeddings_in_sample_order(tiny_data_path):
    for pooling in ("mean", "last"):
        _, m, train, _ = make("ICLRec", tiny_data_path, n_clusters=8, seq_pooling=pooling, eval_batch_size=16)
        ds = train._dataset
        seqs, lens = ds.inter_feat["item_id_list"], ds.inter_feat["item_length"]
        assert seqs.size(1) > lens.max() and len(set(lens.tolist())) > 5   # padding to trim, lengths to sort
        m.eval()
        with torch.no_grad():
            full = m.sequence_embedding(seqs, lens)                       # one batch, full padding
        m.train()
        out = m.embed_all(ds)
        assert m.training and out.shape == full.shape
        assert torch.allclose(out, full, atol=1e-5)
        rows = torch.arange(3, len(seqs), 2)
        assert torch.allclose(m.embed_all(ds, rows), full[rows], atol=1e-5)


def test_baselines_end_to_end(tiny_data_path, tmp_path):
    for model in ("CL4SRec", "ICLRec"):
        res = run(model=model, dataset="tiny", overrides=tiny_overrides(tiny_data_path, tmp_path, n_clusters=8)
                  if model == "ICLRec" else tiny_overrides(tiny_data_path, tmp_path), results_dir=tmp_path / "res")
        assert res["model"] == model and res["epochs_run"] == 1
        assert 0 <= res["test"]["ndcg@20"] <= 1
