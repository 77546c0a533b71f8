"""probes.fgbmk equals a direct transcription of FG-BMK's released evaluation code.

The transcriptions below follow SEU-VIPGroup/FG-BMK ``demo/machine_evaluation`` (eval_linear.py,
eval_retrieval.py, dinov2/eval/metrics.py, utils.py) statement by statement, in torch modules as
that code writes them (``LinearClassifier``, ``AllClassifiers``, ``LinearPostprocessor``, the
``Recall`` and ``RetrievalMAP`` metrics), fed the same batches and initial weights. Where FG-BMK's
result depends on an unspecified order (an unstable argsort among tied classes) the transcription
uses the order probes.fgbmk documents.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

from featkit.errors import FeatkitError
from probes import fgbmk

LRS = (1e-2, 5e-2)
ITERS, BATCH = 25, 16


def _tokens(seed: int, n: int, classes: int, dim: int = 8, patches: int = 3):
    """Two blocks' class tokens and the last block's patch tokens, class-dependent."""
    rng = np.random.default_rng(seed)
    labels = np.arange(n) % classes
    centres = rng.normal(size=(classes, dim))
    cls1 = (centres[labels] + rng.normal(size=(n, dim))).astype(np.float32)
    cls2 = (centres[labels] * 1.5 + rng.normal(size=(n, dim))).astype(np.float32)
    patch = (centres[labels][:, None] + rng.normal(size=(n, patches, dim))).astype(np.float32)
    return labels, cls1, cls2, patch


# --------------------------------------------------------------------------- transcription


def create_linear_input(x_tokens_list, use_n_blocks, use_avgpool):
    intermediate_output = x_tokens_list[-use_n_blocks:]
    output = torch.cat([class_token for _, class_token in intermediate_output], dim=-1)
    if use_avgpool:
        output = torch.cat((output, torch.mean(intermediate_output[-1][0], dim=1)), dim=-1)
        output = output.reshape(output.shape[0], -1)
    return output.float()


class LinearClassifier(nn.Module):
    def __init__(self, out_dim, use_n_blocks, use_avgpool, num_classes, generator):
        super().__init__()
        self.use_n_blocks, self.use_avgpool = use_n_blocks, use_avgpool
        self.linear = nn.Linear(out_dim, num_classes)
        self.linear.weight.data.normal_(mean=0.0, std=0.01, generator=generator)
        self.linear.bias.data.zero_()

    def forward(self, x_tokens_list):
        return self.linear(create_linear_input(x_tokens_list, self.use_n_blocks,
                                               self.use_avgpool))


def setup_linear_classifiers(sample_output, learning_rates, batch_size, num_classes, seed):
    generator = torch.Generator().manual_seed(seed)
    classifiers, groups = nn.ModuleDict(), []
    for n in [1, 2]:
        for avgpool in [False, True]:
            for _lr in learning_rates:
                lr = _lr * batch_size / 256.0
                out_dim = create_linear_input(sample_output, n, avgpool).shape[1]
                head = LinearClassifier(out_dim, n, avgpool, num_classes, generator)
                classifiers[f"classifier_{n}_blocks_avgpool_{avgpool}_lr_{lr:.5f}".replace(
                    ".", "_")] = head
                groups.append({"params": head.parameters(), "lr": lr})
    return classifiers, groups


def tokens_list(cls1, cls2, patch, index):
    return [(torch.from_numpy(patch[index]), torch.from_numpy(cls1[index])),
            (torch.from_numpy(patch[index]), torch.from_numpy(cls2[index]))]


def best_on_test(results, key):
    max_accuracy, best = 0, ""
    for name, metric in results.items():
        if metric[key] > max_accuracy:
            max_accuracy, best = metric[key], name
    return best


def transcribed_linear(train, test, num_classes, batches):
    labels, cls1, cls2, patch = train
    classifiers, groups = setup_linear_classifiers(tokens_list(cls1, cls2, patch, [0]), LRS,
                                                   BATCH, num_classes, seed=0)
    optimizer = torch.optim.Adam(groups, weight_decay=0)
    scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, ITERS, eta_min=0)
    for index in batches:
        features = tokens_list(cls1, cls2, patch, index)
        target = torch.from_numpy(labels[index].astype(np.int64))
        losses = {k: nn.CrossEntropyLoss()(v(features), target) for k, v in classifiers.items()}
        loss = sum(losses.values())
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        scheduler.step()
    t_labels, t1, t2, tp = test
    features, target = tokens_list(t1, t2, tp, np.arange(len(t_labels))), torch.from_numpy(t_labels)
    with torch.no_grad():
        results = {k: {"top-1": float((v(features).argmax(1) == target).double().mean())}
                   for k, v in classifiers.items()}
    return results, best_on_test(results, "top-1")


def test_linear_protocol_equals_the_transcription():
    train, test = _tokens(0, 90, 5), _tokens(1, 40, 5)
    labels, cls1, cls2, patch = train
    batches = fgbmk.draw_batches(len(labels), BATCH, ITERS, seed=0)
    expected, best = transcribed_linear(train, test, 5, batches)
    result = fgbmk.fgbmk_linear(
        [cls1, cls2], labels, [test[1], test[2]], test[0],
        train_patch_mean=patch.mean(1), test_patch_mean=torch.from_numpy(test[3]).mean(1).numpy(),
        learning_rates=LRS, iterations=ITERS, batch_size=BATCH, device="cpu")
    assert [h.name for h in result.heads] == list(expected)
    assert [h.scores["top1"] for h in result.heads] == [v["top-1"] for v in expected.values()]
    assert result.selected == best
    assert result.metrics["top1"] == expected[best]["top-1"]
    assert result.counts == {"train": 90, "test": 40, "heads": 8}


class Recall:
    """dinov2/eval/metrics.py's Recall (tp/fn/fp per class) with torchmetrics' macro rule."""

    def __init__(self, top_k, num_classes):
        self.top_k, self.num_classes = top_k, num_classes
        self.tp = self.fn = self.fp = 0

    def update(self, preds, target):
        if self.top_k > 1:
            order = torch.argsort(-preds, dim=1, stable=True)[:, :self.top_k]
            onehot = torch.zeros_like(target, dtype=torch.int).scatter(1, order, 1)
        else:
            onehot = F.one_hot(preds.argmax(1), num_classes=self.num_classes)
        self.tp = self.tp + ((target == onehot) & (target == 1)).sum(0)
        self.fn = self.fn + ((target != onehot) & (target == 1)).sum(0)
        self.fp = self.fp + ((target != onehot) & (target == 0)).sum(0)

    def compute(self):
        tp, fn, fp = self.tp.double(), self.fn.double(), self.fp.double()
        score = torch.where(tp + fn != 0, tp / (tp + fn), torch.zeros_like(tp))
        weights = torch.ones_like(score)
        weights[tp + fp + fn == 0 if self.top_k == 1 else tp + fn == 0] = 0.0
        return float((weights * score).sum() / weights.sum())


class RetrievalMAP:
    def __init__(self):
        self.sum_AP, self.num_query = 0, 0

    def update(self, preds, target):
        for i in range(preds.size(0)):
            retrieval = (target[i] > 1e-3).float()
            index = torch.argsort(-preds[i], stable=True)
            retrieval = retrieval[index]
            retrieval_cnt = retrieval.sum().int().item()
            if retrieval_cnt == 0:
                continue
            score = torch.linspace(1, retrieval_cnt, retrieval_cnt, dtype=torch.float64)
            index = (torch.nonzero(retrieval == 1).squeeze(1) + 1.0).double()
            self.sum_AP += float((score / index).mean())
            self.num_query += 1

    def compute(self):
        return self.sum_AP / self.num_query


def postprocess(head, samples, gallery_feature, gallery_targets):
    preds = head(samples)
    M, N, D, C = preds.size(0), gallery_feature.size(0), gallery_feature.size(1), \
        gallery_targets.size(1)
    sim_all = -F.pairwise_distance(preds.unsqueeze(1).expand(M, N, D),
                                   gallery_feature.unsqueeze(0).expand(M, N, D))
    logits = -torch.ones(M, C) * 1e4
    values, indices = sim_all.topk(10, dim=1)
    for i in range(9, -1, -1):
        logits = torch.where(gallery_targets[indices[:, i]] > 0.999,
                             values[:, i].unsqueeze(1).expand(M, C), logits)
    return logits.softmax(-1)


def transcribed_retrieval(train, test, train_sets, test_sets, triplets, known, gallery, embed):
    labels, cls1, cls2, patch = train
    sample = tokens_list(cls1, cls2, patch, [0])
    classifiers, groups = setup_linear_classifiers(sample, LRS, BATCH, embed, seed=0)
    optimizer = torch.optim.SGD(groups, momentum=0.9, weight_decay=0)
    scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, ITERS, eta_min=0)
    for step in triplets:
        data = np.concatenate([known[step[0]], known[step[1]], known[step[2]]])
        features = tokens_list(cls1, cls2, patch, data)
        losses = {k: F.triplet_margin_loss(*v(features).chunk(3)) for k, v in classifiers.items()}
        loss = sum(losses.values())
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        scheduler.step()
    t_labels, t1, t2, tp = test
    queries = tokens_list(t1, t2, tp, np.arange(len(t_labels)))
    gallery_tokens = tokens_list(cls1, cls2, patch, gallery)
    num_classes = train_sets.num_classes
    gallery_targets = torch.from_numpy(train_sets.dense(gallery))
    targets = torch.from_numpy(test_sets.dense(np.arange(len(t_labels))))
    results = {}
    with torch.no_grad():
        for name, head in classifiers.items():
            preds = postprocess(head, queries, head(gallery_tokens), gallery_targets)
            metrics = {"recall@1": Recall(1, num_classes), "recall@10": Recall(10, num_classes),
                       "map": RetrievalMAP()}
            for m in metrics.values():
                m.update(preds, targets)
            results[name] = {k: m.compute() for k, m in metrics.items()}
    return results, best_on_test(results, "recall@1")


@pytest.mark.parametrize("multi_label", [False, True])
def test_retrieval_protocol_equals_the_transcription(multi_label):
    train, test = _tokens(2, 80, 6), _tokens(3, 36, 6)
    train_labels, test_labels = train[0], test[0]
    if multi_label:  # a second label on some rows, as SkinCon's lines have
        train_sets = fgbmk.LabelSets.from_labels(
            [[y, (y + 3) % 6] if i % 3 == 0 else [y] for i, y in enumerate(train_labels)])
        test_sets = fgbmk.LabelSets.from_labels(
            [[y, (y + 1) % 6] if i % 4 == 0 else [y] for i, y in enumerate(test_labels)])
    else:
        train_sets = fgbmk.LabelSets.from_labels(train_labels)
        test_sets = fgbmk.LabelSets.from_labels(test_labels)
    known, known_sets = fgbmk.known_rows(train_sets)
    triplets = fgbmk.draw_triplets(known_sets, BATCH, ITERS, seed=0)
    gallery = fgbmk.gallery_rows(len(train_labels), 50, seed=0)
    expected, best = transcribed_retrieval(train, test, train_sets, test_sets, triplets, known,
                                           gallery, embed=12)
    result = fgbmk.fgbmk_retrieval(
        [train[1], train[2]], train_sets, [test[1], test[2]], test_sets,
        train_patch_mean=train[3].mean(1), test_patch_mean=test[3].mean(1), learning_rates=LRS,
        iterations=ITERS, batch_size=BATCH, embed_dim=12, gallery_size=50, query_chunk=7,
        device="cpu")
    assert [h.name for h in result.heads] == list(expected)
    for head in result.heads:
        want = expected[head.name]
        assert head.scores["recall@1"] == pytest.approx(want["recall@1"], abs=1e-12)
        assert head.scores["recall@10"] == pytest.approx(want["recall@10"], abs=1e-12)
        assert head.scores["mAP"] == pytest.approx(want["map"], abs=1e-12)
    assert result.selected == best
    assert result.counts["gallery"] == 50 and result.counts["train_known"] == len(known)


# --------------------------------------------------------------------------- the pieces


def test_grid_order_names_and_inputs():
    grid = fgbmk.head_grid(2, True, (1e-3, 5e-2))
    assert [(c.n_blocks, c.avgpool, c.lr) for c in grid] == [
        (1, False, 1e-3), (1, False, 5e-2), (1, True, 1e-3), (1, True, 5e-2),
        (2, False, 1e-3), (2, False, 5e-2), (2, True, 1e-3), (2, True, 5e-2)]
    assert grid[0].name(128) == "classifier_1_blocks_avgpool_False_lr_0_00050"
    assert len(fgbmk.head_grid(2, True)) == 24  # FG-BMK's full grid
    assert len(fgbmk.head_grid(1, False)) == 6
    a, b, p = np.ones((2, 3)), 2 * np.ones((2, 3)), 3 * np.ones((2, 2))
    assert fgbmk.linear_input([a, b], p, 2, True)[0].tolist() == [1, 1, 1, 2, 2, 2, 3, 3]
    assert fgbmk.linear_input([a, b], None, 1, False)[0].tolist() == [2, 2, 2]


def test_batches_are_a_seeded_permutation_stream():
    batches = fgbmk.draw_batches(10, 4, 5, seed=3)
    stream = batches.reshape(-1)
    assert sorted(stream[:10]) == list(range(10)) and sorted(stream[10:20]) == list(range(10))
    assert np.array_equal(batches, fgbmk.draw_batches(10, 4, 5, seed=3))
    assert not np.array_equal(batches, fgbmk.draw_batches(10, 4, 5, seed=4))


def test_triplets_train_on_even_classes_with_true_positives():
    labels = fgbmk.LabelSets.from_labels([[0], [1], [2, 3], [0], [3], [2], [4]])
    known, known_sets = fgbmk.known_rows(labels)
    assert known.tolist() == [0, 2, 3, 5, 6]  # rows 1 and 4 have odd labels only
    assert [known_sets.row(i).tolist() for i in range(5)] == [[0], [2], [0], [2], [4]]
    triplets = fgbmk.draw_triplets(known_sets, 8, 20, seed=0)
    for a, p in zip(triplets[:, 0].reshape(-1), triplets[:, 1].reshape(-1)):
        if known_sets.row(a).tolist() == [4]:
            assert p == a  # alone in its class: the anchor is its own positive
        else:
            assert p != a and set(known_sets.row(a)) & set(known_sets.row(p))
    negatives = triplets[:, 2].reshape(-1)
    assert set(negatives.tolist()) == set(range(5))  # uniform over every row


def test_single_label_positives_exclude_the_anchor():
    labels = fgbmk.LabelSets.from_labels(np.array([0, 0, 0, 2, 2, 4]))
    triplets = fgbmk.draw_triplets(labels, 6, 30, seed=1)
    anchors, positives = triplets[:, 0].reshape(-1), triplets[:, 1].reshape(-1)
    y = labels.indices
    assert np.all(y[anchors] == y[positives])
    alone = anchors == 5
    assert np.all(positives[alone] == 5) and np.all(positives[~alone] != anchors[~alone])


def test_selection_is_strictly_better_and_above_zero():
    assert fgbmk.select_on_test([0.2, 0.5, 0.5, 0.1]) == 1
    assert fgbmk.select_on_test([0.0, 0.0]) is None


def test_class_probabilities_take_the_nearest_neighbour_of_each_class():
    sim = torch.tensor([[-1.0, -2.0, -0.5, -3.0]])
    gallery = fgbmk.LabelSets.from_labels([[0], [1, 2], [0], [3]], num_classes=5)
    probs = fgbmk.class_probabilities(sim, gallery, k=3)
    logits = torch.tensor([[-0.5, -2.0, -2.0, -1e4, -1e4]])
    assert torch.allclose(probs, logits.softmax(-1))


def test_linear_refuses_multi_label_data():
    x = np.zeros((4, 2), np.float32)
    with pytest.raises(FeatkitError, match="one integer label"):
        fgbmk.fgbmk_linear([x], np.zeros((4, 2)), [x], np.zeros(4), iterations=1)
