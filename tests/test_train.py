"""Training hands back a model in the default layout: the same ONNX graph as before training."""

import pytest
import torch

from hwprune import export
from hwprune.config import TrainConfig
from hwprune.train import Snapshot, train


@pytest.mark.parametrize("precision", ["fp32", "bf16"])
def test_trained_model_exports_the_graph_of_the_untrained_one(cnn, precision):
    data = torch.utils.data.TensorDataset(torch.rand(64, 1, 28, 28), torch.randint(0, 10, (64,)))
    example = torch.zeros(1, 1, 28, 28)
    before = [n.op_type for n in export.export(cnn, example).graph.node]
    weight = cnn.features[0].weight.detach().clone()
    snapshots = []
    train(cnn, data, TrainConfig(batch_size=32, precision=precision), 1, 0, snapshot=Snapshot(1, snapshots.append))
    assert not torch.equal(cnn.features[0].weight, weight)  # it did train
    for model in (cnn, snapshots[0]):
        assert all(p.stride() == torch.empty(p.shape).stride() for p in model.parameters())
        assert [n.op_type for n in export.export(model, example).graph.node] == before


def test_distillation_pulls_the_student_towards_the_teacher_not_the_labels():
    """With distill = 1 the labels carry no weight: a student trained on random labels learns the teacher's
    (different) decisions; with distill = 0 it fits the labels instead."""
    from hwprune.models.example_cnn import build
    torch.manual_seed(0)
    inputs = torch.rand(256, 1, 28, 28)
    teacher = build().eval()
    with torch.no_grad():
        teacher.classifier.weight.mul_(50.0)  # confident decisions (an untrained net's outputs are near-flat)
        teacher_says = teacher(inputs).argmax(1)
    labels = (teacher_says + 1 + torch.randint(0, 9, (256,))) % 10  # never the teacher's answer
    data = torch.utils.data.TensorDataset(inputs, labels)
    agreement = {}
    for distill in (0.0, 1.0):
        torch.manual_seed(1)
        student = build()
        train(student, data, TrainConfig(batch_size=32, lr=0.02, distill=distill, distill_temperature=1.0),
              6, 0, teacher=teacher)
        with torch.no_grad():
            agreement[distill] = float((student.eval()(inputs).argmax(1) == teacher_says).float().mean())
    assert agreement[1.0] > 0.6
    assert agreement[0.0] < 0.2


@pytest.mark.parametrize("labels, phrase", [
    (torch.full((8,), 12), "a training label is 12, outside the model's 10 classes"),
    (torch.full((8,), -1), "a training label is -1"),
    (torch.zeros(8), "the default loss is cross-entropy on class indices"),  # float labels: torch's dtype error
    (torch.zeros(8, 2, dtype=torch.long), "targets torch.int64 of shape \\[4, 2\\]"),  # per-pixel, but no pixels
])
def test_labels_outside_the_model_are_a_data_error(cnn, labels, phrase):
    from hwprune.errors import DataError
    data = torch.utils.data.TensorDataset(torch.rand(8, 1, 28, 28), labels)
    with pytest.raises(DataError, match=phrase):
        train(cnn, data, TrainConfig(batch_size=4), 1, 0)


def test_per_pixel_class_indices_train_and_score_a_segmentation_network():
    """[N, C, H, W] outputs with [N, H, W] integer targets: the default cross-entropy and accuracy work per pixel."""
    from hwprune.train import accuracy
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Conv2d(1, 8, 3, padding=1), torch.nn.ReLU(), torch.nn.Conv2d(8, 3, 1))
    x = torch.rand(16, 1, 6, 6)
    y = (x[:, 0] * 3).long().clamp(max=2)  # the class is the brightness band of each pixel
    data = torch.utils.data.TensorDataset(x, y)
    before = accuracy(net, data)
    train(net, data, TrainConfig(batch_size=8, lr=0.1, distill=0.0), 20, 0)
    assert accuracy(net, data) > max(before, 0.6)
